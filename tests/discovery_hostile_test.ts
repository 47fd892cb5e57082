/**
 * LAN adverts under attack, and the warnings a node gives instead of
 * failing silently: replays from another address, replays of a dead or
 * restarted node, a member announcing under someone else's instance, a
 * node with another key, a skewed clock, an old advert version.
 *
 * Real multicast on the namespace's loopback. Datagrams from one socket
 * reach a node in the order sent, and a node handles its datagrams one at
 * a time, so once a node has seen a marker sent after the hostile
 * datagrams, it has handled them all.
 */

import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { Node, PeerNotFoundError } from "../mod.ts";
import { type Advert, decodeAdvert, encodeAdvert, MAX_ADVERT_SIZE } from "../lib/advert.ts";
import { Discovery } from "../lib/discovery.ts";
import { textEncoder } from "../lib/encoding.ts";
import { Fernet, generateKey } from "../lib/fernet.ts";
import { InstanceKey } from "../lib/instance_key.ts";
import { IN_NETNS, NETNS_REASON, testIf } from "./_env.ts";
import {
  deadline,
  HANG_TIMEOUT,
  knows,
  nextEvent,
  nodeOptions,
  sleep,
  spawnPeer,
  type TestNetwork,
  testNetwork,
  waitFor,
} from "./_fixtures.ts";
import { sealedDatagram, signedPlaintext } from "./_advert_fixtures.ts";

const GROUP = "239.255.80.66";
const PORT = 41993;
/** A second loopback address: another "host" as far as a datagram's source goes. */
const ELSEWHERE = "127.0.0.2";

/** A captured advert: its datagram and what it says. */
interface Captured {
  datagram: Uint8Array;
  advert: Advert;
  publicKey: Uint8Array;
}

/**
 * Listens to the group like any node and keeps every authentic advert of
 * `net` (what an eavesdropper on the LAN sees: the datagrams; the key only
 * serves to pick the ones it wants).
 */
class Capture implements AsyncDisposable {
  readonly adverts: Captured[] = [];
  readonly #conn: Deno.DatagramConn;
  readonly #loop: Promise<void>;

  private constructor(conn: Deno.DatagramConn, net: TestNetwork) {
    this.#conn = conn;
    this.#loop = this.#read(new Fernet(net.networkKey), net.network);
  }

  static async start(net: TestNetwork): Promise<Capture> {
    const conn = Deno.listenDatagram({
      transport: "udp",
      hostname: "0.0.0.0",
      port: PORT,
      reuseAddress: true,
      loopback: true,
    });
    await conn.joinMulticastV4(GROUP, "0.0.0.0");
    return new Capture(conn, net);
  }

  async #read(fernet: Fernet, network: string): Promise<void> {
    for (;;) {
      let datagram: Uint8Array;
      try {
        [datagram] = await this.#conn.receive(new Uint8Array(MAX_ADVERT_SIZE + 1));
      } catch {
        return;
      }
      const decoded = await decodeAdvert(datagram, fernet, network);
      if (decoded.ok) {
        this.adverts.push({ datagram, advert: decoded.advert, publicKey: decoded.proof.publicKey });
      }
    }
  }

  /** The newest announce of `instance` captured so far. */
  latest(instance: string): Captured | undefined {
    return this.adverts.findLast((c) =>
      c.advert.instance === instance && c.advert.kind === "announce"
    );
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#conn.close();
    await this.#loop;
  }
}

/** Sends `datagrams` to the group from a socket bound to `hostname`, in order. */
async function sendFrom(hostname: string, datagrams: Uint8Array[]): Promise<void> {
  const conn = Deno.listenDatagram({ transport: "udp", hostname, port: 0, loopback: true });
  try {
    for (const datagram of datagrams) {
      await conn.send(datagram, { transport: "udp", hostname: GROUP, port: PORT });
    }
  } finally {
    conn.close();
  }
}

/**
 * An authentic announce of a node called `name` that no one runs: sent
 * after hostile datagrams from the same socket, once a node lists it, the
 * node has handled them all (and no other node was asked to announce).
 */
async function marker(net: TestNetwork, name = "marker"): Promise<Uint8Array> {
  const key = await InstanceKey.generate();
  const advert: Advert = {
    kind: "announce",
    network: net.network,
    name,
    instance: key.id,
    seq: 1,
    port: 9,
    host: "127.0.0.1",
    interval: 60_000,
  };
  return encodeAdvert(advert, new Fernet(net.networkKey), key);
}

testIf(IN_NETNS, NETNS_REASON, {
  name: "a replayed authentic advert sent from another address does not redirect calls",
  async fn() {
    const net = testNetwork("hostile");
    await using capture = await Capture.start(net);
    // Bound to every address: no host is sealed, so the source address is what receivers see.
    await using alice = new Node(nodeOptions(net, "alice", { hostname: "0.0.0.0" }));
    await using bob = new Node(nodeOptions(net, "bob", { hostname: "0.0.0.0" }));
    await alice.start();
    await bob.start();
    await waitFor(() => knows(alice, "bob") && capture.latest(bob.instance) !== undefined, "bob");
    const before = alice.peers.find((p) => p.name === "bob")!.address!;
    ok(before.startsWith("127.0.0.1:"), before);
    // An eavesdropper re-sends bob's newest adverts from another address.
    const replay = capture.latest(bob.instance)!.datagram;
    await sendFrom(ELSEWHERE, [replay, replay, replay, await marker(net)]);
    await waitFor(() => knows(alice, "marker"), "alice to see the marker");
    strictEqual(alice.peers.find((p) => p.name === "bob")?.address, before);
    const echo = await deadline(
      alice.command<{ node: string }>("__echo__", { target: "bob", raiseErrors: true }),
      "the call to bob",
    );
    strictEqual(echo?.node, "bob");
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a dead node's replayed advert does not keep it alive past three missed adverts",
  async fn() {
    const net = testNetwork("hostile");
    await using capture = await Capture.start(net);
    await using watcher = new Node(nodeOptions(net, "watcher", { advertiseInterval: 100 }));
    await watcher.start();
    await using victim = await spawnPeer({ name: "victim", net, interval: 100 });
    const instance = () => watcher.peers.find((p) => p.name === "victim")?.instance;
    await waitFor(() => instance() !== undefined, "the watcher to see the victim");
    const id = instance()!;
    await waitFor(() => capture.latest(id) !== undefined, "a captured announce of the victim");
    const left = nextEvent(watcher, "peerleave", (peer) => peer.name === "victim");
    let gone = false;
    void left.then(() => gone = true, () => {});
    await victim.process.stop("SIGKILL"); // No bye: only silence tells.
    const replay = capture.latest(id)!.datagram;
    const fernet = new Fernet(net.networkKey);
    // Replays every 50 ms, from the victim's own address, while they are still fresh adverts.
    let fresh = true;
    for (let sent = 0; !gone && sent < HANG_TIMEOUT / 50; sent++) {
      fresh = (await decodeAdvert(replay, fernet, net.network)).ok;
      if (!fresh) break;
      await sendFrom("127.0.0.1", [replay]);
      await sleep(50);
    }
    ok(fresh, "the victim was kept alive until its replayed advert expired");
    await left;
    ok(!knows(watcher, "victim"));
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name:
    "a restarted node replaces its old entry at once and replays of the old instance neither bring it back nor raise a conflict",
  async fn() {
    const net = testNetwork("hostile");
    await using capture = await Capture.start(net);
    await using watcher = new Node(nodeOptions(net, "watcher"));
    await watcher.start();
    const conflicts: unknown[] = [];
    watcher.addEventListener("conflict", (e) => conflicts.push(e.detail));
    const first = await spawnPeer({ name: "srv", net });
    let old: string;
    try {
      await waitFor(() => knows(watcher, "srv"), "the watcher to see srv");
      old = watcher.peers.find((p) => p.name === "srv")!.instance;
      await waitFor(() => capture.latest(old) !== undefined, "a captured announce of srv");
    } finally {
      await first.process.stop("SIGKILL");
    }
    await using second = await spawnPeer({ name: "srv", net });
    await waitFor(
      () => watcher.peers.some((p) => p.name === "srv" && p.instance !== old),
      "the restarted srv to replace the old entry",
    );
    const fresh = watcher.peers.find((p) => p.name === "srv")!.instance;
    const replay = capture.latest(old)!.datagram;
    await sendFrom("127.0.0.1", [replay, replay]);
    await sendFrom(ELSEWHERE, [replay, await marker(net)]);
    await waitFor(() => knows(watcher, "marker"), "the watcher to see the marker");
    const who = await deadline(
      watcher.command<{ instance: string }>("whoami", { target: "srv", raiseErrors: true }),
      "the call to the restarted srv",
    );
    strictEqual(who?.instance, fresh);
    deepStrictEqual(watcher.peers.filter((p) => p.name === "srv").map((p) => p.instance), [fresh]);
    strictEqual(watcher.peers.find((p) => p.name === "srv")?.conflict, false);
    deepStrictEqual(conflicts, []);
    strictEqual(second.name, "srv");
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "another member cannot announce or say bye with someone else's instance",
  async fn() {
    const net = testNetwork("hostile");
    await using capture = await Capture.start(net);
    await using alice = new Node(nodeOptions(net, "alice"));
    await using bob = new Node(nodeOptions(net, "bob", { advertiseInterval: 100 }));
    await alice.start();
    await bob.start();
    await waitFor(() => knows(alice, "bob") && capture.latest(bob.instance) !== undefined, "bob");
    const before = alice.peers.find((p) => p.name === "bob")!;
    const real = capture.latest(bob.instance)!;
    // Mallory holds the network key, not bob's instance key.
    const mallory = await InstanceKey.generate();
    const fernet = new Fernet(net.networkKey);
    const claim = (kind: number, seq: number) =>
      textEncoder.encode(JSON.stringify({
        k: kind,
        w: net.network,
        n: "bob",
        i: bob.instance,
        q: seq,
        p: 9,
        h: "127.0.0.1",
        iv: 100,
      }));
    const seq = real.advert.seq + 1_000_000;
    const forged = [
      // Mallory's own key: its hash is not bob's instance.
      await sealedDatagram(fernet, net.network, 1, await signedPlaintext(claim(1, seq), mallory)),
      // Bob's public key, mallory's signature.
      await sealedDatagram(
        fernet,
        net.network,
        1,
        await signedPlaintext(claim(1, seq + 1), mallory, real.publicKey),
      ),
      // A bye in bob's name.
      await sealedDatagram(
        fernet,
        net.network,
        3,
        await signedPlaintext(claim(3, seq + 2), mallory, real.publicKey),
      ),
    ];
    await sendFrom("127.0.0.1", forged);
    await sendFrom(ELSEWHERE, [...forged, await marker(net)]);
    await waitFor(() => knows(alice, "marker"), "alice to see the marker");
    deepStrictEqual(alice.peers.find((p) => p.name === "bob"), before);
    // Bob's own adverts, with sequence numbers far below the forged ones, still count:
    // five of his 100 ms intervals later he has not expired.
    await sleep(500);
    deepStrictEqual(alice.peers.find((p) => p.name === "bob"), before);
    const echo = await alice.command<{ node: string }>("__echo__", {
      target: "bob",
      raiseErrors: true,
    });
    strictEqual(echo?.node, "bob");
  },
});

// ---- Warnings ----

testIf(IN_NETNS, NETNS_REASON, {
  name:
    "a node warns about adverts for its network under another key, and PeerNotFoundError names it",
  async fn(t) {
    const net = testNetwork("warn");
    await using alice = new Node(nodeOptions(net, "alice"));
    await alice.start();
    const warned = nextEvent(alice, "warning");
    await using intruder = new Node(
      nodeOptions({ ...net, networkKey: generateKey() }, "bob", { advertiseInterval: 50 }),
    );
    await intruder.start();
    await t.step("the warning", async () => {
      const warning = await warned;
      strictEqual(warning.code, "key-mismatch");
      strictEqual(warning.source, "127.0.0.1");
      strictEqual(warning.suppressed, 0);
      ok(warning.message.includes(`network '${net.network}'`), warning.message);
      ok(warning.message.includes("another key"), warning.message);
      ok(!knows(alice, "bob"));
    });
    await t.step("one per code per minute", async () => {
      const more: unknown[] = [];
      alice.addEventListener("warning", (e) => more.push(e.detail));
      await sleep(300); // Six of the intruder's intervals.
      deepStrictEqual(more, []);
    });
    await t.step("a call to the missing peer names the likely cause", async () => {
      const error = await alice.command("__echo__", { target: "bob" }).catch((e) => e);
      ok(error instanceof PeerNotFoundError, String(error));
      ok(error.message.startsWith("Cannot reach peer 'bob': "), error.message);
      ok(error.message.includes("likely cause: "), error.message);
      ok(error.message.includes("another key"), error.message);
    });
    await t.step("so does waiting for it", async () => {
      const error = await alice.waitForPeer("bob", { timeout: 50 }).catch((e) => e);
      ok(error instanceof PeerNotFoundError, String(error));
      ok(error.message.includes("(warning key-mismatch)"), error.message);
    });
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a node warns about adverts from a clock an hour ahead, with the measured skew",
  async fn() {
    const net = testNetwork("warn");
    await using alice = new Node(nodeOptions(net, "alice"));
    await alice.start();
    const warned = nextEvent(alice, "warning", (w) => w.code === "clock-skew");
    const hour = 3_600_000;
    await using skewed = new Discovery({
      name: "late",
      network: net.network,
      instanceKey: await InstanceKey.generate(),
      fernet: new Fernet(net.networkKey),
      rpcPort: 9,
      host: "127.0.0.1",
      now: () => Date.now() + hour,
      onAnnounce() {},
      onBye() {},
    });
    await skewed.start();
    const warning = await warned;
    ok(Math.abs(warning.skew! - hour) < 5000, `skew ${warning.skew}`);
    ok(warning.message.includes("ahead of this node's clock"), warning.message);
    ok(warning.message.includes("synchronise the clocks"), warning.message);
    ok(!knows(alice, "late"));
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a node warns about an advert of another version for its network",
  async fn() {
    const net = testNetwork("warn");
    await using alice = new Node(nodeOptions(net, "alice"));
    await alice.start();
    const warned = nextEvent(alice, "warning", (w) => w.code === "advert-version");
    const old = await sealedDatagram(
      new Fernet(net.networkKey),
      net.network,
      1,
      new Uint8Array(16),
      1,
    );
    await sendFrom(ELSEWHERE, [old]);
    const warning = await warned;
    strictEqual(warning.source, ELSEWHERE);
    ok(warning.message.includes("version 1"), warning.message);
  },
});
