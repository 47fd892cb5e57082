/**
 * Relay clusters after their redesign (docs/PROTOCOL.md, "Relay clusters"
 * and "Paths and retries"), from a second cold review: relays as
 * subprocesses on real nats-server processes, raw relay clients that see
 * every frame, and nodes. A NATS agent (tests/fixtures/nats_probe.ts, its
 * own process: npm `nats` never loads here) reads the buckets. Each probe
 * notes its figures on stdout. Probes that show a defect are marked
 * `ignore: true`, with the finding in their name (none is left).
 */

import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { Node } from "../mod.ts";
import { testIf } from "./_env.ts";
import { deadline, sleep, testNetwork, waitFor } from "./_fixtures.ts";
import { startNatsCluster } from "./_nats_fixtures.ts";
import {
  dataFrame,
  type RawIdentity,
  rawIdentity,
  RelayRawClient,
  remoteOptions,
} from "./_relay_fixtures.ts";
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
} from "./_cluster_fixtures.ts";

const PROBLEM = CLUSTER_PROBLEM;

// ---- Probes ----

testIf(PROBLEM === null, PROBLEM ?? "", {
  name:
    "SIGKILL of the NATS server leading the leases bucket: relays on live servers do not take each other for dead",
  async fn() {
    await using nats = await startNatsCluster({ servers: 3 });
    const all = nats.urls.join(",");
    const net = testNetwork("review2");
    const relays = [await clusterRelay(nats.urls[0]!)];
    await using agent = await Agent.start(all);
    const ids = await agent.run<string[]>("relays");
    for (const url of nats.urls.slice(1)) {
      relays.push(await clusterRelay(url));
      const now = await agent.run<string[]>("relays");
      ids.push(now.find((id) => !ids.includes(id))!);
    }
    const clients: RelayRawClient[] = [];
    try {
      const leader = await agent.run<string>("leader", { stream: "KV_peerbase-relays" });
      const names = await agent.run<string>("leader", { stream: "KV_peerbase-names" });
      const down = nats.servers.findIndex((s) => s.name === leader);
      ok(down >= 0, `the leases leader ${leader}`);
      const [x, y] = [0, 1, 2].filter((i) => i !== down) as [number, number];
      const who = {
        x: await rawIdentity(net, "x"),
        y: await rawIdentity(net, "y"),
        z: await rawIdentity(net, "z"),
      };
      const xc = await raw(who.x, relays[x]!.address);
      const yc = await raw(who.y, relays[y]!.address);
      const zc = await raw(who.z, relays[down]!.address);
      clients.push(xc, yc, zc);
      await waitFor(
        () => [xc, yc].every((c) => changes(c).filter(([k]) => k === "join").length >= 1),
        "everyone to list the others",
      );
      await sleep(500);
      const before = [xc, yc].map((c) => changes(c).length);
      await nats.kill(down);
      const killed = performance.now();
      const leases = [x, y].map((i) =>
        agent.run<{ polls: number; missing: number; errors: number }>("lease", {
          relay: ids[i],
          ms: 20_000,
        }, 40_000)
      );
      let sent = 0;
      const lost: number[] = [];
      while (performance.now() - killed < 20_000) {
        sent++;
        const id = 10_000 + sent;
        await xc.write(
          dataFrame(who.x.networkId, who.y.pseudonym, who.x.pseudonym, new Uint8Array(8), id),
        );
        await yc.write(
          dataFrame(who.y.networkId, who.x.pseudonym, who.y.pseudonym, new Uint8Array(8), id),
        );
        await sleep(250);
        if (got(yc, id) !== 1 || got(xc, id) !== 1) {
          lost.push(Math.round(performance.now() - killed));
        }
      }
      const polled = await Promise.all(leases);
      const after = [xc, yc].map((c, i) => changes(c).slice(before[i]));
      // Only noted: the agent's own read may time out while its NATS server is gone.
      const entries = await agent.run<Record<string, { r: string[] }>>("entries", {
        network: who.x.networkId,
      }).catch(() => ({} as Record<string, { r: string[] }>));
      note(
        `probe: killed ${leader} (leads leases; ${names} leads names); MEMBERS changes after the kill: ` +
          `at x ${JSON.stringify(after[0])}, at y ${JSON.stringify(after[1])}; ` +
          `unicast x<->y lost in ${lost.length}/${sent} rounds (ms after kill: ${
            lost.slice(0, 12).join(",")
          }); ` +
          `entries r: ${Object.values(entries).map((e) => e.r.length).join(",")}; ` +
          `leases of the relays on live servers in the bucket, missing/failed/polls: ${
            polled.map((p) => `${p.missing}/${p.errors}/${p.polls}`).join(" and ")
          }`,
      );
      deepStrictEqual(
        after.map((list) => list.filter(([, n]) => n === who.x.pseudonym || n === who.y.pseudonym)),
        [[], []],
        "no member of a live relay on a live server was seen leaving",
      );
      deepStrictEqual(lost, [], "no unicast between two live relays on live servers was lost");
    } finally {
      await closeAll(...clients, ...relays);
    }
  },
});

testIf(PROBLEM === null, PROBLEM ?? "", {
  name:
    "a `*` frame of the announced maximum size reaches members on other relays and its sender stays connected",
  async fn() {
    await using nats = await startNatsCluster({ servers: 1 });
    const url = nats.urls[0]!;
    const net = testNetwork("review2");
    await using a = await clusterRelay(url);
    await using b = await clusterRelay(url);
    const s = await rawIdentity(net, "s");
    const m = await rawIdentity(net, "m");
    const n = await rawIdentity(net, "n");
    const sc = await RelayRawClient.connect(a.address);
    const clients = [sc];
    try {
      const registered = await sc.register(s, { tick: 60_000 });
      const max = registered.maxFrameSize;
      const mc = await raw(m, b.address);
      const nc = await raw(n, a.address); // a member on the sender's own relay
      clients.push(mc, nc);
      await sleep(500);
      const header = dataFrame(s.networkId, "*", s.pseudonym, new Uint8Array(0), 77).length;
      const body = new Uint8Array(max - header);
      await sc.write(dataFrame(s.networkId, "*", s.pseudonym, body, 77));
      // A small one after it: is the sender still served?
      await sc.write(dataFrame(s.networkId, "*", s.pseudonym, new Uint8Array(4), 78));
      await sleep(1500);
      const outcome = {
        maxFrameSize: max,
        remote: got(mc, 77),
        local: got(nc, 77),
        after: got(mc, 78),
        senderCut: sc.closed,
        goaway: sc.goaway,
        relayExited: a.process.exited,
      };
      note(`probe: * of ${max} bytes: ${JSON.stringify(outcome)}`);
      strictEqual(outcome.local, 1, "the member on the sender's relay got it");
      ok(!outcome.senderCut && !outcome.relayExited, "the sender and its relay live");
      strictEqual(outcome.remote, 1, "the member on the other relay got it");
      strictEqual(outcome.after, 1, "the next `*` frame got there too");
    } finally {
      await closeAll(...clients);
    }
  },
});

testIf(PROBLEM === null, PROBLEM ?? "", {
  name: "a call slower than 1 s through clustered relays is answered once",
  async fn() {
    await using nats = await startNatsCluster({ servers: 1 });
    const url = nats.urls[0]!;
    const net = testNetwork("review2");
    await using a = await clusterRelay(url, ["--metrics", "127.0.0.1:0"]);
    await using b = await clusterRelay(url, ["--metrics", "127.0.0.1:0"]);
    const answer = "y".repeat(100_000);
    let runs = 0;
    await using caller = new Node(remoteOptions(net, "caller", a.address, { maxRemotes: 1 }));
    await using target = new Node(
      remoteOptions(net, "target", b.address, {
        maxRemotes: 1,
        commands: {
          slow: async () => {
            runs++;
            await sleep(1600);
            return answer;
          },
          fast: () => "ok",
        },
      }),
    );
    await caller.start();
    await target.start();
    await waitFor(() => caller.peers.some((p) => p.name === "target"), "caller to know target");
    strictEqual(await deadline(caller.command("fast", { target: "target" }), "warm-up"), "ok");
    const bytesA = await metric(a, "peerbase_relay_forwarded_bytes_total");
    const framesB = await metric(b, "peerbase_relay_forwarded_frames_total");
    const calls = 3;
    const results = await Promise.all(
      Array.from(
        { length: calls },
        () =>
          deadline(caller.command<string>("slow", { target: "target", timeout: 10_000 }), "slow"),
      ),
    );
    await sleep(300);
    const answered = (await metric(a, "peerbase_relay_forwarded_bytes_total")) - bytesA;
    const requests = (await metric(b, "peerbase_relay_forwarded_frames_total")) - framesB;
    note(
      `probe: ${calls} calls of 1.6 s with a 100 kB answer: handler runs ${runs}; request frames ` +
        `delivered to the target ${requests}; answer bytes delivered to the caller ${answered} ` +
        `(${(answered / calls / answer.length).toFixed(2)}x the answer per call)`,
    );
    ok(results.every((r) => r === answer));
    strictEqual(runs, calls, "each call ran once");
    ok(answered < 1.5 * calls * answer.length, `answer bytes ${answered} for ${calls} calls`);
  },
});

testIf(PROBLEM === null, PROBLEM ?? "", {
  name:
    "frames to the members of a relay that moves to another NATS server (SIGKILL of its server) are lost for at most 1.5 s while it resubscribes",
  async fn() {
    await using nats = await startNatsCluster({ servers: 3 });
    const net = testNetwork("review2");
    await using a = await clusterRelay(nats.urls[0]!); // moves when n1 dies
    await using b = await clusterRelay(nats.urls[1]!);
    const x = await rawIdentity(net, "x");
    const y = await rawIdentity(net, "y");
    const xc = await raw(x, a.address);
    const yc = await raw(y, b.address);
    const clients = [xc, yc];
    try {
      await yc.write(dataFrame(y.networkId, x.pseudonym, y.pseudonym, new Uint8Array(8), 19_999));
      await waitFor(() => got(xc, 19_999) === 1, "a frame from y to x before the kill");
      await nats.kill(0);
      const killed = performance.now();
      const rounds: { at: number; id: number }[] = [];
      for (let i = 0; performance.now() - killed < 8000; i++) {
        const id = 20_000 + i;
        await yc.write(dataFrame(y.networkId, x.pseudonym, y.pseudonym, new Uint8Array(8), id));
        rounds.push({ at: performance.now() - killed, id });
        await sleep(100);
      }
      await sleep(1000);
      const lost = rounds.filter((r) => got(xc, r.id) !== 1).map((r) => Math.round(r.at));
      const firstOk = rounds.find((r) => got(xc, r.id) === 1);
      const lastLost = lost.at(-1) ?? -1;
      note(
        `probe: y (relay b) -> x (relay a, whose NATS server died): ${lost.length}/${rounds.length} ` +
          `frames lost, first delivered one sent ${
            firstOk?.at.toFixed(0)
          } ms after the kill, last lost ` +
          `one sent ${lastLost} ms after it (lost at ${lost.join(",")})`,
      );
      ok(lastLost < 1500, `frames to x still lost ${lastLost} ms after its relay's server died`);
    } finally {
      await closeAll(...clients);
    }
  },
});

testIf(PROBLEM === null, PROBLEM ?? "", {
  name: "names refused as taken leave a relay's quotas and nodes gauge as they were",
  async fn() {
    await using nats = await startNatsCluster({ servers: 1 });
    const url = nats.urls[0]!;
    const net = testNetwork("review2");
    await using a = await clusterRelay(url);
    await using b = await clusterRelay(url, [
      "--max-per-address",
      "3",
      "--max-per-network",
      "3",
      "--metrics",
      "127.0.0.1:0",
    ]);
    const holder = await rawIdentity(net, "held");
    const clients = [await raw(holder, a.address)];
    try {
      const refusals: string[] = [];
      for (let i = 0; i < 20; i++) {
        const rival = await rawIdentity(net, "held"); // another instance, same name
        refusals.push(
          await raw(rival, b.address).then(
            (c) => (clients.push(c), "registered"),
            (e) => /"code":(\d+)/.exec(String(e))?.[1] ?? String(e).slice(-60),
          ),
        );
      }
      const nodes = await metric(b, "peerbase_relay_nodes");
      const outcomes: string[] = [];
      for (let i = 0; i < 3; i++) {
        outcomes.push(
          await raw(await rawIdentity(net, `ok${i}`), b.address).then(
            (c) => (clients.push(c), "registered"),
            (e) => String(e).slice(-80),
          ),
        );
      }
      note(
        `probe: 20 rival claims at b: ${
          [...new Set(refusals)].join(",")
        }; nodes gauge after ${nodes}; ` +
          `then 3 new names (quota 3): ${outcomes.join(" | ")}`,
      );
      ok(!refusals.includes("registered"), "no rival registered");
      strictEqual(nodes, 0, "no node counted for refused claims");
      deepStrictEqual(outcomes, ["registered", "registered", "registered"]);
    } finally {
      await closeAll(...clients);
    }
  },
});

/** The resident memory of process `pid`, KiB (Linux). */
async function rssKiB(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  return Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? NaN);
}

/** Writes `count` entries `<network>.ghostN` naming relay `relay` (a live one); resolves to how many. */
function bulk(agent: Agent, network: string, count: number, relay: string): Promise<number> {
  return agent.run<number>("bulk", { network, count, relay }, 120_000);
}

testIf(PROBLEM === null, PROBLEM ?? "", {
  name:
    "the first member at a relay of a network of 50,000 members registers at once; the relay's memory per directory entry is noted",
  async fn() {
    await using nats = await startNatsCluster({ servers: 1 });
    const url = nats.urls[0]!;
    const net = testNetwork("review2");
    await using a = await clusterRelay(url);
    await using agent = await Agent.start(url);
    const [aId] = await agent.run<string[]>("relays");
    await using _b = await clusterRelay(url); // the live relay the entries name
    const bId = (await agent.run<string[]>("relays")).find((id) => id !== aId)!;
    const s = await rawIdentity(net, "s");
    const clients: RelayRawClient[] = [];
    try {
      const count = 50_000;
      const rss: number[] = [await rssKiB(a.process.child.pid)];
      const made = performance.now();
      const done = await bulk(agent, s.networkId, count, bId);
      const written = performance.now() - made;
      await sleep(2000); // relay a hears them
      const outcomes: string[] = [];
      rss.push(await rssKiB(a.process.child.pid));
      for (let i = 0; i < 3; i++) {
        const t0 = performance.now();
        const c = await RelayRawClient.connect(a.address);
        clients.push(c);
        const outcome = await c.register(s, { tick: 60_000 }).then(
          (r) => `registered with ${r.members.length} members`,
          () => `refused ${c.goaway?.code}`,
        );
        outcomes.push(`${outcome} after ${(performance.now() - t0).toFixed(0)} ms`);
        rss.push(await rssKiB(a.process.child.pid));
        if (outcome.startsWith("registered")) break;
      }
      note(
        `probe: ${done} entries written in ${written.toFixed(0)} ms; first member at relay a: ` +
          `${outcomes.join("; ")}; relay a RSS ${rss.join(" -> ")} KiB (${
            ((rss[1]! - rss[0]!) * 1024 / count).toFixed(0)
          } B per entry written, before any member of that network came)`,
      );
      strictEqual(done, count);
      ok(outcomes.at(-1)!.startsWith("registered"), outcomes.join("; "));
    } finally {
      await closeAll(...clients);
    }
  },
});

testIf(PROBLEM === null, PROBLEM ?? "", {
  name:
    "a `*` frame to 66,000 members on one other relay is split into messages that fit and its sender stays connected",
  async fn() {
    await using nats = await startNatsCluster({ servers: 1 });
    const url = nats.urls[0]!;
    const net = testNetwork("review2");
    await using a = await clusterRelay(url);
    await using agent = await Agent.start(url);
    const [aId] = await agent.run<string[]>("relays");
    await using _b = await clusterRelay(url); // the live relay the entries name
    const bId = (await agent.run<string[]>("relays")).find((id) => id !== aId)!;
    const s = await rawIdentity(net, "s");
    const sc = await RelayRawClient.connect(a.address, { keepMembers: false });
    try {
      await sc.register(s, { tick: 60_000 }); // relay a watches the network from now on
      const rss0 = await rssKiB(a.process.child.pid);
      const count = 66_000;
      strictEqual(await bulk(agent, s.networkId, count, bId), count);
      await sleep(3000); // relay a hears the entries through its watch
      const rss1 = await rssKiB(a.process.child.pid);
      await sc.write(dataFrame(s.networkId, "*", s.pseudonym, new Uint8Array(4), 90));
      await sleep(1500);
      const cut = sc.closed;
      note(
        `probe: ${count} members named at relay b; relay a RSS ${rss0} -> ${rss1} KiB ` +
          `(${((rss1 - rss0) * 1024 / count).toFixed(0)} B per entry heard); MEMBERS frames to s ` +
          `${sc.members}; after a * frame the sender is ${
            cut ? `cut ${JSON.stringify(sc.goaway)}` : "connected"
          }`,
      );
      ok(!cut, "the sender of the * frame is still connected");
    } finally {
      await closeAll(sc);
    }
  },
});

testIf(PROBLEM === null, PROBLEM ?? "", {
  name:
    "SIGKILL of the NATS server leading the directory: members registered afterwards are listed at the other relays (within 15 s; the lag is noted)",
  async fn() {
    await using nats = await startNatsCluster({ servers: 3 });
    const all = nats.urls.join(",");
    const net = testNetwork("review2");
    const relays = [await clusterRelay(nats.urls[0]!)];
    await using agent = await Agent.start(all);
    for (const url of nats.urls.slice(1)) relays.push(await clusterRelay(url));
    const clients: RelayRawClient[] = [];
    try {
      const leader = await agent.run<string>("leader", { stream: "KV_peerbase-names" });
      const down = nats.servers.findIndex((s) => s.name === leader);
      const [x, y] = [0, 1, 2].filter((i) => i !== down) as [number, number];
      const o = await rawIdentity(net, "o");
      const oc = await raw(o, relays[x]!.address);
      clients.push(oc);
      await nats.kill(down);
      const killed = performance.now();
      const lags: string[] = [];
      for (let i = 0; i < 4 && performance.now() - killed < 25_000; i++) {
        const who = await rawIdentity(net, `late${i}`);
        let registered = -1;
        for (let tries = 0; registered < 0 && performance.now() - killed < 25_000; tries++) {
          const c = await raw(who, relays[y]!.address).catch(() => null);
          if (c) {
            clients.push(c);
            registered = performance.now();
          } else await sleep(300);
        }
        if (registered < 0) break;
        let listed = -1;
        while (listed < 0 && performance.now() - registered < 15_000) {
          if (changes(oc).some(([k, n]) => k === "join" && n === who.pseudonym)) {
            listed = performance.now();
          } else await sleep(50);
        }
        lags.push(
          `registered ${(registered - killed).toFixed(0)} ms after the kill, listed at o ${
            listed < 0 ? "never (15 s)" : `${(listed - registered).toFixed(0)} ms later`
          }`,
        );
      }
      note(`probe: killed ${leader} (leads names): ${lags.join("; ")}`);
      ok(lags.length > 0, "a member registered");
      // Every member registered after the kill is listed at the other relay (within 15 s). How
      // soon is noted, not asserted: a stalled directory watch is restarted once its relay's tick
      // has been missing for 2.5 s, but the new consumer waits for the stream's new leader, and
      // fresh-clone CI runs saw lags of 4.3 s and 7.0 s (7.9 s before the restart existed).
      ok(
        lags.every((l) => /listed at o \d+ ms/.test(l)),
        lags.join("; "),
      );
    } finally {
      await closeAll(...clients, ...relays);
    }
  },
});

testIf(PROBLEM === null, PROBLEM ?? "", {
  name:
    "frames for another relay sent while NATS is down are dropped and counted, not kept: the relay's memory stays flat over 4 rounds of 64 MiB",
  async fn() {
    await using nats = await startNatsCluster({ servers: 1 });
    const url = nats.urls[0]!;
    const net = testNetwork("review2");
    await using a = await clusterRelay(url, ["--metrics", "127.0.0.1:0"]);
    await using b = await clusterRelay(url);
    const x = await rawIdentity(net, "x");
    const y = await rawIdentity(net, "y");
    const xc = await raw(x, a.address);
    const yc = await raw(y, b.address);
    const clients = [xc, yc];
    try {
      await waitFor(
        () => changes(xc).some(([k, n]) => k === "join" && n === y.pseudonym),
        "x lists y",
      );
      await nats.kill(0);
      await sleep(500);
      const frame = dataFrame(
        x.networkId,
        y.pseudonym,
        x.pseudonym,
        new Uint8Array(1000 * 1024),
        5,
      );
      const perRound = 64;
      const rss = [await rssKiB(a.process.child.pid)];
      let sent = 0;
      const started = performance.now();
      for (let round = 0; round < 4 && !xc.closed; round++) {
        for (let i = 0; i < perRound && performance.now() - started < 60_000 && !xc.closed; i++) {
          await xc.write(frame);
          sent++;
        }
        await sleep(1000);
        rss.push(await rssKiB(a.process.child.pid));
      }
      const unrouted = await metric(a, "peerbase_relay_cluster_unrouted_total");
      const mib = rss.map((kib) => Math.round(kib / 1024));
      note(
        `probe: NATS down; x wrote ${sent} frames of 1000 KiB for y (on another relay); ` +
          `relay a RSS MiB by round ${mib.join(" ")}; unrouted ${unrouted}; x ${
            xc.closed ? "cut" : "connected"
          }`,
      );
      ok(!xc.closed, "the sender is not cut");
      ok(unrouted >= sent, `${unrouted} frames counted unrouted of ${sent} sent`);
      // Kept frames would add 64 MiB a round, 128 MiB over rounds 3 and 4. What stays is the
      // allocator keeping freed 1 MiB buffers (glibc): about +70 MiB within two rounds, then flat
      // (768 MiB sent in 6 rounds of 128 MiB: 63 129 131 88 131 135 111 MiB; +14 to +36 MiB with
      // MALLOC_MMAP_THRESHOLD_=131072, so not a leak).
      const growth = Math.max(...mib.slice(3)) - mib[2]!;
      ok(growth < 64, `relay a grew ${growth} MiB after its second round: ${mib.join(" ")}`);
    } finally {
      await closeAll(...clients);
    }
  },
});

/** The consumers of stream `stream` as nats-server's monitoring endpoint lists them. */
async function consumersOf(port: number, stream: string): Promise<Record<string, unknown>[]> {
  const response = await fetch(
    `http://127.0.0.1:${port}/jsz?consumers=true&config=true`,
    { signal: AbortSignal.timeout(2000) },
  );
  const jsz = await response.json() as {
    account_details?: {
      stream_detail?: { name: string; consumer_detail?: Record<string, unknown>[] }[];
    }[];
  };
  const streams = jsz.account_details?.flatMap((a) => a.stream_detail ?? []) ?? [];
  return streams.find((s) => s.name === stream)?.consumer_detail ?? [];
}

testIf(PROBLEM === null, PROBLEM ?? "", {
  name:
    "after members join 300 one-node networks at a relay, its directory watch still runs: a member hears a join written afterwards",
  async fn() {
    await using nats = await startNatsCluster({ servers: 1 });
    const url = nats.urls[0]!;
    const port = nats.servers[0]!.monitorPort;
    await using relay = await clusterRelay(url);
    await using agent = await Agent.start(url);
    const [id] = await agent.run<string[]>("relays");
    const clients: RelayRawClient[] = [];
    const brief = (list: Record<string, unknown>[]) =>
      list.map((c) => {
        const config = c.config as { filter_subject?: string; deliver_policy?: string };
        return `${config.filter_subject}/${config.deliver_policy}/delivered ${
          (c.delivered as { stream_seq: number }).stream_seq
        }`;
      }).join(" | ");
    try {
      const before = await consumersOf(port, "KV_peerbase-names");
      const nets: RawIdentity[] = [];
      for (let i = 0; i < 300; i++) {
        const who = await rawIdentity(testNetwork(`tiny${i}`), "solo");
        nets.push(who);
        clients.push(await raw(who, relay.address));
      }
      await sleep(7000); // stopped snapshot consumers go after 5 s
      const after = await consumersOf(port, "KV_peerbase-names");
      const last = nets.at(-1)!, first = nets[0]!;
      for (const who of [first, last]) {
        await agent.run("put", {
          key: `${who.networkId}.newcomer`,
          value: JSON.stringify({ i: "i", k: "k", c: "card", o: 0, r: [id] }),
        });
      }
      const heard = async (c: RelayRawClient) => {
        try {
          await waitFor(
            () => changes(c).some(([k, n]) => k === "join" && n === "newcomer"),
            "a join",
            3000,
          );
          return true;
        } catch {
          return false;
        }
      };
      const outcome = [await heard(clients[0]!), await heard(clients.at(-1)!)];
      note(
        `probe: names consumers before: ${brief(before)}; after 300 networks: ${brief(after)}; ` +
          `joins heard by the first and last network's member: ${outcome.join(",")}`,
      );
      deepStrictEqual(outcome, [true, true]);
    } finally {
      await closeAll(...clients);
    }
  },
});
