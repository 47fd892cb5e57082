/**
 * Like for like in interleaved rounds (issue 11): one caller process times a
 * direct peerbase call, a relayed one, a plain HTTP call and a NATS
 * request-reply in turn, round after round, in a balanced order
 * (`interleave` in `measure.ts`), after one untimed round of all four. Each
 * path gets one 100 B latency round and one throughput round per in-flight
 * count per round.
 *
 * The `direct`, `relayed`, `http` and `nats` sections each measure their
 * path alone, minutes apart; on a shared machine their p50s move 30–145%
 * between runs with the load, more than the comparisons they are meant to
 * judge. Here a machine that slows down or speeds up weighs on all four
 * paths alike, so the like-for-like targets (direct vs HTTP, relayed vs
 * NATS, calls/s at each in-flight count vs NATS) are judged on these rounds.
 *
 * The serving side is what the single-path sections use, on the server
 * core: a LAN node (`worker_node.ts`) for the direct calls, a relay
 * (`worker_relay.ts`) with a remote-only node for the relayed ones,
 * `worker_http.ts`, and a nats-server with a `worker_nats.ts` responder.
 * The caller (`worker_client.ts` task `paired`, on the client core) holds a
 * LAN caller node, a remote-only caller node, `fetch` and a NATS connection.
 *
 * @module
 */

import { importNats, natsEchoCall } from "./deps.ts";
import { httpEchoCall } from "./http.ts";
import {
  type Call,
  interleave,
  type LatencyPlan,
  measureLatency,
  measureThroughput,
  payload,
  type ThroughputPlan,
  type ThroughputResult,
} from "./measure.ts";
import { natsAvailable, spawnNatsResponder, startNatsServer } from "./nats.ts";
import { callerNode, echoCall, spawnNode, spawnRelay, untilReachable } from "./peerbase.ts";
import type { Context } from "./plan.ts";
import { type Proc, runClient, spawnWorker, stopAll } from "./proc.ts";

/** The paths timed in turn. */
export const PAIRED_PATHS = ["direct", "relayed", "http", "nats"] as const;

/** One of {@linkcode PAIRED_PATHS}. */
export type PairedPath = (typeof PAIRED_PATHS)[number];

/** One path's figures, one entry per round. */
export interface PairedPathResult {
  /** 100 B p50 of each round, ms. */
  p50: number[];
  /** Per in-flight count, calls/s of each round. */
  rps: ThroughputResult;
}

/** The section's result: every path timed (NATS only when it could be), and why NATS was not. */
export interface PairedResult {
  paths: Partial<Record<PairedPath, PairedPathResult>>;
  /** Why the NATS path was not timed; null when it was. */
  natsUnmeasured: string | null;
}

// ---- Caller side (inside worker_client.ts) ----

/** Parameters of {@linkcode callerPaired}. */
export interface PairedParams {
  /** The network of the LAN serving node `server`. */
  directNetwork: string;
  /** The network of the serving node `server` at `relay`. */
  relayedNetwork: string;
  relay: string;
  httpPort: number;
  /** Port of the nats-server with an echo responder; null: no NATS path. */
  natsPort: number | null;
  /** Run once per path and round, at 100 B (its sizes and rounds are ignored). */
  latency: LatencyPlan;
  /** Run once per path and round (its rounds are ignored). */
  throughput: ThroughputPlan;
  rounds: number;
}

/** Times every path of the section in interleaved rounds. */
export async function callerPaired(params: PairedParams): Promise<PairedResult["paths"]> {
  await using direct = callerNode(params.directNetwork, [], "caller-direct");
  await using relayed = callerNode(params.relayedNetwork, [params.relay], "caller-relayed");
  await Promise.all([direct.start(), relayed.start()]);
  await untilReachable(direct, "server", false);
  await untilReachable(relayed, "server", true);
  const calls: Record<string, Call> = {
    direct: echoCall(direct, "server"),
    relayed: echoCall(relayed, "server"),
    http: httpEchoCall(params.httpPort),
  };
  const nats = params.natsPort === null ? null : await (await importNats()).connect({
    servers: `127.0.0.1:${params.natsPort}`,
    name: "bench-paired",
  });
  try {
    if (nats) calls.nats = natsEchoCall(nats);
    for (const call of Object.values(calls)) await call(payload(100));
    const latency = { ...params.latency, sizes: [100], rounds: 1 };
    const throughput = { ...params.throughput, rounds: 1 };
    const measure = async (call: Call) => ({
      p50: (await measureLatency(call, latency))[100]!.p50[0]!,
      rps: await measureThroughput(call, throughput),
    });
    await interleave(calls, 1, measure); // Untimed: every path warm before the first round.
    const rounds = await interleave(calls, params.rounds, measure);
    const out: PairedResult["paths"] = {};
    for (const [path, list] of Object.entries(rounds)) {
      const rps: ThroughputResult = {};
      for (const n of params.throughput.inflight) rps[n] = list.map((r) => r.rps[n]![0]!);
      out[path as PairedPath] = { p50: list.map((r) => r.p50), rps };
    }
    return out;
  } finally {
    await nats?.close();
  }
}

// ---- Bench side ----

/**
 * The section: every server of the four paths, then one caller timing them
 * in turn. Without NATS (`withNats` false, or no `nats-server` or cached
 * npm module) the other three are still timed and `natsUnmeasured` says why.
 */
export async function runPaired(ctx: Context, withNats: boolean): Promise<PairedResult> {
  const tag = crypto.randomUUID().slice(0, 8);
  const [directNetwork, relayedNetwork] = [`bench-paired-d-${tag}`, `bench-paired-r-${tag}`];
  const available = withNats ? await natsAvailable() : { reason: "--skip-nats" };
  const procs: Proc[] = [];
  try {
    procs.push(await spawnNode(ctx, "server", directNetwork));
    const relay = await spawnRelay(ctx);
    procs.push(relay.proc);
    procs.push(await spawnNode(ctx, "server", relayedNetwork, [relay.address]));
    const http = spawnWorker(ctx.placement, "worker_http.ts", [], {
      side: "server",
      label: "http server",
    });
    procs.push(http);
    const httpPort = Number(await http.line("ready "));
    let natsPort: number | null = null;
    if ("binary" in available) {
      const server = await startNatsServer(ctx, available.binary);
      procs.push(server.proc);
      procs.push(await spawnNatsResponder(ctx, server.port, "nats responder (paired)"));
      natsPort = server.port;
    }
    const paths = await runClient<PairedResult["paths"]>(
      ctx,
      "paired",
      {
        directNetwork,
        relayedNetwork,
        relay: relay.address,
        httpPort,
        natsPort,
        latency: ctx.plan.latency,
        throughput: ctx.plan.throughput,
        rounds: ctx.plan.pairedRounds,
      } satisfies PairedParams,
    );
    return { paths, natsUnmeasured: "reason" in available ? available.reason : null };
  } finally {
    await stopAll(procs);
  }
}
