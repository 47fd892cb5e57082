/**
 * The frame: the unit that travels on every peerbase TCP connection, direct
 * or through a relay. Sans-IO: bytes in, values out, no sockets.
 *
 * Layout (all integers big-endian; `docs/PROTOCOL.md` is the reference):
 *
 * ```text
 * offset  size  field
 * 0       4     length   u32, bytes that follow this field (header + body)
 * 4       1     version  u8, PROTOCOL_VERSION (2)
 * 5       1     type     u8, FrameType
 * 6       2     flags    u16, reserved, 0
 * 8       8     id       u64 message id, unique per sender instance (< 2^53)
 * 16      1     N        network field length in bytes
 * 17      N     network  UTF-8: the network id
 * ..      1     T        target field length
 * ..      T     target   UTF-8: the target's pseudonym ("*" = every member)
 * ..      1     S        sender field length
 * ..      S     sender   UTF-8: the sender's pseudonym (a relay overwrites it)
 * ..      rest  body     DATA: one raw Fernet token; others: see FrameType
 * ```
 *
 * The whole frame, length field included, may not exceed the receiver's
 * maximum frame size; the length is checked before anything is allocated.
 *
 * @module
 */

import { FrameError, MessageTooLargeError, ProtocolVersionError } from "./errors.ts";
import { textDecoder, textEncoder } from "./encoding.ts";
import { BytesMemo } from "./bytes_memo.ts";

/**
 * The protocol version this build writes and reads.
 *
 * @example
 * ```ts
 * import { PROTOCOL_VERSION } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 *
 * assert.equal(PROTOCOL_VERSION, 2);
 * ```
 */
export const PROTOCOL_VERSION = 2;

/**
 * Default maximum size of one frame, length field included: 16 MiB.
 *
 * @example
 * ```ts
 * import { DEFAULT_MAX_FRAME_SIZE } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 *
 * assert.equal(DEFAULT_MAX_FRAME_SIZE, 16 * 1024 * 1024);
 * ```
 */
export const DEFAULT_MAX_FRAME_SIZE: number = 16 * 1024 * 1024;

/** Bytes of the length field. */
export const LENGTH_SIZE = 4;

/** Bytes of the fixed header after the length field (version..id + 3 length bytes). */
const FIXED_SIZE = 12 + 3;

/** Longest network, target or sender name on the wire, in UTF-8 bytes. */
export const MAX_NAME_BYTES = 255;

/**
 * Frame types. Below 0x10: node to node (through relays too). 0x10..0x1f:
 * between a node and a relay; their bodies are UTF-8 JSON (see
 * `lib/relay_protocol.ts`).
 */
export const FrameType = {
  /** Body: one raw Fernet token sealing a batch of messages. */
  DATA: 0x01,
  /** Body: u16 close code + UTF-8 reason; the sender closes right after. */
  GOAWAY: 0x02,
  /** Node to relay: join a network under a name. */
  REGISTER: 0x10,
  /** Relay to node: registration accepted, with limits and members. */
  REGISTERED: 0x11,
  /** Relay to node: members that joined or left. */
  MEMBERS: 0x12,
  /** Either way: are you there? */
  PING: 0x13,
  /** Either way: answer to PING. */
  PONG: 0x14,
  /** Relay to node, first frame on every connection: a nonce to prove membership over. */
  CHALLENGE: 0x15,
  /** Relay to node: the relay is going away; move new calls elsewhere. */
  DRAIN: 0x16,
} as const;

const KNOWN_TYPES: ReadonlySet<number> = new Set<number>(Object.values(FrameType));

/** A decoded frame. `body` is a view into the frame's bytes, not a copy. */
export interface Frame {
  /** Frame type, one of {@linkcode FrameType} (or a registered relay type). */
  type: number;
  /** Message id, unique per sender instance. */
  id: number;
  /** Network name, in clear for routing. */
  network: string;
  /** Target node name, or `"*"`. */
  target: string;
  /** Sender node name as claimed (a relay stamps it from the registration). */
  sender: string;
  /** The body: a raw Fernet token for DATA frames. */
  body: Uint8Array;
  /** The whole frame as read, length field included (set by the reader). */
  raw?: Uint8Array;
}

/** The routing header of a frame, as UTF-8 bytes ready to write. */
export interface EncodedHeader {
  network: Uint8Array;
  target: Uint8Array;
  sender: Uint8Array;
}

/** Encodes a name for the header, checking its length. */
export function encodeName(name: string, what: string): Uint8Array {
  const bytes = textEncoder.encode(name);
  if (bytes.length > MAX_NAME_BYTES) {
    throw new RangeError(
      `Cannot use ${what} '${
        name.slice(0, 40)
      }…': it is ${bytes.length} bytes in UTF-8, the limit is ${MAX_NAME_BYTES}`,
    );
  }
  return bytes;
}

/** Total size on the wire of a frame with these header names and body length. */
export function frameSize(header: EncodedHeader, bodyLength: number): number {
  return LENGTH_SIZE + FIXED_SIZE + header.network.length + header.target.length +
    header.sender.length + bodyLength;
}

/**
 * Writes a frame. Throws {@linkcode MessageTooLargeError} when the frame
 * would exceed `maxFrameSize`, before allocating it.
 */
export function encodeFrame(
  type: number,
  id: number,
  header: EncodedHeader,
  body: Uint8Array,
  maxFrameSize: number = DEFAULT_MAX_FRAME_SIZE,
): Uint8Array {
  const size = frameSize(header, body.length);
  if (size > maxFrameSize) throw new MessageTooLargeError(size, maxFrameSize);
  const out = new Uint8Array(size);
  out.set(body, writeFrameHeader(out, type, id, header));
  return out;
}

/**
 * Writes a frame around `body` without copying it: the header goes into the
 * bytes just before `body`, which must be exactly the header's size at the
 * start of a buffer that ends with `body` (a token sealed with Fernet's
 * `headroom` of `frameSize(header, 0)`). Returns the whole frame, a view of
 * that buffer. Throws {@linkcode MessageTooLargeError} as
 * {@linkcode encodeFrame} does, and a `RangeError` when `body` has no such
 * room (nothing is written then).
 */
export function encodeFrameAround(
  type: number,
  id: number,
  header: EncodedHeader,
  body: Uint8Array,
  maxFrameSize: number = DEFAULT_MAX_FRAME_SIZE,
): Uint8Array {
  const size = frameSize(header, body.length);
  if (size > maxFrameSize) throw new MessageTooLargeError(size, maxFrameSize);
  if (body.byteOffset !== size - body.length || body.buffer.byteLength !== size) {
    throw new RangeError(
      `Cannot write a frame around a body at offset ${body.byteOffset} of ${body.buffer.byteLength} bytes: it needs ${
        size - body.length
      } bytes of room before it and nothing after`,
    );
  }
  const out = new Uint8Array(body.buffer, 0, size);
  writeFrameHeader(out, type, id, header);
  return out;
}

/** Writes the header of a frame of `out.length` bytes at the start of `out`; returns where the body goes. */
function writeFrameHeader(
  out: Uint8Array,
  type: number,
  id: number,
  header: EncodedHeader,
): number {
  const view = new DataView(out.buffer, out.byteOffset, FIXED_SIZE + LENGTH_SIZE);
  view.setUint32(0, out.length - LENGTH_SIZE);
  out[4] = PROTOCOL_VERSION;
  out[5] = type;
  view.setUint16(6, 0);
  view.setUint32(8, Math.floor(id / 0x1_0000_0000));
  view.setUint32(12, id >>> 0);
  // Three calls, not a loop over a new array: this runs for every frame sent.
  const at = writeName(out, 16, header.network);
  return writeName(out, writeName(out, at, header.target), header.sender);
}

/** Writes one length-prefixed header name at `at`; returns where the next field goes. */
function writeName(out: Uint8Array, at: number, name: Uint8Array): number {
  out[at] = name.length;
  out.set(name, at + 1);
  return at + 1 + name.length;
}

/** Convenience: encodes a frame from string names. */
export function buildFrame(
  frame: Frame,
  maxFrameSize: number = DEFAULT_MAX_FRAME_SIZE,
): Uint8Array {
  return encodeFrame(
    frame.type,
    frame.id,
    {
      network: encodeName(frame.network, "network"),
      target: encodeName(frame.target, "target"),
      sender: encodeName(frame.sender, "sender"),
    },
    frame.body,
    maxFrameSize,
  );
}

/**
 * Parses one complete frame (length field included). Throws
 * {@linkcode ProtocolVersionError} or {@linkcode FrameError}.
 */
export function parseFrame(bytes: Uint8Array): Frame {
  if (bytes.length < LENGTH_SIZE + FIXED_SIZE) {
    throw new FrameError(`frame of ${bytes.length} bytes is shorter than the minimal header`);
  }
  if (readU32(bytes, 0) !== bytes.length - LENGTH_SIZE) {
    throw new FrameError("length field does not match the frame size");
  }
  const version = bytes[4]!;
  if (version !== PROTOCOL_VERSION) throw new ProtocolVersionError(version, PROTOCOL_VERSION);
  const type = bytes[5]!;
  if (!KNOWN_TYPES.has(type)) throw new FrameError(`unknown frame type ${type}`);
  const hi = readU32(bytes, 8);
  if (hi >= 0x20_0000) throw new FrameError("message id exceeds 2^53");
  const id = hi * 0x1_0000_0000 + readU32(bytes, 12);
  const network = nameAt(bytes, 16, "network");
  let at = 17 + bytes[16]!;
  const target = nameAt(bytes, at, "target");
  at += 1 + bytes[at]!;
  const sender = nameAt(bytes, at, "sender");
  at += 1 + bytes[at]!;
  return { type, id, network, target, sender, body: bytes.subarray(at), raw: bytes };
}

/** The big-endian u32 at `at` of `bytes` (in bounds: checked by the caller). */
function readU32(bytes: Uint8Array, at: number): number {
  return ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!) >>>
    0;
}

/** The name whose length byte is at `at`: checked to lie inside the frame and to be UTF-8. */
function nameAt(bytes: Uint8Array, at: number, what: string): string {
  const length = bytes[at];
  if (length === undefined || at + 1 + length > bytes.length) {
    throw new FrameError(`${what} name runs past the end of the frame`);
  }
  if (length === 0) return "";
  // The names of a link's frames repeat: looked up in place, no view made for them.
  const known = recentNames.get(bytes, at + 1, at + 1 + length);
  if (known !== undefined) return known;
  try {
    return decodeName(bytes.subarray(at + 1, at + 1 + length));
  } catch (cause) {
    throw new FrameError(`${what} name is not valid UTF-8`, { cause });
  }
}

/**
 * A header name as a string. Names on the wire are short ASCII (network ids,
 * pseudonyms): reading those in TypeScript skips a call into the runtime's
 * decoder, which cost about 0.6 µs per name, three per frame (`parseFrame`
 * took 2.4 µs, now 0.8, in a 100 B call). Anything else goes through the
 * strict UTF-8 decoder. The frames of a link repeat the same few names, so
 * the names decoded lately are found again by their bytes (`nameAt` looks
 * first): no string is built for them at all.
 */
function decodeName(bytes: Uint8Array): string {
  let name = "";
  for (let i = 0; i < bytes.length; i++) {
    const byte = bytes[i]!;
    if (byte >= 0x80) {
      name = textDecoder.decode(bytes);
      break;
    }
    name += String.fromCharCode(byte);
  }
  recentNames.set(bytes, name);
  return name;
}

/** Header names decoded lately: a link's three, a relay's network and busiest members. */
const recentNames = new BytesMemo<string>(32, MAX_NAME_BYTES);

/** The first buffer of a frame above it, bytes; it grows four-fold as bytes arrive. */
export const FRAME_BUFFER_START = 16_384;

/**
 * A frame's buffer takes its full size once 1/FULL_AFTER of it has arrived.
 * Growing four-fold all the way cost a 1 MiB relayed call about 1.2 ms (+12%,
 * three copies and allocations per hop); this keeps one copy of at most a
 * sixteenth, and memory within 16 × the bytes received.
 */
const FULL_AFTER = 16;

/**
 * Incremental frame reader: feed it chunks as they arrive, in any sizes
 * (one byte at a time works), and it returns the complete frames.
 *
 * The length of each frame is checked against the maximum before anything
 * is allocated, and memory follows the bytes received, never the length
 * declared: a frame above {@linkcode FRAME_BUFFER_START} starts with a
 * buffer of that size, made four times larger each time it fills, up to
 * the declared length, which it takes once a sixteenth of the frame has
 * arrived (at once, when the chunk that holds its header holds that much).
 * After it throws, the stream is unusable: close the connection.
 *
 * @example One frame fed one byte at a time
 * ```ts
 * import assert from "node:assert/strict";
 * import { encodeFrame, FrameDecoder, FrameType } from "./frame.ts";
 *
 * const empty = new Uint8Array(0);
 * const bytes = encodeFrame(FrameType.PING, 7, { network: empty, target: empty, sender: empty }, empty);
 * const decoder = new FrameDecoder();
 * const frames = [...bytes].flatMap((byte) => decoder.push(Uint8Array.of(byte)));
 * assert.equal(frames.length, 1);
 * assert.equal(frames[0]!.id, 7);
 * ```
 */
export class FrameDecoder {
  #maxFrameSize: number;
  #head = new Uint8Array(LENGTH_SIZE);
  #headFill = 0;
  /** The frame being read: its buffer so far (at most `#frameLength` bytes). */
  #frame: Uint8Array | null = null;
  #frameLength = 0;
  #frameFill = 0;
  #oneAtATime = false;
  #rest: Uint8Array | null = null;
  #onBuffered: ((bytes: number) => void) | null = null;

  /** Creates a decoder that refuses frames above `maxFrameSize` bytes. */
  constructor(maxFrameSize: number = DEFAULT_MAX_FRAME_SIZE) {
    this.#maxFrameSize = maxFrameSize;
  }

  /** Changes the largest frame accepted from the next frame on (a relay raises it at admission). */
  set maxFrameSize(bytes: number) {
    this.#maxFrameSize = bytes;
  }

  /**
   * While true, {@linkcode push} returns after each complete frame and keeps
   * the rest of its chunk for {@linkcode resume}: the caller handles that
   * frame (and may raise the limit) before the next header is judged.
   */
  set oneAtATime(on: boolean) {
    this.#oneAtATime = on;
  }

  /** Called with the bytes held for the partial frame each time that changes (0 once it completes). */
  set onBuffered(listener: ((bytes: number) => void) | null) {
    this.#onBuffered = listener;
  }

  /** Bytes of the frame's buffer not received yet (declared, not sent), 0 between frames. */
  get unfilled(): number {
    return this.#frame ? this.#frame.length - this.#frameFill : 0;
  }

  /** True when no partial frame is buffered (a clean place to end the stream). */
  get idle(): boolean {
    return this.#headFill === 0 && this.#frame === null && this.#rest === null;
  }

  /**
   * The unfilled rest of the frame's buffer, so a reader can read the body
   * straight into it (no copy); null between frames, or while a chunk kept
   * by {@linkcode oneAtATime} waits. Fill it, then call {@linkcode commit}.
   */
  writable(): Uint8Array | null {
    if (!this.#frame || this.#rest) return null;
    if (this.#frameFill === this.#frame.length) this.#grow(this.#frameFill + 1);
    return this.#frame.subarray(this.#frameFill);
  }

  /** Marks `n` bytes of {@linkcode writable} as read; returns the frame it completes. */
  commit(n: number): Frame[] {
    const frame = this.#frame;
    if (!frame || n < 0 || this.#frameFill + n > frame.length) {
      throw new RangeError("Cannot commit bytes: no frame is being read or n is out of range");
    }
    this.#frameFill += n;
    return this.#frameFill < this.#frameLength ? [] : [this.#complete()];
  }

  /** Consumes `chunk` and returns every frame it completes (only the first, while {@linkcode oneAtATime}). */
  push(chunk: Uint8Array): Frame[] {
    const frames: Frame[] = [];
    let at = 0;
    while (at < chunk.length) {
      if (this.#frame === null) {
        const take = Math.min(LENGTH_SIZE - this.#headFill, chunk.length - at);
        this.#head.set(chunk.subarray(at, at + take), this.#headFill);
        this.#headFill += take;
        at += take;
        if (this.#headFill < LENGTH_SIZE) break;
        this.#start(chunk.length - at);
      }
      const take = Math.min(this.#frameLength - this.#frameFill, chunk.length - at);
      this.#grow(this.#frameFill + take);
      this.#frame!.set(chunk.subarray(at, at + take), this.#frameFill);
      this.#frameFill += take;
      at += take;
      if (this.#frameFill === this.#frameLength) {
        frames.push(this.#complete());
        if (this.#oneAtATime && at < chunk.length) {
          this.#rest = chunk.subarray(at);
          break;
        }
      }
    }
    return frames;
  }

  /**
   * The chunk kept back by {@linkcode oneAtATime}, handed over once: push
   * it before reading more (it may view the caller's read buffer). Null
   * when none is kept.
   */
  takeRest(): Uint8Array | null {
    const rest = this.#rest;
    this.#rest = null;
    return rest;
  }

  /** Begins the frame whose length field was just read; `arrived` of its bytes are in hand. */
  #start(arrived: number): void {
    const length = readU32(this.#head, 0);
    const total = LENGTH_SIZE + length;
    if (total > this.#maxFrameSize) {
      throw new FrameError(
        `frame of ${total} bytes exceeds the limit of ${this.#maxFrameSize} bytes`,
      );
    }
    if (length < FIXED_SIZE) {
      throw new FrameError(`frame length ${length} is shorter than the minimal header`);
    }
    this.#frameLength = total;
    // A sixteenth already here: its full buffer now, not a first one dropped on the next read
    // (fresh pages cost about 10 µs each on the bench VM: 40 µs per 64 KiB piece, per hop).
    const full = (LENGTH_SIZE + arrived) * FULL_AFTER >= total;
    this.#frame = new Uint8Array(full ? total : Math.min(total, FRAME_BUFFER_START));
    this.#frame.set(this.#head, 0);
    this.#frameFill = LENGTH_SIZE;
    this.#onBuffered?.(this.#frame.length);
  }

  /** Makes the frame's buffer hold at least `bytes` (four-fold steps, never past the frame). */
  #grow(bytes: number): void {
    const frame = this.#frame!;
    if (bytes <= frame.length) return;
    let size = frame.length;
    while (size < bytes) size *= 4;
    // Once a sixteenth has arrived the rest is likely on its way: one last copy, not several.
    if (bytes * FULL_AFTER >= this.#frameLength) size = this.#frameLength;
    const larger = new Uint8Array(Math.min(size, this.#frameLength));
    larger.set(frame.subarray(0, this.#frameFill));
    this.#frame = larger;
    this.#onBuffered?.(larger.length);
  }

  #complete(): Frame {
    const frame = this.#frame!;
    this.#frame = null;
    this.#headFill = 0;
    this.#onBuffered?.(0);
    return parseFrame(frame);
  }
}

/** Close codes carried by GOAWAY frames. */
export const CloseCode = {
  /** Orderly shutdown of the sending node. */
  NORMAL: 0,
  /** The peer sent bytes that are not a valid frame. */
  MALFORMED: 1,
  /** The peer sent a frame above the size limit. */
  TOO_LARGE: 2,
  /** The peer speaks another protocol version. */
  VERSION: 3,
  /** A token could not be decrypted or authenticated (wrong network key?). */
  AUTH: 4,
  /** Wrong network, target or sender for this connection. */
  ROUTING: 5,
  /** The peer did not identify itself in time, or a limit was hit. */
  POLICY: 6,
  /** Relay: another live instance of the network uses this name. */
  NAME_TAKEN: 7,
  /** Relay: this relay does not serve that network. */
  NETWORK_REFUSED: 8,
  /** Relay: the relay has reached its maximum number of nodes. */
  FULL: 9,
  /** Relay: a quota was reached (registrations per source address or per network). */
  QUOTA: 10,
} as const;

/** Builds a GOAWAY body: u16 code + UTF-8 reason (truncated to 1 KiB). */
export function encodeGoaway(code: number, reason: string): Uint8Array {
  const text = textEncoder.encode(reason).subarray(0, 1024);
  const body = new Uint8Array(2 + text.length);
  new DataView(body.buffer).setUint16(0, code);
  body.set(text, 2);
  return body;
}

/** Reads a GOAWAY body; malformed input yields code MALFORMED. */
export function decodeGoaway(body: Uint8Array): { code: number; reason: string } {
  if (body.length < 2) return { code: CloseCode.MALFORMED, reason: "malformed GOAWAY frame" };
  const code = new DataView(body.buffer, body.byteOffset, body.byteLength).getUint16(0);
  return { code, reason: new TextDecoder().decode(body.subarray(2)) };
}
