/**
 * Hostile and unlucky members against a real relay (docs/PROTOCOL.md,
 * "Blame the sender"): two members that hold each other up while neither
 * reads are cut and forgotten, and the relay still closes; a stranger
 * cannot make the relay read a large frame before its proof; a member that
 * sends one small frame to a flooded receiver is not held behind the
 * flood; a receiver that reads slowly but steadily is never cut for one
 * large frame; a member that sends PINGs without reading gets at most one
 * PONG queued for it.
 *
 * Real relays on loopback and real sockets, no mocks. Every flood is
 * bounded in frames and in time (whichever comes first); waits are bounded
 * only to catch hangs, never to measure how fast something happened.
 */

import { ok, strictEqual } from "node:assert/strict";
import type { Relay } from "../relay/mod.ts";
import { CloseCode, decodeGoaway, type Frame, FrameDecoder, FrameType } from "../lib/frame.ts";
import { deadline, HANG_TIMEOUT, sleep, testNetwork, waitFor } from "./_fixtures.ts";
import {
  blame,
  challengeNonce,
  codeName,
  dataFrame,
  PING,
  pongs,
  type RawIdentity,
  rawIdentity,
  rawMember,
  registerFrame,
  RelayRawClient,
  startRelay,
} from "./_relay_fixtures.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/**
 * A keepalive tick long enough that the relay's silence rule, max(3 ticks,
 * timeout), never cuts a member during a test: only the rules under test may.
 */
const LONG_TICK = 60_000;

// ---- Helpers ----

/** A flood running in the background. */
interface Flood {
  /** Frames handed to the socket, or on their way to it. */
  readonly started: number;
  /** True once a write failed: the relay closed the connection. */
  readonly cut: boolean;
  /** Stops the flood from sending any further frame. */
  stop(): void;
  /** Resolves once the flood has stopped and its last write has settled. */
  readonly done: Promise<void>;
}

/** Limits of one flood: it stops at whichever comes first. */
interface FloodLimits {
  /** Most frames sent. */
  frames: number;
  /** Most time spent sending, ms. */
  ms: number;
  /** Stops the flood early once it holds. */
  until?: () => boolean;
}

/**
 * Writes `frame` again and again from `client`, one write at a time, until
 * `limits` or {@linkcode Flood.stop} says stop or a write fails. A write
 * the relay does not take (it holds the sender) settles once the relay
 * reads again or either side closes the connection.
 */
function startFlood(client: RelayRawClient, frame: Uint8Array, limits: FloodLimits): Flood {
  const end = performance.now() + limits.ms;
  let stopped = false;
  const state = {
    started: 0,
    cut: false,
    stop: () => stopped = true,
    done: Promise.resolve(),
  };
  state.done = (async () => {
    while (
      !stopped && state.started < limits.frames && performance.now() < end &&
      !(limits.until?.() ?? false)
    ) {
      state.started++;
      try {
        await client.write(frame);
      } catch {
        state.cut = true;
        return;
      }
    }
  })();
  return state;
}

/** DATA frames `client` has received. */
function dataFrames(client: RelayRawClient): Frame[] {
  return client.frames.filter((f) => f.type === FrameType.DATA);
}

/**
 * A registered member that reads its socket at a steady, slow pace: at most
 * `chunk` bytes, then a pause of `pause` ms, again and again. It keeps the
 * DATA frames and the GOAWAY it reads.
 */
class PacedReceiver implements AsyncDisposable {
  readonly #conn: Deno.TcpConn;
  readonly #decoder = new FrameDecoder(2 ** 31);
  readonly #stop = new AbortController();
  #frames: Frame[] = [];
  #reading: Promise<void> | null = null;
  /** DATA frames received. */
  readonly data: Frame[] = [];
  /** The GOAWAY received, if any. */
  goaway: { code: number; reason: string } | null = null;
  /** Bytes read at the slow pace (after the relay confirmed the registration). */
  received = 0;
  /** True once the relay closed the connection (EOF or reset) while it was reading. */
  cut = false;

  private constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
  }

  /**
   * Connects to `address`, registers `who` reading at full speed until the
   * relay confirms, then reads `chunk` bytes every `pause` ms.
   */
  static async register(
    address: string,
    who: RawIdentity,
    pace: { chunk: number; pause: number },
  ): Promise<PacedReceiver> {
    const at = address.lastIndexOf(":");
    const conn = await Deno.connect({
      hostname: address.slice(0, at),
      port: Number(address.slice(at + 1)),
    });
    const receiver = new PacedReceiver(conn);
    try {
      const challenge = await receiver.#readUntil(FrameType.CHALLENGE);
      await conn.write(
        await registerFrame(who, challengeNonce(challenge), address, {
          tick: LONG_TICK,
        }),
      );
      await receiver.#readUntil(FrameType.REGISTERED);
    } catch (error) {
      conn.close();
      throw error;
    }
    receiver.#reading = receiver.#paced(pace.chunk, pace.pause);
    return receiver;
  }

  /** Reads at full speed until a frame of `type` arrives (10 s cap). */
  async #readUntil(type: number): Promise<Frame> {
    const buffer = new Uint8Array(64 * KiB);
    const end = Date.now() + HANG_TIMEOUT;
    while (true) {
      const found = this.#frames.find((f) => f.type === type);
      if (found) return found;
      const n = await deadline(this.#conn.read(buffer), `frame type ${type}`, end - Date.now());
      if (n === null) {
        throw new Error(`The relay closed the connection: ${JSON.stringify(this.goaway)}`);
      }
      this.#take(buffer.subarray(0, n));
    }
  }

  async #paced(chunk: number, pause: number): Promise<void> {
    const buffer = new Uint8Array(chunk);
    try {
      while (!this.#stop.signal.aborted) {
        const n = await this.#conn.read(buffer);
        if (n === null) {
          this.cut = true;
          return;
        }
        this.received += n;
        this.#take(buffer.subarray(0, n));
        await sleep(pause, this.#stop.signal);
      }
    } catch {
      // Stopped by us, or reset by the relay.
      if (!this.#stop.signal.aborted) this.cut = true;
    }
  }

  #take(bytes: Uint8Array): void {
    for (const frame of this.#decoder.push(bytes)) {
      if (frame.type === FrameType.GOAWAY) this.goaway ??= decodeGoaway(frame.body);
      if (frame.type === FrameType.DATA) this.data.push(frame);
      else this.#frames.push(frame);
    }
  }

  /** Stops reading, closes the connection and waits for the reader. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.#stop.abort();
    try {
      this.#conn.close();
    } catch {
      // Already closed.
    }
    await this.#reading;
  }
}

/**
 * About what Linux buffers on a loopback connection whose reader reads
 * little: the writer's largest send buffer and the reader's initial receive
 * buffer (`tcp_wmem` max plus `tcp_rmem` default; 4 MiB + 128 KiB when they
 * cannot be read). Bytes a relay has written beyond this and the reader has
 * not read are still waiting in the relay's queue.
 */
function loopbackBuffering(): number {
  try {
    const field = (file: string, index: number) =>
      Number(Deno.readTextFileSync(`/proc/sys/net/ipv4/${file}`).trim().split(/\s+/)[index]);
    const total = field("tcp_wmem", 2) + field("tcp_rmem", 1);
    return Number.isFinite(total) && total > 0 ? total : 4 * MiB + 128 * KiB;
  } catch {
    return 4 * MiB + 128 * KiB;
  }
}

/** Closes `relay`, failing (rather than hanging) when it does not close within `HANG_TIMEOUT`. */
function closeRelay(relay: Relay): Promise<void> {
  return deadline(relay.close(), "relay.close() to resolve");
}

// ---- Tests ----

Deno.test({
  name:
    "two members that each queue more than their share for the other while neither reads are both cut as slow readers and forgotten; their names register again and the relay closes",
  async fn() {
    const net = testNetwork("hostile");
    const frameBody = 60 * KiB;
    // Scaled down from the defaults: a stalled reader is cut after 1 s, and each member is
    // held once 64 KiB of its frames wait for the other.
    const { relay, address } = await startRelay({
      timeout: 1000,
      maxFrame: 64 * KiB,
      senderShare: 64 * KiB,
    });
    let passed = false;
    try {
      const [aliceId, bobId] = await Promise.all([
        rawIdentity(net, "alice"),
        rawIdentity(net, "bob"),
      ]);
      // Both answer the CHALLENGE, then read nothing.
      await using alice = await RelayRawClient.connect(address, { read: false });
      await using bob = await RelayRawClient.connect(address, { read: false });
      await alice.sendRegister(aliceId, { tick: LONG_TICK });
      await bob.sendRegister(bobId, { tick: LONG_TICK });
      await waitFor(() => relay.stats.nodes === 2, "alice and bob to register");

      // Each sends the other far more than the kernel buffers between them can hold (the
      // relay's send buffer and the receiver's receive buffer), so each is held for the other.
      const limits = {
        frames: 1024,
        ms: HANG_TIMEOUT,
        until: () => relay.stats.disconnects.slowReader >= 2,
      };
      const floods = [
        startFlood(
          alice,
          dataFrame(
            aliceId.networkId,
            bobId.pseudonym,
            aliceId.pseudonym,
            new Uint8Array(frameBody),
          ),
          limits,
        ),
        startFlood(
          bob,
          dataFrame(bobId.networkId, aliceId.pseudonym, bobId.pseudonym, new Uint8Array(frameBody)),
          limits,
        ),
      ];
      await waitFor(
        () => relay.stats.disconnects.slowReader >= 2,
        `the relay to cut both as slow readers: ${blame(relay)}`,
      );
      await waitFor(
        () => relay.stats.nodes === 0 && relay.stats.connections === 0,
        `the relay to forget both: ${blame(relay)}`,
      );
      // The relay closed both sockets: every write still waiting fails.
      await deadline(Promise.all(floods.map((f) => f.done)), "the floods to end");
      strictEqual(relay.stats.disconnects.slowReader, 2, blame(relay));
      strictEqual(relay.stats.disconnects.flood, 0, blame(relay));

      // New instances (new instance keys) of both take their names again.
      for (const name of ["alice", "bob"]) {
        await using again = await RelayRawClient.connect(address, { keepMembers: false });
        await again.register(await rawIdentity(net, name), { tick: LONG_TICK });
        strictEqual(relay.stats.nodes, 1, `${name} registered again: ${blame(relay)}`);
      }
      await closeRelay(relay);
      passed = true;
    } finally {
      if (!passed) await closeRelay(relay).catch(() => {});
    }
  },
});

Deno.test({
  name:
    "a connection that has not registered declaring a 1 MiB frame gets GOAWAY 2 (too large) at once",
  async fn() {
    // 1 MiB is well within the relay's maximum frame (16 MiB) for admitted members; the
    // registration deadline is far away, so only the limit before the proof can answer.
    await using r = await startRelay({ registerDeadline: 60_000 });
    const { relay, address } = r;
    await using stranger = await RelayRawClient.connect(address);
    await stranger.nonce(); // The relay has adopted the connection.
    const head = new Uint8Array(4);
    new DataView(head.buffer).setUint32(0, MiB - 4); // Length of the rest: 1 MiB in all.
    await stranger.write(head);
    const { goaway, closed } = await stranger.outcome();
    ok(closed, "the relay closed the connection");
    strictEqual(
      goaway?.code,
      CloseCode.TOO_LARGE,
      `GOAWAY ${codeName(goaway?.code)}: ${goaway?.reason}`,
    );
    strictEqual(relay.stats.nodes, 0);
  },
});

Deno.test({
  name:
    "a member that sends one small frame to a flooded receiver is not held: its next frame to another member and its PONG arrive",
  async fn() {
    const net = testNetwork("hostile");
    const flooders = 8;
    const frameBody = 250 * KiB;
    const maxBuffered = MiB;
    // Bob reads 16 KiB every 250 ms (64 KiB/s): once the kernel's buffers towards him are
    // full, the relay's queue for him drains by megabytes only over tens of seconds. The
    // timeout is long so that no rule cuts him meanwhile.
    await using r = await startRelay({ maxFrame: 256 * KiB, maxBuffered, timeout: 60_000 });
    const { relay, address } = r;
    const bobId = await rawIdentity(net, "bob");
    await using bob = await PacedReceiver.register(address, bobId, {
      chunk: 16 * KiB,
      pause: 250,
    });
    const { id: aliceId, client: alice } = await rawMember(net, "alice", address, LONG_TICK);
    await using _alice = alice;
    const { id: carolId, client: carol } = await rawMember(net, "carol", address, LONG_TICK);
    await using _carol = carol;
    const members = await Promise.all(
      Array.from({ length: flooders }, (_, i) => rawMember(net, `flooder${i}`, address, LONG_TICK)),
    );
    const floods = members.map(({ id, client }) =>
      startFlood(
        client,
        dataFrame(id.networkId, bobId.pseudonym, id.pseudonym, new Uint8Array(frameBody)),
        { frames: 64, ms: 3 * HANG_TIMEOUT },
      )
    );
    try {
      // More than the kernel can hold has been forwarded to bob and not read: his queue at
      // the relay is above its limit, and someone has been slowed for it.
      const full = loopbackBuffering() + maxBuffered;
      await waitFor(
        () => relay.stats.throttles > 0 && relay.stats.bytesForwarded - bob.received > full,
        `bob's queue at the relay to fill: ${blame(relay)}`,
      );
      const pongsBefore = pongs(alice);
      await alice.write(
        dataFrame(aliceId.networkId, bobId.pseudonym, aliceId.pseudonym, new Uint8Array(100), 1),
      );
      await alice.write(
        dataFrame(aliceId.networkId, carolId.pseudonym, aliceId.pseudonym, new Uint8Array(100), 2),
      );
      await alice.write(PING);
      await waitFor(
        () =>
          dataFrames(carol).some((f) => f.sender === aliceId.pseudonym) &&
          pongs(alice) > pongsBefore,
        `alice's frame to reach carol and alice's PONG to arrive: ${blame(relay)}`,
      );
      ok(!bob.cut, `bob was not cut: ${JSON.stringify(bob.goaway)}`);
      strictEqual(relay.stats.disconnects.slowReader, 0, blame(relay));
    } finally {
      for (const flood of floods) flood.stop();
      for (const { client } of members) await client[Symbol.asyncDispose]();
      await deadline(Promise.all(floods.map((f) => f.done)), "the floods to end");
    }
  },
});

Deno.test({
  name:
    "a receiver that reads slowly but steadily gets a 24 MiB frame in full and is never cut as a slow reader",
  async fn() {
    const net = testNetwork("hostile");
    // Several times what the kernel buffers between the relay and bob (about 4 MiB on
    // loopback), so most of the frame waits at the relay while bob reads.
    const frameBody = 24 * MiB;
    // Bob reads 512 KiB every 100 ms: the frame takes him about 5 s, five times the relay's
    // silence timeout, but something moves all the time. (Much slower and the kernel itself
    // would hold the relay's writes for longer than the timeout: it wakes a blocked writer
    // only once about a third of its send buffer has drained.)
    await using r = await startRelay({ timeout: 1000, maxFrame: 32 * MiB });
    const { relay, address } = r;
    const bobId = await rawIdentity(net, "bob");
    await using bob = await PacedReceiver.register(address, bobId, {
      chunk: 512 * KiB,
      pause: 100,
    });
    const { id: malloryId, client: mallory } = await rawMember(net, "mallory", address, LONG_TICK);
    await using _mallory = mallory;

    await mallory.write(
      dataFrame(
        malloryId.networkId,
        bobId.pseudonym,
        malloryId.pseudonym,
        new Uint8Array(frameBody),
      ),
    );
    await waitFor(
      () => bob.data.length > 0 || bob.cut,
      `bob to read the whole frame: ${blame(relay)}`,
    );
    ok(!bob.cut, `bob was not cut: ${JSON.stringify(bob.goaway)}; ${blame(relay)}`);
    strictEqual(bob.data.length, 1);
    strictEqual(bob.data[0]!.body.length, frameBody);
    strictEqual(bob.data[0]!.sender, malloryId.pseudonym);
    strictEqual(relay.stats.disconnects.slowReader, 0, blame(relay));
    strictEqual(bob.goaway, null);
  },
});

Deno.test({
  name: "a member sending 5,000 PINGs without reading gets at most one PONG queued at the relay",
  async fn() {
    const net = testNetwork("hostile");
    const pings = 5000;
    const frameBody = 60 * KiB;
    // Its buffer at the relay is 1 MiB: a sender is slowed only once 1 MiB waits at the relay
    // for the pinger, i.e. once the kernel's buffers towards it are full and the relay's
    // writes to it wait. The timeout is long: the pinger is not cut while it does not read.
    await using r = await startRelay({ maxFrame: 64 * KiB, maxBuffered: MiB, timeout: 30_000 });
    const { relay, address } = r;
    const pingerId = await rawIdentity(net, "pinger");
    await using pinger = await RelayRawClient.connect(address, { read: false });
    await pinger.sendRegister(pingerId, { tick: LONG_TICK });
    await waitFor(() => relay.stats.nodes === 1, "the pinger to register");
    const { id: senderId, client: sender } = await rawMember(net, "sender", address, LONG_TICK);
    await using _sender = sender;

    // Fill everything between the relay and the pinger with DATA, so what the relay queues for
    // the pinger from now on waits at the relay.
    const flood = startFlood(
      sender,
      dataFrame(
        senderId.networkId,
        pingerId.pseudonym,
        senderId.pseudonym,
        new Uint8Array(frameBody),
      ),
      { frames: 1024, ms: HANG_TIMEOUT, until: () => relay.stats.throttles > 0 },
    );
    try {
      await waitFor(
        () => relay.stats.throttles > 0,
        `the sender to be slowed for the pinger's queue: ${blame(relay)}`,
      );
      flood.stop();

      // 5,000 PINGs, then a marker for the sender: once the sender has the marker, the relay
      // has read every PING (it reads a connection's frames in order) and queued their PONGs.
      const batch = new Uint8Array(PING.length * 500);
      for (let i = 0; i < 500; i++) batch.set(PING, i * PING.length);
      for (let sent = 0; sent < pings; sent += 500) await pinger.write(batch);
      await pinger.write(
        dataFrame(pingerId.networkId, senderId.pseudonym, pingerId.pseudonym, new Uint8Array(1)),
      );
      await sender.frame(
        (f) => f.type === FrameType.DATA && f.sender === pingerId.pseudonym,
        "the pinger's marker",
      );

      // Read everything: control frames go ahead of DATA, so once the last DATA frame is in,
      // every PONG queued before it is too.
      pinger.startReading();
      await deadline(flood.done, "the sender's last write to be taken");
      await waitFor(
        () => dataFrames(pinger).length >= flood.started || pinger.closed,
        `all ${flood.started} DATA frames to reach the pinger`,
      );
      strictEqual(dataFrames(pinger).length, flood.started);
      const got = pongs(pinger);
      ok(got >= 1, "the PINGs were answered");
      ok(got < 100, `the pinger got ${got} PONGs for ${pings} PINGs`);
      ok(!pinger.closed, `the pinger is still connected: ${JSON.stringify(pinger.goaway)}`);
      strictEqual(pinger.goaway, null);
      // Still served: a PING now is answered.
      await pinger.write(PING);
      await waitFor(() => pongs(pinger) > got || pinger.closed, "a PONG");
      ok(pongs(pinger) > got, `the relay closed the connection: ${JSON.stringify(pinger.goaway)}`);
      strictEqual(relay.stats.disconnects.slowReader, 0, blame(relay));
    } finally {
      flood.stop();
      await sender[Symbol.asyncDispose]();
      await deadline(flood.done, "the flood to end");
    }
  },
});
