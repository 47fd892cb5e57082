/**
 * The relay cluster (issue 12): relays on a NATS backplane (one
 * `nats-server` with JetStream, its store in a temporary directory removed
 * after) acting as one.
 *
 * - **Cross-relay calls**: two clustered relays A and B; a serving node on
 *   B and the measuring caller on A, each with `maxRemotes: 1`, so neither
 *   joins the other's relay and every call crosses the backplane (checked:
 *   the caller sees the target through A only, the target answers `whoami`
 *   with B). Latency and calls/s as the `relayed` rows, compared with the
 *   same run's `relayed` (same relay) and NATS request-reply figures. Then
 *   **interleaved rounds** of 100 B calls by the same caller: across the
 *   backplane, to a second serving node on relay A (same relay), and NATS
 *   request-reply through the cluster's nats-server (a `worker_nats.ts`
 *   responder); each round times the three one after the other, so a
 *   machine that slows down or speeds up during the run weighs on all
 *   three alike. The cluster's target is judged on these.
 * - **Idle nodes**: `relays` clustered relays with `nodesPerRelay` raw idle
 *   nodes each (`worker_idle.ts`, networks of `IDLE_GROUP` spread over the
 *   relays: node `i` registers at relay `i % relays`); each relay's VmRSS
 *   growth per node, the nats-server's, the time the registrations took
 *   and the CPU each process spent on them; then one standalone relay with
 *   `nodesPerRelay` of the same nodes, the comparison.
 *
 * Every process runs on its side's core (`proc.ts`); every wait is bounded.
 *
 * @module
 */

import { Node } from "../mod.ts";
import {
  type Call,
  interleave,
  type LatencyPlan,
  measureLatency,
  measureThroughput,
  type PathResult,
  payload,
  type ThroughputPlan,
} from "./measure.ts";
import { importNats, natsEchoCall } from "./deps.ts";
import { natsAvailable, spawnNatsResponder } from "./nats.ts";
import { echoCall, until } from "./peerbase.ts";
import type { Context } from "./plan.ts";
import {
  freePort,
  type Proc,
  readCpuSeconds,
  runClient,
  settledRss,
  sleep,
  spawnCommand,
  spawnWorker,
  stopAll,
} from "./proc.ts";
import { spawnRelayWorker } from "./relay_load.ts";
import { DEFAULT_KEEPALIVE_TICK } from "../lib/options.ts";

/** Longest a nats-server, or a clustered relay, may take to be ready, ms. */
const START_MS = 20_000;

/**
 * Longest an idle process may take to register its nodes at clustered
 * relays, ms. Each directory write costs nats-server time in proportion to
 * the watches open on the bucket (one per relay and network), so 4 × 5,000
 * nodes on one shared core take minutes; the workers' lifetime (10 min)
 * bounds it too.
 */
export const CLUSTER_REGISTER_MS = 480_000;

// ---- Caller side (inside worker_client.ts) ----

/** Parameters of {@linkcode callerCrossRelay}. */
export interface CrossRelayParams {
  network: string;
  target: string;
  /** The caller's relay (A). */
  relay: string;
  /** The target's relay (B): `whoami` must answer it. */
  targetRelay: string;
  /** A serving node on the caller's relay (A), for the interleaved same-relay calls. */
  localTarget: string;
  /** Port of the cluster's nats-server, where a responder echoes {@linkcode NATS_ECHO_SUBJECT}. */
  natsPort: number;
  latency: LatencyPlan;
  throughput: ThroughputPlan;
  /** Interleaved rounds (each times the three paths one after the other). */
  pairedRounds: number;
}

/** 100 B p50 per interleaved round, ms, of each path. */
export interface PairedRounds {
  /** Caller on relay A, target on relay B: across the backplane. */
  cross: number[];
  /** Caller and target both on relay A. */
  sameRelay: number[];
  /** NATS request-reply through the cluster's nats-server. */
  nats: number[];
}

/** Cross-relay figures, and the relays the calls were seen to take. */
export interface CrossRelayResult extends PathResult {
  /** The relays through which the caller sees the target (A only). */
  callerRelays: string[];
  /** The relay the target's `whoami` answered through (B). */
  targetRelay: string;
  /** The interleaved rounds (absent from runs before they existed). */
  paired?: PairedRounds;
}

/**
 * Latency and calls/s of `echo` from a caller on relay A to a target on
 * relay B; throws when a call would not cross the backplane.
 */
export async function callerCrossRelay(params: CrossRelayParams): Promise<CrossRelayResult> {
  await using node = new Node({
    name: "caller",
    network: params.network,
    networkKey: Deno.env.get("PEERBASE_KEY") ?? "",
    hostname: "127.0.0.1",
    useLocal: false,
    servers: [params.relay],
    maxRemotes: 1,
  });
  await node.start();
  const peer = () => node.peers.find((p) => p.name === params.target);
  await until(() => (peer()?.relays.length ?? 0) > 0, `peer ${params.target} on relay A`);
  const callerRelays = [...peer()!.relays];
  const targetRelay = await node.command("whoami", { target: params.target, raiseErrors: true });
  if (callerRelays.join() !== params.relay || targetRelay !== params.targetRelay) {
    throw new Error(
      `Cannot measure cross-relay calls: the caller sees the target through ${callerRelays.join()} (expected ${params.relay} only) and the target answers through ${targetRelay} (expected ${params.targetRelay})`,
    );
  }
  const call = echoCall(node, params.target);
  await call(payload(100));
  const latency = await measureLatency(call, params.latency);
  const throughput = await measureThroughput(call, params.throughput);
  await until(
    () => node.peers.some((p) => p.name === params.localTarget),
    `peer ${params.localTarget} on relay A`,
  );
  const local = await node.command("whoami", { target: params.localTarget, raiseErrors: true });
  if (local !== params.relay) {
    throw new Error(
      `Cannot measure same-relay calls: ${params.localTarget} answers through ${local} (expected ${params.relay})`,
    );
  }
  const plan = { ...params.latency, sizes: [100], rounds: 1 };
  const paired = await interleave(
    { cross: call, sameRelay: echoCall(node, params.localTarget), nats: await natsEcho(params) },
    params.pairedRounds,
    async (path) => (await measureLatency(path, plan))[100]!.p50[0]!,
  );
  return { latency, throughput, callerRelays, targetRelay, paired };
}

/** A NATS request-reply echo through the cluster's nats-server; the connection closes with the process. */
async function natsEcho(params: CrossRelayParams): Promise<Call> {
  const { connect } = await importNats();
  return natsEchoCall(
    await connect({ servers: `127.0.0.1:${params.natsPort}`, name: "bench-cluster" }),
  );
}

// ---- Bench side ----

/** A nats-server with JetStream on a free port, its configuration and store in `dir`. */
export interface NatsServer extends AsyncDisposable {
  readonly proc: Proc;
  readonly url: string;
  readonly port: number;
  readonly dir: string;
  /** Port of its HTTP monitoring (`/healthz`, `/jsz`). */
  readonly monitor: number;
}

/** What a nats-server's JetStream holds (its `/jsz`), and the API requests it served. */
export interface JetStreamStats {
  streams: number;
  consumers: number;
  messages: number;
  /** Bytes stored. */
  bytes: number;
  /** JetStream API requests served so far (consumer creations, key-value reads and writes). */
  api: number;
}

/** Reads `/jsz` of `server` (at most 2 s); null when it does not answer. */
export async function jetStreamStats(server: NatsServer): Promise<JetStreamStats | null> {
  try {
    const response = await fetch(`http://127.0.0.1:${server.monitor}/jsz`, {
      signal: AbortSignal.timeout(2000),
    });
    const jsz = await response.json();
    return {
      streams: jsz.streams,
      consumers: jsz.consumers,
      messages: jsz.messages,
      bytes: jsz.bytes,
      api: jsz.api?.total ?? 0,
    };
  } catch {
    return null;
  }
}

/**
 * Starts `binary` (nats-server) with JetStream, its store in a new
 * temporary directory; ready once `/healthz` answers 200 (at most
 * `START_MS`). Disposing of it stops the server and removes the directory.
 */
export async function startJetStream(ctx: Context, binary: string): Promise<NatsServer> {
  const dir = await Deno.makeTempDir({ prefix: "peerbase-bench-cluster-" });
  const [port, monitor] = [freePort(), freePort()];
  await Deno.writeTextFile(
    `${dir}/nats.conf`,
    `listen: "127.0.0.1:${port}"\nhttp: "127.0.0.1:${monitor}"\n` +
      `jetstream { store_dir: "${dir}/store" }\n`,
  );
  const proc = spawnCommand(ctx.placement, binary, ["-c", `${dir}/nats.conf`], {
    side: "server",
    label: "nats-server (JetStream)",
  });
  const server: NatsServer = {
    proc,
    url: `nats://127.0.0.1:${port}`,
    port,
    dir,
    monitor,
    async [Symbol.asyncDispose]() {
      proc.kill("SIGTERM");
      await proc.stop(3000);
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
  try {
    const end = Date.now() + START_MS;
    for (;;) {
      const healthy = await fetch(`http://127.0.0.1:${monitor}/healthz`, {
        signal: AbortSignal.timeout(1000),
      }).then(async (r) => (await r.body?.cancel(), r.ok), () => false);
      if (healthy) return server;
      if (proc.exited || Date.now() > end) {
        throw new Error(`Cannot start nats-server with JetStream: ${proc.stderr || "not healthy"}`);
      }
      await sleep(50);
    }
  } catch (error) {
    await server[Symbol.asyncDispose]();
    throw error;
  }
}

/** Spawns a relay (server core) in the cluster on `url`; resolves with it and its address. */
async function spawnClusterRelay(ctx: Context, url: string, label: string) {
  const proc = spawnRelayWorker(ctx, ["--cluster", url], { side: "server", label });
  return { proc, address: `127.0.0.1:${await proc.ready("ready ", START_MS)}` };
}

/** The relays of a cluster, started at once; the others are stopped when one fails. */
async function spawnClusterRelays(ctx: Context, url: string, count: number) {
  const started = await Promise.allSettled(
    Array.from({ length: count }, (_, i) => spawnClusterRelay(ctx, url, `cluster relay ${i}`)),
  );
  const relays = started.flatMap((s) => s.status === "fulfilled" ? [s.value] : []);
  const failed = started.find((s) => s.status === "rejected");
  if (failed) {
    await stopAll(relays.map((r) => r.proc));
    throw failed.reason;
  }
  return relays;
}

/** Cross-relay calls: the caller on relay A, the serving node on relay B. */
async function runCrossRelay(ctx: Context, binary: string): Promise<CrossRelayResult> {
  await using nats = await startJetStream(ctx, binary);
  const relays = await spawnClusterRelays(ctx, nats.url, 2);
  const network = `bench-cluster-${crypto.randomUUID().slice(0, 8)}`;
  const [a, b] = [relays[0]!.address, relays[1]!.address];
  const procs: Proc[] = [];
  const serve = async (name: string, relay: string, label: string) => {
    const proc = spawnWorker(ctx.placement, "worker_node.ts", [
      ...["--name", name, "--network", network, "--servers", relay],
      ...["--local", "0", "--max-remotes", "1"],
    ], { side: "server", env: { PEERBASE_KEY: ctx.key }, label });
    procs.push(proc);
    await proc.line("ready ");
  };
  try {
    await serve("server", b, "node server (relay B)");
    await serve("local", a, "node local (relay A)");
    procs.push(await spawnNatsResponder(ctx, nats.port, "nats responder (cluster's nats-server)"));
    const { latency, throughput, cluster } = ctx.plan;
    return await runClient<CrossRelayResult>(
      ctx,
      "cross-relay",
      {
        network,
        target: "server",
        relay: a,
        targetRelay: b,
        localTarget: "local",
        natsPort: nats.port,
        latency: { ...latency, sizes: cluster.sizes },
        throughput: { ...throughput, inflight: cluster.inflight },
        pairedRounds: cluster.pairedRounds,
      } satisfies CrossRelayParams,
    );
  } finally {
    await stopAll([...procs, ...relays.map((r) => r.proc)]);
  }
}

/** RSS (bytes) before and after the idle nodes, and CPU seconds spent while they registered. */
export interface IdleProcess {
  before: number;
  after: number;
  cpu: number;
}

/** Idle nodes registered at a set of relays: what each process paid, and how long it took. */
export interface IdleRun {
  /** Per relay. */
  relays: IdleProcess[];
  /** The nats-server (absent for a standalone relay). */
  nats: IdleProcess | null;
  /** Nodes asked for, and registered. */
  nodes: number;
  registered: number;
  /** From the first dial to the last node registered (the slowest idle process), ms. */
  registerMs: number;
  /** The nats-server's JetStream before and after the nodes (null: standalone, or no answer). */
  jetstream: { before: JetStreamStats | null; after: JetStreamStats | null } | null;
}

/** The `cluster` section's figures, or why it could not run. */
export interface ClusterResult {
  /** nats-server's version, when found. */
  version: string | null;
  crossRelay: CrossRelayResult | null;
  /** `relays` clustered relays with `nodesPerRelay` idle nodes each. */
  clustered: IdleRun | null;
  /** One standalone relay with `nodesPerRelay` of the same idle nodes. */
  standalone: IdleRun | null;
  nodesPerRelay: number;
  /** Why the section did not run, or null. */
  unmeasured: string | null;
}

/**
 * Registers `nodes` idle nodes spread over `relays` (node `i` at relay
 * `i % relays.length`, networks of `IDLE_GROUP`), and reads what each
 * relay and the nats-server (`nats`) grew by, once settled, and the CPU
 * they spent until the last node registered.
 */
async function idleRun(
  ctx: Context,
  relays: { proc: Proc; address: string }[],
  nats: NatsServer | null,
  nodes: number,
  tag: string,
): Promise<IdleRun> {
  const servers = [...relays.map((r) => r.proc), ...(nats ? [nats.proc] : [])];
  await sleep(300);
  const jetstream = nats ? await jetStreamStats(nats) : null;
  const before = await Promise.all(servers.map((p) => settledRss(p.pid, 3000)));
  const cpu = await Promise.all(servers.map((p) => readCpuSeconds(p.pid)));
  const ports = relays.map((r) => r.address.split(":").at(-1)!);
  // Two processes from 1,000 nodes, as the relay section: 128 registrations in flight at most.
  const processes = nodes >= 1000 ? 2 : 1;
  const share = Math.ceil(nodes / processes);
  const idle: Proc[] = [];
  try {
    for (let p = 0; p < processes; p++) {
      idle.push(spawnWorker(ctx.placement, "worker_idle.ts", [
        ...["--kind", "peerbase", "--port", ports[0]!, "--ports", ports.join(",")],
        ...["--count", String(Math.min(share, nodes - p * share)), "--prefix", `${tag}${p}`],
        ...["--tick", String(DEFAULT_KEEPALIVE_TICK), "--ms", String(CLUSTER_REGISTER_MS)],
      ], { side: "client", label: `idle ${tag}${p}` }));
    }
    const ready = await Promise.all(
      idle.map((c) => c.line("ready ", CLUSTER_REGISTER_MS + 10_000)),
    );
    const spent = await Promise.all(
      servers.map((p, i) => readCpuSeconds(p.pid).then((s) => s - cpu[i]!)),
    );
    const took = await Promise.all(idle.map((c) => c.line("took ")));
    await sleep(ctx.plan.settleMs);
    const after = await Promise.all(servers.map((p) => settledRss(p.pid, 10_000)));
    const measured = servers.map((_, i) => ({
      before: before[i]!,
      after: after[i]!,
      cpu: spent[i]!,
    }));
    return {
      relays: measured.slice(0, relays.length),
      nats: nats ? measured.at(-1)! : null,
      nodes,
      registered: ready.reduce((sum, n) => sum + Number(n), 0),
      registerMs: Math.max(...took.map(Number)),
      jetstream: nats ? { before: jetstream, after: await jetStreamStats(nats) } : null,
    };
  } finally {
    await stopAll(idle);
  }
}

/** Clustered relays under idle nodes, then one standalone relay under `nodesPerRelay` of them. */
async function runIdle(ctx: Context, binary: string) {
  const { relays: count, nodesPerRelay } = ctx.plan.cluster;
  let clustered: IdleRun;
  {
    await using nats = await startJetStream(ctx, binary);
    const relays = await spawnClusterRelays(ctx, nats.url, count);
    try {
      ctx.log(`cluster: ${count} relays × ${nodesPerRelay} idle nodes`);
      clustered = await idleRun(ctx, relays, nats, count * nodesPerRelay, "cluster");
    } finally {
      await stopAll(relays.map((r) => r.proc));
    }
  }
  ctx.log(`cluster: a standalone relay × ${nodesPerRelay} idle nodes`);
  const proc = spawnRelayWorker(ctx, [], { side: "server", label: "standalone relay" });
  try {
    const address = `127.0.0.1:${await proc.line("ready ")}`;
    const standalone = await idleRun(ctx, [{ proc, address }], null, nodesPerRelay, "alone");
    return { clustered, standalone };
  } finally {
    await proc.stop();
  }
}

/** The `cluster` section; `unmeasured` says why when nats-server or npm `nats` is missing. */
export async function runCluster(ctx: Context): Promise<ClusterResult> {
  const { nodesPerRelay } = ctx.plan.cluster;
  const none = { crossRelay: null, clustered: null, standalone: null, nodesPerRelay };
  const server = await natsAvailable();
  if ("reason" in server) return { version: null, ...none, unmeasured: server.reason };
  ctx.log("cluster: cross-relay calls");
  const crossRelay = await runCrossRelay(ctx, server.binary);
  const { clustered, standalone } = await runIdle(ctx, server.binary);
  return {
    version: server.version,
    crossRelay,
    clustered,
    standalone,
    nodesPerRelay,
    unmeasured: null,
  };
}
