/**
 * LAN discovery as nodes see it: who is listed in `peers`, the peerjoin,
 * peerleave and conflict events, and what happens when a node closes, is
 * killed, restarts or shares its name. Real multicast on the namespace's
 * loopback, real processes where a node must die without a bye.
 */

import { deepStrictEqual, notStrictEqual, ok, strictEqual } from "node:assert/strict";
import { generateKey, NameTakenError, Node, type PeerInfo } from "../mod.ts";
import { IN_NETNS, NETNS_REASON, testIf } from "./_env.ts";
import {
  deadline,
  knows,
  nextEvent,
  nodeOptions,
  sleep,
  spawnPeer,
  startNodes,
  testNetwork,
  waitFor,
} from "./_fixtures.ts";

/** What `peers` says about a started, uncontested local node. */
function infoOf(node: Node): PeerInfo {
  return {
    name: node.name,
    instance: node.instance,
    local: true,
    address: node.address,
    relays: [],
    conflict: false,
  };
}

testIf(IN_NETNS, NETNS_REASON, {
  name: "two nodes of one network find each other",
  async fn() {
    await using group = await startNodes(["alice", "bob"]);
    const [alice, bob] = [group.get("alice"), group.get("bob")];
    deepStrictEqual(alice.peers, [infoOf(bob)]);
    deepStrictEqual(bob.peers, [infoOf(alice)]);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "peers lists every other node of the network sorted by name",
  async fn() {
    await using group = await startNodes(["delta", "alpha", "charlie", "bravo"]);
    deepStrictEqual(group.get("charlie").peers.map((p) => p.name), ["alpha", "bravo", "delta"]);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a node of another network with the same key is never listed",
  async fn() {
    const net = testNetwork();
    await using stranger = new Node(
      nodeOptions({ ...net, network: `${net.network}-other` }, "stranger", {
        advertiseInterval: 50,
      }),
    );
    await stranger.start();
    await using group = await startNodes(["a", "b"], { net });
    // Ten of the stranger's advert intervals: it had every chance to be seen.
    await sleep(500);
    ok(!knows(group.get("a"), "stranger") && !knows(group.get("b"), "stranger"));
    deepStrictEqual(stranger.peers, []);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a node of the same network name with another key is never listed",
  async fn() {
    const net = testNetwork();
    await using intruder = new Node(
      nodeOptions({ ...net, networkKey: generateKey() }, "intruder", { advertiseInterval: 50 }),
    );
    await intruder.start();
    await using group = await startNodes(["a", "b"], { net });
    await sleep(500);
    ok(!knows(group.get("a"), "intruder") && !knows(group.get("b"), "intruder"));
    deepStrictEqual(intruder.peers, []);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "peerjoin fires with the new peer's info and peerleave when it closes",
  async fn() {
    const net = testNetwork();
    await using watcher = new Node(nodeOptions(net, "watcher"));
    await watcher.start();
    const joiner = new Node(nodeOptions(net, "joiner"));
    try {
      const joined = nextEvent(watcher, "peerjoin", (peer) => peer.name === "joiner");
      await joiner.start();
      deepStrictEqual(await joined, infoOf(joiner));
      const left = nextEvent(watcher, "peerleave", (peer) => peer.name === "joiner");
      await joiner.close();
      const leaving = await left;
      strictEqual(leaving.instance, joiner.instance);
      ok(!knows(watcher, "joiner"));
    } finally {
      await joiner.close();
    }
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a closing node is removed from peers at once by its bye, not by expiry",
  async fn() {
    // Adverts once a minute: expiry would take 3.5 minutes, far past the 10 s hang guard.
    await using group = await startNodes(["stays", "leaves"], {
      each: { leaves: { advertiseInterval: 60_000 } },
    });
    const stays = group.get("stays");
    const left = nextEvent(stays, "peerleave", (peer) => peer.name === "leaves");
    await group.get("leaves").close();
    await left;
    ok(!knows(stays, "leaves"));
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a killed node is removed from peers after three missed adverts",
  async fn() {
    const net = testNetwork();
    await using watcher = new Node(nodeOptions(net, "watcher", { advertiseInterval: 100 }));
    await watcher.start();
    await using victim = await spawnPeer({ name: "victim", net, interval: 100 });
    await waitFor(() => knows(watcher, "victim"), "the watcher to see the victim");
    const left = nextEvent(watcher, "peerleave", (peer) => peer.name === "victim");
    // SIGKILL: no bye is sent, only the silence tells.
    victim.process.kill("SIGKILL");
    await left;
    ok(!knows(watcher, "victim"));
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name:
    "two live nodes with one name raise conflict on both and calls to the name reject with NameTakenError",
  async fn(t) {
    const net = testNetwork();
    await using group = await startNodes(["dup", "observer"], { net });
    const first = group.get("dup");
    const observer = group.get("observer");
    await using second = new Node(nodeOptions(net, "dup"));
    const firstConflict = nextEvent(first, "conflict");
    const observerConflict = nextEvent(observer, "conflict");
    const secondConflict = nextEvent(second, "conflict");
    await second.start();

    await t.step("both instances report the conflict", async () => {
      const [a, b] = await Promise.all([firstConflict, secondConflict]);
      for (const detail of [a, b]) {
        strictEqual(detail.name, "dup");
        deepStrictEqual([...detail.instances].sort(), [first.instance, second.instance].sort());
      }
    });
    await t.step("a third node reports it and marks the peer", async () => {
      const detail = await observerConflict;
      strictEqual(detail.name, "dup");
      deepStrictEqual([...detail.instances].sort(), [first.instance, second.instance].sort());
      strictEqual(observer.peers.find((p) => p.name === "dup")?.conflict, true);
    });
    await t.step("calls from the third node reject with NameTakenError", async () => {
      const error = await observer.command("__echo__", { target: "dup", raiseErrors: true }).catch((
        e,
      ) => e);
      ok(error instanceof NameTakenError, String(error));
      strictEqual(error.peer, "dup");
      strictEqual(error.network, net.network);
    });
    await t.step("with raiseErrors: false they yield null", async () => {
      strictEqual(await observer.command("__echo__", { target: "dup", raiseErrors: false }), null);
    });
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a name conflict ends when one of the two instances closes, and calls reach the other",
  async fn() {
    const net = testNetwork();
    await using group = await startNodes(["dup", "observer"], { net });
    const observer = group.get("observer");
    const second = new Node(nodeOptions(net, "dup"));
    try {
      const conflict = nextEvent(observer, "conflict");
      await second.start();
      await conflict;
      await second.close();
      await waitFor(
        () => observer.peers.some((p) => p.name === "dup" && !p.conflict),
        "the conflict to end",
      );
      const echo = await observer.command<{ node: string }>("__echo__", {
        target: "dup",
        raiseErrors: true,
      });
      strictEqual(echo?.node, "dup");
    } finally {
      await second.close();
    }
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a killed node restarted with the same name replaces its old entry and is callable",
  async fn() {
    const net = testNetwork();
    await using watcher = new Node(nodeOptions(net, "watcher"));
    await watcher.start();
    const first = await spawnPeer({ name: "srv", net });
    let firstInstance: string;
    try {
      await waitFor(() => knows(watcher, "srv"), "the watcher to see srv");
      const who = await watcher.command<{ instance: string }>("whoami", {
        target: "srv",
        raiseErrors: true,
      });
      firstInstance = who!.instance;
      strictEqual(watcher.peers[0]?.instance, firstInstance);
    } finally {
      // SIGKILL: no bye; its entry stays until the new instance replaces it or it expires.
      await first.process.stop("SIGKILL");
    }
    await using second = await spawnPeer({ name: "srv", net });
    await waitFor(
      () => watcher.peers.some((p) => p.name === "srv" && p.instance !== firstInstance),
      "the restarted srv to replace the old entry",
    );
    const entries = watcher.peers.filter((p) => p.name === "srv");
    strictEqual(entries.length, 1);
    strictEqual(entries[0]!.conflict, false);
    strictEqual(entries[0]!.address, second.address);
    const who = await deadline(
      watcher.command<{ instance: string }>("whoami", {
        target: "srv",
        raiseErrors: true,
        timeout: 5000,
      }),
      "the call to the restarted srv",
    );
    notStrictEqual(who!.instance, firstInstance);
    strictEqual(who!.instance, entries[0]!.instance);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "calls to a peer that closed and started again reach the new instance",
  async fn() {
    const net = testNetwork();
    const commands = { id: (node: Node) => node.instance };
    await using watcher = new Node(nodeOptions(net, "watcher"));
    await watcher.start();
    const old = new Node(nodeOptions(net, "srv", { commands }));
    try {
      await old.start();
      await waitFor(() => knows(watcher, "srv", old.instance), "the watcher to see srv");
      strictEqual(await watcher.command("id", { target: "srv", raiseErrors: true }), old.instance);
    } finally {
      await old.close();
    }
    await using fresh = new Node(nodeOptions(net, "srv", { commands }));
    await fresh.start();
    await waitFor(() => knows(watcher, "srv", fresh.instance), "the watcher to see the new srv");
    strictEqual(await watcher.command("id", { target: "srv", raiseErrors: true }), fresh.instance);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "Node.start() with its advertiser port held by another program names ports[1] and the port",
  async fn() {
    // Another program's socket, bound without SO_REUSEADDR.
    const holder = Deno.listenDatagram({ transport: "udp", hostname: "0.0.0.0", port: 0 });
    const port = (holder.addr as Deno.NetAddr).port;
    try {
      await using node = new Node(nodeOptions(testNetwork(), "blocked", { ports: [0, port] }));
      const error = await node.start().catch((e) => e);
      strictEqual(error?.name, "PortInUseError", String(error));
      ok(error.message.includes(`port ${port} (ports[1]`), error.message);
    } finally {
      holder.close();
    }
  },
});
