// deno-lint-ignore-file no-console
/**
 * The `soak` section (issue 11): a caller keeps 64 calls of 100 B in flight
 * through a relay to a serving node for 2 minutes (`--quick` 20 s, `--smoke`
 * 2 s), while the bench reads the VmRSS of the caller, the serving node
 * (the target) and the relay every 500 ms. Three processes: the relay and
 * the target on the server core, the caller (`worker_client.ts`, task
 * `soak`) on the client core; caller and target are remote-only, so every
 * call crosses the relay.
 *
 * Before the load the target's and the relay's RSS settle (their idle
 * figures). When the load stops the caller stays connected and idle, and
 * the bench follows the target's RSS until it is within
 * {@linkcode SOAK_RETURN_MARGIN} of its idle figure or the recovery wait is
 * over: the replay window (60 s) in a full run, where alone that return is
 * judged; `--quick` and `--smoke` wait 10 s and 2 s and report what they saw.
 *
 * @module
 */

import { DEFAULT_REPLAY_WINDOW } from "../lib/options.ts";
import { type Figure, figure, formatNumber, type Target } from "./report.ts";
import { type Call, payload } from "./measure.ts";
import { callerNode, echoCall, spawnNode, spawnRelay, until } from "./peerbase.ts";
import type { Context, Mode } from "./plan.ts";
import { type Proc, readRss, settledRss, sleep, spawnWorker, stopAll } from "./proc.ts";

/** The most RSS a serving node may reach during the soak (the issue's target), bytes. */
export const SOAK_PEAK_LIMIT = 160 * 1024 * 1024;

/** How close to its idle RSS a serving node must come back after the load, bytes. */
export const SOAK_RETURN_MARGIN = 32 * 1024 * 1024;

/** Distinct error messages of failed calls kept for the report. */
const KEPT_ERRORS = 3;

const MIB = 1024 * 1024;

// ---- Caller side (inside worker_client.ts) ----

/** Parameters of {@linkcode callerSoak}. */
export interface SoakParams {
  network: string;
  target: string;
  /** Relay addresses; the caller is remote-only. */
  servers: string[];
  /** Calls kept in flight. */
  inflight: number;
  /** Payload, bytes. */
  size: number;
  /** How long the load runs, ms. */
  ms: number;
  /** How long the caller then stays connected and idle (the bench stops it sooner), ms. */
  holdMs: number;
}

/** What the caller counted. */
export interface SoakLoad {
  /** How long the load ran, from the first call to the last answer, ms. */
  ms: number;
  /** Calls answered. */
  calls: number;
  /** Calls that failed (error or timeout). */
  failed: number;
  /** Calls answered in each second of the load. */
  perSecond: number[];
  /** The first distinct messages of failed calls. */
  errors: string[];
}

/** Keeps `inflight` calls going until `ms` is over; counts answers and failures. */
async function load(call: Call, params: SoakParams): Promise<SoakLoad> {
  const data = payload(params.size);
  const perSecond = new Array<number>(Math.ceil(params.ms / 1000)).fill(0);
  const errors = new Set<string>();
  let [calls, failed] = [0, 0];
  const start = performance.now();
  const end = start + params.ms;
  const lane = async () => {
    while (performance.now() < end) {
      try {
        await call(data);
        calls++;
        const second = Math.floor((performance.now() - start) / 1000);
        if (second < perSecond.length) perSecond[second]!++;
      } catch (error) {
        failed++;
        if (errors.size < KEPT_ERRORS) errors.add((error as Error).message);
        await sleep(1); // a call failing at once must not spin the lane
      }
    }
  };
  await Promise.all(Array.from({ length: params.inflight }, lane));
  return { ms: performance.now() - start, calls, failed, perSecond, errors: [...errors] };
}

/**
 * Runs the load, prints `loaded <json>` when it stops, then stays connected
 * and idle for `holdMs` (the bench reads the target's RSS meanwhile).
 */
export async function callerSoak(params: SoakParams): Promise<SoakLoad> {
  await using node = callerNode(params.network, params.servers);
  await node.start();
  await until(
    () => node.peers.some((p) => p.name === params.target && p.relays.length > 0),
    `peer ${params.target} through the relay`,
  );
  const call = echoCall(node, params.target);
  await call(payload(params.size));
  const result = await load(call, params);
  console.log(`loaded ${JSON.stringify(result)}`);
  await sleep(params.holdMs);
  return result;
}

// ---- Bench side ----

/** RSS of one process: before the load (settled), its peak and its last sample during the load. */
export interface SoakRss {
  /** Settled before the caller started (the caller has none), bytes. */
  idle: number | null;
  /** Highest sample from the caller's start to the end of the load, bytes. */
  peak: number;
  /** Last sample before the load stopped, bytes. */
  end: number;
}

/** The `soak` section. */
export interface SoakResult {
  inflight: number;
  size: number;
  /** What the caller counted. */
  load: SoakLoad;
  caller: SoakRss;
  target: SoakRss;
  relay: SoakRss;
  /** RSS samples from the caller's start to the end of the load (about every 500 ms), MiB. */
  series: Record<Who, number[]>;
  /** The target after the load, the caller still connected. */
  after: {
    /** How long the bench waited at most, ms (the replay window in a full run). */
    waitMs: number;
    /** From the end of the load until the target was within the margin of idle, ms; null: never. */
    backMs: number | null;
    /** The target's last RSS sample, bytes. */
    rss: number;
    /** True when the return is judged (a full run). */
    judged: boolean;
  };
}

/** The three processes, and how the report names them. */
type Who = "caller" | "target" | "relay";
const WHO: readonly [Who, string][] = [
  ["caller", "caller"],
  ["target", "serving node"],
  ["relay", "relay"],
];

/**
 * Samples RSS of every process every `every` ms until `done` settles (at
 * most `ms`); per process the samples in MiB, 0.1 MiB apart (0: unreadable).
 */
async function sampleRss(
  pids: Record<Who, number>,
  done: Promise<unknown>,
  every: number,
  ms: number,
): Promise<Record<Who, number[]>> {
  let finished = false;
  void done.finally(() => finished = true).catch(() => {});
  const series: Record<Who, number[]> = { caller: [], target: [], relay: [] };
  const stop = Date.now() + ms;
  while (!finished && Date.now() < stop) {
    const read = await Promise.all(
      WHO.map(([who]) => readRss(pids[who]).catch(() => 0)),
    );
    // A sample taken after the load stopped is not the load's.
    if (finished) break;
    WHO.forEach(([who], i) => series[who].push(Math.round(read[i]! / MIB * 10) / 10));
    await Promise.race([sleep(every), done.catch(() => {})]);
  }
  return series;
}

/** Follows `pid`'s RSS until it is at most `bound` or `ms` is over. */
async function waitBack(
  pid: number,
  bound: number,
  every: number,
  ms: number,
): Promise<{ backMs: number | null; rss: number }> {
  const start = performance.now();
  for (;;) {
    const rss = await readRss(pid);
    const elapsed = performance.now() - start;
    if (rss <= bound) return { backMs: elapsed, rss };
    if (elapsed >= ms) return { backMs: null, rss };
    await sleep(Math.min(every, ms - elapsed));
  }
}

/** The soak: relay, target and caller, RSS while loaded and after. */
export async function runSoak(ctx: Context): Promise<SoakResult> {
  const { soak } = ctx.plan;
  const net = `bench-soak-${crypto.randomUUID().slice(0, 8)}`;
  const procs: Proc[] = [];
  try {
    const relay = await spawnRelay(ctx);
    procs.push(relay.proc);
    const target = await spawnNode(ctx, "target", net, [relay.address]);
    procs.push(target);
    const [targetIdle, relayIdle] = await Promise.all(
      [target.pid, relay.proc.pid].map((pid) => settledRss(pid, soak.settleMs)),
    );
    const params: SoakParams = {
      network: net,
      target: "target",
      servers: [relay.address],
      inflight: soak.inflight,
      size: soak.size,
      ms: soak.ms,
      holdMs: soak.recoveryMs + 30_000,
    };
    const caller = spawnWorker(ctx.placement, "worker_client.ts", [
      "--task",
      "soak",
      "--params",
      JSON.stringify(params),
    ], { side: "client", env: { PEERBASE_KEY: ctx.key }, label: "caller soak" });
    procs.push(caller);
    const limit = soak.ms + 60_000;
    const loaded = caller.line("loaded ", limit);
    const pids = { caller: caller.pid, target: target.pid, relay: relay.proc.pid };
    const series = await sampleRss(pids, loaded, soak.sampleMs, limit);
    const result = JSON.parse(await loaded) as SoakLoad;
    if (series.target.length === 0) {
      throw new Error("Cannot report the soak's RSS: no sample was taken during the load");
    }
    ctx.log(`soak: ${result.calls} calls, ${result.failed} failed; now the serving node's RSS`);
    const back = await waitBack(
      target.pid,
      targetIdle! + SOAK_RETURN_MARGIN,
      soak.sampleMs,
      soak.recoveryMs,
    );
    const of = (who: Who, idle: number | null): SoakRss => ({
      idle,
      peak: Math.max(0, ...series[who]) * MIB,
      end: (series[who].at(-1) ?? 0) * MIB,
    });
    return {
      inflight: soak.inflight,
      size: soak.size,
      load: result,
      caller: of("caller", null),
      target: of("target", targetIdle!),
      relay: of("relay", relayIdle!),
      series,
      after: { waitMs: soak.recoveryMs, ...back, judged: ctx.plan.mode === "full" },
    };
  } finally {
    await stopAll(procs);
  }
}

// ---- Report ----

function mib(bytes: number | null | undefined): number[] {
  return bytes == null ? [] : [bytes / MIB];
}

function rate(soak: SoakResult): number {
  return soak.load.calls / (soak.load.ms / 1000);
}

/** The soak rows: rate, calls, failures, each process's RSS (idle as the floor), the return. */
export function soakFigures(soak: SoakResult | undefined): Figure[] {
  const seconds = soak ? `${Math.round(soak.load.ms / 1000)} s` : "";
  const what = `soak through a relay${
    soak ? ` (${soak.inflight} in flight, ${soak.size} B, ${seconds})` : ""
  }`;
  const out: Figure[] = [
    figure("soak.rps", `${what}: calls/s`, "calls/s", soak ? [rate(soak)] : []),
    {
      ...figure("soak.calls", "soak: calls answered", "calls", soak ? [soak.load.calls] : []),
      better: "higher",
    },
    figure("soak.failed", "soak: failed calls", "calls", soak ? [soak.load.failed] : []),
  ];
  for (const [who, name] of WHO) {
    const run = soak?.[who];
    const idle = run?.idle == null ? null : run.idle / MIB;
    if (who !== "caller") {
      out.push(
        figure(`soak.rss.${who}.idle`, `soak: ${name} RSS idle, before`, "MiB", mib(run?.idle)),
      );
    }
    for (const [stat, label] of [["peak", "peak"], ["end", "at the end of the load"]] as const) {
      out.push(figure(
        `soak.rss.${who}.${stat}`,
        `soak: ${name} RSS ${label}`,
        "MiB",
        mib(run?.[stat]),
        idle,
        idle === null ? null : "idle, before the load",
      ));
    }
  }
  const after = soak?.after;
  out.push(figure(
    "soak.rss.target.after",
    `soak: serving node RSS after the load (last sample${
      after ? `, at most ${after.waitMs / 1000} s` : ""
    })`,
    "MiB",
    mib(after?.rss),
    soak ? soak.target.idle! / MIB : null,
    "idle, before the load",
  ));
  out.push(figure(
    "soak.back",
    `soak: serving node back within ${SOAK_RETURN_MARGIN / MIB} MiB of idle after`,
    "s",
    after?.backMs == null ? [] : [after.backMs / 1000],
  ));
  return out;
}

/** The soak targets: the serving node's peak, its return to idle (judged in full runs), no failed call. */
export function soakTargets(soak: SoakResult | undefined, mode: Mode): Target[] {
  const seconds = soak ? ` (${Math.round(soak.load.ms / 1000)} s)` : "";
  const peak = soak ? soak.target.peak / MIB : null;
  const limit = SOAK_PEAK_LIMIT / MIB;
  const after = soak?.after;
  const seen = after
    ? after.backMs === null
      ? `not back in ${after.waitMs / 1000} s, +${
        formatNumber((after.rss - soak!.target.idle!) / MIB)
      } MiB`
      : `back in ${formatNumber(after.backMs / 1000)} s`
    : "";
  return [
    {
      id: "soak.rss.target.peak",
      label: `soak${seconds}: serving node peak RSS ≤ ${limit} MiB`,
      unit: "MiB",
      value: peak,
      limit,
      comparison: "<=",
      pass: peak === null ? null : peak <= limit,
      note: soak ? "" : "not run",
    },
    {
      id: "soak.back",
      label: `soak: serving node within ${
        SOAK_RETURN_MARGIN / MIB
      } MiB of idle RSS within the replay window (${DEFAULT_REPLAY_WINDOW / 1000} s)`,
      unit: "s",
      value: after ? (after.backMs ?? after.waitMs) / 1000 : null,
      limit: DEFAULT_REPLAY_WINDOW / 1000,
      comparison: "<=",
      pass: after?.judged ? after.backMs !== null : null,
      note: !after ? "not run" : after.judged ? seen : `full run only; ${mode}: ${seen}`,
    },
    {
      id: "soak.failed",
      label: "soak: failed calls = 0",
      unit: "calls",
      value: soak ? soak.load.failed : null,
      limit: 0,
      comparison: "<=",
      pass: soak ? soak.load.failed === 0 : null,
      note: soak ? soak.load.errors.join("; ") : "not run",
    },
  ];
}

/** The soak as one paragraph under the table. */
export function formatSoak(soak: SoakResult): string {
  const l = soak.load;
  const slowest = l.perSecond.length > 0 ? Math.min(...l.perSecond) : 0;
  const rss = ([who, name]: [Who, string]) => {
    const r = soak[who];
    const idle = r.idle === null ? "" : `idle ${formatNumber(r.idle / MIB)}, `;
    return `${name} ${idle}peak ${formatNumber(r.peak / MIB)}, end ${formatNumber(r.end / MIB)}`;
  };
  const a = soak.after;
  const back = a.backMs === null
    ? `NOT back within ${SOAK_RETURN_MARGIN / MIB} MiB of idle after ${a.waitMs / 1000} s (${
      formatNumber(a.rss / MIB)
    } MiB)`
    : `back within ${SOAK_RETURN_MARGIN / MIB} MiB of idle after ${
      formatNumber(a.backMs / 1000)
    } s (${formatNumber(a.rss / MIB)} MiB)`;
  return [
    `soak: ${
      formatNumber(l.ms / 1000)
    } s through a relay, ${soak.inflight} in flight, ${soak.size} B: ${
      l.calls.toLocaleString("en")
    } calls (${formatNumber(rate(soak))} calls/s, slowest second ${
      slowest.toLocaleString("en")
    }), ${l.failed} failed${l.errors.length > 0 ? ` (${l.errors.join("; ")})` : ""}`,
    `  RSS MiB (${soak.series.target.length} samples): ${WHO.map(rss).join("; ")}`,
    `  after the load (caller connected, idle): serving node ${back}${
      a.judged
        ? ""
        : `; judged in a full run only (replay window ${DEFAULT_REPLAY_WINDOW / 1000} s)`
    }`,
  ].join("\n");
}
