/**
 * Fernet floors: one encrypt plus one decrypt per payload size, for each of
 * our backends (`measureFernet` from `fernet_crossover.ts`, raw tokens) and,
 * when its `cryptography` package is installed, for Python (`timeit` in a
 * `python3` subprocess; Python's API always adds base64, ours is timed on
 * raw tokens as links use them).
 *
 * @module
 */

import { Fernet, generateKey } from "../fernet/mod.ts";
import { type MeasuredBackend, measureFernet, timePerOp } from "./fernet_crossover.ts";
import type { Context } from "./plan.ts";
import { runClient, spawnCommand } from "./proc.ts";

/** Per backend, per size: µs of one encrypt + decrypt, one value per round. */
export type FernetTimes = Record<string, Record<string, number[]>>;

/** Our backends and Python's, or why Python is missing. */
export interface FernetResult {
  ours: FernetTimes;
  /**
   * Per backend, per size: µs of one encrypt alone (a seal), one value per
   * round; at the largest size only. Absent in runs recorded before it was.
   */
  seal?: FernetTimes;
  python: Record<string, number[]> | null;
  pythonVersion: string | null;
  pythonNote: string;
}

/** Parameters of {@linkcode clientFernet}. */
export interface FernetParams {
  sizes: number[];
  rounds: number;
  runs: number;
  runTime: number;
}

/** Runs `measureFernet` once per round (inside the client process). */
export async function clientFernet(params: FernetParams): Promise<FernetTimes> {
  const backends: MeasuredBackend[] = ["node", "webcrypto"];
  const out: FernetTimes = { node: {}, webcrypto: {} };
  for (let round = 0; round < params.rounds; round++) {
    const results = await measureFernet(params.sizes, backends, {
      runs: params.runs,
      runTime: params.runTime,
    });
    for (const r of results) (out[r.backend]![r.size] ??= []).push(r.microseconds);
  }
  return out;
}

/** The median µs of one `encryptBytes()` of `size` bytes with `backend`, over `runs` runs. */
async function timeSeal(
  backend: MeasuredBackend,
  size: number,
  runs: number,
  runTime: number,
): Promise<number> {
  const fernet = new Fernet(generateKey(), { backend });
  const data = new Uint8Array(size).map((_, i) => (i * 31) & 0xff);
  return await timePerOp(() => fernet.encryptBytes(data), runs, runTime);
}

/**
 * One seal (encrypt alone) of the largest size per backend and round
 * (inside the client process): the part of the computed 1 MiB floor that
 * lies on a call's critical path twice.
 */
export async function clientSeal(params: FernetParams): Promise<FernetTimes> {
  const size = Math.max(...params.sizes);
  const out: FernetTimes = { node: { [size]: [] }, webcrypto: { [size]: [] } };
  for (let round = 0; round < params.rounds; round++) {
    for (const backend of ["node", "webcrypto"] as const) {
      out[backend]![size]!.push(await timeSeal(backend, size, params.runs, params.runTime));
    }
  }
  return out;
}

const PYTHON_SCRIPT = `
import json, statistics, sys, timeit
try:
    import cryptography
    from cryptography.fernet import Fernet
except ImportError as error:
    print(json.dumps({"error": str(error)}))
    sys.exit(0)
sizes = [int(s) for s in sys.argv[1].split(",")]
rounds, runs, run_time = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]) / 1000
f = Fernet(Fernet.generate_key())
out = {}
for size in sizes:
    data = bytes((i * 31) & 0xFF for i in range(size))
    timer = timeit.Timer(lambda: f.decrypt(f.encrypt(data)))
    number = 1
    while True:
        elapsed = timer.timeit(number)
        if elapsed >= run_time / 4:
            number = max(1, round(number * run_time / elapsed))
            break
        number *= 2
    out[size] = [
        statistics.median(timer.repeat(repeat=runs, number=number)) / number * 1e6
        for _ in range(rounds)
    ]
print(json.dumps({"version": cryptography.__version__, "python": sys.version.split()[0], "times": out}))
`;

async function runPython(ctx: Context, params: FernetParams) {
  const args = [
    "-c",
    PYTHON_SCRIPT,
    params.sizes.join(","),
    String(params.rounds),
    String(params.runs),
    String(params.runTime),
  ];
  let lastError = "python3 is not installed";
  for (const python of ["python3", "/usr/bin/python3"]) {
    try {
      await using proc = spawnCommand(ctx.placement, python, args, {
        side: "client",
        label: python,
      });
      let line: string;
      try {
        line = `{${await proc.line("{", 300_000)}`;
      } catch (error) {
        lastError = `${python} failed: ${(error as Error).message.slice(-300)}`;
        continue;
      }
      const parsed = JSON.parse(line);
      if (parsed.error) {
        lastError = `${python} has no cryptography package (${parsed.error})`;
        continue;
      }
      return {
        times: parsed.times as Record<string, number[]>,
        version: `Python ${parsed.python}, cryptography ${parsed.version}`,
      };
    } catch (error) {
      lastError = `${python}: ${(error as Error).message}`;
    }
  }
  return { error: lastError };
}

/** Measures our backends (in a client process) and Python. */
export async function runFernet(ctx: Context): Promise<FernetResult> {
  const params: FernetParams = { ...ctx.plan.fernet, rounds: ctx.plan.rounds };
  ctx.log("fernet: ours");
  const ours = await runClient<FernetTimes>(ctx, "fernet", params);
  ctx.log("fernet: seal alone");
  const seal = await runClient<FernetTimes>(ctx, "fernet-seal", params);
  ctx.log("fernet: python");
  const python = await runPython(ctx, params);
  if ("error" in python) {
    return { ours, seal, python: null, pythonVersion: null, pythonNote: python.error };
  }
  return {
    ours,
    seal,
    python: python.times,
    pythonVersion: python.version,
    pythonNote: "Python's Fernet API adds base64 encoding and decoding; ours is raw tokens",
  };
}
