/**
 * Relay clusters (docs/PROTOCOL.md, "Relay clusters"): relay processes
 * started with `--cluster` on a real 3-server nats-server cluster with
 * JetStream act as one relay. Nodes are remote-only, each given one relay
 * of the cluster; the relays run with the cluster lock, as the README says.
 */

import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { NameTakenError, Node } from "../mod.ts";
import { testIf } from "./_env.ts";
import { deadline, type TestNetwork, testNetwork, waitFor } from "./_fixtures.ts";
import { startNatsCluster } from "./_nats_fixtures.ts";
import { CertificateFactory } from "./_tls_fixtures.ts";
import {
  dataFrame,
  pseudonymOf,
  rawMember,
  type RelayProcess,
  remoteOptions,
} from "./_relay_fixtures.ts";
import { CLUSTER_PROBLEM, clusterRelay, metric } from "./_cluster_fixtures.ts";

const PROBLEM = CLUSTER_PROBLEM;

/** A remote-only node of `net` on `relay` that answers `whoami` with its name. */
function member(net: TestNetwork, name: string, relay: RelayProcess): Node {
  return new Node(remoteOptions(net, name, relay.address, { commands: { whoami: (n) => n.name } }));
}

/** A remote-only node that answers `whoami` and knows only `relay` (maxRemotes 1): no relay learned. */
function loner(net: TestNetwork, name: string, relay: RelayProcess): Node {
  const options = { maxRemotes: 1, commands: { whoami: (n: Node) => n.name } };
  return new Node(remoteOptions(net, name, relay.address, options));
}

/**
 * Two started {@linkcode loner}s, each on its own relay, that see each other
 * (every call between them crosses the backplane); disposing closes both.
 */
async function lonerPair(
  net: TestNetwork,
  [nameA, relayA]: [string, RelayProcess],
  [nameB, relayB]: [string, RelayProcess],
): Promise<{ a: Node; b: Node } & AsyncDisposable> {
  const a = loner(net, nameA, relayA), b = loner(net, nameB, relayB);
  const pair = {
    a,
    b,
    [Symbol.asyncDispose]: async () => {
      await Promise.all([a.close(), b.close()]);
    },
  };
  try {
    await a.start();
    await b.start();
    await allMeet([a, b]);
  } catch (error) {
    await pair[Symbol.asyncDispose]();
    throw error;
  }
  return pair;
}

/** Waits until every node knows every other one (15 s cap). */
async function allMeet(nodes: Node[]): Promise<void> {
  await waitFor(
    () =>
      nodes.every((node) =>
        nodes.every((other) => other === node || node.peers.some((p) => p.name === other.name))
      ),
    "every node to see every other",
    15_000,
  );
}

testIf(PROBLEM === null, PROBLEM ?? "", {
  name: "three relays on a 3-server NATS cluster act as one: every node calls every other",
  async fn() {
    await using nats = await startNatsCluster({ servers: 3 });
    const net = testNetwork("cluster");
    await using a = await clusterRelay(nats.urls[0]!);
    await using b = await clusterRelay(nats.urls[1]!);
    await using c = await clusterRelay(nats.urls[2]!);
    const nodes = [
      member(net, "a1", a),
      member(net, "a2", a),
      member(net, "b1", b),
      member(net, "b2", b),
      member(net, "c1", c),
      member(net, "c2", c),
    ];
    try {
      await Promise.all(nodes.map((node) => node.start()));
      await allMeet(nodes);
      for (const caller of nodes) {
        for (const callee of nodes) {
          if (callee === caller) continue;
          const answer = await deadline(
            caller.command<string>("whoami", { target: callee.name }),
            `${caller.name} calling ${callee.name}`,
          );
          strictEqual(answer, callee.name);
        }
      }
      const everyone = await deadline(nodes[0]!.command<string>("whoami"), "a1 calling *");
      deepStrictEqual(
        Object.keys(everyone).sort(),
        nodes.slice(1).map((node) => node.name).sort(),
      );
      for (const [name, answer] of Object.entries(everyone)) strictEqual(answer, name);
    } finally {
      await Promise.all(nodes.map((node) => node.close()));
    }
  },
});

testIf(PROBLEM === null, PROBLEM ?? "", {
  name: "one name claimed through two relays of a cluster at once: exactly one instance gets it",
  async fn() {
    await using nats = await startNatsCluster({ servers: 3 });
    const net = testNetwork("cluster");
    await using a = await clusterRelay(nats.urls[0]!);
    await using b = await clusterRelay(nats.urls[1]!);
    for (let round = 0; round < 3; round++) {
      const twins = [member(net, `twin${round}`, a), member(net, `twin${round}`, b)];
      try {
        const outcomes = await Promise.all(
          twins.map((twin) => deadline(twin.start().then(() => null, (e) => e), "start()")),
        );
        const refused = outcomes.filter((outcome) => outcome !== null);
        strictEqual(refused.length, 1, `round ${round}: ${outcomes.map(String).join(", ")}`);
        ok(refused[0] instanceof NameTakenError, String(refused[0]));
      } finally {
        await Promise.all(twins.map((twin) => twin.close()));
      }
    }
  },
});

testIf(PROBLEM === null, PROBLEM ?? "", {
  name: "nodes that know one relay each reach each other across the cluster's backplane",
  async fn() {
    await using nats = await startNatsCluster({ servers: 3 });
    const net = testNetwork("cluster");
    await using a = await clusterRelay(nats.urls[0]!);
    await using b = await clusterRelay(nats.urls[1]!);
    // maxRemotes 1: no relay is learned, so every call crosses the backplane.
    await using pair = await lonerPair(net, ["left", a], ["right", b]);
    const { a: left, b: right } = pair;
    deepStrictEqual(left.relays.map((r) => r.address), [a.address]);
    strictEqual(await deadline(left.command("whoami", { target: "right" }), "call"), "right");
    strictEqual(await deadline(right.command("whoami", { target: "left" }), "call"), "left");
  },
});

testIf(PROBLEM === null, PROBLEM ?? "", {
  name: "a node given one relay of a cluster learns the others from its peers' sealed reports",
  async fn() {
    await using nats = await startNatsCluster({ servers: 3 });
    const net = testNetwork("cluster");
    const relays = [
      await clusterRelay(nats.urls[0]!),
      await clusterRelay(nats.urls[1]!),
      await clusterRelay(nats.urls[2]!),
    ];
    const nodes = relays.map((relay, i) => member(net, `n${i}`, relay));
    try {
      await Promise.all(nodes.map((node) => node.start()));
      const all = relays.map((relay) => relay.address).sort();
      await waitFor(
        () =>
          nodes.every((node) =>
            JSON.stringify(node.relays.filter((r) => r.up).map((r) => r.address).sort()) ===
              JSON.stringify(all)
          ),
        "every node to be up at every relay of the cluster",
        15_000,
      );
    } finally {
      await Promise.all(nodes.map((node) => node.close()));
      await Promise.all(relays.map((relay) => relay[Symbol.asyncDispose]()));
    }
  },
});

/** Calls `target` from `caller` back to back until `stop` resolves; returns the failures. */
async function callStream(caller: Node, target: string, stop: Promise<void>): Promise<unknown[]> {
  const failures: unknown[] = [];
  let done = false;
  void stop.then(() => done = true);
  for (let i = 0; i < 5000 && !done; i++) {
    try {
      const answer = await caller.command("whoami", { target, timeout: 5000 });
      if (answer !== target) failures.push(answer);
    } catch (error) {
      failures.push(error);
    }
  }
  return failures;
}

testIf(PROBLEM === null, PROBLEM ?? "", {
  name: "SIGKILL of a relay of the cluster during a stream of calls fails no call",
  async fn() {
    await using nats = await startNatsCluster({ servers: 3 });
    const net = testNetwork("cluster");
    const relays = [
      await clusterRelay(nats.urls[0]!),
      await clusterRelay(nats.urls[1]!),
      await clusterRelay(nats.urls[2]!),
    ];
    const nodes = relays.map((relay, i) => member(net, `n${i}`, relay));
    try {
      await Promise.all(nodes.map((node) => node.start()));
      await waitFor(
        () => nodes.every((node) => node.relays.filter((r) => r.up).length === 3),
        "every node to be up at every relay",
        15_000,
      );
      const stop = Promise.withResolvers<void>();
      const streams = [
        callStream(nodes[1]!, "n0", stop.promise),
        callStream(nodes[0]!, "n2", stop.promise),
      ];
      await new Promise((resolve) => setTimeout(resolve, 300));
      await relays[0]!.process.stop("SIGKILL");
      await new Promise((resolve) => setTimeout(resolve, 1500));
      stop.resolve();
      const failures = (await Promise.all(streams)).flat();
      deepStrictEqual(failures.map(String), []);
      strictEqual(await deadline(nodes[2]!.command("whoami", { target: "n0" }), "call"), "n0");
    } finally {
      await Promise.all(nodes.map((node) => node.close()));
      await Promise.all(relays.map((relay) => relay[Symbol.asyncDispose]()));
    }
  },
});

testIf(PROBLEM === null, PROBLEM ?? "", {
  name: "SIGKILL of one NATS server of three during a stream of cross-relay calls fails no call",
  async fn() {
    await using nats = await startNatsCluster({ servers: 3 });
    const net = testNetwork("cluster");
    await using a = await clusterRelay(nats.urls[0]!);
    await using b = await clusterRelay(nats.urls[1]!);
    await using pair = await lonerPair(net, ["left", a], ["right", b]);
    const { a: left, b: right } = pair;
    const stop = Promise.withResolvers<void>();
    const stream = callStream(left, "right", stop.promise);
    await new Promise((resolve) => setTimeout(resolve, 300));
    await nats.kill(0); // Relay a's server: its client moves to another.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    stop.resolve();
    deepStrictEqual((await stream).map(String), []);
    strictEqual(await deadline(right.command("whoami", { target: "left" }), "call"), "left");
  },
});

testIf(PROBLEM === null, PROBLEM ?? "", {
  name:
    "a sender on one relay flooding a receiver on another is held at its own relay; the receiver is never cut",
  async fn() {
    await using nats = await startNatsCluster({ servers: 3 });
    const net = testNetwork("cluster");
    const config = await Deno.makeTempFile({ suffix: ".json" });
    try {
      // B keeps at most 64 KiB queued per remote sender, so the flood is dropped there at once.
      await Deno.writeTextFile(config, JSON.stringify({ senderShare: 65536 }));
      await using a = await clusterRelay(nats.urls[0]!, ["--metrics", "127.0.0.1:0"]);
      await using b = await clusterRelay(nats.urls[1]!, [
        "--metrics",
        "127.0.0.1:0",
        "--config",
        config,
      ]);
      const echo = (name: string, relay: RelayProcess) =>
        new Node(
          remoteOptions(net, name, relay.address, {
            maxRemotes: 1,
            commands: { echo: (_n, args) => args[0] },
          }),
        );
      await using honest = echo("honest", a);
      await using victim = echo("victim", b);
      const downs: string[] = [];
      victim.addEventListener("relaydown", (e) => downs.push(e.detail.reason));
      await honest.start();
      await victim.start();
      await allMeet([honest, victim]);
      const { id, client: mallory } = await rawMember(net, "mallory", a.address);
      await using _mallory = mallory;
      const target = pseudonymOf(net, "victim");
      const junk = crypto.getRandomValues(new Uint8Array(16 * 1024));
      const frame = dataFrame(id.networkId, target, id.pseudonym, junk);
      const batch = new Uint8Array(8 * frame.length);
      for (let i = 0; i < 8; i++) batch.set(frame, i * frame.length);
      const calls: Promise<unknown>[] = [];
      const end = performance.now() + 2000;
      for (let sent = 0; sent < 20_000 && performance.now() < end; sent += 8) {
        await mallory.write(batch);
        // Yield to the honest nodes in this process, so the flood is judged at the relays, not here.
        await new Promise((resolve) => setTimeout(resolve, 0));
        if (sent % 400 === 0) {
          const call = honest.command("echo", { target: "victim", args: [sent], timeout: 8000 });
          call.catch(() => {}); // Judged below by Promise.all, not as an unhandled rejection now.
          calls.push(call);
        }
      }
      const answers = await Promise.all(calls);
      strictEqual(answers.length, calls.length);
      ok(await metric(b, "peerbase_relay_cluster_dropped_total") > 0, "B dropped the flood");
      ok(await metric(a, "peerbase_relay_throttles_total") > 0, "A held the flooder");
      strictEqual(
        await metric(b, 'peerbase_relay_disconnects_total{reason="slow-reader"}'),
        0,
        "B cut no receiver",
      );
      deepStrictEqual(downs, [], "the victim never lost its relay");
      strictEqual(await victim.command("echo", { target: "honest", args: [1] }), 1);
    } finally {
      await Deno.remove(config);
    }
  },
});

testIf(PROBLEM === null, PROBLEM ?? "", {
  name:
    "the names a killed relay held are released: members elsewhere see them leave, and a new instance may claim them",
  async fn() {
    await using nats = await startNatsCluster({ servers: 3 });
    const net = testNetwork("cluster");
    await using a = await clusterRelay(nats.urls[0]!);
    await using b = await clusterRelay(nats.urls[1]!);
    const alone = (name: string, relay: RelayProcess) => loner(net, name, relay);
    await using pair = await lonerPair(net, ["gone", a], ["watcher", b]);
    const watcher = pair.b;
    const instance = watcher.peers.find((p) => p.name === "gone")!.instance;
    await a.process.stop("SIGKILL");
    // The lease lapses 9 s after its last refresh; the janitor runs every 3 s.
    await waitFor(
      () => !watcher.peers.some((p) => p.name === "gone" && p.instance === instance),
      "the watcher to see gone's old instance leave",
      30_000,
    );
    let again: Node | null = null;
    for (let attempt = 0; attempt < 30 && !again; attempt++) {
      const candidate = alone("gone", b);
      try {
        await candidate.start();
        again = candidate;
      } catch (error) {
        await candidate.close();
        ok(error instanceof NameTakenError, String(error));
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    }
    ok(again, "a new instance of gone claimed the name");
    await using _again = again;
    await waitFor(() => watcher.peers.some((p) => p.name === "gone"), "the new instance listed");
    strictEqual(await deadline(watcher.command("whoami", { target: "gone" }), "call"), "gone");
  },
});

testIf(PROBLEM === null, PROBLEM ?? "", {
  name:
    "a relay logs in to NATS with --cluster-user and --cluster-password-file; a wrong password is a clear error",
  async fn() {
    await using nats = await startNatsCluster({
      servers: 1,
      config: 'authorization { user: relay, password: "s3cret-pw" }',
    });
    const dir = await Deno.makeTempDir();
    try {
      await Deno.writeTextFile(`${dir}/good`, "s3cret-pw\n");
      await Deno.writeTextFile(`${dir}/bad`, "wrong\n");
      const login = (file: string) => ["--cluster-user", "relay", "--cluster-password-file", file];
      await using relay = await clusterRelay(nats.urls[0]!, login(`${dir}/good`));
      // The cluster line follows the start line spawnRelay waits for.
      const joined = /joined the relay cluster "peerbase"/;
      await waitFor(() => joined.test(relay.process.stderr), "the relay's cluster line");
      const refused = await clusterRelay(nats.urls[0]!, login(`${dir}/bad`)).then(
        async (r) => {
          await r[Symbol.asyncDispose]();
          return "started";
        },
        (error: Error) => error.message,
      );
      ok(
        /Cannot join the relay cluster at .*: the NATS servers refused its credentials/.test(
          refused,
        ),
        refused,
      );
      ok(!refused.includes("wrong"), "the password is never printed");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

testIf(PROBLEM === null, PROBLEM ?? "", {
  name:
    "a relay reaches NATS over TLS with --cluster-ca; without the CA it refuses the server's certificate",
  async fn() {
    await using certificates = await CertificateFactory.create();
    const ca = await certificates.ca();
    const server = await certificates.server(ca);
    await using nats = await startNatsCluster({
      servers: 1,
      config: `tls { cert_file: "${server.certFile}", key_file: "${server.keyFile}" }`,
    });
    const url = nats.urls[0]!.replace("nats://", "tls://");
    await using relay = await clusterRelay(url, ["--cluster-ca", ca.certFile]);
    await waitFor(
      () => /joined the relay cluster/.test(relay.process.stderr),
      "the relay's cluster line",
    );
    const refused = await clusterRelay(url).then(
      async (r) => {
        await r[Symbol.asyncDispose]();
        return "started";
      },
      (error: Error) => error.message,
    );
    ok(
      /Cannot join the relay cluster at tls:.*did not verify.*--cluster-ca/.test(refused),
      refused,
    );
  },
});

testIf(PROBLEM === null, PROBLEM ?? "", {
  name:
    "SIGKILL of the relay a cross-relay stream goes through: the calls go on through the target's other relay",
  async fn() {
    await using nats = await startNatsCluster({ servers: 3 });
    const net = testNetwork("cluster");
    const a = await clusterRelay(nats.urls[0]!);
    await using b = await clusterRelay(nats.urls[1]!);
    await using c = await clusterRelay(nats.urls[2]!);
    const node = (name: string, servers: string[], maxRemotes: number) =>
      new Node(
        remoteOptions(net, name, servers, { maxRemotes, commands: { whoami: (n) => n.name } }),
      );
    // The guide, at A and B, tells the target about B after the target registered at A: the
    // target's directory entry lists A first, so C sends it everything through A.
    await using guide = node("guide", [a.address, b.address], 2);
    await using target = node("target", [a.address], 2);
    await using caller = node("caller", [c.address], 1);
    try {
      await guide.start();
      await target.start();
      await waitFor(() => target.relays.filter((r) => r.up).length === 2, "target up at A and B");
      await caller.start();
      await allMeet([caller, target]);
      const stop = Promise.withResolvers<void>();
      const stream = callStream(caller, "target", stop.promise);
      await new Promise((resolve) => setTimeout(resolve, 300));
      await a.process.stop("SIGKILL");
      await new Promise((resolve) => setTimeout(resolve, 1500));
      stop.resolve();
      deepStrictEqual((await stream).map(String), []);
    } finally {
      await a[Symbol.asyncDispose]();
    }
  },
});
