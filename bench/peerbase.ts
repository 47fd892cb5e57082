/**
 * peerbase figures: direct and relayed calls (latency per size, calls per
 * second in flight), relayed calls through a relay serving TLS or over its
 * WebSocket port, fan-out to 8
 * peers, relay failover (a relay killed; silent loss is
 * `failover_silent.ts`), LAN discovery, and the caller's CPU while it waits
 * on slow calls.
 *
 * The bench process spawns the serving side (`worker_node.ts`,
 * `worker_relay.ts`, on the server core) and a measuring caller
 * (`worker_client.ts`, on the client core), which runs the `caller*`
 * functions here and prints its result.
 *
 * @module
 */

import { Node, type NodeOptions } from "../mod.ts";
import {
  type Call,
  type LatencyPlan,
  type LatencyResult,
  measureLatency,
  measureThroughput,
  type PathResult,
  payload,
  type ThroughputPlan,
} from "./measure.ts";
import { type Context, FANOUT_PEERS, SLOW_CALL_MS, SLOW_CALLS } from "./plan.ts";
import { type Proc, readCpuSeconds, runClient, sleep, spawnWorker, stopAll } from "./proc.ts";
import type { TlsFiles } from "./tls.ts";
import { spawnRelayWorker } from "./relay_load.ts";

// ---- Caller side (inside worker_client.ts) ----

/** Parameters of {@linkcode callerPath}. */
export interface PathParams {
  network: string;
  target: string;
  /** Relay addresses for a remote-only caller; empty: direct on the LAN. */
  servers: string[];
  /** Trusted roots (PEM text) for `tls://` relays. */
  caCerts?: string[];
  latency: LatencyPlan;
  throughput: ThroughputPlan;
}

/** A caller node on `network`: on the LAN, or remote-only through `servers` (relay addresses). */
export function callerNode(
  network: string,
  servers: string[],
  name = "caller",
  caCerts: string[] = [],
): Node {
  const options: NodeOptions<Node> = {
    name,
    network,
    networkKey: Deno.env.get("PEERBASE_KEY") ?? "",
    hostname: "127.0.0.1",
  };
  if (servers.length > 0) Object.assign(options, { useLocal: false, servers });
  if (caCerts.length > 0) options.caCerts = caCerts;
  return new Node(options);
}

/** Polls until `ready()` holds; throws naming `what` after `ms`. */
export async function until(ready: () => boolean, what: string, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!ready()) {
    if (Date.now() > end) throw new Error(`Gave up waiting for ${what} after ${ms} ms`);
    await sleep(5);
  }
}

/** A call of `echo` on `target` that checks the answer's length (30 s timeout). */
export function echoCall(node: Node, target: string): Call {
  return async (data) => {
    const value = await node.command("echo", {
      target,
      args: [data],
      raiseErrors: true,
      timeout: 30_000,
    });
    if (!(value instanceof Uint8Array) || value.length !== data.length) {
      throw new Error(`echo from ${target} returned something else than the ${data.length} bytes`);
    }
  };
}

/**
 * Waits until `node` can reach `target`: through a relay when `relayed`,
 * else on the LAN.
 */
export async function untilReachable(node: Node, target: string, relayed: boolean): Promise<void> {
  await until(
    () => node.peers.some((p) => p.name === target && (relayed ? p.relays.length > 0 : p.local)),
    `peer ${target}`,
  );
}

/** Direct (LAN) or relayed latency and throughput of `echo` on one target. */
export async function callerPath(params: PathParams): Promise<PathResult> {
  await using node = callerNode(params.network, params.servers, "caller", params.caCerts);
  await node.start();
  await untilReachable(node, params.target, params.servers.length > 0);
  const call = echoCall(node, params.target);
  await call(payload(100));
  return {
    latency: await measureLatency(call, params.latency),
    throughput: await measureThroughput(call, params.throughput),
  };
}

/** Parameters of {@linkcode callerFanout}. */
export interface FanoutParams {
  network: string;
  peers: number;
  latency: LatencyPlan;
}

/** Latency of one `echo` call to every peer (`target: "*"`). */
export async function callerFanout(params: FanoutParams): Promise<LatencyResult> {
  await using node = callerNode(params.network, []);
  await node.start();
  await until(() => node.peers.filter((p) => p.local).length >= params.peers, "every peer");
  const call: Call = async (data) => {
    const answers = await node.command("echo", { args: [data], raiseErrors: true });
    if (Object.keys(answers).length !== params.peers) {
      throw new Error(`fan-out reached ${Object.keys(answers).length} of ${params.peers} peers`);
    }
  };
  await call(payload(100));
  return await measureLatency(call, params.latency);
}

/**
 * Time from a new node's `start()` until a running node has called it
 * successfully, ms, once per run. Both nodes live in this process.
 */
export async function callerDiscovery(params: { network: string; runs: number }) {
  const key = Deno.env.get("PEERBASE_KEY") ?? "";
  await using running = callerNode(params.network, [], "running");
  await running.start();
  const times: number[] = [];
  for (let run = 0; run < params.runs; run++) {
    const name = `joiner${run}`;
    await using joiner = new Node({
      name,
      network: params.network,
      networkKey: key,
      hostname: "127.0.0.1",
      commands: { echo: (_node, args) => args[0] ?? null },
    });
    const joined = new Promise<void>((resolve) => {
      const onJoin = (event: CustomEvent<{ name: string }>) => {
        if (event.detail.name !== name) return;
        running.removeEventListener("peerjoin", onJoin);
        resolve();
      };
      running.addEventListener("peerjoin", onJoin);
    });
    const start = performance.now();
    await joiner.start();
    await Promise.race([
      joined,
      sleep(10_000).then(() => Promise.reject(new Error(`${name} was never discovered`))),
    ]);
    for (let attempt = 0;; attempt++) {
      try {
        await running.command("echo", { target: name, args: [1], raiseErrors: true });
        break;
      } catch (error) {
        if (attempt >= 100) throw error;
        await sleep(2);
      }
    }
    times.push(performance.now() - start);
    await joiner.close();
    await sleep(50);
  }
  return times;
}

/** Parameters of {@linkcode callerFailover}. */
export interface FailoverParams {
  network: string;
  target: string;
  relays: { address: string; pid: number }[];
  /** How long the stream of calls runs before the kill, ms. */
  leadMs: number;
}

/** Result of one failover run. */
export interface FailoverResult {
  /** From SIGKILL of the relay carrying the calls to the next successful call, ms. */
  ms: number;
  /** The relay that was killed. */
  killed: string;
  /** Calls that failed during the switch. */
  failed: number;
}

/**
 * Streams calls through two relays, SIGKILLs the relay that carries them
 * (the one whose CPU time grows), and times until a call succeeds again.
 */
export async function callerFailover(params: FailoverParams): Promise<FailoverResult> {
  await using node = callerNode(params.network, params.relays.map((r) => r.address));
  await node.start();
  await until(
    () =>
      node.peers.some((p) => p.name === params.target && p.relays.length === params.relays.length),
    `peer ${params.target} on every relay`,
  );
  const data = payload(100);
  let killedAt = Infinity;
  let recovered = Infinity;
  let failed = 0;
  let stop = false;
  const stream = (async () => {
    const end = Date.now() + params.leadMs * 4 + 10_000;
    while (!stop && Date.now() < end) {
      try {
        await node.command("echo", {
          target: params.target,
          args: [data],
          raiseErrors: true,
          timeout: 5000,
        });
        const now = performance.now();
        if (now > killedAt && recovered === Infinity) {
          recovered = now;
          stop = true;
        }
      } catch {
        failed++;
        await sleep(1);
      }
    }
  })();
  try {
    await sleep(params.leadMs / 2);
    const before = await Promise.all(params.relays.map((r) => readCpuSeconds(r.pid)));
    await sleep(params.leadMs / 2);
    const after = await Promise.all(params.relays.map((r) => readCpuSeconds(r.pid)));
    const busiest = after.map((a, i) => a - before[i]!).reduce(
      (best, delta, i, all) => delta > all[best]! ? i : best,
      0,
    );
    const victim = params.relays[busiest]!;
    killedAt = performance.now();
    Deno.kill(victim.pid, "SIGKILL");
    await stream;
    if (recovered === Infinity) throw new Error("No call succeeded after the relay was killed");
    return { ms: recovered - killedAt, killed: victim.address, failed };
  } finally {
    stop = true;
    await stream;
  }
}

/** Parameters of {@linkcode callerWaitCpu}. */
export interface WaitCpuParams {
  network: string;
  target: string;
  rounds: number;
}

/** This process's CPU use, % of one core, while `SLOW_CALLS` calls of `sleep(2000)` are out. */
export async function callerWaitCpu(params: WaitCpuParams): Promise<number[]> {
  await using node = callerNode(params.network, []);
  await node.start();
  await until(() => node.peers.some((p) => p.name === params.target), `peer ${params.target}`);
  await node.command("echo", { target: params.target, args: [1], raiseErrors: true });
  const out: number[] = [];
  for (let round = 0; round < params.rounds; round++) {
    const cpu = await readCpuSeconds("self");
    const start = performance.now();
    await Promise.all(
      Array.from({ length: SLOW_CALLS }, () =>
        node.command("sleep", {
          target: params.target,
          args: [SLOW_CALL_MS],
          raiseErrors: true,
          timeout: SLOW_CALL_MS + 10_000,
        })),
    );
    const seconds = (performance.now() - start) / 1000;
    out.push(((await readCpuSeconds("self")) - cpu) / seconds * 100);
  }
  return out;
}

// ---- Bench side ----

/** What else {@linkcode spawnNode} gives the serving process. */
export interface NodeExtras {
  /** A PEM file of a CA to trust for `tls://` relays. */
  caFile?: string | undefined;
  /** A second node of this name in the same process, with the same options and commands. */
  twin?: string;
}

/** Spawns a serving node (see {@linkcode NodeExtras}); resolves once it is ready. */
export async function spawnNode(
  ctx: Context,
  name: string,
  network: string,
  servers: string[] = [],
  { caFile, twin }: NodeExtras = {},
): Promise<Proc> {
  const args = ["--name", name, "--network", network];
  if (servers.length > 0) args.push("--servers", servers.join(","), "--local", "0");
  if (caFile !== undefined) args.push("--ca", caFile);
  if (twin !== undefined) args.push("--twin", twin);
  const proc = spawnWorker(ctx.placement, "worker_node.ts", args, {
    side: "server",
    env: { PEERBASE_KEY: ctx.key },
    label: `node ${name}`,
  });
  await proc.ready("ready ");
  return proc;
}

/**
 * Spawns a relay, serving TLS with `tls`'s certificate when given, and
 * WebSocket links on a port of their own when `ws`; resolves with it and
 * the address nodes dial (`host:port`, `tls://host:port`, or with `ws`
 * `ws://host:port` or `wss://host:port`) once it listens.
 */
export async function spawnRelay(
  ctx: Context,
  tls?: TlsFiles,
  ws = false,
): Promise<{ proc: Proc; address: string }> {
  const args = tls ? ["--cert", tls.certFile, "--key", tls.keyFile] : [];
  if (ws) args.push("--ws-port", "0");
  const proc = spawnRelayWorker(ctx, args, {
    side: "server",
    label: `relay${tls ? " (TLS)" : ""}${ws ? " (WebSocket)" : ""}`,
  });
  const port = await proc.ready("ready ");
  if (ws) return { proc, address: `${tls ? "wss" : "ws"}://127.0.0.1:${await proc.ready("ws ")}` };
  return { proc, address: tls ? `tls://127.0.0.1:${port}` : `127.0.0.1:${port}` };
}

function network(tag: string): string {
  return `bench-${tag}-${crypto.randomUUID().slice(0, 8)}`;
}

/** Direct calls between two processes. */
export async function runDirect(ctx: Context): Promise<PathResult> {
  const net = network("direct");
  await using _server = await spawnNode(ctx, "server", net);
  return await runClient<PathResult>(
    ctx,
    "path",
    {
      network: net,
      target: "server",
      servers: [],
      latency: ctx.plan.latency,
      throughput: ctx.plan.throughput,
    } satisfies PathParams,
  );
}

/**
 * Calls between two remote-only processes through a relay process; with
 * `tls`, the relay serves TLS and both nodes dial it `tls://`; with `ws`,
 * both nodes dial its WebSocket port (`ws://`, or `wss://` with `tls`).
 */
export async function runRelayed(ctx: Context, tls?: TlsFiles, ws = false): Promise<PathResult> {
  const net = network(`relayed${tls ? "-tls" : ""}${ws ? "-ws" : ""}`);
  const relay = await spawnRelay(ctx, tls, ws);
  try {
    await using _server = await spawnNode(ctx, "server", net, [relay.address], {
      caFile: tls?.caFile,
    });
    return await runClient<PathResult>(
      ctx,
      "path",
      {
        network: net,
        target: "server",
        servers: [relay.address],
        ...(tls ? { caCerts: [tls.ca] } : {}),
        latency: ctx.plan.latency,
        throughput: ctx.plan.throughput,
      } satisfies PathParams,
    );
  } finally {
    await relay.proc.stop();
  }
}

/** Relayed calls through a relay serving TLS, with the run's throw-away certificate. */
export async function runRelayedTls(ctx: Context): Promise<PathResult> {
  return runRelayed(ctx, await ctx.tls());
}

/** Relayed calls over WebSocket links (`ws://`) of a relay serving `--ws-port`. */
export function runRelayedWs(ctx: Context): Promise<PathResult> {
  return runRelayed(ctx, undefined, true);
}

/** One call to 8 peers, each in its own process. */
export async function runFanout(ctx: Context): Promise<LatencyResult> {
  const net = network("fanout");
  const procs: Proc[] = [];
  try {
    const spawned = await Promise.allSettled(
      Array.from({ length: FANOUT_PEERS }, (_, i) => spawnNode(ctx, `peer${i}`, net)),
    );
    for (const s of spawned) if (s.status === "fulfilled") procs.push(s.value);
    const failure = spawned.find((s) => s.status === "rejected");
    if (failure) throw failure.reason;
    return await runClient<LatencyResult>(
      ctx,
      "fanout",
      {
        network: net,
        peers: FANOUT_PEERS,
        latency: { ...ctx.plan.latency, sizes: [100] },
      } satisfies FanoutParams,
    );
  } finally {
    await stopAll(procs);
  }
}

/** Failover runs: ms from SIGKILL of the carrying relay to the next successful call. */
export async function runFailover(ctx: Context): Promise<FailoverResult[]> {
  const out: FailoverResult[] = [];
  for (let run = 0; run < ctx.plan.failoverRuns; run++) {
    const net = network("failover");
    const relays: { proc: Proc; address: string }[] = [];
    let target: Proc | null = null;
    try {
      relays.push(...await Promise.all([spawnRelay(ctx), spawnRelay(ctx)]));
      target = await spawnNode(ctx, "target", net, relays.map((r) => r.address));
      out.push(
        await runClient<FailoverResult>(
          ctx,
          "failover",
          {
            network: net,
            target: "target",
            relays: relays.map((r) => ({ address: r.address, pid: r.proc.pid })),
            leadMs: ctx.plan.mode === "full" ? 600 : 300,
          } satisfies FailoverParams,
          60_000,
        ),
      );
    } finally {
      await stopAll([target, ...relays.map((r) => r.proc)]);
    }
  }
  return out;
}

/** LAN discovery runs, inside one caller process. */
export function runDiscovery(ctx: Context): Promise<number[]> {
  return runClient<number[]>(ctx, "discovery", {
    network: network("discovery"),
    runs: ctx.plan.discoveryRuns,
  });
}

/** Caller CPU while it waits on slow calls. */
export async function runWaitCpu(ctx: Context): Promise<number[]> {
  const net = network("wait");
  await using _server = await spawnNode(ctx, "sleeper", net);
  return await runClient<number[]>(
    ctx,
    "wait-cpu",
    {
      network: net,
      target: "sleeper",
      rounds: ctx.plan.waitRounds,
    } satisfies WaitCpuParams,
  );
}
