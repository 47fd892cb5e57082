/**
 * Accept loops that survive running out of file descriptors: a relay (TCP
 * and TLS) and a node, each in its own process under `prlimit
 * --nofile=256:256`, are sent 300 connections; once those close, the
 * process serves again (a node registers, a call is answered), and the
 * counter that says what happened moved: accept failures when the cap is
 * set above the limit, connections refused under the default cap (which
 * keeps the process below the limit).
 *
 * The child's open descriptors are counted in `/proc/<pid>/fd` (prlimit
 * execs the runtime, so the pid is the runtime's).
 */

import { ok, strictEqual } from "node:assert/strict";
import { Node } from "../mod.ts";
import type { NodeStats } from "../lib/stats.ts";
import { deadline, nodeOptions, sleep, Spawned, testNetwork, waitFor } from "./_fixtures.ts";
import { meetVia, remoteOptions } from "./_relay_fixtures.ts";
import { CertificateFactory } from "./_tls_fixtures.ts";
import { IN_NETNS, NETNS_REASON, testIf } from "./_env.ts";

/** The open-file limit the children run under. */
const LIMIT = 256;
/** Connections sent: more than the limit. */
const FLOOD = 300;
/** Longest wait of these tests, ms (a TLS listener notices it stopped accepting within ~6 s). */
const WAIT = 30_000;

const RELAY_SCRIPT = new URL("../relay.ts", import.meta.url);
const CAPPED_NODE = new URL("./fixtures/capped_node.ts", import.meta.url);

const PRLIMIT = await new Deno.Command("prlimit", { args: ["--version"], stdout: "null" })
  .output().then((out) => out.success, () => false);
const PRLIMIT_REASON = "needs prlimit (util-linux) to start a process with a low open-file limit";
const PROC_FD = await Deno.stat("/proc/self/fd").then(() => true, () => false);

/** Starts `deno run -A <args>` under `prlimit --nofile=LIMIT:LIMIT`. */
function spawnLimited(args: string[], env: Record<string, string> = {}): Spawned {
  return new Spawned(
    new Deno.Command("prlimit", {
      args: [`--nofile=${LIMIT}:${LIMIT}`, Deno.execPath(), "run", "-A", ...args],
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn(),
  );
}

/** Open descriptors of process `pid`. */
async function openFds(pid: number): Promise<number> {
  let count = 0;
  for await (const _ of Deno.readDir(`/proc/${pid}/fd`)) count++;
  return count;
}

/** Waits until process `pid` holds every descriptor its limit allows. */
async function untilOutOfFds(pid: number): Promise<void> {
  const end = Date.now() + WAIT;
  let most = 0;
  for (let open = 0; open < LIMIT; open = await openFds(pid)) {
    most = Math.max(most, open);
    if (Date.now() > end) {
      throw new Error(`Process ${pid} never reached ${LIMIT} open files (at most ${most})`);
    }
    await sleep(20);
  }
}

/** Opens `count` TCP connections to 127.0.0.1:`port` (each connect capped); closes them on dispose. */
async function flood(port: number, count = FLOOD): Promise<Deno.TcpConn[] & AsyncDisposable> {
  const conns: Deno.TcpConn[] = [];
  for (let i = 0; i < count; i++) {
    conns.push(
      await Deno.connect({ hostname: "127.0.0.1", port, signal: AbortSignal.timeout(WAIT) }),
    );
  }
  return Object.assign(conns, {
    [Symbol.asyncDispose]: () => {
      for (const conn of conns.splice(0)) {
        try {
          conn.close();
        } catch {
          // Closed by the other side.
        }
      }
      return Promise.resolve();
    },
  });
}

// ---- Relays ----

/** A relay process under the limit: its port and metrics endpoint. */
interface LimitedRelay extends AsyncDisposable {
  process: Spawned;
  port: number;
  /** One counter of its metrics endpoint. */
  metric(line: RegExp): Promise<number>;
}

async function spawnRelay(args: string[]): Promise<LimitedRelay> {
  const process = spawnLimited([
    RELAY_SCRIPT.href,
    "--host",
    "127.0.0.1",
    "--port",
    "0",
    "--metrics",
    "127.0.0.1:0",
    ...args,
  ]);
  const started = /listening on (?:tls:\/\/)?127\.0\.0\.1:(\d+)$/m;
  const metrics = /serving counters at (http:\/\/\S+)$/m;
  try {
    await waitFor(
      () => metrics.test(process.stderr) || process.exited,
      "the relay's start lines",
      WAIT,
    );
  } catch (error) {
    await process.stop("SIGKILL").catch(() => {});
    throw error;
  }
  const port = started.exec(process.stderr)?.[1];
  const url = metrics.exec(process.stderr)?.[1];
  if (!port || !url) {
    await process.stop("SIGKILL").catch(() => {});
    throw new Error(`The relay did not start; stderr: ${process.stderr}`);
  }
  return {
    process,
    port: Number(port),
    async metric(line) {
      const response = await fetch(url, { signal: AbortSignal.timeout(WAIT) });
      const value = line.exec(await response.text())?.[1];
      if (value === undefined) throw new Error(`No metric ${line} at ${url}`);
      return Number(value);
    },
    [Symbol.asyncDispose]: async () => {
      await process.stop();
      ok(!process.stderr.includes("panicked"), process.stderr);
    },
  };
}

const ACCEPT_FAILURES = /^peerbase_relay_accept_failures_total (\d+)$/m;
const REFUSED_TOTAL = /^peerbase_relay_connections_refused_total\{reason="total"\} (\d+)$/m;
const REFUSED_PER_ADDRESS =
  /^peerbase_relay_connections_refused_total\{reason="per-address"\} (\d+)$/m;

/** Waits for a counter of `relay` to reach `atLeast`, scraping until {@linkcode WAIT}. */
async function untilMetric(relay: LimitedRelay, line: RegExp, atLeast: number): Promise<number> {
  const end = Date.now() + WAIT;
  while (true) {
    const value = await relay.metric(line).catch(() => -1);
    if (value >= atLeast) return value;
    if (Date.now() > end) throw new Error(`Metric ${line} stayed below ${atLeast}: ${value}`);
    await sleep(100);
  }
}

testIf(PRLIMIT && PROC_FD, PRLIMIT_REASON, {
  name:
    "a relay out of file descriptors counts its failed accepts and admits nodes again once they are freed",
  async fn() {
    await using relay = await spawnRelay(["--max-connections", "100000"]);
    {
      await using _conns = await flood(relay.port);
      await untilOutOfFds(relay.process.child.pid);
    }
    ok(await untilMetric(relay, ACCEPT_FAILURES, 1) >= 1);
    const net = testNetwork("fds");
    const address = `127.0.0.1:${relay.port}`;
    await using a = new Node(remoteOptions(net, "a", address, { commands: { ping: () => "a" } }));
    await using b = new Node(remoteOptions(net, "b", address));
    await deadline(Promise.all([a.start(), b.start()]), "both nodes to register", WAIT);
    await meetVia([a, b], address);
    strictEqual(await b.command("ping", { target: "a" }), "a");
  },
});

testIf(PRLIMIT && PROC_FD, PRLIMIT_REASON, {
  name:
    "a TLS relay out of file descriptors listens anew, counts it, and admits nodes again once they are freed",
  async fn() {
    await using certificates = await CertificateFactory.create();
    const ca = await certificates.ca();
    const server = await certificates.server(ca);
    await using relay = await spawnRelay([
      "--max-connections",
      "100000",
      "--cert",
      server.certFile,
      "--key",
      server.keyFile,
    ]);
    {
      await using _conns = await flood(relay.port);
      await untilOutOfFds(relay.process.child.pid);
    }
    ok(await untilMetric(relay, ACCEPT_FAILURES, 1) >= 1);
    const net = testNetwork("fds");
    const address = `tls://127.0.0.1:${relay.port}`;
    await using a = new Node(remoteOptions(net, "a", address, { caCerts: [ca.cert] }));
    await deadline(a.start(), "the node to register", WAIT);
    await waitFor(() => a.relays[0]?.up === true, "the node to register", WAIT);
  },
});

testIf(PRLIMIT && PROC_FD, PRLIMIT_REASON, {
  name:
    "a relay under a low open-file limit closes connections over its default cap at once and never runs out",
  async fn() {
    await using relay = await spawnRelay([]);
    {
      await using conns = await flood(relay.port);
      // Each connection is served (a CHALLENGE) or closed at once; none waits in the backlog.
      const firsts = await Promise.all(
        conns.map((conn) =>
          deadline(conn.read(new Uint8Array(1024)), "a first read", WAIT).catch(() => null)
        ),
      );
      const closed = firsts.filter((n) => n === null).length;
      ok(closed >= FLOOD - LIMIT, `${closed} connections closed at once`);
      // One source address: its default cap is a quarter of the total cap.
      const perAddress = await relay.metric(REFUSED_PER_ADDRESS);
      ok(perAddress > 0, `one source address cannot take every slot: ${perAddress}`);
      strictEqual(await relay.metric(REFUSED_TOTAL) + perAddress, closed);
    }
    strictEqual(await relay.metric(ACCEPT_FAILURES), 0, "the cap kept it below the limit");
    const net = testNetwork("fds");
    await using a = new Node(remoteOptions(net, "a", `127.0.0.1:${relay.port}`));
    await deadline(a.start(), "the node to register", WAIT);
    strictEqual(a.relays[0]?.up, true);
  },
});

// ---- Nodes ----

/** A node process under the limit, and an in-process node of its network that calls it. */
async function spawnCappedNode(args: string[]) {
  const net = testNetwork("fds");
  const process = spawnLimited([
    "--unstable-net",
    CAPPED_NODE.href,
    "--network",
    net.network,
    ...args,
  ], {
    PEERBASE_KEY: net.networkKey,
  });
  let port: number;
  try {
    const ready = await process.line("ready ", WAIT);
    port = Number(ready.split(" ")[2]!.split(":").at(-1));
  } catch (error) {
    await process.stop("SIGKILL").catch(() => {});
    throw error;
  }
  const caller = new Node(nodeOptions(net, "caller"));
  return {
    process,
    port,
    /** Starts the caller and asks the process for its stats (a real direct call). */
    async stats(): Promise<NodeStats> {
      await caller.start();
      await caller.waitForPeer("capped", { timeout: WAIT });
      return await caller.command<NodeStats>("stats", { target: "capped", timeout: WAIT });
    },
    [Symbol.asyncDispose]: async () => {
      await caller.close();
      await process.stop();
      ok(!process.stderr.includes("panicked"), process.stderr);
    },
  };
}

testIf(PRLIMIT && PROC_FD && IN_NETNS, IN_NETNS ? PRLIMIT_REASON : NETNS_REASON, {
  name:
    "a node out of file descriptors counts its failed accepts and answers calls again once they are freed",
  async fn() {
    await using node = await spawnCappedNode(["--max-connections", "100000"]);
    {
      await using _conns = await flood(node.port);
      await untilOutOfFds(node.process.child.pid);
    }
    const stats = await node.stats();
    ok(stats.connections.acceptFailures >= 1, JSON.stringify(stats.connections));
  },
});

testIf(PRLIMIT && PROC_FD && IN_NETNS, IN_NETNS ? PRLIMIT_REASON : NETNS_REASON, {
  name:
    "a node under a low open-file limit closes direct connections over its default cap and never runs out",
  async fn() {
    await using node = await spawnCappedNode([]);
    {
      await using conns = await flood(node.port);
      // Nothing is sent to an accepted connection: those over the cap read their end at once.
      let closed = 0;
      for (const conn of conns) {
        void conn.read(new Uint8Array(16)).then((n) => n === null && closed++, () => closed++);
      }
      await waitFor(() => closed >= FLOOD - LIMIT, "connections over the cap to close", WAIT);
    }
    const { connections } = await node.stats();
    const { total, perAddress } = connections.refused;
    ok(total + perAddress >= FLOOD - LIMIT, JSON.stringify(connections));
    ok(perAddress > 0, `one source address cannot take every slot: ${JSON.stringify(connections)}`);
    strictEqual(connections.acceptFailures, 0, "the cap kept it below the limit");
  },
});
