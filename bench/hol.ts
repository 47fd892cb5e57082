/**
 * The `hol` section (issue 11), head-of-line blocking: does a large call
 * hold up small calls on the same link? Per path (direct, and relayed
 * through one relay), one caller process (`worker_client.ts`, task `hol`,
 * client core) with two caller nodes, and one serving process (server core,
 * with the relay) with two serving nodes (`worker_node.ts --twin`); per
 * round the first caller times 100 B `echo` calls one at a time to the
 * first serving node, first with the link idle, then in two busy phases in
 * turn (their order alternates from round to round): while it keeps one
 * {@linkcode HOL_BIG_SIZE} `echo` (the largest payload that fits the default
 * 16 MiB frame, echoed back) running on its own link, a new one as soon as
 * the last is answered ("loaded"), and while the second caller keeps the
 * same large calls running to the second serving node, on another link
 * between the same two processes ("control"). The row is loaded p50 / idle
 * p50, per round; the target is at most {@linkcode HOL_BOUND}. The control
 * tells the link's part from the processes' share of their cores: with the
 * large calls on another link, nothing can wait behind them on the small
 * calls' link.
 *
 * @module
 */

import {
  type Call,
  type LatencyPlan,
  type LatencyResult,
  measureLatency,
  payload,
} from "./measure.ts";
import { callerNode, echoCall, spawnNode, spawnRelay, untilReachable } from "./peerbase.ts";
import { type Context, HOL_BIG_SIZE } from "./plan.ts";
import { type Proc, runClient, sleep, stopAll } from "./proc.ts";
import { type Figure, figure, formatNumber, type Target } from "./report.ts";
import { median } from "./stats.ts";

export { HOL_BIG_SIZE };

/** The bound: 100 B p50 while a large call runs ≤ 2 × idle p50. */
export const HOL_BOUND = 2;

/**
 * How often the control's second caller sends an untimed small call on its
 * own link, ms: often enough that its large messages are paced as the
 * loaded phase's are (docs/PROTOCOL.md, "Chunks": a large message asks for
 * acknowledgements when the link wrote a batch within the last 100 ms, so
 * this must stay under 100), rarely enough to cost next to nothing.
 */
const PACE_EVERY_MS = 50;

/** Payload of the small calls, bytes. */
const SMALL = 100;

// ---- Caller side (inside worker_client.ts) ----

/** Parameters of {@linkcode callerHol}. */
export interface HolParams {
  network: string;
  target: string;
  /** The serving process's second node: the control's large calls go to it, from a second caller. */
  twin: string;
  /** Relay addresses for a remote-only caller; empty: direct on the LAN. */
  servers: string[];
  /** Payload of the large calls, bytes. */
  bigSize: number;
  rounds: number;
  /** The small calls' counts and warm-up (`sizes`, `rounds` and `maxMs` are set here). */
  latency: LatencyPlan;
  /** Wall time of the idle phase per round, ms. */
  idleMs: number;
  /** Wall time of the loaded phase per round, ms. */
  loadedMs: number;
  /** Fewest small calls timed in the loaded phase (within 4 × `loadedMs`). */
  loadedMinCalls: number;
}

/** One path's rounds. */
export interface HolPath {
  /** 100 B p50 with the link idle, per round, ms. */
  idle: number[];
  /** 100 B p50 while large calls run on the link, per round, ms. */
  loaded: number[];
  /** 100 B p50 while the same large calls run on another link between the same processes, per round, ms. */
  control: number[];
  /** Small calls timed per round: idle, loaded, and in the control phase. */
  idleCalls: number[];
  loadedCalls: number[];
  controlCalls: number[];
  /** Large calls answered per round (each overlapped the loaded phase). */
  big: number[];
  /** Large calls answered per round in the control phase (on the other link). */
  controlBig: number[];
  /** Time of every large call of the loaded phases, ms. */
  bigMs: number[];
}

/** Calls kept running by {@linkcode keepBusy}. */
export interface Busy {
  /** Stops them; resolves with their times, or rejects with the error of the one that failed. */
  stop(): Promise<number[]>;
  /** Aborted, with the error, as soon as one fails. */
  failed: AbortSignal;
}

/**
 * Keeps one `call(data)` running until stopped, each started as soon as the
 * last is answered but no sooner than `everyMs` after the last started.
 */
export function keepBusy(call: Call, data: Uint8Array, everyMs = 0): Busy {
  let stop = false;
  const times: number[] = [];
  const failed = new AbortController();
  const running = (async () => {
    while (!stop) {
      const start = performance.now();
      await call(data);
      const took = performance.now() - start;
      times.push(took);
      if (took < everyMs && !stop) await sleep(everyMs - took);
    }
  })();
  // A failed call ends the loop and says so at once; stop() then rejects with its error.
  running.catch((error) => {
    stop = true;
    failed.abort(error);
  });
  return {
    stop: async () => {
      stop = true;
      await running;
      return times;
    },
    failed: failed.signal,
  };
}

/** The small calls' p50 and count, and the large calls answered, of one busy phase. */
export interface BusyPhase {
  p50: number;
  calls: number;
  big: number[];
}

/**
 * Times small calls with `call` while `bigCall` keeps large calls running;
 * untimed small calls first, so that no phase inherits the last one's
 * aftermath. The large calls stop whatever happens. When one of them (or
 * one of `pacer`'s calls) fails, no further small call starts, and the
 * phase rejects with that failure once the calls in flight are done, also
 * when a small call failed with it (their link gone, say).
 */
export async function busyPhase(
  call: Call,
  bigCall: Call,
  big: Uint8Array,
  params: Pick<HolParams, "latency" | "loadedMs" | "loadedMinCalls">,
  pacer?: Busy,
): Promise<BusyPhase> {
  const small = payload(SMALL);
  if (pacer?.failed.aborted) throw pacer.failed.reason;
  for (let i = 0; i < params.latency.warmup; i++) await call(small);
  if (pacer?.failed.aborted) throw pacer.failed.reason;
  const busy = keepBusy(bigCall, big);
  const failed = pacer ? AbortSignal.any([busy.failed, pacer.failed]) : busy.failed;
  let timed: LatencyResult;
  try {
    timed = await measureLatency(call, {
      ...params.latency,
      sizes: [SMALL],
      rounds: 1,
      warmup: 0,
      maxMs: params.loadedMs,
      minCalls: params.loadedMinCalls,
    }, failed);
  } catch (error) {
    await busy.stop().catch(() => {});
    throw failed.aborted ? failed.reason : error; // The load's failure is the cause.
  }
  const bigTimes = await busy.stop(); // Rejects with a large call's failure.
  if (failed.aborted) throw failed.reason; // The pacer's.
  return { p50: timed[SMALL]!.p50[0]!, calls: timed[SMALL]!.calls[0]!, big: bigTimes };
}

/**
 * Idle, loaded and control 100 B p50, round after round: the loaded phase
 * on the small calls' own link, the control with the large calls on
 * another link between the same processes.
 */
export async function callerHol(params: HolParams): Promise<HolPath> {
  const relayed = params.servers.length > 0;
  await using node = callerNode(params.network, params.servers);
  await using second = callerNode(params.network, params.servers, "caller2");
  await node.start();
  await second.start();
  await untilReachable(node, params.target, relayed);
  await untilReachable(second, params.twin, relayed);
  const call = echoCall(node, params.target);
  const controlCall = echoCall(second, params.twin);
  const big = payload(params.bigSize);
  const small = payload(SMALL);
  // Untimed: one large call on each link (it proves one fits), and before each phase a few small
  // calls, so that no figure includes the aftermath of a large call.
  await call(big);
  await controlCall(big);
  const plan = { ...params.latency, sizes: [SMALL], rounds: 1, warmup: 0 };
  const out: HolPath = {
    idle: [],
    loaded: [],
    control: [],
    idleCalls: [],
    loadedCalls: [],
    controlCalls: [],
    big: [],
    controlBig: [],
    bigMs: [],
  };
  for (let round = 0; round < params.rounds; round++) {
    for (let i = 0; i < params.latency.warmup; i++) await call(small);
    const idle = (await measureLatency(call, { ...plan, maxMs: params.idleMs }))[SMALL]!;
    // The busy phases take turns going first, so neither always follows the other (the loaded
    // one first in the first round). In the control, the second caller also sends an untimed small
    // call every PACE_EVERY_MS on its own link: alone there, its large messages would not be paced
    // and would run faster than the loaded phase's, a heavier load.
    const loadedFirst = round % 2 === 0;
    const loadedPhase = async () => {
      const phase = await busyPhase(call, call, big, params);
      out.bigMs.push(...phase.big);
      return phase;
    };
    const controlPhase = async () => {
      const pace = keepBusy(controlCall, small, PACE_EVERY_MS);
      let phase: BusyPhase;
      try {
        phase = await busyPhase(call, controlCall, big, params, pace);
      } catch (error) {
        await pace.stop().catch(() => {}); // The phase's own error says what went wrong.
        throw error;
      }
      await pace.stop();
      return phase;
    };
    const earlier = loadedFirst ? await loadedPhase() : undefined;
    const control = await controlPhase();
    const loaded = earlier ?? await loadedPhase();
    out.idle.push(idle.p50[0]!);
    out.idleCalls.push(idle.calls[0]!);
    out.loaded.push(loaded.p50);
    out.loadedCalls.push(loaded.calls);
    out.control.push(control.p50);
    out.controlCalls.push(control.calls);
    out.big.push(loaded.big.length);
    out.controlBig.push(control.big.length);
  }
  return out;
}

// ---- Bench side ----

/** The `hol` section: each path, or why it was not measured. */
export interface HolResult {
  bigSize: number;
  direct?: HolPath;
  relayed?: HolPath;
  /** Path → why it was not measured. */
  unmeasured: Record<string, string>;
}

function holParams(ctx: Context, network: string, servers: string[]): HolParams {
  const { hol } = ctx.plan;
  return {
    network,
    target: "target",
    twin: "target2",
    servers,
    bigSize: HOL_BIG_SIZE,
    rounds: hol.rounds,
    latency: ctx.plan.latency,
    idleMs: hol.idleMs,
    loadedMs: hol.loadedMs,
    loadedMinCalls: hol.loadedMinCalls,
  };
}

async function runPath(ctx: Context, relayed: boolean): Promise<HolPath> {
  const net = `bench-hol-${crypto.randomUUID().slice(0, 8)}`;
  const procs: Proc[] = [];
  try {
    const relay = relayed ? await spawnRelay(ctx) : null;
    if (relay) procs.push(relay.proc);
    const servers = relay ? [relay.address] : [];
    procs.push(await spawnNode(ctx, "target", net, servers, { twin: "target2" }));
    return await runClient<HolPath>(ctx, "hol", holParams(ctx, net, servers), 300_000);
  } finally {
    await stopAll(procs);
  }
}

/** Both paths; one that fails is noted and the other still runs. */
export async function runHol(ctx: Context): Promise<HolResult> {
  const result: HolResult = { bigSize: HOL_BIG_SIZE, unmeasured: {} };
  for (const path of ["direct", "relayed"] as const) {
    ctx.log(`hol: ${path}`);
    try {
      result[path] = await runPath(ctx, path === "relayed");
    } catch (error) {
      result.unmeasured[path] = (error as Error).message;
    }
  }
  return result;
}

// ---- Report ----

const PATHS = ["direct", "relayed"] as const;

function ratios(path: HolPath | undefined): number[] {
  return path ? path.loaded.map((l, i) => l / path.idle[i]!) : [];
}

/** Loaded p50 ÷ the control's, per round. */
function linkRatios(path: HolPath | undefined): number[] {
  return path ? path.loaded.map((l, i) => l / path.control[i]!) : [];
}

/**
 * The hol rows per path: idle and loaded p50, their ratio per round, the
 * control's p50 and loaded ÷ control per round, the large calls.
 */
export function holFigures(hol: HolResult | undefined): Figure[] {
  const out: Figure[] = [];
  for (const id of PATHS) {
    const path = hol?.[id];
    const idle = path ? median(path.idle) : null;
    out.push(
      figure(`hol.${id}.idle.p50`, `head-of-line, ${id}: 100 B p50, link idle`, "ms", path?.idle),
    );
    out.push(figure(
      `hol.${id}.loaded.p50`,
      `head-of-line, ${id}: 100 B p50 while 16 MiB calls run on the link`,
      "ms",
      path?.loaded,
      idle,
      "100 B p50, link idle",
    ));
    out.push(
      figure(`hol.${id}.ratio`, `head-of-line, ${id}: loaded p50 / idle p50`, "×", ratios(path)),
    );
    out.push(figure(
      `hol.${id}.control.p50`,
      `head-of-line, ${id}: 100 B p50 while the 16 MiB calls run on another link (control)`,
      "ms",
      path?.control,
      idle,
      "100 B p50, link idle",
    ));
    out.push(figure(
      `hol.${id}.link`,
      `head-of-line, ${id}: loaded p50 / control p50 (the link's own part)`,
      "×",
      linkRatios(path),
    ));
    out.push({
      ...figure(
        `hol.${id}.big`,
        `head-of-line, ${id}: 16 MiB calls answered per round`,
        "calls",
        path?.big,
      ),
      better: "higher",
    });
    out.push(
      figure(
        `hol.${id}.big.p50`,
        `head-of-line, ${id}: 16 MiB call p50`,
        "ms",
        path ? [median(path.bigMs)] : [],
      ),
    );
  }
  return out;
}

/** The hol targets: per path, 100 B p50 while a 16 MiB call runs ≤ 2 × idle (median of the rounds' ratios). */
export function holTargets(hol: HolResult | undefined): Target[] {
  return PATHS.map((id) => {
    const values = ratios(hol?.[id]);
    const value = values.length > 0 ? median(values) : null;
    return {
      id: `hol.${id}`,
      label: `head-of-line, ${id}: 100 B p50 while a 16 MiB call runs ≤ ${HOL_BOUND}× idle`,
      unit: "×",
      value,
      limit: HOL_BOUND,
      comparison: "<=",
      pass: value === null ? null : value <= HOL_BOUND,
      note: value === null ? `not measured: ${hol?.unmeasured[id] ?? "not run"}` : "",
    };
  });
}

/** The hol section as lines under the table. */
export function formatHol(hol: HolResult): string {
  const lines = [
    `head-of-line: 100 B calls one at a time, idle and while one ${
      hol.bigSize.toLocaleString("en")
    } B call after another runs on the same link, and (control) on another link between the same processes:`,
  ];
  for (const id of PATHS) {
    const path = hol[id];
    if (!path) {
      lines.push(`  ${id}: NOT MEASURED: ${hol.unmeasured[id] ?? "not run"}`);
      continue;
    }
    const rounds = path.idle.map((idle, i) =>
      `${formatNumber(idle)} → ${formatNumber(path.loaded[i])} → ${
        formatNumber(path.control[i])
      } ms (${path.idleCalls[i]}/${path.loadedCalls[i]}/${path.controlCalls[i]} calls, ${
        path.big[i]
      }/${path.controlBig[i]} large)`
    );
    lines.push(
      `  ${id}: p50 idle → loaded → control per round: ${rounds.join("; ")}; 16 MiB call p50 ${
        formatNumber(median(path.bigMs))
      } ms`,
    );
  }
  return lines.join("\n");
}
