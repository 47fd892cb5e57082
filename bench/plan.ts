/**
 * How much each mode measures: `full` (the published figures), `quick`
 * (under a minute), `smoke` (just proves every part still runs; for the test).
 *
 * @module
 */

import { DEFAULT_MAX_FRAME_SIZE } from "../lib/frame.ts";
import { DEFAULT_REPLAY_WINDOW } from "../lib/options.ts";
import type { LatencyPlan, ThroughputPlan } from "./measure.ts";
import type { Placement } from "./proc.ts";
import type { TlsFiles } from "./tls.ts";

/** A bench mode. */
export type Mode = "full" | "quick" | "smoke";

/** The payload sizes of latency figures, bytes. */
export const SIZES: readonly number[] = [100, 65_536, 1_048_576];

/** Calls in flight of throughput figures. */
export const INFLIGHT: readonly number[] = [1, 16, 64];

/** Peers a fan-out call reaches. */
export const FANOUT_PEERS = 8;

/** Idle nodes per network in the relay-memory figures (a relay tells each member about the others). */
export const IDLE_GROUP = 10;

/** The sleeping handler of the caller-CPU figure, ms. */
export const SLOW_CALL_MS = 2000;

/** Slow calls waited on at once in the caller-CPU figure. */
export const SLOW_CALLS = 8;

/** The `hol` section's large call: the largest payload that fits the default 16 MiB frame, bytes. */
export const HOL_BIG_SIZE: number = DEFAULT_MAX_FRAME_SIZE - 4096;

/** Everything a mode sets. */
export interface Plan {
  mode: Mode;
  rounds: number;
  latency: LatencyPlan;
  throughput: ThroughputPlan;
  fernet: { sizes: number[]; runs: number; runTime: number };
  failoverRuns: number;
  /** Runs of the `failover-silent` section (a relay's packets dropped, no FIN). */
  silentFailoverRuns: number;
  discoveryRuns: number;
  idleCounts: number[];
  cpuWindowMs: number;
  /** Pause before reading a server's settled memory, ms. */
  settleMs: number;
  waitRounds: number;
  /** Registrations timed per round and transport, one after another, and untimed ones first. */
  register: { count: number; warmup: number };
  /** Admission signatures and verifications timed per round (in one process). */
  proofs: number;
  /**
   * The `attack` section: key-less connections declaring a 16 MiB frame
   * (`partial`), writing its body for `sendMs`; and connections that never
   * send a byte (`idle`). Full and quick take the counts.
   */
  attack: { partial: number; idle: number; sendMs: number };
  /**
   * The `soak` section: `inflight` calls of `size` bytes through a relay for
   * `ms`, RSS sampled every `sampleMs`; afterwards the serving node's RSS is
   * followed for at most `recoveryMs` (the replay window in a full run, where
   * alone the return is judged).
   */
  soak: {
    ms: number;
    inflight: number;
    size: number;
    sampleMs: number;
    settleMs: number;
    recoveryMs: number;
  };
  /**
   * The `hol` section: per round, 100 B p50 with the link idle (`idleMs`,
   * the latency plan's counts), then while one `HOL_BIG_SIZE` call after
   * another runs on the same link, and in the control phase on another link
   * (each `loadedMs`, at least `loadedMinCalls`).
   */
  hol: { rounds: number; idleMs: number; loadedMs: number; loadedMinCalls: number };
  /**
   * Rounds of the `paired` section: each times the direct, relayed, HTTP and
   * NATS paths in turn (a multiple of 4 gives each path every place in the
   * order, and every path before it, equally often: `interleave`).
   */
  pairedRounds: number;
  /**
   * The `cluster` section: cross-relay calls (the latency plan at `sizes`,
   * the throughput plan at `inflight`), then `relays` clustered relays
   * with `nodesPerRelay` idle nodes each, and one standalone relay with
   * `nodesPerRelay` of the same idle nodes.
   */
  cluster: {
    sizes: number[];
    inflight: number[];
    relays: number;
    nodesPerRelay: number;
    /** Interleaved rounds of cross-relay, same-relay and NATS calls (a multiple of 6: `interleave`). */
    pairedRounds: number;
  };
}

/** The plan of `mode`, with `rounds` overriding its default round count. */
export function planFor(mode: Mode, rounds?: number): Plan {
  const r = rounds ?? { full: 5, quick: 3, smoke: 1 }[mode];
  const maxMs = { full: 1000, quick: 120, smoke: 40 }[mode];
  return {
    mode,
    rounds: r,
    latency: {
      sizes: [...SIZES],
      rounds: r,
      maxCalls: { full: 5000, quick: 1000, smoke: 50 }[mode],
      minCalls: { full: 20, quick: 5, smoke: 2 }[mode],
      maxMs,
      warmup: { full: 50, quick: 10, smoke: 2 }[mode],
    },
    throughput: {
      inflight: [...INFLIGHT],
      rounds: r,
      ms: { full: 1000, quick: 150, smoke: 50 }[mode],
      size: 100,
    },
    fernet: {
      sizes: [...SIZES],
      runs: { full: 5, quick: 3, smoke: 1 }[mode],
      runTime: { full: 100, quick: 25, smoke: 5 }[mode],
    },
    failoverRuns: { full: 10, quick: 3, smoke: 1 }[mode],
    silentFailoverRuns: { full: 7, quick: 3, smoke: 1 }[mode],
    discoveryRuns: { full: 10, quick: 5, smoke: 2 }[mode],
    idleCounts: mode === "full" ? [1000, 10_000] : mode === "quick" ? [1000] : [100],
    cpuWindowMs: { full: 10_000, quick: 2000, smoke: 500 }[mode],
    settleMs: { full: 2000, quick: 1000, smoke: 300 }[mode],
    waitRounds: { full: 3, quick: 1, smoke: 1 }[mode],
    // A relay verifies at most 200 proofs per second per source address, with a burst of
    // 1000: every round of one transport stays within that burst (each gets its own relay).
    register: {
      count: { full: 150, quick: 100, smoke: 5 }[mode],
      warmup: { full: 20, quick: 10, smoke: 1 }[mode],
    },
    proofs: { full: 1000, quick: 300, smoke: 10 }[mode],
    attack: mode === "smoke"
      ? { partial: 8, idle: 200, sendMs: 500 }
      : { partial: 48, idle: 4000, sendMs: 2000 },
    soak: {
      ms: { full: 120_000, quick: 20_000, smoke: 2000 }[mode],
      inflight: 64,
      size: 100,
      sampleMs: 500,
      settleMs: mode === "smoke" ? 1000 : 3000,
      recoveryMs: { full: DEFAULT_REPLAY_WINDOW, quick: 10_000, smoke: 2000 }[mode],
    },
    hol: {
      rounds: rounds ?? { full: 3, quick: 2, smoke: 1 }[mode],
      idleMs: maxMs,
      loadedMs: { full: 3000, quick: 1500, smoke: 500 }[mode],
      loadedMinCalls: { full: 10, quick: 5, smoke: 2 }[mode],
    },
    pairedRounds: { full: 8, quick: 8, smoke: 4 }[mode],
    cluster: {
      sizes: [100, 65_536],
      inflight: [1, 64],
      relays: 4,
      nodesPerRelay: { full: 5000, quick: 1000, smoke: 50 }[mode],
      pairedRounds: { full: 12, quick: 6, smoke: 6 }[mode],
    },
  };
}

/** What every section needs. */
export interface Context {
  plan: Plan;
  placement: Placement;
  /** The network key of every peerbase process of this run. */
  key: string;
  /** Prints progress on stderr. */
  log: (message: string) => void;
  /** The run's throw-away CA and server certificate, made on first use (needs `openssl`). */
  tls: () => Promise<TlsFiles>;
}
