/**
 * Timing loops shared by every client (floor, peerbase, NATS): latency per
 * payload size and calls per second with a number of calls in flight. Each
 * loop is bounded in count and in time.
 *
 * @module
 */

import { percentile } from "./stats.ts";

/** One request-reply: sends `payload`, resolves when the whole answer is back. */
export type Call = (payload: Uint8Array) => Promise<unknown>;

/** Bounds of one latency round. */
export interface LatencyPlan {
  /** Payload sizes, bytes. */
  sizes: number[];
  /** Rounds; each yields one p50 and one p99 per size. */
  rounds: number;
  /** Most calls per round and size. */
  maxCalls: number;
  /** Fewest calls per round and size (unless `maxMs` runs out first). */
  minCalls: number;
  /** Wall time per round and size, ms. */
  maxMs: number;
  /** Untimed calls per size before the first round. */
  warmup: number;
}

/** Bounds of one throughput round. */
export interface ThroughputPlan {
  /** Calls kept in flight, e.g. [1, 16, 64]. */
  inflight: number[];
  /** Rounds per in-flight count. */
  rounds: number;
  /** Wall time of one round, ms. */
  ms: number;
  /** Payload size, bytes. */
  size: number;
}

/** Per size: the p50 and p99 of each round, ms, and the calls timed. */
export type LatencyResult = Record<string, { p50: number[]; p99: number[]; calls: number[] }>;

/** Per in-flight count: the calls per second of each round. */
export type ThroughputResult = Record<string, number[]>;

/** Latency and throughput of one call path. */
export interface PathResult {
  latency: LatencyResult;
  throughput: ThroughputResult;
}

/** A payload of `size` bytes with a fixed pattern. */
export function payload(size: number): Uint8Array {
  return new Uint8Array(size).map((_, i) => (i * 31 + 7) & 0xff);
}

/**
 * Times `call` for every size over several rounds. Once `signal` is
 * aborted (something the figure depends on failed), no further call is
 * made and what was timed is returned.
 */
export async function measureLatency(
  call: Call,
  plan: LatencyPlan,
  signal?: AbortSignal,
): Promise<LatencyResult> {
  const out: LatencyResult = {};
  for (const size of plan.sizes) {
    const data = payload(size);
    const warmEnd = performance.now() + plan.maxMs;
    for (let i = 0; i < plan.warmup && performance.now() < warmEnd && !signal?.aborted; i++) {
      await call(data);
    }
    const entry = { p50: [] as number[], p99: [] as number[], calls: [] as number[] };
    for (let round = 0; round < plan.rounds && !signal?.aborted; round++) {
      const samples: number[] = [];
      const end = performance.now() + plan.maxMs;
      const hardEnd = end + 3 * plan.maxMs; // minCalls never stretches a round beyond this
      while (samples.length < plan.maxCalls) {
        const now = performance.now();
        if (now >= hardEnd || (now >= end && samples.length >= plan.minCalls)) break;
        if (signal?.aborted) break;
        await call(data);
        samples.push(performance.now() - now);
      }
      entry.p50.push(percentile(samples, 50));
      entry.p99.push(percentile(samples, 99));
      entry.calls.push(samples.length);
    }
    out[String(size)] = entry;
  }
  return out;
}

/** Counts completed calls per second with `n` calls kept in flight. */
export async function measureThroughput(
  call: Call,
  plan: ThroughputPlan,
): Promise<ThroughputResult> {
  const data = payload(plan.size);
  const out: ThroughputResult = {};
  for (const n of plan.inflight) {
    const rates: number[] = [];
    // A short untimed burst first, so connections and buffers are warm.
    await runFor(call, data, n, Math.min(100, plan.ms / 4));
    for (let round = 0; round < plan.rounds; round++) {
      const start = performance.now();
      const done = await runFor(call, data, n, plan.ms);
      rates.push(done / ((performance.now() - start) / 1000));
    }
    out[String(n)] = rates;
  }
  return out;
}

async function runFor(call: Call, data: Uint8Array, n: number, ms: number): Promise<number> {
  const end = performance.now() + ms;
  let done = 0;
  const lane = async () => {
    while (performance.now() < end) {
      await call(data);
      done++;
    }
  };
  await Promise.all(Array.from({ length: n }, lane));
  return done;
}

/**
 * `rounds` rounds, each running `measure` once on every call of `calls`, in
 * a balanced order ({@linkcode balancedOrder}), so that a machine slowing
 * down or speeding up during the run weighs on every path alike; each
 * path's results in round order.
 */
export async function interleave<K extends string, T>(
  calls: Record<K, Call>,
  rounds: number,
  measure: (call: Call) => Promise<T>,
): Promise<Record<K, T[]>> {
  const paths = Object.keys(calls) as K[];
  const out = Object.fromEntries(paths.map((path) => [path, [] as T[]])) as Record<K, T[]>;
  for (let round = 0; round < rounds; round++) {
    for (const index of balancedOrder(paths.length, round)) {
      const path = paths[index]!;
      out[path].push(await measure(calls[path]));
    }
  }
  return out;
}

/**
 * The order of `n` paths in round `round`: a Williams design (a balanced
 * Latin square). Over `n` rounds (`2n` when `n` is odd) each path takes
 * every place equally often and, within a round, follows every other path
 * equally often, so neither the place in the order nor the load the path
 * before it left on the machine favours one path. A plain rotation balances
 * places only: each path would nearly always follow the same one. (Across
 * a round's end the next round's first path follows the same path each
 * time; that pair is not balanced.)
 */
export function balancedOrder(n: number, round: number): number[] {
  const base = [0];
  for (let low = 1, high = n - 1; base.length < n;) {
    base.push(base.length % 2 === 1 ? low++ : high--);
  }
  const row = base.map((index) => (index + round) % n);
  return n % 2 === 1 && Math.floor(round / n) % 2 === 1 ? row.reverse() : row;
}
