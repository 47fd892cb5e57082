/**
 * Chunks: how a large message travels as a run of separately sealed pieces
 * (docs/PROTOCOL.md, "Chunks: large messages"). Sans-IO and crypto-free:
 * {@linkcode encodeChunk} and {@linkcode decodeChunk} are the plaintext of
 * one piece's token, {@linkcode Reassembly} puts a link's pieces back
 * together and bounds what unfinished messages hold.
 *
 * Plaintext layout (big-endian):
 *
 * ```text
 * u8   payload version (2: a chunk)
 * u32  E, envelope JSON length;  E bytes envelope JSON
 * u64  message id
 * u32  index
 * u8   flags (bit 0: last piece)
 * rest the piece
 * ```
 *
 * @module
 */

import { FrameError } from "./errors.ts";
import { decodeEnvelope, type Envelope } from "./message.ts";

/** Payload version of a chunk's plaintext (a batch's is 1). */
export const CHUNK_PAYLOAD_VERSION = 2;

/** Records above this many bytes are sent in chunks. */
export const CHUNK_THRESHOLD = 131_072;

/** Bytes of a record each piece carries (the last may carry fewer). */
export const CHUNK_SIZE = 65_536;

/** Most unfinished chunked messages a link holds. */
export const MAX_UNFINISHED = 64;

/** Most unfinished chunked messages of one sender on a link (a sender sends 4 at once). */
export const MAX_UNFINISHED_PER_SENDER = 4;

/** An unfinished message with no new piece for this long is dropped, ms. */
export const UNFINISHED_TIMEOUT = 10_000;

/**
 * Most pieces of an acknowledged message sent (or being sealed) and not yet acknowledged:
 * as many as a receiver's lane holds (one opening, two waiting), so paced
 * pieces wait there, where small messages overtake them, instead of in the
 * kernel's socket buffers (docs/PROTOCOL.md, "Chunks").
 */
export const PACED_PIECES = 3;

const LAST = 1;

/** One piece of a chunked message, as sealed in its token. */
export interface Chunk {
  envelope: Envelope;
  /** The message id, fresh per chunked message of the sender instance. */
  id: number;
  /** 0 for the first piece, then 1, 2, … */
  index: number;
  /** Set on the message's last piece. */
  last: boolean;
  /** The piece of the record. */
  bytes: Uint8Array;
}

/** Size of the plaintext {@linkcode encodeChunk} makes for a piece of `pieceLength` bytes. */
export function chunkSize(envelope: Uint8Array, pieceLength: number): number {
  return 1 + 4 + envelope.length + 8 + 4 + 1 + pieceLength;
}

/**
 * Builds a piece's plaintext from an encoded envelope.
 *
 * @example A piece survives the round trip
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeChunk, encodeChunk } from "./chunk.ts";
 * import { encodeEnvelope } from "./message.ts";
 *
 * const envelope = { s: "alice", i: "0123456789abcdef", w: "office", t: "bob" };
 * const plain = encodeChunk(encodeEnvelope(envelope), 7, 2, true, new Uint8Array([1, 2, 3]));
 * const chunk = decodeChunk(plain);
 * assert.deepEqual(chunk.envelope, envelope);
 * assert.deepEqual([chunk.id, chunk.index, chunk.last], [7, 2, true]);
 * assert.deepEqual([...chunk.bytes], [1, 2, 3]);
 * ```
 */
export function encodeChunk(
  envelope: Uint8Array,
  id: number,
  index: number,
  last: boolean,
  piece: Uint8Array,
): Uint8Array {
  const out = new Uint8Array(chunkSize(envelope, piece.length));
  const view = new DataView(out.buffer);
  out[0] = CHUNK_PAYLOAD_VERSION;
  view.setUint32(1, envelope.length);
  out.set(envelope, 5);
  let at = 5 + envelope.length;
  view.setUint32(at, Math.floor(id / 0x1_0000_0000));
  view.setUint32(at + 4, id >>> 0);
  view.setUint32(at + 8, index);
  out[at + 12] = last ? LAST : 0;
  at += 13;
  out.set(piece, at);
  return out;
}

/** Reads a piece's plaintext. Throws {@linkcode FrameError} on any malformation. */
export function decodeChunk(plain: Uint8Array): Chunk {
  if (plain[0] !== CHUNK_PAYLOAD_VERSION) {
    throw new FrameError(`payload version ${plain[0]} is not a chunk`);
  }
  const { envelope, end } = decodeEnvelope(plain);
  if (end + 13 > plain.length) throw new FrameError("chunk header is truncated");
  const view = new DataView(plain.buffer, plain.byteOffset, plain.byteLength);
  const id = view.getUint32(end) * 0x1_0000_0000 + view.getUint32(end + 4);
  const flags = plain[end + 12]!;
  if (id < 1 || id > Number.MAX_SAFE_INTEGER) throw new FrameError(`chunk id ${id} is invalid`);
  if ((flags & ~LAST) !== 0) throw new FrameError(`chunk flags ${flags} are unknown`);
  return {
    envelope,
    id,
    index: view.getUint32(end + 8),
    last: (flags & LAST) !== 0,
    bytes: plain.subarray(end + 13),
  };
}

/** Why {@linkcode Reassembly.add} dropped a message. */
export type ReassemblyFault = "sequence" | "size" | "too-large" | "full";

/** A piece that fails its message: {@linkcode Reassembly.add} dropped it. */
export class ReassemblyError extends FrameError {
  /**
   * What went wrong: out of order, a piece of the wrong size, past the
   * message size, or past the link's bounds.
   */
  readonly fault: ReassemblyFault;

  /** A fault of `fault` kind, described by `message`. */
  constructor(fault: ReassemblyFault, message: string) {
    super(message);
    this.name = "ReassemblyError";
    this.fault = fault;
  }
}

/** Bounds of a {@linkcode Reassembly}. */
export interface ReassemblyLimits {
  /** Largest message, bytes (the receiver's maximum frame size). */
  maxMessage: number;
  /** Most bytes held by unfinished messages, bytes. */
  maxBytes: number;
  /** Most unfinished messages. @default {MAX_UNFINISHED} */
  maxMessages?: number;
  /** Most unfinished messages of one sender. @default {MAX_UNFINISHED_PER_SENDER} */
  maxPerSender?: number;
  /** Drop an unfinished message with no new piece for this long, ms. @default {UNFINISHED_TIMEOUT} */
  timeout?: number;
  /** Bytes of every piece but the last. @default {CHUNK_SIZE} */
  pieceSize?: number;
}

interface Unfinished {
  sender: string;
  pieces: Uint8Array[];
  /** Bytes of the message so far. */
  bytes: number;
  /** Bytes held for it: the buffers its pieces view, which may be larger. */
  held: number;
  next: number;
  touched: number;
}

/**
 * Puts the pieces arriving on one link back together. A piece must be the
 * next of its message (per sender and id) and, unless it is the last, of
 * exactly the piece size; anything else drops that message and throws
 * {@linkcode ReassemblyError}. What it holds is counted by the buffers it
 * keeps, not the bytes a piece claims. Past its bounds it drops the
 * messages that waited longest for a piece: a transfer in progress gets a
 * piece every few milliseconds, so messages left unfinished go first.
 *
 * @example Pieces in order make the record; a repeated one fails the message
 * ```ts
 * import assert from "node:assert/strict";
 * import { Reassembly, ReassemblyError } from "./chunk.ts";
 *
 * const parts = new Reassembly({ maxMessage: 1024, maxBytes: 4096, pieceSize: 2 });
 * assert.equal(parts.add("alice", 5, 0, false, new Uint8Array([1, 2]), 0), null);
 * assert.deepEqual([...parts.add("alice", 5, 1, true, new Uint8Array([3]), 0)!], [1, 2, 3]);
 * parts.add("alice", 6, 0, false, new Uint8Array([1, 2]), 0);
 * assert.throws(() => parts.add("alice", 6, 0, false, new Uint8Array([1, 2]), 0), ReassemblyError);
 * assert.equal(parts.bytes, 0);
 * ```
 */
export class Reassembly {
  readonly #limits: Required<ReassemblyLimits>;
  /** Unfinished messages, the one that waited longest for a piece first. */
  readonly #unfinished = new Map<string, Unfinished>();
  #bytes = 0;
  /** Told the bytes held after every change (the owner counts them against a budget). */
  onBytes: ((bytes: number) => void) | null = null;

  /** An empty reassembly within `limits`. */
  constructor(limits: ReassemblyLimits) {
    this.#limits = {
      maxMessages: MAX_UNFINISHED,
      maxPerSender: MAX_UNFINISHED_PER_SENDER,
      timeout: UNFINISHED_TIMEOUT,
      pieceSize: CHUNK_SIZE,
      ...limits,
    };
  }

  /** Bytes held by unfinished messages. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Unfinished messages. */
  get size(): number {
    return this.#unfinished.size;
  }

  /**
   * Adds piece `index` of message `id` from `sender` (a key naming the sealed
   * sender and instance) at time `now` (ms). Returns the whole record when
   * this was the last piece, else null. Throws {@linkcode ReassemblyError}
   * when the piece fails its message, or when the link's bounds made it drop
   * messages (the ones that waited longest, perhaps not this one).
   */
  add(
    sender: string,
    id: number,
    index: number,
    last: boolean,
    piece: Uint8Array,
    now: number,
  ): Uint8Array | null {
    this.expire(now);
    const key = `${sender}\0${id}`;
    let message = this.#unfinished.get(key);
    const fail = (fault: ReassemblyFault, why: string): never => {
      if (message) this.#drop(key, message);
      throw new ReassemblyError(fault, `chunk ${index} of message ${id} from ${sender} ${why}`);
    };
    const expected = message?.next ?? 0;
    if (index !== expected) fail("sequence", `arrived where chunk ${expected} was due`);
    const { pieceSize, maxMessage } = this.#limits;
    if (last ? piece.length < 1 || piece.length > pieceSize : piece.length !== pieceSize) {
      fail("size", `holds ${piece.length} bytes, not ${last ? `1 to ${pieceSize}` : pieceSize}`);
    }
    const total = (message?.bytes ?? 0) + piece.length;
    if (total > maxMessage) fail("too-large", `makes the message larger than ${maxMessage} bytes`);
    if (last && !message) return piece;
    if (message) this.#unfinished.delete(key); // Re-inserted last: the most recently touched.
    else message = { sender, pieces: [], bytes: 0, held: 0, next: 0, touched: now };
    this.#unfinished.set(key, message);
    message.pieces.push(piece);
    message.bytes = total;
    message.held += piece.buffer.byteLength;
    message.next++;
    message.touched = now;
    this.#change(piece.buffer.byteLength);
    if (last) {
      this.#drop(key, message);
      return concat(message.pieces, total);
    }
    this.#bound(sender);
    return null;
  }

  /** When the unfinished message that waited longest will be dropped (ms, as `now`), or null. */
  get expiresAt(): number | null {
    for (const message of this.#unfinished.values()) return message.touched + this.#limits.timeout;
    return null;
  }

  /** Drops unfinished messages that got no piece within the timeout, at time `now` (ms). */
  expire(now: number): void {
    for (const [key, message] of this.#unfinished) {
      if (now - message.touched <= this.#limits.timeout) break; // The rest are newer.
      this.#drop(key, message);
    }
  }

  /** Drops every unfinished message. */
  clear(): void {
    this.#unfinished.clear();
    this.#change(-this.#bytes);
  }

  /** Past a bound, drops the messages that waited longest, of `sender` first for its own bound. */
  #bound(sender: string): void {
    const { maxBytes, maxMessages, maxPerSender } = this.#limits;
    let dropped = 0;
    let own = 0;
    for (const message of this.#unfinished.values()) if (message.sender === sender) own++;
    for (const [key, message] of this.#unfinished) {
      if (own <= maxPerSender) break;
      if (message.sender !== sender) continue;
      this.#drop(key, message);
      own--;
      dropped++;
    }
    for (const [key, message] of this.#unfinished) {
      if (this.#bytes <= maxBytes && this.#unfinished.size <= maxMessages) break;
      this.#drop(key, message);
      dropped++;
    }
    if (dropped > 0) {
      throw new ReassemblyError(
        "full",
        `unfinished chunked messages passed a bound (${maxPerSender} per sender, ${maxMessages} in all, ${maxBytes} bytes); dropped the ${dropped} that waited longest`,
      );
    }
  }

  #drop(key: string, message: Unfinished): void {
    this.#unfinished.delete(key);
    this.#change(-message.held);
  }

  #change(delta: number): void {
    this.#bytes += delta;
    this.onBytes?.(this.#bytes);
  }
}

function concat(pieces: readonly Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let at = 0;
  for (const piece of pieces) {
    out.set(piece, at);
    at += piece.length;
  }
  return out;
}
