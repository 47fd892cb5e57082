/**
 * The NATS cluster fixture (`_nats_fixtures.ts`) and the JetStream key-value
 * behaviour the relay cluster (issue 12) relies on: create-if-absent stays
 * atomic across servers, and the bucket survives the loss of one server of
 * three. The npm `nats` client runs in `fixtures/nats_kv.ts` subprocesses
 * with the bench lock, never in this process.
 */

import { deepStrictEqual, ok, rejects } from "node:assert/strict";
import { BENCH_LOCK } from "../bench/deps.ts";
import { natsModuleMissing } from "../bench/nats.ts";
import { runToEnd, testIf } from "./_env.ts";
import { findNatsServer, type NatsCluster, startNatsCluster } from "./_nats_fixtures.ts";
import type { RaceResult, SetupResult, UseResult } from "./fixtures/nats_kv.ts";

const NATS_KV = new URL("./fixtures/nats_kv.ts", import.meta.url).pathname;

/** Hard limit for one client subprocess; only catches hangs. */
const CLIENT_TIMEOUT = 60_000;

async function natsProblem(): Promise<string | null> {
  if (await findNatsServer() === null) return "needs nats-server (apt-get install nats-server)";
  return await natsModuleMissing();
}

const PROBLEM = await natsProblem();
const AVAILABLE = PROBLEM === null;
const REASON = PROBLEM ?? "";

/** Runs `fixtures/nats_kv.ts` with `args` and returns its `result` JSON. */
async function natsClient<T>(...args: string[]): Promise<T> {
  const out = await runToEnd(Deno.execPath(), [
    "run",
    `--lock=${BENCH_LOCK}`,
    "--frozen",
    "--cached-only",
    "-A",
    NATS_KV,
    ...args,
  ], { timeout: CLIENT_TIMEOUT });
  const line = out.stdout.split("\n").find((line) => line.startsWith("result "));
  ok(out.code === 0 && line, `nats_kv.ts ${args[0]} failed (${out.code}): ${out.stderr}`);
  return JSON.parse(line.slice("result ".length)) as T;
}

/** True when something accepts TCP connections on 127.0.0.1:`port`. */
async function accepts(port: number): Promise<boolean> {
  try {
    (await Deno.connect({ hostname: "127.0.0.1", port })).close();
    return true;
  } catch {
    return false;
  }
}

/** The index of the server named `name` (n1, n2, …). */
function indexOf(cluster: NatsCluster, name: string): number {
  const at = cluster.servers.findIndex((server) => server.name === name);
  ok(at >= 0, `no server named '${name}'`);
  return at;
}

testIf(AVAILABLE, REASON, {
  name: "a 3-server NATS cluster starts with JetStream and stops leaving nothing behind",
  async fn() {
    let dir = "";
    let ports: number[] = [];
    {
      await using cluster = await startNatsCluster();
      dir = cluster.dir;
      deepStrictEqual(cluster.servers.map((server) => server.name), ["n1", "n2", "n3"]);
      deepStrictEqual(cluster.urls.length, 3);
      for (const url of cluster.urls) ok(/^nats:\/\/127\.0\.0\.1:\d+$/.test(url), url);
      ports = cluster.servers.flatMap((s) => [s.clientPort, s.routePort, s.monitorPort]);
      deepStrictEqual(new Set(ports).size, 9);
      for (const server of cluster.servers) ok(await accepts(server.clientPort), server.url);
      ok((await Deno.stat(`${dir}/n1`)).isDirectory, "n1 has its own JetStream store");
    }
    await rejects(Deno.stat(dir), Deno.errors.NotFound);
    for (const port of ports) ok(!await accepts(port), `port ${port} still accepts`);
  },
});

testIf(AVAILABLE, REASON, {
  name: "a NATS cluster without JetStream starts, and a killed server can be restarted",
  async fn() {
    await using cluster = await startNatsCluster({ jetstream: false });
    await cluster.kill(2);
    deepStrictEqual(cluster.pid(2), null);
    ok(!await accepts(cluster.servers[2]!.clientPort), "n3 still accepts after SIGKILL");
    await cluster.restart(2);
    ok(cluster.pid(2) !== null);
    ok(await accepts(cluster.servers[2]!.clientPort), "n3 does not accept after restart");
  },
});

testIf(AVAILABLE, REASON, {
  name: "a NATS server that cannot start is named with its log, and its files are removed",
  async fn() {
    const error = await startNatsCluster({ servers: 2, config: "no_such_option: 1" }).then(
      () => null,
      (error: Error) => error,
    );
    ok(error !== null, "a cluster with a bad configuration started");
    ok(
      /^Cannot start NATS server n[12] \(nats:\/\/127\.0\.0\.1:\d+\): it exited with code 1; stderr tail: .*unknown field "no_such_option"/
        .test(error.message),
      error.message,
    );
    // Both servers start at once, so either may be the one that fails first.
    const directory = error.message.match(/ (\/\S+)\/n[12]\.conf:/)?.[1];
    ok(directory, `no config path in: ${error.message}`);
    await rejects(Deno.stat(directory), Deno.errors.NotFound);
  },
});

testIf(AVAILABLE, REASON, {
  name: "a KV create of the same key through two servers at once succeeds exactly once",
  async fn() {
    await using cluster = await startNatsCluster();
    const rounds = 100;
    const result = await natsClient<RaceResult>(
      "race",
      "claims",
      cluster.urls[0]!,
      cluster.urls[1]!,
      String(rounds),
    );
    deepStrictEqual(result.winners, Array(rounds).fill(1));
    deepStrictEqual(result.wrongLastSequence, rounds);
    deepStrictEqual(result.otherErrors, []);
  },
});

testIf(AVAILABLE, REASON, {
  name: "killing one server of three leaves the KV bucket usable, also through its leader's loss",
  async fn() {
    await using cluster = await startNatsCluster();
    const setup = await natsClient<SetupResult>("setup", "claims", cluster.urls[0]!);
    // Kill the bucket's stream leader; the client starts on a survivor, with the dead one listed.
    const dead = indexOf(cluster, setup.leader);
    await cluster.kill(dead);
    const survivors = cluster.urls.filter((_, at) => at !== dead);
    const used = await natsClient<UseResult>(
      "use",
      "claims",
      [cluster.urls[dead]!, ...survivors].join(","),
      "20000",
    );
    deepStrictEqual(used.alice, "instance-1");
    ok(used.bobRevision > 0);
    ok(used.connectedTo !== setup.leader, `connected to the dead server ${used.connectedTo}`);
  },
});
