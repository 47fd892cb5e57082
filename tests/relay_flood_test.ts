/**
 * Blame the sender: a member that floods a receiver (or `*`) through a real
 * relay is slowed or cut, never the receiver, and every other member keeps
 * calling; a receiver that never reads is cut as a slow reader while its
 * sender is only slowed; control frames overtake a DATA backlog.
 *
 * Real relays and real sockets, no mocks. Every flood is bounded in frames
 * and in time (whichever comes first); waits are bounded only to catch
 * hangs, never to measure how fast something happened.
 */

import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { Node } from "../mod.ts";
import { CloseCode, type Frame, FrameType } from "../lib/frame.ts";
import { deadline, HANG_TIMEOUT, sleep, testNetwork, waitFor } from "./_fixtures.ts";
import {
  blame,
  dataFrame,
  meetVia,
  PING,
  pongs,
  pseudonymOf,
  rawIdentity,
  rawMember,
  RelayRawClient,
  remoteOptions,
  startRelay,
} from "./_relay_fixtures.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/**
 * The most bytes the kernel may buffer on one loopback connection whose reader does not read:
 * the writer's largest send buffer plus the reader's largest receive buffer (64 MiB when the
 * limits cannot be read).
 */
function kernelBuffering(): number {
  try {
    const largest = (file: string) =>
      Number(Deno.readTextFileSync(`/proc/sys/net/ipv4/${file}`).trim().split(/\s+/)[2]);
    const total = largest("tcp_rmem") + largest("tcp_wmem");
    return Number.isFinite(total) && total > 0 ? total : 64 * MiB;
  } catch {
    return 64 * MiB;
  }
}

// ---- Helpers ----

/** How a flood ended. */
interface FloodOutcome {
  /** Frames handed to the socket. */
  sent: number;
  /** True when a write failed: the relay cut the flooder. */
  cut: boolean;
}

/** Limits of one flood: it stops at whichever comes first. */
interface FloodLimits {
  /** Most frames sent. */
  frames: number;
  /** Most time spent, ms. */
  ms: number;
  /** Frames per write. @default 8 */
  batch?: number;
  /** Stops the flood early once it holds. */
  until?: () => boolean;
}

/**
 * Writes frames made by `next(i)` (i counts from 0) as fast as the relay
 * takes them, until `limits` says stop or a write fails. A write still
 * blocked when the time is up is left to fail when the client closes.
 */
async function flood(
  client: RelayRawClient,
  next: (i: number) => Uint8Array,
  limits: FloodLimits,
): Promise<FloodOutcome> {
  const end = performance.now() + limits.ms;
  const batch = limits.batch ?? 8;
  let sent = 0;
  while (sent < limits.frames && !client.closed && !(limits.until?.() ?? false)) {
    const left = end - performance.now();
    if (left <= 0) break;
    const count = Math.min(batch, limits.frames - sent);
    const frames = Array.from({ length: count }, (_, k) => next(sent + k));
    const bytes = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
    let at = 0;
    for (const frame of frames) {
      bytes.set(frame, at);
      at += frame.length;
    }
    const write = client.write(bytes).then(() => "written" as const, () => "failed" as const);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeUp = new Promise<"time">((resolve) =>
      timer = setTimeout(() => resolve("time"), left)
    );
    const outcome = await Promise.race([write, timeUp]);
    clearTimeout(timer);
    if (outcome === "failed") return { sent, cut: true };
    if (outcome === "time") break;
    sent += count;
  }
  return { sent, cut: false };
}

/** Random bytes: the body of a junk DATA frame (no token, no network key behind it). */
function junk(size: number): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(size));
}

/** Calls `echo` from each caller to its target in a loop until stopped; counts every outcome. */
class CallStream {
  readonly failures: string[] = [];
  readonly done = new Map<string, number>();
  #stopped = false;
  readonly #loops: Promise<void>[];

  constructor(pairs: Array<[caller: Node, target: string]>) {
    this.#loops = pairs.map(([caller, target]) => this.#loop(caller, target));
  }

  async #loop(caller: Node, target: string): Promise<void> {
    const key = `${caller.name}->${target}`;
    this.done.set(key, 0);
    for (let i = 0; !this.#stopped; i++) {
      try {
        const got = await caller.command("echo", {
          target,
          args: [i],
          raiseErrors: true,
          timeout: 8000,
        });
        strictEqual(got, i);
        this.done.set(key, this.done.get(key)! + 1);
      } catch (error) {
        this.failures.push(`${key} #${i}: ${(error as Error).name}: ${(error as Error).message}`);
      }
    }
  }

  /** Calls completed so far, per pair. */
  snapshot(): Map<string, number> {
    return new Map(this.done);
  }

  /** Stops the loops and waits for the calls in flight (a hang guard only). */
  async stop(): Promise<void> {
    this.#stopped = true;
    await deadline(Promise.all(this.#loops), "the calls in flight to finish");
  }
}

/** Pairs whose count did not grow between two snapshots. */
function idle(before: Map<string, number>, after: Map<string, number>): string[] {
  return [...after].filter(([key, n]) => n <= (before.get(key) ?? 0)).map(([key]) => key);
}

/** Records every `relaydown` event of `nodes`. */
function watchDowns(nodes: Node[]): string[] {
  const downs: string[] = [];
  for (const node of nodes) {
    node.addEventListener("relaydown", (e) => downs.push(`${node.name}: ${e.detail.reason}`));
  }
  return downs;
}

/** A remote-only node on `relay` that answers `echo`. */
function echoNode(net: ReturnType<typeof testNetwork>, name: string, relay: string): Node {
  return new Node(remoteOptions(net, name, relay, { commands: { echo: (_n, args) => args[0] } }));
}

/** Sends a PING and waits for the PONG that answers it: the relay still serves `client`. */
async function pingPong(client: RelayRawClient): Promise<void> {
  const before = pongs(client);
  await client.write(PING);
  await waitFor(() => pongs(client) > before || client.closed, "a PONG");
  ok(pongs(client) > before, `the relay closed the connection: ${JSON.stringify(client.goaway)}`);
}

// ---- Tests ----

Deno.test({
  name:
    "a member flooding a receiver with junk is slowed or cut, never the receiver; every member keeps calling",
  async fn() {
    const net = testNetwork("flood");
    await using r = await startRelay({
      senderFrameRate: 2000,
      senderFrameBurst: 2000,
      senderShare: 256 * KiB,
    });
    const { relay, address } = r;
    await using a = echoNode(net, "a", address);
    await using b = echoNode(net, "b", address);
    await using victim = echoNode(net, "victim", address);
    const downs = watchDowns([a, b, victim]);
    await Promise.all([a.start(), b.start(), victim.start()]);
    await meetVia([a, b, victim], address);
    const { id: malloryId, client: mallory } = await rawMember(net, "mallory", address);
    await using _mallory = mallory;
    const target = pseudonymOf(net, "victim");

    const calls = new CallStream([[a, "b"], [b, "a"], [b, "victim"], [victim, "a"]]);
    await waitFor(() => [...calls.done.values()].every((n) => n > 0), "every pair to call once");
    const before = calls.snapshot();
    const outcome = await flood(
      mallory,
      () => dataFrame(malloryId.networkId, target, malloryId.pseudonym, junk(512)),
      { frames: 200_000, ms: 3000 },
    );
    const during = calls.snapshot();
    await calls.stop();

    deepStrictEqual(calls.failures, []);
    deepStrictEqual(idle(before, during), [], "every pair kept calling during the flood");
    deepStrictEqual(downs, [], "no node lost the relay");
    const { throttles, disconnects, nodes } = relay.stats;
    ok(throttles > 0 || disconnects.flood > 0, `the flooder was slowed or cut: ${blame(relay)}`);
    strictEqual(disconnects.slowReader, 0, `no receiver was cut: ${blame(relay)}`);
    ok(outcome.sent > 0);
    strictEqual(nodes, 4 - disconnects.flood, "a, b and the victim are still registered");
  },
});

Deno.test({
  name:
    "a member flooding '*' is held to its fan-out rate; every member keeps calling, none is cut",
  async fn() {
    const net = testNetwork("flood");
    const fanoutRate = 50;
    const fanoutBurst = 50;
    await using r = await startRelay({ fanoutRate, fanoutBurst });
    const { relay, address } = r;
    await using a = echoNode(net, "a", address);
    await using b = echoNode(net, "b", address);
    await using c = echoNode(net, "c", address);
    const downs = watchDowns([a, b, c]);
    await Promise.all([a.start(), b.start(), c.start()]);
    await meetVia([a, b, c], address);
    const watcher = await rawMember(net, "watcher", address);
    await using _watcher = watcher.client;
    const mallory = await rawMember(net, "mallory", address);
    await using _mallory = mallory.client;
    const fromMallory = (f: Frame) =>
      f.type === FrameType.DATA && f.sender === mallory.id.pseudonym && f.target === "*";

    const calls = new CallStream([[a, "b"], [b, "c"], [c, "a"]]);
    await waitFor(() => [...calls.done.values()].every((n) => n > 0), "every pair to call once");
    const before = calls.snapshot();
    const started = performance.now();
    const outcome = await flood(
      mallory.client,
      () => dataFrame(mallory.id.networkId, "*", mallory.id.pseudonym, junk(256)),
      { frames: 100_000, ms: 3000 },
    );
    const during = calls.snapshot();
    // Read the watcher's count first, then the clock: the bound below can only grow.
    const fanned = watcher.client.frames.filter(fromMallory).length;
    const elapsed = performance.now() - started;
    await calls.stop();

    deepStrictEqual(calls.failures, []);
    deepStrictEqual(idle(before, during), [], "every pair kept calling during the flood");
    deepStrictEqual(downs, [], "no node lost the relay");
    ok(!watcher.client.closed, "the watcher was not cut");
    const { throttles, disconnects } = relay.stats;
    ok(throttles > 0, `the flooder was slowed: ${blame(relay)}`);
    strictEqual(disconnects.slowReader, 0, `no receiver was cut: ${blame(relay)}`);
    // A ceiling, not a speed: the relay can never fan out more than its bucket holds.
    const ceiling = fanoutBurst + Math.ceil((fanoutRate * elapsed) / 1000) + 1;
    ok(
      fanned <= ceiling,
      `the watcher got ${fanned} of the ${outcome.sent} '*' frames sent; at most ${ceiling} may pass`,
    );
    ok(fanned < outcome.sent, `the relay held the flood back: ${fanned} of ${outcome.sent}`);
  },
});

Deno.test({
  name:
    "a receiver that never reads is cut as a slow reader, while its sender is only slowed and stays connected",
  async fn() {
    const net = testNetwork("flood");
    // Scaled down tenfold from the defaults (timeout 10 s, node tick 1 s): a sender's
    // silence limit, max(3 ticks, timeout), is the relay's timeout, as for a default node.
    const timeout = 1000;
    await using r = await startRelay({ timeout, maxBuffered: 64 * KiB, senderShare: 64 * KiB });
    const { relay, address } = r;
    // The receiver answers the CHALLENGE, then reads nothing. Its long tick keeps the
    // relay's silence rule out of the way: only the slow-reader rule may cut it.
    const deafId = await rawIdentity(net, "deaf");
    await using deaf = await RelayRawClient.connect(address, { read: false });
    await deaf.sendRegister(deafId, { tick: 60_000 });
    await waitFor(() => relay.stats.nodes === 1, "the deaf receiver to register");
    const senderId = await rawIdentity(net, "sender");
    await using sender = await RelayRawClient.connect(address, { keepMembers: false });
    await sender.register(senderId, { tick: 100 });

    const outcome = await flood(
      sender,
      (i) => dataFrame(senderId.networkId, deafId.pseudonym, senderId.pseudonym, junk(16 * KiB), i),
      { frames: 8192, ms: 8000, until: () => relay.stats.disconnects.slowReader > 0 },
    );
    await waitFor(
      () => relay.stats.disconnects.slowReader > 0 || sender.closed,
      `the relay to cut the deaf receiver (${outcome.sent} frames sent)`,
    );
    // At once: the sender's silence limit is one timeout (it only floods, it never beats).
    ok(!outcome.cut, `the sender's writes all went through: ${JSON.stringify(sender.goaway)}`);
    await pingPong(sender);
    strictEqual(sender.goaway, null, `the sender got no GOAWAY: ${JSON.stringify(sender.goaway)}`);

    const { throttles, disconnects } = relay.stats;
    ok(throttles > 0, `the sender was slowed: ${blame(relay)}`);
    strictEqual(disconnects.slowReader, 1, blame(relay));
    strictEqual(disconnects.flood, 0, `the sender was not cut for flooding: ${blame(relay)}`);
    await waitFor(() => relay.stats.nodes === 1, "the relay to forget the receiver");
    ok(!sender.closed, "the sender is still connected");
    const cut = await deaf.outcome();
    ok(cut.closed, "the deaf receiver was disconnected");
    if (cut.goaway) strictEqual(cut.goaway.code, CloseCode.POLICY, cut.goaway.reason);
  },
});

Deno.test({
  name: "a PING is answered ahead of the DATA backlog queued at the relay for its connection",
  async fn() {
    const net = testNetwork("flood");
    const frameBody = 64 * KiB;
    // More than the kernel can hold between the relay and a receiver that does not read (its
    // send buffer and the receiver's receive buffer), so the rest waits in the relay's queue.
    const backlog = kernelBuffering() + 8 * MiB;
    const frames = Math.ceil(backlog / frameBody);
    // The sender is never slowed here: its share holds the whole backlog.
    await using r = await startRelay({ senderShare: 2 * backlog, maxBuffered: 2 * backlog });
    const { relay, address } = r;
    // The receiver registers and reads nothing for now: frames for it pile up at the relay.
    const receiverId = await rawIdentity(net, "receiver");
    await using receiver = await RelayRawClient.connect(address, { read: false });
    await receiver.sendRegister(receiverId, { tick: 60_000 });
    await waitFor(() => relay.stats.nodes === 1, "the receiver to register");
    const { id: senderId, client: sender } = await rawMember(net, "sender", address);
    await using _sender = sender;

    // Frame ids count from 1, so the receiver can tell which ones passed the PONG.
    const outcome = await flood(
      sender,
      (i) =>
        dataFrame(
          senderId.networkId,
          receiverId.pseudonym,
          senderId.pseudonym,
          junk(frameBody),
          i + 1,
        ),
      { frames, ms: HANG_TIMEOUT },
    );
    strictEqual(outcome.sent, frames);
    await waitFor(
      () => relay.stats.framesForwarded === frames,
      "the relay to queue every frame for the receiver",
    );
    strictEqual(relay.stats.throttles, 0);

    // PING, then a marker for the sender: once the sender has the marker, the relay has
    // read the PING (it reads a connection's frames in order) and queued its PONG.
    const marker = dataFrame(receiverId.networkId, senderId.pseudonym, "", new Uint8Array(1), 7);
    await receiver.write(new Uint8Array([...PING, ...marker]));
    await sender.frame(
      (f) => f.type === FrameType.DATA && f.sender === receiverId.pseudonym,
      "the receiver's marker",
    );

    receiver.startReading();
    const data = () => receiver.frames.filter((f) => f.type === FrameType.DATA).length;
    await waitFor(
      () => data() >= frames || receiver.closed,
      `all ${frames} DATA frames to reach the receiver`,
    );
    strictEqual(data(), frames);
    const order = receiver.frames.filter((f) =>
      f.type === FrameType.DATA || f.type === FrameType.PONG
    );
    const pong = order.findIndex((f) => f.type === FrameType.PONG);
    ok(pong >= 0, "the PING was answered");
    const kernelFrames = Math.ceil(kernelBuffering() / frameBody) + 1;
    ok(
      pong <= kernelFrames,
      `the PONG came after ${pong} of the ${frames} DATA frames queued before it was asked for; ` +
        `at most ${kernelFrames} fit in the kernel's buffers`,
    );
    deepStrictEqual(
      order.filter((f) => f.type === FrameType.DATA).map((f) => f.id),
      Array.from({ length: frames }, (_, i) => i + 1),
      "the DATA frames kept their order",
    );
    strictEqual(relay.stats.disconnects.slowReader, 0);
  },
});

Deno.test({
  name: "a member that stays far over a high frame rate is cut once, after a silence timeout",
  async fn() {
    // At 1,000 frames/s tokens are back after every hold (the timer fires late), so a flood
    // must not end on the first frame read after one.
    const net = testNetwork("flood");
    await using r = await startRelay({ timeout: 300, senderFrameRate: 1000, senderFrameBurst: 5 });
    const { relay, address } = r;
    const { client: mallory } = await rawMember(net, "mallory", address);
    await using _mallory = mallory;
    const outcome = await flood(mallory, () => PING, { frames: 200_000, ms: 5000, batch: 64 });
    await waitFor(
      () => relay.stats.disconnects.flood > 0,
      `the flooder to be cut: ${blame(relay)}`,
    );
    ok(outcome.sent > 0);
    strictEqual(relay.stats.disconnects.flood, 1, blame(relay));
  },
});

Deno.test({
  name:
    "a sender slowed for its frame rate twice, a silence timeout apart, is slowed again and not cut",
  async fn() {
    const net = testNetwork("flood");
    const timeout = 500;
    const senderFrameBurst = 20;
    await using r = await startRelay({ timeout, senderFrameRate: 100, senderFrameBurst });
    const { relay, address } = r;
    const { id: sinkId, client: sink } = await rawMember(net, "sink", address, 10_000);
    await using _sink = sink;
    // A long tick: the sender is quiet between its bursts without being silent for too long.
    const senderId = await rawIdentity(net, "sender");
    await using sender = await RelayRawClient.connect(address, { keepMembers: false });
    await sender.register(senderId, { tick: 10_000 });
    const burst = () =>
      flood(
        sender,
        (i) => dataFrame(senderId.networkId, sinkId.pseudonym, senderId.pseudonym, junk(64), i),
        // Twice its burst: over its rate for 200 ms, well within one silence timeout.
        { frames: 2 * senderFrameBurst, ms: HANG_TIMEOUT, batch: 2 * senderFrameBurst },
      );

    await burst();
    await waitFor(() => relay.stats.throttles >= 1, "the first burst to be slowed");
    await pingPong(sender); // Behind the burst: the whole burst was read.
    // A loaded machine may split one burst into two holds: count from here.
    const afterFirst = relay.stats.throttles;
    // Quiet for more than a silence timeout: the first episode is over.
    await sleep(3 * timeout);
    await pingPong(sender);

    await burst();
    await waitFor(
      () => relay.stats.throttles > afterFirst || sender.closed,
      "the second burst to be slowed",
    );
    await pingPong(sender);
    deepStrictEqual(relay.stats.disconnects, {
      slowReader: 0,
      flood: 0,
      budget: 0,
      stalledFrame: 0,
    });
    // Each burst is slowed at least once.
    ok(relay.stats.throttles > afterFirst, blame(relay));
  },
});
