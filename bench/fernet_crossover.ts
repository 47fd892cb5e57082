// deno-lint-ignore-file no-console
/**
 * Times one Fernet encrypt plus decrypt (raw tokens) per plaintext size for
 * each backend, to find the size from which WebCrypto beats `node:crypto`.
 * That size is `DEFAULT_WEBCRYPTO_THRESHOLD` in `lib/fernet.ts`.
 *
 * Run alone: `taskset -c 0 deno run bench/fernet_crossover.ts`.
 *
 * @module
 */

import { Fernet, generateKey } from "../fernet/mod.ts";

/** A backend that `measureFernet()` can time (`"auto"` only mixes these two). */
export type MeasuredBackend = "node" | "webcrypto";

/** One measured point. */
export interface FernetMeasurement {
  /** Plaintext size, in bytes. */
  size: number;
  /** The backend timed. */
  backend: MeasuredBackend;
  /** Median time of one encrypt plus one decrypt, in microseconds. */
  microseconds: number;
}

/** Tuning of {@linkcode measureFernet}. */
export interface MeasureOptions {
  /** Timed runs per point; the median is reported. @default {9} */
  runs?: number;
  /** Wall time each run aims for, in milliseconds. @default {100} */
  runTime?: number;
}

/** Default plaintext sizes, in bytes. */
export const DEFAULT_SIZES: readonly number[] = [
  100,
  1024,
  4096,
  16_384,
  32_768,
  65_536,
  262_144,
  1_048_576,
];

/**
 * The median time of one `op()`, in microseconds: it runs `op` in a loop
 * long enough to fill `runTime` ms (counted in a warm-up that doubles the
 * count), then `runs` timed loops.
 */
export async function timePerOp(
  op: () => Promise<unknown>,
  runs: number,
  runTime: number,
): Promise<number> {
  let iterations = 1;
  for (;;) {
    const start = performance.now();
    for (let i = 0; i < iterations; i++) await op();
    const elapsed = performance.now() - start;
    if (elapsed >= runTime / 4) {
      iterations = Math.max(1, Math.round((iterations * runTime) / elapsed));
      break;
    }
    iterations *= 2;
  }
  const samples: number[] = [];
  for (let r = 0; r < runs; r++) {
    const start = performance.now();
    for (let i = 0; i < iterations; i++) await op();
    samples.push(((performance.now() - start) * 1000) / iterations);
  }
  return samples.sort((a, b) => a - b)[Math.floor(samples.length / 2)]!;
}

/**
 * Returns, for every size and backend, the median time of one
 * `encryptBytes()` plus `decryptBytes()`, in microseconds.
 */
export async function measureFernet(
  sizes: readonly number[] = DEFAULT_SIZES,
  backends: readonly MeasuredBackend[] = ["node", "webcrypto"],
  { runs = 9, runTime = 100 }: MeasureOptions = {},
): Promise<FernetMeasurement[]> {
  const key = generateKey();
  const results: FernetMeasurement[] = [];
  for (const size of sizes) {
    const data = new Uint8Array(size).map((_, i) => (i * 31) & 0xff);
    for (const backend of backends) {
      const fernet = new Fernet(key, { backend });
      const once = async () => {
        await fernet.decryptBytes(await fernet.encryptBytes(data));
      };
      const microseconds = await timePerOp(once, runs, runTime);
      results.push({ size, backend, microseconds });
    }
  }
  return results;
}

/** The smallest size from which WebCrypto is faster at that and every larger size, or Infinity. */
export function crossover(results: readonly FernetMeasurement[]): number {
  const sizes = [...new Set(results.map((r) => r.size))].sort((a, b) => a - b);
  let from = Infinity;
  for (const size of sizes.toReversed()) {
    const time = (backend: MeasuredBackend) =>
      results.find((r) => r.size === size && r.backend === backend)?.microseconds ?? NaN;
    if (!(time("webcrypto") < time("node"))) break;
    from = size;
  }
  return from;
}

if (import.meta.main) {
  const results = await measureFernet();
  console.log("size (bytes)   node (µs)   webcrypto (µs)   webcrypto/node");
  for (const size of new Set(results.map((r) => r.size))) {
    const [node, web] = (["node", "webcrypto"] as const).map((b) =>
      results.find((r) => r.size === size && r.backend === b)!.microseconds
    ) as [number, number];
    console.log(
      `${String(size).padStart(12)}   ${node.toFixed(1).padStart(9)}   ${
        web.toFixed(1).padStart(14)
      }   ${(web / node).toFixed(2).padStart(14)}`,
    );
  }
  console.log(`crossover: WebCrypto is faster from ${crossover(results)} bytes`);
}
