// deno-lint-ignore-file no-console
/**
 * Memory under attack before trust: a relay and a serving node's direct-call
 * port, each against key-less connections, their VmRSS as a ratio to the
 * same process's idle baseline ("Memory: bytes received, never bytes
 * declared" in `docs/PROTOCOL.md`).
 *
 * Two scenarios, each on a fresh target process (so that one cannot leave
 * the other a grown heap), after its RSS settled (the baseline):
 *
 * - `partial`: connections that each declare a 16 MiB frame (a REGISTER at
 *   a relay, a DATA frame at a node) and then write its body, up to all but
 *   its last byte, for a bounded time; before trust a frame above 4096
 *   bytes is refused at its header (GOAWAY 2).
 * - `idle`: connections that never send a byte; each must show trust within
 *   5000 ms or be closed (GOAWAY 6), so none is open after that deadline.
 *
 * The floor of the idle scenario is a bare Deno TCP server (`worker_echo.ts`,
 * 1 KiB reads) under as many silent connections, held
 * {@linkcode FLOOR_HOLD_MS}: what a connection costs any Deno server.
 *
 * The attacker is a `worker_client.ts` process on the client core (tasks
 * `attack-partial`, `attack-idle`); the bench samples the target's RSS
 * every {@linkcode SAMPLE_MS} while it runs (the peak), and once settled
 * after it exited.
 *
 * @module
 */

import { TRUST_DEADLINE } from "../lib/connection.ts";
import { openFileLimit } from "../lib/connection_gate.ts";
import { decodeGoaway, FrameDecoder, FrameType, PROTOCOL_VERSION } from "../lib/frame.ts";
import type { Context } from "./plan.ts";
import { type Proc, readRss, settledRss, sleep, spawnWorker, stopAll } from "./proc.ts";
import { spawnRelayWorker } from "./relay_load.ts";

/** Bytes a partial frame declares: the default maximum frame size, 16 MiB. */
export const DECLARED = 16 * 1024 * 1024;

/** How often the target's RSS is sampled while the attacker runs, ms. */
const SAMPLE_MS = 50;

/** Connections dialled at once by the attacker. */
const CONNECT_CONCURRENCY = 64;

/** Bytes of the body written per write. */
const CHUNK = 64 * 1024;

/** How long after the last connection opened the attacker counts those still open, ms. */
export const IDLE_HOLD_MS = TRUST_DEADLINE + 2000;

/** How long the silent connections to the floor server are held (it has no deadline), ms. */
const FLOOR_HOLD_MS = 1000;

/** Open files the bench keeps besides the idle connections (the process's own, a margin). */
const FD_MARGIN = 200;

// ---- Attacker side (inside worker_client.ts) ----

/** What the attacker saw of its connections. */
export interface AttackerResult {
  /** Connections that were established. */
  opened: number;
  /** Connections the target closed (EOF or reset) before the attacker did. */
  cut: number;
  /** GOAWAY close codes received, code → connections. */
  goaway: Record<string, number>;
  /** Most bytes one connection wrote, header included. */
  maxSent: number;
  /** Shortest and longest life of a cut connection, from connect to close, ms. */
  lifeMs: { min: number; max: number } | null;
  /** From the first dial to the last connection established, ms. */
  openMs: number;
}

/** Parameters of {@linkcode attackPartial} and {@linkcode attackIdle}. */
export interface AttackParams {
  port: number;
  count: number;
  /** Partial: frame type of the declared frame. */
  type?: number;
  /** Partial: how long the bodies are written, ms; idle: how long the connections are held, ms. */
  ms: number;
}

/** One attacking connection: reads until the target closes it, noting its GOAWAY. */
class Victim {
  readonly conn: Deno.Conn;
  readonly openedAt = performance.now();
  closedAt: number | null = null;
  goaway: number | null = null;
  sent = 0;
  readonly done: Promise<void>;
  #closedByUs = false;

  constructor(conn: Deno.Conn) {
    this.conn = conn;
    this.done = this.#read();
  }

  async #read(): Promise<void> {
    const decoder = new FrameDecoder(64 * 1024);
    const buffer = new Uint8Array(4096);
    try {
      for (;;) {
        const n = await this.conn.read(buffer);
        if (n === null) break;
        for (const frame of decoder.push(buffer.subarray(0, n))) {
          if (frame.type === FrameType.GOAWAY) this.goaway = decodeGoaway(frame.body).code;
        }
      }
    } catch {
      // Reset, or closed by us.
    }
    if (!this.#closedByUs) this.closedAt = performance.now();
    this.close();
  }

  close(): void {
    if (this.closedAt === null) this.#closedByUs = true;
    try {
      this.conn.close();
    } catch {
      // Already closed.
    }
  }
}

/** Dials `count` connections, 64 at a time, until `end`. */
async function dial(port: number, count: number, end: number): Promise<Victim[]> {
  const out: Victim[] = [];
  let next = 0;
  const lane = async () => {
    while (next < count && Date.now() < end) {
      next++;
      try {
        out.push(new Victim(await Deno.connect({ hostname: "127.0.0.1", port })));
      } catch {
        // Refused: counted as not opened.
      }
    }
  };
  await Promise.all(Array.from({ length: CONNECT_CONCURRENCY }, lane));
  return out;
}

function summarizeVictims(victims: Victim[], openMs: number): AttackerResult {
  const goaway: Record<string, number> = {};
  const lives: number[] = [];
  for (const v of victims) {
    if (v.goaway !== null) goaway[v.goaway] = (goaway[v.goaway] ?? 0) + 1;
    if (v.closedAt !== null) lives.push(v.closedAt - v.openedAt);
  }
  return {
    opened: victims.length,
    cut: lives.length,
    goaway,
    maxSent: Math.max(0, ...victims.map((v) => v.sent)),
    lifeMs: lives.length > 0 ? { min: Math.min(...lives), max: Math.max(...lives) } : null,
    openMs,
  };
}

/** The header of a frame of `type` whose length field declares {@linkcode DECLARED} bytes in all. */
function partialHeader(type: number): Uint8Array {
  const header = new Uint8Array(19);
  const view = new DataView(header.buffer);
  view.setUint32(0, DECLARED - 4);
  header[4] = PROTOCOL_VERSION;
  header[5] = type;
  view.setUint32(12, 1); // id 1; network, target and sender empty
  return header;
}

/**
 * Writes the declared frame on `v` until all but its last byte are out, it
 * is cut, or `deadline` (which resolves -1) comes.
 */
async function writePartial(v: Victim, header: Uint8Array, deadline: Promise<number>) {
  const body = new Uint8Array(CHUNK);
  let pending = header;
  let over = false;
  void deadline.then(() => over = true);
  while (v.closedAt === null && !over) {
    const left = DECLARED - 1 - v.sent;
    if (left <= 0) return;
    if (pending.length === 0) pending = body.subarray(0, Math.min(CHUNK, left));
    const n = await Promise.race([v.conn.write(pending).catch(() => -1), deadline]);
    if (n < 0) return;
    v.sent += n;
    pending = pending.subarray(n);
  }
}

/**
 * `count` connections each declaring a 16 MiB frame and writing its body
 * for at most `ms`; then closes them all.
 */
export async function attackPartial(params: AttackParams): Promise<AttackerResult> {
  const start = Date.now();
  const victims = await dial(params.port, params.count, start + 10_000);
  const openMs = Date.now() - start;
  const deadline = sleep(params.ms).then(() => -1);
  const header = partialHeader(params.type ?? FrameType.DATA);
  await Promise.all(victims.map((v) => writePartial(v, header, deadline)));
  // A moment for the target's GOAWAY of a frame cut at its end to arrive.
  await Promise.race([Promise.all(victims.map((v) => v.done)), sleep(200)]);
  const result = summarizeVictims(victims, openMs);
  for (const v of victims) v.close();
  await Promise.all(victims.map((v) => v.done));
  return result;
}

/**
 * `count` connections that never send a byte, held `ms` after the last
 * one opened; then closes those still open.
 */
export async function attackIdle(params: AttackParams): Promise<AttackerResult> {
  const start = Date.now();
  const victims = await dial(params.port, params.count, start + 30_000);
  const openMs = Date.now() - start;
  console.log(`opened ${victims.length}`);
  await Promise.race([Promise.all(victims.map((v) => v.done)), sleep(params.ms)]);
  const result = summarizeVictims(victims, openMs);
  for (const v of victims) v.close();
  await Promise.all(victims.map((v) => v.done));
  return result;
}

// ---- Bench side ----

/** One scenario on one target. Bytes. */
export interface AttackScenario {
  /** RSS once started and settled, before the attack. */
  baseline: number;
  /** Highest RSS sampled while the attacker ran. */
  peak: number;
  /** RSS settled after the attacker exited. */
  after: number;
  /** Connections asked for. */
  connections: number;
  attacker: AttackerResult;
}

/** The scenarios of one target; a missing one is in {@linkcode AttackResult.unmeasured}. */
export interface AttackTarget {
  partial?: AttackScenario;
  idle?: AttackScenario;
}

/** The `attack` section. */
export interface AttackResult {
  relay: AttackTarget;
  node: AttackTarget;
  /** The floor: a bare Deno TCP server under the idle scenario's silent connections. */
  floor?: AttackScenario;
  /** The bench process's open-file soft limit (its children inherit it), or null. */
  openFileLimit: number | null;
  /** `target.scenario` → why it was not measured. */
  unmeasured: Record<string, string>;
}

type Target = "relay" | "node" | "floor";
type Scenario = "partial" | "idle";

/** A fresh target process and the port its attacker dials. */
async function startTarget(ctx: Context, target: Target): Promise<{ proc: Proc; port: number }> {
  const proc = target === "relay"
    ? spawnRelayWorker(ctx, [], { side: "server", label: "relay (attack)" })
    : target === "floor"
    ? spawnWorker(ctx.placement, "worker_echo.ts", ["--mode", "echo", "--read-size", "1024"], {
      side: "server",
      label: "echo (attack floor)",
    })
    : spawnWorker(ctx.placement, "worker_node.ts", [
      "--name",
      "target",
      "--network",
      `bench-attack-${crypto.randomUUID().slice(0, 8)}`,
      // Every attacking connection comes from 127.0.0.1: lift the per-address cap, as many sources would.
      "--per-address",
      "1000000",
    ], { side: "server", env: { PEERBASE_KEY: ctx.key }, label: "node (attack)" });
  try {
    const ready = await proc.line("ready ");
    // The relay and the echo print their port; the node its name and its direct-call address.
    const port = Number(target === "node" ? ready.split(" ")[1]?.split(":").at(-1) : ready);
    if (!Number.isInteger(port) || port <= 0) {
      throw new Error(`Cannot attack the ${target}: no port in its line 'ready ${ready}'`);
    }
    return { proc, port };
  } catch (error) {
    await proc.stop();
    throw error;
  }
}

/** Highest RSS of `pid` sampled until `done` settles (at most `ms`). */
async function peakRss(pid: number, done: Promise<unknown>, ms: number): Promise<number> {
  let finished = false;
  void done.finally(() => finished = true).catch(() => {});
  let peak = await readRss(pid);
  const end = Date.now() + ms;
  while (!finished && Date.now() < end) {
    await sleep(SAMPLE_MS);
    peak = Math.max(peak, await readRss(pid));
  }
  return peak;
}

async function runScenario(
  ctx: Context,
  target: Target,
  scenario: Scenario,
): Promise<AttackScenario> {
  const { attack } = ctx.plan;
  const count = scenario === "partial" ? attack.partial : attack.idle;
  const procs: Proc[] = [];
  try {
    const server = await startTarget(ctx, target);
    procs.push(server.proc);
    await sleep(300);
    const baseline = await settledRss(server.proc.pid, 3000);
    const params: AttackParams = scenario === "partial"
      ? {
        port: server.port,
        count,
        type: target === "relay" ? FrameType.REGISTER : FrameType.DATA,
        ms: attack.sendMs,
      }
      : { port: server.port, count, ms: target === "floor" ? FLOOR_HOLD_MS : IDLE_HOLD_MS };
    const attacker = spawnWorker(ctx.placement, "worker_client.ts", [
      "--task",
      `attack-${scenario}`,
      "--params",
      JSON.stringify(params),
    ], { side: "client", label: `attacker ${scenario}` });
    procs.push(attacker);
    const limit = 60_000;
    const result = attacker.result<AttackerResult>(limit);
    const peak = await peakRss(server.proc.pid, result, limit);
    const got = await result;
    await attacker.stop();
    const after = await settledRss(server.proc.pid, 5000);
    return { baseline, peak, after, connections: count, attacker: got };
  } finally {
    await stopAll(procs);
  }
}

/** Every scenario on a relay and on a node; one that fails is noted and the others go on. */
export async function runAttack(ctx: Context): Promise<AttackResult> {
  const limit = openFileLimit();
  const result: AttackResult = { relay: {}, node: {}, openFileLimit: limit, unmeasured: {} };
  const runs = [
    ["relay", "partial"],
    ["relay", "idle"],
    ["node", "partial"],
    ["node", "idle"],
    ["floor", "idle"],
  ] as const;
  const needed = ctx.plan.attack.idle + FD_MARGIN;
  for (const [target, scenario] of runs) {
    const id = target === "floor" ? "floor" : `${target}.${scenario}`;
    if (scenario === "idle" && limit !== null && limit < needed) {
      result.unmeasured[id] =
        `the open-file limit (ulimit -n) is ${limit}, below the ${needed} this needs; raise it`;
      continue;
    }
    ctx.log(`attack: ${target}, ${scenario}`);
    try {
      const run = await runScenario(ctx, target, scenario);
      if (target === "floor") result.floor = run;
      else result[target][scenario] = run;
    } catch (error) {
      result.unmeasured[id] = (error as Error).message;
    }
  }
  return result;
}
