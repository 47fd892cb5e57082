/**
 * Relay clusters under faults and hostile input (docs/PROTOCOL.md, "Relay
 * clusters"), from a cold review: claims, membership, routing and the
 * backplane, with relays as subprocesses on a real nats-server and raw
 * relay clients that see every frame. A NATS agent
 * (tests/fixtures/nats_probe.ts, its own process: npm `nats` never loads
 * here) reads and writes the buckets and publishes raw messages. Each test
 * notes its figures on stderr.
 */

import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { encodeFrame, encodeGoaway, encodeName, FrameType } from "../lib/frame.ts";
import { decodeMembers } from "../lib/relay_protocol.ts";
import { testIf } from "./_env.ts";
import { testNetwork, waitFor } from "./_fixtures.ts";
import { sleep } from "./_fixtures.ts";
import { startNatsCluster } from "./_nats_fixtures.ts";
import { dataFrame, type RawIdentity, rawIdentity, RelayRawClient } from "./_relay_fixtures.ts";
import {
  Agent,
  changes,
  closeAll,
  CLUSTER_PROBLEM,
  clusterRelay,
  got,
  metric,
  note,
  raw,
  relayWithId,
} from "./_cluster_fixtures.ts";

const PROBLEM = CLUSTER_PROBLEM;

function b64(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes));
}

// ---- Probes ----

testIf(PROBLEM === null, PROBLEM ?? "", {
  name:
    "after SIGKILL of a relay, unicast to a member also registered at a live relay flows again within 2 s; members only there leave within 12 s plus a write",
  async fn() {
    await using nats = await startNatsCluster({ servers: 1 });
    const url = nats.urls[0]!;
    const net = testNetwork("review");
    const first = await clusterRelay(url);
    await using agent = await Agent.start(url);
    const known = new Set(await agent.run<string[]>("relays"));
    const dead = Object.assign(first, { id: [...known][0]! });
    const live = await relayWithId(agent, url, known);
    const other = await relayWithId(agent, url, known);
    const twin = await rawIdentity(net, "twin");
    const lonely = await rawIdentity(net, "lonely");
    const caller = await rawIdentity(net, "caller");
    const clients: RelayRawClient[] = [];
    try {
      clients.push(await raw(twin, dead.address)); // r = [dead, …]
      const twinLive = await raw(twin, live.address); // r = [dead, live]
      clients.push(twinLive);
      clients.push(await raw(lonely, dead.address));
      const call = await raw(caller, other.address);
      clients.push(call);
      const entries = await agent.run<Record<string, { r: string[] }>>("entries", {
        network: twin.networkId,
      });
      deepStrictEqual(entries[`${twin.networkId}.${twin.pseudonym}`]!.r, [dead.id, live.id]);
      await dead.process.stop("SIGKILL");
      const killed = performance.now();
      let firstArrival = -1, ghostGone = -1, sent = 0;
      while (performance.now() - killed < 20_000 && (firstArrival < 0 || ghostGone < 0)) {
        sent++;
        await call.write(
          dataFrame(
            twin.networkId,
            twin.pseudonym,
            caller.pseudonym,
            new Uint8Array(8),
            1000 + sent,
          ),
        );
        await sleep(200);
        if (firstArrival < 0 && twinLive.frames.some((f) => f.type === FrameType.DATA)) {
          firstArrival = performance.now() - killed;
        }
        if (
          ghostGone < 0 && changes(call).some(([k, n]) => k === "leave" && n === lonely.pseudonym)
        ) {
          ghostGone = performance.now() - killed;
        }
      }
      const delivered = twinLive.frames.filter((f) => f.type === FrameType.DATA).length;
      note(
        `probe: kill -> first unicast delivered via live relay ${firstArrival.toFixed(0)} ms; ` +
          `ghost leave ${ghostGone.toFixed(0)} ms; delivered ${delivered}/${sent}`,
      );
      ok(
        ghostGone >= 0 && ghostGone <= 13_000,
        `the dead relay's member leaves within 12 s + a write (${ghostGone})`,
      );
      ok(firstArrival >= 0 && firstArrival < 2000, `unicast resumed after ${firstArrival} ms`);
    } finally {
      await closeAll(...clients, dead, live, other);
    }
  },
});

testIf(PROBLEM === null, PROBLEM ?? "", {
  name:
    "a `*` frame reaches each listed member exactly once, wherever and however often it is registered",
  async fn() {
    await using nats = await startNatsCluster({ servers: 1 });
    const url = nats.urls[0]!;
    const net = testNetwork("review");
    const relays = [await clusterRelay(url), await clusterRelay(url), await clusterRelay(url)];
    const [r1, r2, r3] = relays.map((r) => r.address) as [string, string, string];
    const ids = {
      a: await rawIdentity(net, "a"), // at r1 and r2
      b: await rawIdentity(net, "b"), // at r2
      c: await rawIdentity(net, "c"), // at r3 and r1
      d: await rawIdentity(net, "d"), // at r3
      e: await rawIdentity(net, "e"), // client-only at r2
      s: await rawIdentity(net, "s"), // the sender, at r1 and r3
    };
    const at: Record<string, RelayRawClient[]> = {};
    const plan: [keyof typeof ids, string, boolean?][] = [
      ["a", r1],
      ["a", r2],
      ["b", r2],
      ["c", r3],
      ["c", r1],
      ["d", r3],
      ["e", r2, true],
      ["s", r1],
      ["s", r3],
    ];
    try {
      for (const [name, address, clientOnly] of plan) {
        (at[name] ??= []).push(await raw(ids[name], address, { clientOnly: clientOnly === true }));
      }
      // Wait until every relay lists everyone: each sees the others' joins.
      await sleep(500);
      const s = ids.s;
      const senders: [number, RelayRawClient][] = [[7, at.s![0]!], [8, at.s![1]!], [9, at.b![0]!]];
      for (const [id, via] of senders) {
        await via.write(
          dataFrame(
            s.networkId,
            "*",
            via === at.b![0] ? ids.b.pseudonym : s.pseudonym,
            new Uint8Array(4),
            id,
          ),
        );
      }
      await sleep(1000);
      const counts: Record<string, number[]> = {};
      for (const [id] of senders) {
        for (const name of Object.keys(ids)) {
          (counts[name] ??= []).push(at[name]!.reduce((n, client) => n + got(client, id), 0));
        }
      }
      note(`probe: * deliveries per member for frames 7, 8, 9: ${JSON.stringify(counts)}`);
      deepStrictEqual(counts, {
        a: [1, 1, 1],
        b: [1, 1, 0],
        c: [1, 1, 1],
        d: [1, 1, 1],
        e: [0, 0, 0],
        s: [0, 0, 1],
      });
    } finally {
      await closeAll(...Object.values(at).flat(), ...relays);
    }
  },
});

/**
 * Publishes junk on a relay's backplane subjects and writes junk into the
 * directory; checks the relay and its members survive it. `strict` also
 * requires that no control frame from the backplane reaches a member.
 */
async function junkProbe(strict: boolean): Promise<void> {
  await using nats = await startNatsCluster({ servers: 1 });
  const url = nats.urls[0]!;
  const net = testNetwork("review");
  await using relay = await clusterRelay(url);
  await using agent = await Agent.start(url);
  const [id] = await agent.run<string[]>("relays");
  const m = await rawIdentity(net, "m");
  const o = await rawIdentity(net, "o");
  const mc = await raw(m, relay.address);
  const oc = await raw(o, relay.address);
  try {
    const name = (n: string, what: string) => encodeName(n, what);
    const header = (target: string) => ({
      network: name(m.networkId, "network"),
      target: name(target, "target"),
      sender: name("evil", "sender"),
    });
    const junk: Uint8Array[] = [
      crypto.getRandomValues(new Uint8Array(64)),
      dataFrame(m.networkId, m.pseudonym, o.pseudonym, new Uint8Array(32)).subarray(0, 20),
      encodeFrame(FrameType.GOAWAY, 0, header(m.pseudonym), encodeGoaway(6, "injected"), 2 ** 20),
      encodeFrame(FrameType.GOAWAY, 0, header("*"), encodeGoaway(6, "injected *"), 2 ** 20),
      encodeFrame(
        FrameType.MEMBERS,
        0,
        header(m.pseudonym),
        new TextEncoder().encode('{"join":[["fake","i","c"]],"leave":[]}'),
        2 ** 20,
      ),
    ];
    for (const bytes of junk) {
      await agent.run("publish", { subject: `peerbase.r.${id}.x`, b64: b64(bytes) });
    }
    for (const text of ["", ".", "a.b.c", "x".repeat(10_000), `${m.networkId}.nobody`]) {
      await agent.run("publish", {
        subject: `peerbase.h.${id}`,
        b64: b64(new TextEncoder().encode(text)),
      });
    }
    const key = `${m.networkId}.${m.pseudonym}`;
    await agent.run("put", { key: `${m.networkId}.junk`, value: "not json" });
    await agent.run("put", { key: `${m.networkId}.big`, value: "x".repeat(512 * 1024) });
    await agent.run("put", { key, value: "not json" }); // m's own entry, broken
    await sleep(1500);
    const entries = await agent.run<Record<string, { r?: string[] }>>("entries", {
      network: m.networkId,
    });
    const injected = mc.frames.filter((f) =>
      f.type === FrameType.GOAWAY ||
      f.type === FrameType.MEMBERS && decodeMembers(f).join.some(([n]) => n === "fake")
    );
    note(
      `probe: m's entry after junk: ${JSON.stringify(entries[key])}; ` +
        `frames injected from the backplane that m received: ${
          injected.map((f) => f.type).join(",")
        }; ` +
        `o saw ${JSON.stringify(changes(oc).filter(([, n]) => n === m.pseudonym))}`,
    );
    ok(!mc.closed && !oc.closed, "no member was cut");
    ok(!relay.process.exited, "the relay lives");
    deepStrictEqual(entries[key]?.r, [id], "the relay repaired m's broken entry");
    await oc.write(dataFrame(o.networkId, m.pseudonym, o.pseudonym, new Uint8Array(4), 4242));
    await waitFor(() => got(mc, 4242) === 1, "o's frame to m");
    if (strict) {
      deepStrictEqual(injected.map((f) => f.type), [], "control frames from the backplane");
    }
  } finally {
    await closeAll(mc, oc);
  }
}

testIf(PROBLEM === null, PROBLEM ?? "", {
  name:
    "junk on a relay's backplane subjects and in the directory neither crashes the relay nor cuts its members",
  fn: () => junkProbe(false),
});

testIf(PROBLEM === null, PROBLEM ?? "", {
  name: "control frames published on a relay's backplane subject never reach its members",
  fn: () => junkProbe(true),
});

testIf(PROBLEM === null, PROBLEM ?? "", {
  name: "a member that leaves while NATS is down is released once NATS is back",
  async fn() {
    await using nats = await startNatsCluster({ servers: 1 });
    const url = nats.urls[0]!;
    const net = testNetwork("review");
    await using relay = await clusterRelay(url);
    let agent = await Agent.start(url);
    const [id] = await agent.run<string[]>("relays");
    await agent[Symbol.asyncDispose]();
    const m = await rawIdentity(net, "m");
    const o = await rawIdentity(net, "o");
    const mc = await raw(m, relay.address);
    const oc = await raw(o, relay.address);
    const clients = [mc, oc];
    try {
      await nats.kill(0);
      await mc[Symbol.asyncDispose](); // m leaves while NATS is down
      await sleep(7000); // longer than a backplane request's deadline (5 s)
      await nats.restart(0);
      agent = await Agent.start(url);
      for (let i = 0; i < 100; i++) {
        if ((await agent.run<string[]>("relays")).includes(id!)) break;
        await sleep(200);
      }
      const n = await rawIdentity(net, "n");
      // Joins after NATS came back; a node retries while the stream recovers ("retry", GOAWAY 9).
      for (let attempt = 0;; attempt++) {
        const joined = await raw(n, relay.address).catch((error) => {
          if (attempt >= 20 || !String(error).includes('"code":9')) throw error;
          return null;
        });
        if (joined) {
          clients.push(joined);
          break;
        }
        await sleep(500);
      }
      await sleep(13_000); // the janitor's bound: 12 s plus a write
      const entries = await agent.run<Record<string, { r?: string[] }>>("entries", {
        network: m.networkId,
      });
      const seen = changes(oc);
      const other = await rawIdentity(net, "m"); // another instance of m's name
      const refused = await raw(other, relay.address).then(
        (c) => (clients.push(c), "registered"),
        (e) => String(e),
      );
      note(
        `probe: after NATS restart: m in directory: ${
          JSON.stringify(entries[`${m.networkId}.${m.pseudonym}`]?.r)
        }; ` +
          `o saw ${
            JSON.stringify(
              seen.map((
                [k, p],
              ) => [
                k,
                p === m.pseudonym ? "m" : p === n.pseudonym ? "n" : p === o.pseudonym ? "o" : p,
              ]),
            )
          }; ` +
          `another instance of m: ${refused}`,
      );
      ok(seen.some(([k, p]) => k === "join" && p === n.pseudonym), "the relay's watch survived");
      strictEqual(entries[`${m.networkId}.${m.pseudonym}`], undefined, "m was released");
      strictEqual(refused, "registered", "m's name is free");
    } finally {
      await closeAll(...clients, agent);
    }
  },
});

testIf(PROBLEM === null, PROBLEM ?? "", {
  name: "a relay sweeping thousands of a dead relay's entries keeps its own lease",
  async fn() {
    await using nats = await startNatsCluster({ servers: 1 });
    const url = nats.urls[0]!;
    const net = testNetwork("review");
    await using relay = await clusterRelay(url);
    await using agent = await Agent.start(url);
    const [id] = await agent.run<string[]>("relays");
    const o = await rawIdentity(net, "o");
    const oc = await RelayRawClient.connect(relay.address, { keepMembers: false });
    try {
      await oc.register(o, { tick: 60_000 });
      const count = 14_000;
      const made = performance.now();
      strictEqual(
        await agent.run<number>("bulk", { network: o.networkId, count, relay: "dead" }, 60_000),
        count,
      );
      const written = performance.now() - made;
      const watch = await agent.run<{ polls: number; missing: number; counts: number[] }>(
        "lease",
        { relay: id, ms: 30_000, network: o.networkId },
        40_000,
      );
      const left = watch.counts.at(-1);
      const firstDrop = watch.counts.findIndex((n) => n < count + 1);
      const cleared = watch.counts.findIndex((n) => n <= 1);
      note(
        `probe: ${count} stale entries written in ${written.toFixed(0)} ms; lease missing in ` +
          `${watch.missing}/${watch.polls} polls (200 ms apart); keys left ${left}; sweep began at poll ` +
          `${firstDrop}, cleared at poll ${cleared}`,
      );
      // How fast depends on the machine's load (2,048 writes a sweep every 3 s); that it goes on does not.
      ok(
        left !== undefined && left < count / 2,
        `the janitor cleared most stale entries: ${left} left`,
      );
      strictEqual(watch.missing, 0, "the relay's own lease never lapsed");
    } finally {
      await closeAll(oc);
    }
  },
});

testIf(PROBLEM === null, PROBLEM ?? "", {
  name:
    "a `*` frame sent just after a member's link to the sender's relay closes still reaches its other link",
  async fn() {
    await using nats = await startNatsCluster({ servers: 1 });
    const url = nats.urls[0]!;
    const net = testNetwork("review");
    await using r1 = await clusterRelay(url);
    await using r2 = await clusterRelay(url);
    const s = await rawIdentity(net, "s");
    const sc = await raw(s, r1.address);
    const clients = [sc];
    const missed: number[] = [];
    try {
      const rounds = 10;
      for (let round = 0; round < rounds; round++) {
        const m = await rawIdentity(net, `m${round}`);
        const near = await raw(m, r1.address);
        const far = await raw(m, r2.address);
        clients.push(far);
        await sleep(300); // every relay has heard both links
        await near[Symbol.asyncDispose](); // the relay reads the close; its release is on its way
        await sc.write(dataFrame(s.networkId, "*", s.pseudonym, new Uint8Array(4), 500 + round));
        await sleep(500);
        if (got(far, 500 + round) !== 1) missed.push(round);
      }
      note(
        `probe: * frames missed by a member's surviving link: ${missed.length}/${rounds}`,
      );
      deepStrictEqual(missed, []);
    } finally {
      await closeAll(...clients);
    }
  },
});

testIf(PROBLEM === null, PROBLEM ?? "", {
  name:
    "a member cut because another instance took its name is no longer counted in the relay's nodes (maxNodes still admits)",
  async fn() {
    await using nats = await startNatsCluster({ servers: 1 });
    const url = nats.urls[0]!;
    const net = testNetwork("review");
    await using relay = await clusterRelay(url, ["--max-nodes", "2", "--metrics", "127.0.0.1:0"]);
    await using agent = await Agent.start(url);
    const [id] = await agent.run<string[]>("relays");
    const m = await rawIdentity(net, "m");
    const mc = await raw(m, relay.address);
    const clients = [mc];
    try {
      // Another instance's entry naming a live relay (this one) replaces m's:
      // what a relay whose lease lapsed finds after another relay took the name.
      await agent.run("put", {
        key: `${m.networkId}.${m.pseudonym}`,
        value: JSON.stringify({
          i: "other",
          k: "another-instance-key",
          c: "card",
          o: 0,
          r: [id],
        }),
      });
      await waitFor(() => mc.closed, "m to be cut");
      const a = await rawIdentity(net, "a");
      const b = await rawIdentity(net, "b");
      const outcomes: string[] = [];
      for (const who of [a, b]) {
        outcomes.push(
          await raw(who, relay.address).then(
            (c) => (clients.push(c), "registered"),
            (e) => String(e),
          ),
        );
      }
      const nodes = await metric(relay, "peerbase_relay_nodes");
      note(
        `probe: m cut with ${JSON.stringify(mc.goaway)}; then with --max-nodes 2: ${
          outcomes.join(" | ")
        }; nodes gauge ${nodes} for ${clients.filter((c) => !c.closed).length} open members`,
      );
      strictEqual(nodes, clients.filter((c) => !c.closed).length, "the nodes gauge");
      deepStrictEqual(outcomes, ["registered", "registered"]);
    } finally {
      await closeAll(...clients);
    }
  },
});

testIf(PROBLEM === null, PROBLEM ?? "", {
  name:
    "registrations refused by a quota leave no directory entry and members hear no join of them",
  async fn() {
    await using nats = await startNatsCluster({ servers: 1 });
    const url = nats.urls[0]!;
    const net = testNetwork("review");
    await using relay = await clusterRelay(url, ["--max-nodes", "2", "--metrics", "127.0.0.1:0"]);
    await using agent = await Agent.start(url);
    const o = await rawIdentity(net, "o");
    const oc = await raw(o, relay.address);
    const p = await rawIdentity(net, "p");
    const pc = await raw(p, relay.address); // the relay is full now
    const clients = [oc, pc];
    try {
      const refused: string[] = [];
      for (let i = 0; i < 5; i++) {
        const who = await rawIdentity(net, `full${i}`);
        refused.push(
          await raw(who, relay.address).then(() => "registered", (e) => String(e).slice(-60)),
        );
      }
      await pc[Symbol.asyncDispose](); // room for one again
      const quitters: RawIdentity[] = [];
      for (let i = 0; i < 10; i++) {
        const who = await rawIdentity(net, `quit${i}`);
        quitters.push(who);
        const client = await RelayRawClient.connect(relay.address);
        await client.sendRegister(who, { tick: 60_000 });
        await client[Symbol.asyncDispose](); // closes while its claim is under way
      }
      await sleep(1500);
      const entries = await agent.run<Record<string, unknown>>("entries", { network: o.networkId });
      const names = Object.keys(entries).map((k) => k.slice(o.networkId.length + 1)).sort();
      const joins = changes(oc).filter(([k]) => k === "join").map(([, n]) => n);
      const nodes = await metric(relay, "peerbase_relay_nodes");
      note(
        `probe: refusals ${
          JSON.stringify(refused)
        }; directory keys ${names.length}; joins heard by o ${joins.length} ` +
          `(${
            joins.filter((n) => n !== p.pseudonym).length
          } of refused or quitting nodes); nodes gauge ${nodes}`,
      );
      deepStrictEqual(names, [o.pseudonym], "only o is left in the directory");
      strictEqual(nodes, 1, "the nodes gauge");
      // A node that closes right after its REGISTER was registered: members hear it join and leave.
      const refusedNames = new Set(
        await Promise.all(
          Array.from({ length: 5 }, async (_, i) => (await rawIdentity(net, `full${i}`)).pseudonym),
        ),
      );
      deepStrictEqual(joins.filter((n) => refusedNames.has(n)), [], "no join of a refused node");
    } finally {
      await closeAll(...clients);
    }
  },
});

testIf(PROBLEM === null, PROBLEM ?? "", {
  name: "one instance registering at two relays at once ends up listed at both",
  async fn() {
    await using nats = await startNatsCluster({ servers: 1 });
    const url = nats.urls[0]!;
    const net = testNetwork("review");
    await using r1 = await clusterRelay(url);
    await using r2 = await clusterRelay(url);
    await using agent = await Agent.start(url);
    const clients: RelayRawClient[] = [];
    try {
      const short: number[] = [];
      for (let round = 0; round < 8; round++) {
        const m = await rawIdentity(net, `both${round}`);
        clients.push(...await Promise.all([raw(m, r1.address), raw(m, r2.address)]));
        await sleep(200);
        const entries = await agent.run<Record<string, { r: string[] }>>("entries", {
          network: m.networkId,
        });
        const r = entries[`${m.networkId}.${m.pseudonym}`]?.r ?? [];
        if (r.length !== 2) short.push(round);
      }
      deepStrictEqual(short, [], "rounds where the entry lists fewer than two relays");
      ok(clients.every((c) => !c.closed));
    } finally {
      await closeAll(...clients);
    }
  },
});

testIf(PROBLEM === null, PROBLEM ?? "", {
  name:
    "a relay stopped with SIGTERM releases its names at once: members elsewhere hear them leave",
  async fn() {
    await using nats = await startNatsCluster({ servers: 1 });
    const url = nats.urls[0]!;
    const net = testNetwork("review");
    const r1 = await clusterRelay(url);
    await using r2 = await clusterRelay(url);
    await using agent = await Agent.start(url);
    const m = await rawIdentity(net, "m");
    const o = await rawIdentity(net, "o");
    const mc = await raw(m, r1.address);
    const oc = await raw(o, r2.address);
    try {
      await sleep(300);
      const stopped = performance.now();
      await r1.process.stop("SIGTERM");
      const exit = performance.now() - stopped;
      await waitFor(
        () => changes(oc).some(([k, n]) => k === "leave" && n === m.pseudonym),
        "m's leave",
        15_000,
      );
      const heard = performance.now() - stopped;
      const relays = await agent.run<string[]>("relays");
      note(
        `probe: SIGTERM -> relay exited ${exit.toFixed(0)} ms, leave heard ${
          heard.toFixed(0)
        } ms; leases left ${relays.length}`,
      );
      ok(heard < 5000, `leave heard after ${heard} ms`);
      strictEqual(relays.length, 1, "the stopped relay gave up its lease");
    } finally {
      await closeAll(mc, oc, r1);
    }
  },
});

testIf(PROBLEM === null, PROBLEM ?? "", {
  name: "a relay whose NATS servers are all down at start exits with a message that names them",
  async fn() {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    listener.close(); // nothing listens there now
    const started = performance.now();
    const error = await clusterRelay(`nats://127.0.0.1:${port}`).then(
      async (relay) => (await relay[Symbol.asyncDispose](), "started"),
      (e) => String(e),
    );
    const took = performance.now() - started;
    note(`probe: relay without NATS: ${took.toFixed(0)} ms: ${error.slice(0, 300)}`);
    ok(error.includes("Cannot join the relay cluster") && error.includes(String(port)), error);
  },
});

testIf(PROBLEM === null, PROBLEM ?? "", {
  name:
    "a member that reconnects to the same relay right after its link closed stays reachable, and others hear at most a leave and a join per reconnect",
  async fn() {
    await using nats = await startNatsCluster({ servers: 1 });
    const url = nats.urls[0]!;
    const net = testNetwork("review");
    await using r1 = await clusterRelay(url);
    await using r2 = await clusterRelay(url);
    await using agent = await Agent.start(url);
    const m = await rawIdentity(net, "m");
    const o = await rawIdentity(net, "o");
    const oc = await raw(o, r2.address);
    let mc = await raw(m, r1.address);
    const clients = [oc];
    try {
      const rounds = 10;
      for (let round = 0; round < rounds; round++) {
        await mc[Symbol.asyncDispose]();
        mc = await raw(m, r1.address);
      }
      clients.push(mc);
      await sleep(1000);
      const entries = await agent.run<Record<string, { r: string[] }>>("entries", {
        network: m.networkId,
      });
      const flaps = changes(oc).filter(([, n]) => n === m.pseudonym);
      await oc.write(dataFrame(o.networkId, m.pseudonym, o.pseudonym, new Uint8Array(4), 31337));
      await sleep(500);
      note(
        `probe: ${rounds} reconnects: o heard ${
          flaps.filter(([k]) => k === "leave").length
        } leaves and ` +
          `${flaps.filter(([k]) => k === "join").length} joins of m; m's entry r ${
            JSON.stringify(entries[`${m.networkId}.${m.pseudonym}`]?.r)
          }; ` +
          `o's frame reached m: ${got(mc, 31337)}`,
      );
      strictEqual(entries[`${m.networkId}.${m.pseudonym}`]?.r.length, 1, "m is in the directory");
      strictEqual(got(mc, 31337), 1, "o's frame reached m");
      strictEqual(flaps.at(-1)?.[0], "join", "o lists m at the end");
    } finally {
      await closeAll(...clients);
    }
  },
});

testIf(PROBLEM === null, PROBLEM ?? "", {
  name:
    "SIGKILL of the NATS server leading the directory bucket: the relay keeps its lease and registers nodes again once a new leader is up",
  async fn() {
    await using nats = await startNatsCluster({ servers: 3 });
    const net = testNetwork("review");
    await using relay = await clusterRelay(nats.urls.join(","));
    await using agent = await Agent.start(nats.urls.join(","));
    const [id] = await agent.run<string[]>("relays");
    const leader = await agent.run<string>("leader", { stream: "KV_peerbase-relays" });
    const names = await agent.run<string>("leader", { stream: "KV_peerbase-names" });
    const o = await rawIdentity(net, "o");
    const oc = await raw(o, relay.address);
    const clients = [oc];
    try {
      const index = nats.servers.findIndex((s) => s.name === names);
      await nats.kill(index);
      const killed = performance.now();
      const watching = agent.run<{ polls: number; missing: number; errors: number }>("lease", {
        relay: id,
        ms: 14_000,
      }, 40_000);
      const outcomes: string[] = [];
      let registeredAt = -1;
      for (let i = 0; i < 40 && performance.now() - killed < 14_000; i++) {
        const who = await rawIdentity(net, `late${i}`);
        const outcome = await raw(who, relay.address).then(
          (c) => (clients.push(c), "ok"),
          (e) => (/"code":(\d+)/.exec(String(e))?.[1] ?? String(e).slice(-40)),
        );
        outcomes.push(outcome);
        if (outcome === "ok" && registeredAt < 0) registeredAt = performance.now() - killed;
        await sleep(300);
      }
      const watch = await watching;
      note(
        `probe: killed ${names} (leader of names; ${leader} leads relays): lease missing in ${watch.missing}/${watch.polls} polls ` +
          `(${watch.errors} failed); registrations ${outcomes.join(",")}; first ok after ${
            registeredAt.toFixed(0)
          } ms`,
      );
      ok(registeredAt >= 0, "a node registered again");
      strictEqual(watch.missing, 0, "the lease never lapsed");
    } finally {
      await closeAll(...clients);
    }
  },
});

testIf(PROBLEM === null, PROBLEM ?? "", {
  name:
    "a relay told to stop while NATS is down still exits, within 20 s (drain grace, then a backplane deadline per serial write)",
  async fn() {
    await using nats = await startNatsCluster({ servers: 1 });
    const url = nats.urls[0]!;
    const net = testNetwork("review");
    const relay = await clusterRelay(url);
    const clients: RelayRawClient[] = [];
    try {
      for (let i = 0; i < 5; i++) {
        clients.push(await raw(await rawIdentity(net, `n${i}`), relay.address));
      }
      await nats.kill(0);
      const stopped = performance.now();
      relay.process.kill("SIGTERM");
      for (let i = 0; i < 300 && !relay.process.exited; i++) await sleep(100);
      const took = performance.now() - stopped;
      const status = relay.process.exited
        ? String((await relay.process.status).code)
        : "still running";
      note(`probe: SIGTERM with NATS down: exit ${status} after ${took.toFixed(0)} ms`);
      ok(took < 20_000, `exited after ${took} ms`);
    } finally {
      await closeAll(...clients, relay);
    }
  },
});

/** nats-server's resident memory, bytes, from its monitoring endpoint. */
async function natsMemory(port: number): Promise<number> {
  const response = await fetch(`http://127.0.0.1:${port}/varz`, {
    signal: AbortSignal.timeout(2000),
  });
  return (await response.json() as { mem: number }).mem;
}

testIf(PROBLEM === null, PROBLEM ?? "", {
  name:
    "nodes of many small networks at one relay cost NATS no JetStream consumer per network at rest",
  async fn() {
    await using nats = await startNatsCluster({ servers: 1 });
    const url = nats.urls[0]!;
    await using relay = await clusterRelay(url);
    await using agent = await Agent.start(url);
    const clients: RelayRawClient[] = [];
    try {
      const before = await agent.run<number>("consumers", { stream: "KV_peerbase-names" });
      const memBefore = await natsMemory(nats.servers[0]!.monitorPort);
      const networks = 300;
      for (let i = 0; i < networks; i++) {
        const net = testNetwork(`tiny${i}`);
        clients.push(await raw(await rawIdentity(net, "solo"), relay.address));
      }
      await sleep(500);
      const after = await agent.run<number>("consumers", { stream: "KV_peerbase-names" });
      const memAfter = await natsMemory(nats.servers[0]!.monitorPort);
      await sleep(6500); // The server drops a stopped watch's consumer after 5 s.
      const settled = await agent.run<number>("consumers", { stream: "KV_peerbase-names" });
      await closeAll(...clients.splice(0));
      let closed = -1;
      const left = performance.now();
      for (let i = 0; i < 60 && !(closed >= 0 && closed <= before); i++) {
        await sleep(500);
        closed = await agent.run<number>("consumers", { stream: "KV_peerbase-names" });
      }
      const gone = performance.now() - left;
      note(
        `probe: ${networks} one-node networks: consumers ${before} -> ${after} -> ${closed} ${
          gone.toFixed(0)
        } ms after they left; ` +
          `nats-server memory +${((memAfter - memBefore) / 1024).toFixed(0)} KiB ` +
          `(${((memAfter - memBefore) / networks / 1024).toFixed(1)} KiB per network)`,
      );
      note(`at rest with ${networks} networks: ${settled} consumers (${before} before)`);
      ok(settled <= before, `no consumer per network: ${settled} at rest, ${before} before`);
      ok(closed <= before, `no consumer left once the members left: ${closed}`);
    } finally {
      await closeAll(...clients);
    }
  },
});

testIf(PROBLEM === null, PROBLEM ?? "", {
  name:
    "after SIGKILL of a relay, `*` frames reach a member also registered at a live relay at once",
  async fn() {
    await using nats = await startNatsCluster({ servers: 1 });
    const url = nats.urls[0]!;
    const net = testNetwork("review");
    const first = await clusterRelay(url);
    await using agent = await Agent.start(url);
    const known = new Set(await agent.run<string[]>("relays"));
    const live = await relayWithId(agent, url, known);
    const other = await relayWithId(agent, url, known);
    const twin = await rawIdentity(net, "twin");
    const caller = await rawIdentity(net, "caller");
    const clients: RelayRawClient[] = [];
    try {
      clients.push(await raw(twin, first.address)); // r = [dead, …]
      const twinLive = await raw(twin, live.address); // r = [dead, live]
      clients.push(twinLive);
      const call = await raw(caller, other.address);
      clients.push(call);
      await sleep(300);
      await first.process.stop("SIGKILL");
      const killed = performance.now();
      let firstArrival = -1, sent = 0;
      while (performance.now() - killed < 15_000 && firstArrival < 0) {
        sent++;
        await call.write(
          dataFrame(twin.networkId, "*", caller.pseudonym, new Uint8Array(8), 2000 + sent),
        );
        await sleep(200);
        if (twinLive.frames.some((f) => f.type === FrameType.DATA)) {
          firstArrival = performance.now() - killed;
        }
      }
      note(
        `probe: kill -> first * frame delivered via the live relay after ${
          firstArrival.toFixed(0)
        } ms (${sent} sent)`,
      );
      ok(firstArrival >= 0 && firstArrival < 2000, `* frames resumed after ${firstArrival} ms`);
    } finally {
      await closeAll(...clients, first, live, other);
    }
  },
});
