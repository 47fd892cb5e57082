/**
 * Chunks (docs/PROTOCOL.md, "Chunks: large messages"): a large message
 * travels as separately sealed pieces, put back together in order, within
 * bounds, and small messages overtake it on the link.
 */

import { deepStrictEqual, equal, ok, strictEqual, throws } from "node:assert/strict";
import { Node } from "../mod.ts";
import {
  CHUNK_SIZE,
  decodeChunk,
  encodeChunk,
  PACED_PIECES,
  Reassembly,
  ReassemblyError,
  type ReassemblyFault,
} from "../lib/chunk.ts";
import { CloseCode } from "../lib/frame.ts";
import { encodeEnvelope, encodeRecord, type Message } from "../lib/message.ts";
import { Fernet } from "../lib/fernet.ts";
import { Link } from "../lib/link.ts";
import { FramedConnection } from "../lib/connection.ts";
import { type Outgoing, type Piece, SendQueue } from "../lib/send_queue.ts";
import { IN_NETNS, NETNS_REASON, testIf } from "./_env.ts";
import {
  deadline,
  loopbackStreams,
  newInstance,
  nodeOptions,
  RawClient,
  sealPiece,
  sleep,
  testNetwork,
  waitFor,
  wireNames,
} from "./_fixtures.ts";
import { echoPair, rawMember, startRelay } from "./_relay_fixtures.ts";

const MiB = 1024 * 1024;

const bytes = (...values: number[]) => new Uint8Array(values);

function fault(expected: ReassemblyFault) {
  return (error: unknown) => error instanceof ReassemblyError && error.fault === expected;
}

// ---- The codec ----

Deno.test("a piece's plaintext carries its envelope, message id, index and last flag", () => {
  const envelope = { s: "alice", i: "0123456789abcdef", w: "office", t: "bob" };
  const plain = encodeChunk(encodeEnvelope(envelope), 2 ** 40, 3, false, bytes(9, 8));
  const chunk = decodeChunk(plain);
  deepStrictEqual(chunk.envelope, envelope);
  deepStrictEqual([chunk.id, chunk.index, chunk.last, [...chunk.bytes]], [2 ** 40, 3, false, [
    9,
    8,
  ]]);
});

Deno.test("a piece with unknown flags, a zero id or a truncated header is malformed", () => {
  const envelope = encodeEnvelope({ s: "a", i: "0123456789abcdef", w: "n", t: "b" });
  const flags = encodeChunk(envelope, 1, 0, true, bytes(1));
  flags[5 + envelope.length + 12] = 0x81;
  throws(() => decodeChunk(flags), /flags/);
  throws(() => decodeChunk(encodeChunk(envelope, 0, 0, true, bytes(1))), /id/);
  throws(() => decodeChunk(encodeChunk(envelope, 1, 0, true, bytes()).subarray(0, 10)));
});

// ---- Putting pieces together ----

/** A reassembly with 2-byte pieces. */
function parts(limits: Partial<ConstructorParameters<typeof Reassembly>[0]> = {}): Reassembly {
  return new Reassembly({ maxMessage: 100, maxBytes: 1000, pieceSize: 2, ...limits });
}

Deno.test("pieces in order make the record, and the message holds nothing once whole", () => {
  const p = parts();
  equal(p.add("a", 1, 0, false, bytes(1, 2), 0), null);
  equal(p.add("a", 1, 1, false, bytes(3, 4), 0), null);
  strictEqual(p.bytes, 4);
  deepStrictEqual([...p.add("a", 1, 2, true, bytes(5), 0)!], [1, 2, 3, 4, 5]);
  strictEqual(p.bytes, 0);
  strictEqual(p.size, 0);
});

Deno.test("a dropped piece fails its message", () => {
  const p = parts();
  p.add("a", 1, 0, false, bytes(1, 2), 0);
  throws(() => p.add("a", 1, 2, true, bytes(5), 0), fault("sequence"));
  strictEqual(p.size, 0);
  throws(() => p.add("a", 1, 1, true, bytes(3), 0), fault("sequence"));
});

Deno.test("a repeated piece fails its message", () => {
  const p = parts();
  p.add("a", 1, 0, false, bytes(1, 2), 0);
  p.add("a", 1, 1, false, bytes(3, 4), 0);
  throws(() => p.add("a", 1, 1, false, bytes(3, 4), 0), fault("sequence"));
  strictEqual(p.size, 0);
});

Deno.test("a first piece repeated under an id in progress fails that message", () => {
  const p = parts();
  p.add("a", 1, 0, false, bytes(1, 2), 0);
  throws(() => p.add("a", 1, 0, false, bytes(1, 2), 0), fault("sequence"));
  strictEqual(p.size, 0);
});

Deno.test("a piece spliced from another message or sender joins nothing", () => {
  const p = parts();
  p.add("a", 1, 0, false, bytes(1, 2), 0);
  throws(() => p.add("a", 2, 1, true, bytes(9), 0), fault("sequence"));
  throws(() => p.add("mallory", 1, 1, true, bytes(9), 0), fault("sequence"));
  deepStrictEqual([...p.add("a", 1, 1, true, bytes(3), 0)!], [1, 2, 3]);
});

Deno.test("a piece of the wrong size fails its message: every one but the last is full, the last not empty", () => {
  const p = parts();
  throws(() => p.add("a", 1, 0, false, bytes(1), 0), fault("size"));
  p.add("a", 2, 0, false, bytes(1, 2), 0);
  throws(() => p.add("a", 2, 1, true, bytes(), 0), fault("size"));
  throws(() => p.add("a", 3, 0, true, bytes(1, 2, 3), 0), fault("size"));
  strictEqual(p.size, 0);
});

Deno.test("a message whose pieces pass the maximum size fails", () => {
  const p = parts({ maxMessage: 3 });
  p.add("a", 1, 0, false, bytes(1, 2), 0);
  throws(() => p.add("a", 1, 1, true, bytes(4, 5), 0), fault("too-large"));
  strictEqual(p.bytes, 0);
});

Deno.test("a piece counts the whole buffer it keeps alive, not its own length", () => {
  const p = parts();
  const padded = new Uint8Array(500); // A decrypted piece whose envelope was padded.
  p.add("a", 1, 0, false, padded.subarray(498), 0);
  strictEqual(p.bytes, 500);
});

Deno.test("past the byte bound the messages that waited longest for a piece are dropped first", () => {
  const p = parts({ maxBytes: 4 });
  p.add("idle", 1, 0, false, bytes(1, 2), 0);
  p.add("busy", 1, 0, false, bytes(1, 2), 1);
  throws(() => p.add("busy", 1, 1, false, bytes(3, 4), 2), fault("full"));
  strictEqual(p.size, 1);
  deepStrictEqual([...p.add("busy", 1, 2, true, bytes(5), 3)!], [1, 2, 3, 4, 5]);
});

Deno.test("past the message-count bound a sender in progress keeps its message, the one left waiting goes", () => {
  const p = parts({ maxMessages: 3 });
  for (let id = 1; id <= 3; id++) p.add(`forged${id}`, id, 0, false, bytes(1, 1), id);
  throws(() => p.add("honest", 9, 0, false, bytes(1, 2), 10), fault("full"));
  strictEqual(p.size, 3);
  deepStrictEqual([...p.add("honest", 9, 1, true, bytes(3), 11)!], [1, 2, 3]);
});

Deno.test("one sender keeps at most four unfinished messages: its fifth drops its oldest", () => {
  const p = parts();
  for (let id = 1; id <= 4; id++) p.add("a", id, 0, false, bytes(1, 2), id);
  throws(() => p.add("a", 5, 0, false, bytes(1, 2), 5), fault("full"));
  strictEqual(p.size, 4);
  throws(() => p.add("a", 1, 1, true, bytes(3), 6), fault("sequence"));
});

Deno.test("an unfinished message that gets no piece within the timeout is dropped", () => {
  const p = parts({ timeout: 50 });
  p.add("a", 1, 0, false, bytes(1, 2), 0);
  p.add("b", 1, 0, false, bytes(1, 2), 40);
  p.expire(80);
  strictEqual(p.size, 1);
  strictEqual(p.bytes, 2);
  throws(() => p.add("a", 1, 1, true, bytes(3), 80), fault("sequence"));
});

Deno.test("dropping reports the bytes held to the owner", () => {
  const p = parts();
  const seen: number[] = [];
  p.onBytes = (held) => seen.push(held);
  p.add("a", 1, 0, false, bytes(1, 2), 0);
  p.clear();
  deepStrictEqual(seen, [2, 0]);
});

// ---- What a link sends next ----

function queue(maxActive = 4): SendQueue {
  return new SendQueue({
    maxBatch: 16,
    chunkSize: 4,
    maxActive,
    batchBase: (first) => first.record!.length,
    fits: () => true,
    pacedPieces: PACED_PIECES,
  });
}

/** Takes pieces at time `now` until none is given; returns them described. */
function takeAll(q: SendQueue, now = 0): string[] {
  const taken: string[] = [];
  for (let piece = q.takePiece(now); piece; piece = q.takePiece(now)) taken.push(describe(piece));
  return taken;
}

function message(size: number | null, target = "bob"): Outgoing {
  return {
    target,
    targetInstance: undefined,
    record: size === null ? null : new Uint8Array(size),
    charged: false,
  };
}

function describe(piece: Piece | null): string {
  return piece === null ? "-" : `${piece.id}.${piece.index}${piece.last ? "!" : ""}`;
}

Deno.test("small messages leave in batches of one target, never behind a large message's pieces", () => {
  const q = queue();
  q.pushLarge(message(16), 7);
  q.push(message(1));
  q.push(message(1));
  q.push(message(1, "carol"));
  strictEqual(q.takeBatch()?.length, 2);
  strictEqual(q.takeBatch()?.length, 1);
  strictEqual(q.takeBatch(), null);
  ok(q.hasPiece && !q.hasBatch);
});

Deno.test("a large message leaves a piece at a time, the last one marked", () => {
  const q = queue();
  q.pushLarge(message(10), 7);
  deepStrictEqual([q.takePiece(), q.takePiece(), q.takePiece(), q.takePiece()].map(describe), [
    "7.0",
    "7.1",
    "7.2!",
    "-",
  ]);
  ok(q.empty);
});

Deno.test("large messages take turns a piece at a time, at most maxActive at once", () => {
  const q = queue(2);
  for (const id of [1, 2, 3]) q.pushLarge(message(8), id);
  const order: string[] = [];
  for (let piece = q.takePiece(); piece; piece = q.takePiece()) order.push(describe(piece));
  deepStrictEqual(order, ["1.0", "2.0", "1.1!", "2.1!", "3.0", "3.1!"]);
});

Deno.test("a message that asks is paced once acknowledged: at most three pieces unacknowledged", () => {
  const q = queue();
  q.pushLarge(message(40), 7, 0, true);
  strictEqual(describe(q.takePiece()), "7.0");
  ok(q.ack("bob", 7, 1, 5));
  deepStrictEqual(takeAll(q), ["7.1", "7.2", "7.3"]);
  ok(q.hasPiece, "the rest waits for the receiver");
  ok(q.ack("bob", 7, 2, 6));
  deepStrictEqual(takeAll(q), ["7.4"]);
  ok(q.ack("bob", 7, 5, 7));
  deepStrictEqual(takeAll(q), ["7.5", "7.6", "7.7"]);
});

Deno.test("a message that does not ask is never paced, and its acknowledgements are ignored", () => {
  const q = queue();
  q.pushLarge(message(40), 7);
  q.takePiece();
  strictEqual(q.ack("bob", 7, 1), false);
  strictEqual(takeAll(q).length, 9);
});

Deno.test("an acknowledgement from another peer, of another message, past the pieces taken or going back is ignored", () => {
  const q = queue();
  q.pushLarge(message(40), 7, 0, true);
  q.takePiece();
  q.takePiece();
  strictEqual(q.ack("carol", 7, 1), false);
  strictEqual(q.ack("carol", 8, 1), false);
  strictEqual(q.ack("bob", 7, 3), false);
  ok(q.ack("bob", 7, 2));
  strictEqual(q.ack("bob", 7, 1), false);
  strictEqual(q.ack("bob", 7, 2), false);
  q.pushLarge(message(40, "carol"), 9, 0, true);
  strictEqual(takeAll(q).filter((p) => p.startsWith("9.")).length, 10, "carol is not paced");
});

Deno.test("a late acknowledgement, of a message whose pieces all went, paces the target's next message", () => {
  const q = queue();
  q.pushLarge(message(8), 1, 0, true);
  takeAll(q);
  strictEqual(q.ack("bob", 1, 1), false);
  q.pushLarge(message(40), 2, 0, true);
  deepStrictEqual(takeAll(q), ["2.0", "2.1", "2.2"]);
});

Deno.test("a target that acknowledged is paced from the first piece of its next message that asks", () => {
  const q = queue();
  q.pushLarge(message(8), 1, 0, true);
  q.takePiece();
  q.ack("bob", 1, 1);
  q.takePiece();
  q.pushLarge(message(40), 2, 0, true);
  q.pushLarge(message(40, "carol"), 3, 0, true);
  deepStrictEqual(takeAll(q).filter((p) => p.startsWith("2.")), ["2.0", "2.1", "2.2"]);
  strictEqual(q.takePiece(), null, "carol never acknowledged: all of hers went");
});

Deno.test("a paced message whose receiver stays silent past the timeout goes on unpaced, and its target is no longer paced from the first piece", () => {
  const q = queue();
  q.pushLarge(message(40), 1, 0, true);
  q.takePiece(0);
  q.ack("bob", 1, 1, 100);
  takeAll(q, 200);
  strictEqual(q.stallsAt(1000), 1200, "counted from the last piece taken");
  strictEqual(q.unpaceStalled(1200, 1000), 0);
  strictEqual(q.unpaceStalled(1201, 1000), 1);
  deepStrictEqual(takeAll(q), ["1.4", "1.5", "1.6", "1.7", "1.8", "1.9!"]);
  strictEqual(q.stallsAt(1000), null);
  q.pushLarge(message(40), 2, 0, true);
  strictEqual(takeAll(q).length, 10);
});

Deno.test("a receiver acknowledging several paced messages in turn gets as many timeouts before they stall", () => {
  const q = queue();
  for (const id of [1, 2]) q.pushLarge(message(40), id, 0, true);
  q.takePiece(0);
  q.takePiece(0);
  q.ack("bob", 1, 1, 0);
  q.ack("bob", 2, 1, 0);
  takeAll(q, 100);
  strictEqual(q.stallsAt(1000), 2100);
  strictEqual(q.unpaceStalled(2100, 1000), 0);
  strictEqual(q.unpaceStalled(2101, 1000), 2);
});

Deno.test("a stall unpaces the messages to that target still waiting their turn", () => {
  const q = queue(1);
  q.pushLarge(message(8), 1, 0, true);
  q.takePiece(0);
  q.ack("bob", 1, 1, 0);
  q.takePiece(0);
  q.pushLarge(message(40), 2, 0, true); // Paced from its first piece: bob acknowledges.
  q.pushLarge(message(40), 3, 0, true); // Waits its turn, paced too.
  deepStrictEqual(takeAll(q, 0), ["2.0", "2.1", "2.2"]);
  strictEqual(q.unpaceStalled(1001, 1000), 1);
  strictEqual(takeAll(q, 1001).length, 17, "the rest of 2, then all of 3");
});

Deno.test("a waiting message to a target that has four in progress waits for one of them to end", () => {
  const q = queue();
  q.pushLarge(message(8), 1, 0, true);
  q.takePiece();
  q.ack("bob", 1, 1);
  q.takePiece();
  for (const id of [2, 3, 4, 5, 6]) q.pushLarge(message(16), id, 0, true);
  const first = takeAll(q);
  strictEqual(first.filter((p) => p.startsWith("6.")).length, 0, `bob's fifth waits: ${first}`);
  q.ack("bob", 2, 3);
  deepStrictEqual(takeAll(q), ["2.3!", "6.0", "6.1", "6.2"]);
});

Deno.test("a late acknowledgement from another peer, or counting past the message's pieces, marks nobody", () => {
  const q = queue();
  q.pushLarge(message(8), 1, 0, true);
  takeAll(q);
  strictEqual(q.ack("carol", 1, 1), false);
  strictEqual(q.ack("bob", 1, 2), false);
  q.pushLarge(message(40), 2, 0, true);
  q.pushLarge(message(40, "carol"), 3, 0, true);
  strictEqual(takeAll(q).length, 20, "neither bob nor carol is paced");
});

Deno.test("time a message waits for its turn does not count toward its stall", () => {
  const q = queue(1);
  q.pushLarge(message(8), 1, 0, true);
  q.takePiece(0);
  q.ack("bob", 1, 1, 0);
  q.pushLarge(message(40), 2, 0, true); // Waits behind message 1, and is paced from its start.
  q.takePiece(20_000);
  deepStrictEqual(takeAll(q, 20_000), ["2.0", "2.1", "2.2"]);
  strictEqual(q.stallsAt(1000), 21_000);
});

Deno.test("while every message in progress waits for its receiver, a waiting one to another target starts", () => {
  const q = queue(2);
  q.pushLarge(message(8), 1, 0, true);
  q.takePiece();
  q.ack("bob", 1, 1); // bob acknowledges: his next messages are paced from their first piece.
  q.takePiece();
  q.pushLarge(message(40), 2, 0, true);
  q.pushLarge(message(40), 3, 0, true);
  q.pushLarge(message(8, "carol"), 4, 0, true);
  deepStrictEqual(takeAll(q), ["2.0", "3.0", "2.1", "3.1", "2.2", "3.2", "4.0", "4.1!"]);
});

Deno.test("a queued acknowledgement or hello is not traffic that pieces are paced for", () => {
  const q = queue();
  q.push({ ...message(4), ack: true });
  q.push(message(null));
  strictEqual(q.hasTraffic, false);
  q.push(message(1));
  strictEqual(q.hasTraffic, true);
});

Deno.test("a failed link's queue gives back every message not taken, in progress or waiting", () => {
  const q = queue();
  q.pushLarge(message(8), 1);
  q.takePiece();
  q.push(message(1));
  strictEqual(q.drain().length, 2);
  ok(q.empty);
});

// ---- On real links ----

/**
 * Two links over a loopback connection: `a` sends, `b` receives. `b` tells
 * `received` each message and `pieces` each piece but a message's last;
 * the acknowledgements `a` gets wait in `acks` until the test hands them
 * to `a` (`deliver`), or reach it at once with `autoAck`.
 */
async function linkPair() {
  const [stream, other] = await loopbackStreams();
  const net = testNetwork("pace");
  const wire = await wireNames(net);
  const keys = [{ fernet: new Fernet(net.networkKey), id: wire.id, pseudonyms: wire.pseudonyms }];
  let id = 0;
  const common = { keys, maxFrameSize: 16 * MiB, replayWindow: 60_000, nextId: () => ++id };
  const state = {
    acks: [] as { id: number; n: number }[],
    /** Acknowledgements a has got, held or not. */
    heard: 0,
    received: [] as Message[],
    pieces: 0,
    autoAck: true,
  };
  const a: Link = new Link(new FramedConnection(stream), {
    ...common,
    self: { name: "a", instance: "0123456789abcdef", network: net.network },
    onBatch: (_link, envelope, messages) => {
      for (const m of messages) {
        if (m.k !== "ack") continue;
        state.heard++;
        if (state.autoAck) a.acked(envelope.s, m.id, m.n);
        else state.acks.push(m);
      }
    },
  });
  const b = new Link(new FramedConnection(other), {
    ...common,
    self: { name: "b", instance: "fedcba9876543210", network: net.network },
    onBatch: (_link, _envelope, messages) => void state.received.push(...messages),
    onHeard: () => void state.pieces++,
  });
  return {
    a,
    state,
    /**
     * Sends a small message and a large one that asks (the small one is queued); once one of
     * b's acknowledgements reaches a, even after all its pieces went, b is known to acknowledge.
     */
    async learnThatBAcknowledges() {
      a.send("b", undefined, small());
      a.send("b", undefined, pieces(4));
      await deadline(
        waitFor(() => state.received.length === 2, "the first large message"),
        "first",
      );
      await deadline(waitFor(() => state.heard > 0, "an acknowledgement"), "an acknowledgement");
    },
    /** Hands the acknowledgements held so far to `a`. */
    deliver() {
      for (const m of state.acks.splice(0)) a.acked("b", m.id, m.n);
    },
    async [Symbol.asyncDispose]() {
      await a.close();
      await b.close();
    },
  };
}

/** A request record of `pieces` whole pieces (its envelope makes it a little more). */
function pieces(count: number): Uint8Array {
  return encodeRecord({ k: "q", id: 2, p: "x", a: [new Uint8Array(count * CHUNK_SIZE)], kw: {} });
}

const small = () => encodeRecord({ k: "q", id: 1, p: "x", a: [], kw: {} });

Deno.test("beside small messages, a link keeps at most three pieces of an acknowledged receiver's message unacknowledged", async () => {
  await using pair = await linkPair();
  const { a, state } = pair;
  await pair.learnThatBAcknowledges();
  state.autoAck = false;
  const before = state.pieces;
  a.send("b", undefined, small());
  a.send("b", undefined, pieces(10));
  await deadline(waitFor(() => state.pieces - before === PACED_PIECES, "three pieces"), "three");
  await sleep(300);
  strictEqual(state.pieces - before, PACED_PIECES, "no piece beyond the window");
  strictEqual(state.received.length, 3, "the small message went meanwhile");
  state.autoAck = true;
  pair.deliver();
  await deadline(waitFor(() => state.received.length === 4, "the second large message"), "second");
  strictEqual((state.received[3] as { a: Uint8Array[] }).a[0]!.length, 10 * CHUNK_SIZE);
});

Deno.test("a paced message whose receiver stops acknowledging goes on unpaced after a second, and arrives whole", async () => {
  await using pair = await linkPair();
  const { a, state } = pair;
  await pair.learnThatBAcknowledges();
  state.autoAck = false; // From now on a hears nothing.
  a.send("b", undefined, small());
  a.send("b", undefined, pieces(10));
  await deadline(waitFor(() => state.received.length === 4, "the second large message"), "second");
  strictEqual((state.received[3] as { a: Uint8Array[] }).a[0]!.length, 10 * CHUNK_SIZE);
});

Deno.test("alone on a link, a large message's pieces ask for no acknowledgement", async () => {
  await using pair = await linkPair();
  const { a, state } = pair;
  state.autoAck = false;
  a.send("b", undefined, pieces(4));
  await deadline(waitFor(() => state.received.length === 1, "the large message"), "large");
  await sleep(50);
  deepStrictEqual(state.acks, []);
});

function random(size: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let at = 0; at < size; at += 65_536) crypto.getRandomValues(out.subarray(at, at + 65_536));
  return out;
}

testIf(IN_NETNS, NETNS_REASON, {
  name: "a 12 MiB call and its answer arrive intact in pieces on a direct link",
  async fn() {
    const net = testNetwork("chunk");
    await using pair = await echoPair(net);
    const { a } = pair;
    const data = random(12 * MiB);
    const answer = await a.command("echo", { args: [data], target: "b" }) as Uint8Array;
    ok(answer.length === data.length && answer.every((byte, i) => byte === data[i]));
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a 12 MiB call and its answer arrive intact in pieces through a relay",
  async fn() {
    const net = testNetwork("chunk");
    await using relay = await startRelay();
    await using pair = await echoPair(net, relay.address);
    const { a } = pair;
    const data = random(12 * MiB);
    const answer = await a.command("echo", { args: [data], target: "b" }) as Uint8Array;
    ok(answer.length === data.length && answer.every((byte, i) => byte === data[i]));
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a small call on a link is answered while a large call on the same link is in flight",
  async fn() {
    const net = testNetwork("chunk");
    await using pair = await echoPair(net);
    const { a } = pair;
    await a.command("echo", { args: [1], target: "b" }); // The link is up.
    const order: string[] = [];
    const large = a.command("echo", { args: [new Uint8Array(12 * MiB)], target: "b" })
      .then(() => order.push("large"));
    const small = a.command("echo", { args: [1], target: "b" }).then(() => order.push("small"));
    await Promise.all([large, small]);
    deepStrictEqual(order, ["small", "large"]);
  },
});

/** A node `srv` counting the runs of its `size` command, and a trusted raw link to it. */
async function rawToServer(net: ReturnType<typeof testNetwork>, maxFrameSize?: number) {
  const runs = { count: 0 };
  const srv = new Node({
    ...nodeOptions(net, "srv"),
    ...(maxFrameSize ? { maxFrameSize } : {}),
    commands: {
      size: (_node, args) => {
        runs.count++;
        return (args[0] as Uint8Array).length;
      },
    },
  });
  await srv.start();
  const who = { name: "raw", instance: newInstance() };
  const client = await RawClient.hello(srv.address!, net, who);
  return { srv, client, who, runs };
}

function request(size: number): Uint8Array {
  return encodeRecord({ k: "q", id: 1, p: "size", a: [new Uint8Array(size)], kw: {} });
}

/** Writes `record` to "srv" as chunked message 9 from `who`, in order; with `asks`, asking for acks. */
async function writePieces(
  net: ReturnType<typeof testNetwork>,
  client: RawClient,
  who: { name: string; instance: string },
  record: Uint8Array,
  asks = false,
): Promise<void> {
  const count = Math.ceil(record.length / CHUNK_SIZE);
  for (let index = 0; index < count; index++) {
    const bytes = record.subarray(index * CHUNK_SIZE, (index + 1) * CHUNK_SIZE);
    const last = index === count - 1;
    await client.write(await sealPiece(net, who, "srv", { id: 9, index, last, bytes, asks }));
  }
}

testIf(IN_NETNS, NETNS_REASON, {
  name: "a piece out of order closes a direct link with GOAWAY 1 and runs nothing",
  async fn() {
    const net = testNetwork("chunk");
    const { srv, client, who, runs } = await rawToServer(net);
    await using _srv = srv;
    await using _client = client;
    const record = request(3 * CHUNK_SIZE);
    const piece = (index: number, last = false) =>
      sealPiece(net, who, "srv", {
        id: 5,
        index,
        last,
        bytes: record.subarray(index * CHUNK_SIZE, (index + 1) * CHUNK_SIZE),
      });
    await client.write(await piece(0));
    await client.write(await piece(2));
    await client.write(await piece(1));
    const outcome = await client.outcome();
    strictEqual(outcome.goaway?.code, CloseCode.MALFORMED, outcome.goaway?.reason);
    strictEqual(runs.count, 0);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "pieces in order from a raw peer make a request the node runs",
  async fn() {
    const net = testNetwork("chunk");
    const { srv, client, who, runs } = await rawToServer(net);
    await using _srv = srv;
    await using _client = client;
    await writePieces(net, client, who, request(2 * CHUNK_SIZE));
    const [answer] = await client.messages(net, 1);
    deepStrictEqual(answer, { k: "r", id: 1, v: 2 * CHUNK_SIZE });
    strictEqual(runs.count, 1);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a node acknowledges each piece but the last of a message whose pieces ask",
  async fn() {
    const net = testNetwork("chunk");
    const { srv, client, who, runs } = await rawToServer(net);
    await using _srv = srv;
    await using _client = client;
    await writePieces(net, client, who, request(2 * CHUNK_SIZE), true);
    const messages = await client.messages(net, 3);
    deepStrictEqual(messages, [
      { k: "ack", id: 9, n: 1 },
      { k: "ack", id: 9, n: 2 },
      { k: "r", id: 1, v: 2 * CHUNK_SIZE },
    ]);
    strictEqual(runs.count, 1);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a chunked message growing past the maximum frame size closes the link with GOAWAY 2",
  async fn() {
    const net = testNetwork("chunk");
    const { srv, client, who, runs } = await rawToServer(net, 256 * 1024);
    await using _srv = srv;
    await using _client = client;
    const piece = new Uint8Array(CHUNK_SIZE);
    for (let index = 0; index < 5; index++) {
      await client.write(
        await sealPiece(net, who, "srv", { id: 3, index, last: false, bytes: piece }),
      );
    }
    const outcome = await client.outcome();
    strictEqual(outcome.goaway?.code, CloseCode.TOO_LARGE, outcome.goaway?.reason);
    strictEqual(runs.count, 0);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a peer leaving more than four messages unfinished is cut with GOAWAY 6",
  async fn() {
    const net = testNetwork("chunk");
    const { srv, client, who } = await rawToServer(net);
    await using _srv = srv;
    await using _client = client;
    const piece = new Uint8Array(CHUNK_SIZE);
    for (let id = 1; id <= 5 && !client.closed; id++) {
      const frame = await sealPiece(net, who, "srv", { id, index: 0, last: false, bytes: piece });
      await client.write(frame).catch(() => {}); // The node may cut the link mid-write.
    }
    const outcome = await client.outcome();
    strictEqual(outcome.goaway?.code, CloseCode.POLICY, outcome.goaway?.reason);
  },
});

Deno.test({
  name:
    "bad pieces from one member through a relay drop only its message; the receiver's link and other callers' large calls go on",
  async fn() {
    const net = testNetwork("chunk");
    await using relay = await startRelay();
    await using pair = await echoPair(net, relay.address);
    const { a, b } = pair;
    const { id: mallory, client } = await rawMember(net, "mallory", relay.address);
    await using _client = client;
    const downs: string[] = [];
    b.addEventListener("relaydown", () => downs.push("b lost its relay"));
    const who = { name: mallory.name, instance: mallory.credentials.instance.id };
    const data = random(2 * MiB);
    const call = a.command("echo", { args: [data], target: "b" });
    const full = new Uint8Array(CHUNK_SIZE);
    for (let id = 1; id <= 20; id++) {
      // Piece 1 of a message never started, then a first piece repeated: both fail that message.
      await client.write(
        await sealPiece(net, who, "b", { id, index: 1, last: false, bytes: full }),
      );
      await client.write(
        await sealPiece(net, who, "b", { id, index: 0, last: false, bytes: full }),
      );
      await client.write(
        await sealPiece(net, who, "b", { id, index: 0, last: false, bytes: full }),
      );
    }
    const answer = await call as Uint8Array;
    ok(answer.length === data.length && answer.every((byte, i) => byte === data[i]));
    strictEqual(await a.command("echo", { args: [7], target: "b" }), 7);
    deepStrictEqual(downs, []);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "unfinished pieces on a direct link count against the node's budget",
  async fn() {
    const net = testNetwork("chunk");
    const runs = { count: 0 };
    await using srv = new Node({
      ...nodeOptions(net, "srv"),
      bufferBudget: 160 * 1024, // Two and a half pieces: the third passes it.
      commands: { size: () => runs.count++ },
    });
    await srv.start();
    const who = { name: "raw", instance: newInstance() };
    await using client = await RawClient.hello(srv.address!, net, who);
    const piece = new Uint8Array(CHUNK_SIZE);
    for (let id = 1; id <= 20 && !client.closed; id++) {
      const frame = await sealPiece(net, who, "srv", { id, index: 0, last: false, bytes: piece });
      await client.write(frame).catch(() => {}); // The node may cut the link mid-write.
    }
    const outcome = await client.outcome();
    strictEqual(outcome.goaway?.code, CloseCode.POLICY, outcome.goaway?.reason);
    ok(outcome.goaway?.reason.includes("budget"), outcome.goaway?.reason);
    strictEqual(runs.count, 0);
  },
});
