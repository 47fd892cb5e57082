/**
 * What travels inside a DATA frame's Fernet token: an envelope naming sender
 * and target, then one or more message records. Sans-IO and crypto-free;
 * `lib/link.ts` seals the batch.
 *
 * Plaintext layout (big-endian):
 *
 * ```text
 * u8   payload version (1)
 * u32  E, envelope JSON length;  E bytes envelope JSON
 * then records until the end, each:
 *   u32  R, record length; R bytes record:
 *     u32  J, JSON length;  J bytes message JSON
 *     then blobs until the end of the record, each: u32 length, bytes
 * ```
 *
 * Values are JSON with two tagged objects: `{"$b": i}` is blob `i` of the
 * record (a `Uint8Array`, carried as raw bytes; `i` must be a non-negative
 * integer below the record's blob count, else the record is a
 * {@linkcode FrameError}), `{"$e": {...}}` escapes a user object whose own
 * keys include `$b` or `$e`.
 *
 * @module
 */

import { EncodeError, FrameError } from "./errors.ts";
import { textDecoder, textEncoder } from "./encoding.ts";

/** Version of the plaintext layout. */
export const PAYLOAD_VERSION = 1;

/**
 * Most messages a receiver accepts in one batch: 1024. A batch with more is
 * malformed, refused before the messages past the cap are decoded, so one
 * frame of tiny requests cannot queue an unbounded amount of work. Senders
 * seal at most 16 per batch.
 *
 * @example
 * ```ts
 * import { DEFAULT_MAX_BATCH_MESSAGES } from "./message.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(DEFAULT_MAX_BATCH_MESSAGES, 1024);
 * ```
 */
export const DEFAULT_MAX_BATCH_MESSAGES = 1024;

/**
 * Longest envelope JSON a receiver reads, bytes: its names are at most 255
 * bytes each, so an honest envelope stays far below.
 */
const MAX_ENVELOPE = 4096;

/** Who sealed a batch and for whom: checked against the frame header. */
export interface Envelope {
  /** Sender node name. */
  s: string;
  /** Sender instance id (16 hex chars, random per start). */
  i: string;
  /** Network name. */
  w: string;
  /** Target node name, or "*". */
  t: string;
  /** Target instance id, when the sender knows it (responses always do). */
  ti?: string;
}

/** Wire error codes carried by error responses. */
export const ErrorCode = {
  /** The handler threw. */
  HANDLER: "handler",
  /**
   * No command at that path; with the name {@linkcode NOT_SERVING}, the
   * target is a client-only member and serves nothing.
   */
  UNKNOWN_COMMAND: "unknown-command",
  /** The handler's result could not be encoded. */
  ENCODE: "encode",
  /** A repeated request whose answer is no longer kept (or that may have run); not run again. */
  FORGOTTEN: "forgotten",
  /** The target is closing. */
  CLOSING: "closing",
  /** The caller's deadline passed before the handler could start; it never runs. */
  EXPIRED: "expired",
  /** The caller's cancel arrived before the request; it never runs. */
  CANCELLED: "cancelled",
  /** Too many requests of this caller (or of all) in flight; it never runs. */
  BUSY: "busy",
} as const;

/**
 * The error name a client-only member puts in its `unknown-command` answer
 * to every request: it serves nothing. Callers that predate it see a plain
 * unknown command.
 */
export const NOT_SERVING = "NotServingError";

/**
 * A message inside a batch. `id` is the requester's counter (from 1 for
 * requests and cancels). A request may carry `t`, the caller's clock when it
 * made it (ms since the epoch), and `dl`, how long after `t` the caller
 * waits for the answer (ms; absent: no limit).
 */
export type Message =
  | {
    k: "q";
    id: number;
    p: string;
    a: unknown[];
    kw: Record<string, unknown>;
    t?: number;
    dl?: number;
  }
  | { k: "r"; id: number; v: unknown }
  | { k: "e"; id: number; c: string; n: string; m: string }
  | { k: "x"; id: number }
  | { k: "ping"; id: number }
  | { k: "pong"; id: number }
  | { k: "relays"; id: number; l: string[] };

let passThrough: object | null = null;

function replacer(this: unknown, key: string, value: unknown): unknown {
  // JSON.stringify applies toJSON() before the replacer sees a value: look at
  // the original so a Buffer (a Uint8Array with toJSON) still travels as bytes.
  const original = (this as Record<string, unknown>)[key];
  if (original !== value && original instanceof Uint8Array) value = original;
  switch (typeof value) {
    case "string":
    case "boolean":
    case "undefined":
      return value;
    case "number":
      if (!Number.isFinite(value)) throw new EncodeError(`${value} is not a finite number`);
      return value;
    case "object": {
      if (value === null || Array.isArray(value)) return value;
      if (value === passThrough) {
        passThrough = null;
        return value;
      }
      if (value instanceof Uint8Array) {
        blobsInProgress!.push(value);
        return { $b: blobsInProgress!.length - 1 };
      }
      const proto = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) {
        const kind = (value as { constructor?: { name?: string } }).constructor?.name ?? "object";
        throw new EncodeError(`a value of type ${kind} is not encodable`);
      }
      if (Object.hasOwn(value, "$b") || Object.hasOwn(value, "$e")) {
        passThrough = value;
        return { $e: value };
      }
      return value;
    }
    default:
      throw new EncodeError(`a value of type ${typeof value} is not encodable`);
  }
}

let blobsInProgress: Uint8Array[] | null = null;

/**
 * Encodes one message as a record (without its length prefix). Throws
 * {@linkcode EncodeError} for values JSON plus `Uint8Array` cannot carry.
 */
export function encodeRecord(message: Message): Uint8Array {
  const blobs: Uint8Array[] = [];
  blobsInProgress = blobs;
  passThrough = null;
  let json: string;
  try {
    json = JSON.stringify(message, replacer);
  } catch (cause) {
    if (cause instanceof EncodeError) throw cause;
    throw new EncodeError(cause instanceof Error ? cause.message : String(cause), { cause });
  } finally {
    blobsInProgress = null;
    passThrough = null;
  }
  const text = textEncoder.encode(json);
  let size = 4 + text.length;
  for (const blob of blobs) size += 4 + blob.length;
  const out = new Uint8Array(size);
  writePrefixed(out, 0, [text]);
  writePrefixed(out, 4 + text.length, blobs);
  return out;
}

/** Writes each part as `u32 length, bytes` into `out` from `at`; returns the end. */
function writePrefixed(out: Uint8Array, at: number, parts: readonly Uint8Array[]): number {
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  for (const part of parts) {
    view.setUint32(at, part.length);
    out.set(part, at + 4);
    at += 4 + part.length;
  }
  return at;
}

function revive(value: unknown, blobs: Uint8Array[]): unknown {
  if (value === null || typeof value !== "object") return value;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) value[i] = revive(value[i], blobs);
    return value;
  }
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj);
  if (keys.length === 1 && keys[0] === "$b") return blobAt(obj.$b, blobs);
  const target = keys.length === 1 && keys[0] === "$e" && typeof obj.$e === "object" &&
      obj.$e !== null
    ? obj.$e as Record<string, unknown>
    : obj;
  for (const key of Object.keys(target)) target[key] = revive(target[key], blobs);
  return target;
}

/**
 * The blob a `{"$b": index}` reference names. Only a non-negative integer
 * below the record's blob count is an index: anything else (`"length"`,
 * `"constructor"`, `"0"`, `-1`, `1.5`) would otherwise read a property of
 * the array instead of a blob.
 */
function blobAt(index: unknown, blobs: readonly Uint8Array[]): Uint8Array {
  if (typeof index !== "number" || !Number.isInteger(index) || index < 0) {
    throw new FrameError(
      `message holds a malformed blob reference ${
        JSON.stringify(index)
      }; a blob index is a non-negative integer`,
    );
  }
  const blob = blobs[index];
  if (blob === undefined) {
    throw new FrameError(
      `message refers to missing blob ${index}; the record holds ${blobs.length} blobs`,
    );
  }
  return blob;
}

/**
 * Stamps an encoded request record with the caller's timing: `t` (the
 * caller's clock when it made the request, ms since the epoch) and, when
 * finite, `dl` (how long after `t` it waits, ms). Returns a new record; the
 * arguments are not encoded again.
 *
 * @example
 * ```ts
 * import { decodeRecord, encodeRecord, stampRequest } from "./message.ts";
 * import assert from "node:assert/strict";
 *
 * const bytes = new Uint8Array([1, 2]);
 * const record = encodeRecord({ k: "q", id: 1, p: "echo", a: [bytes], kw: {} });
 * assert.deepEqual(decodeRecord(stampRequest(record, 1_700_000_000_000, 5000)), {
 *   k: "q", id: 1, p: "echo", a: [bytes], kw: {}, t: 1_700_000_000_000, dl: 5000,
 * });
 * assert.equal((decodeRecord(stampRequest(record, 1, Infinity)) as { dl?: number }).dl, undefined);
 * ```
 */
export function stampRequest(record: Uint8Array, t: number, dl: number): Uint8Array {
  const view = new DataView(record.buffer, record.byteOffset, record.byteLength);
  const jsonLength = view.getUint32(0);
  const extra = textEncoder.encode(
    Number.isFinite(dl) ? `,"t":${t},"dl":${dl}}` : `,"t":${t}}`,
  );
  const out = new Uint8Array(record.length - 1 + extra.length);
  new DataView(out.buffer).setUint32(0, jsonLength - 1 + extra.length);
  out.set(record.subarray(4, 4 + jsonLength - 1), 4);
  out.set(extra, 4 + jsonLength - 1);
  out.set(record.subarray(4 + jsonLength), 4 + jsonLength - 1 + extra.length);
  return out;
}

/** Decodes one record (without its length prefix). Throws {@linkcode FrameError}. */
export function decodeRecord(record: Uint8Array): Message {
  const view = new DataView(record.buffer, record.byteOffset, record.byteLength);
  if (record.length < 4) throw new FrameError("message record is truncated");
  const jsonLength = view.getUint32(0);
  if (4 + jsonLength > record.length) throw new FrameError("message JSON runs past its record");
  const blobs: Uint8Array[] = [];
  let at = 4 + jsonLength;
  while (at < record.length) {
    if (at + 4 > record.length) throw new FrameError("blob length is truncated");
    const length = view.getUint32(at);
    if (at + 4 + length > record.length) throw new FrameError("blob runs past its record");
    blobs.push(record.subarray(at + 4, at + 4 + length));
    at += 4 + length;
  }
  let parsed: unknown;
  try {
    const json = textDecoder.decode(record.subarray(4, 4 + jsonLength));
    parsed = JSON.parse(json);
    if (blobs.length > 0 || json.includes('"$')) parsed = revive(parsed, blobs);
  } catch (cause) {
    if (cause instanceof FrameError) throw cause;
    throw new FrameError("message is not valid JSON", { cause });
  }
  return checkMessage(parsed);
}

function checkMessage(value: unknown): Message {
  const m = value as Record<string, unknown>;
  if (
    typeof m !== "object" || m === null || typeof m.k !== "string" || !Number.isSafeInteger(m.id)
  ) {
    throw new FrameError("message lacks a kind or an id");
  }
  switch (m.k) {
    case "q":
      if (typeof m.p !== "string" || !Array.isArray(m.a) || !isPlainObject(m.kw)) break;
      if ((m.id as number) < 1 || !optionalTime(m.t) || !optionalTime(m.dl)) break;
      if (m.dl !== undefined && (m.dl as number) < 0) break;
      return m as Message;
    case "x":
      if ((m.id as number) < 1) break;
      return m as Message;
    case "e":
      if (typeof m.c !== "string" || typeof m.n !== "string" || typeof m.m !== "string") break;
      return m as Message;
    case "relays":
      if (!Array.isArray(m.l) || m.l.length > 64 || !m.l.every((a) => typeof a === "string")) break;
      return m as Message;
    case "r":
    case "ping":
    case "pong":
      return m as Message;
  }
  throw new FrameError(`message of kind '${String(m.k)}' is malformed`);
}

/** True for an absent timing field, or a finite number. */
function optionalTime(value: unknown): boolean {
  return value === undefined || (typeof value === "number" && Number.isFinite(value));
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Size of the plaintext {@linkcode encodeBatch} produces for these parts. */
export function batchSize(envelope: Uint8Array, records: readonly Uint8Array[]): number {
  let size = 1 + 4 + envelope.length;
  for (const record of records) size += 4 + record.length;
  return size;
}

/** Encodes an envelope's JSON once, to reuse for every batch on a link. */
export function encodeEnvelope(envelope: Envelope): Uint8Array {
  return textEncoder.encode(JSON.stringify(envelope));
}

/** Builds the plaintext of a batch from an encoded envelope and records. */
export function encodeBatch(envelope: Uint8Array, records: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(batchSize(envelope, records));
  out[0] = PAYLOAD_VERSION;
  writePrefixed(out, writePrefixed(out, 1, [envelope]), records);
  return out;
}

/**
 * Reads the envelope that follows the payload version byte of a batch or a
 * chunk, and where it ends. Throws {@linkcode FrameError} when it is
 * truncated, not JSON, or lacks a field.
 */
export function decodeEnvelope(plain: Uint8Array): { envelope: Envelope; end: number } {
  if (plain.length < 5) throw new FrameError("batch is truncated");
  const view = new DataView(plain.buffer, plain.byteOffset, plain.byteLength);
  const envelopeLength = view.getUint32(1);
  if (envelopeLength > MAX_ENVELOPE) {
    throw new FrameError(`envelope is longer than ${MAX_ENVELOPE} bytes`);
  }
  if (5 + envelopeLength > plain.length) throw new FrameError("envelope runs past the batch");
  let envelope: Envelope;
  try {
    envelope = JSON.parse(textDecoder.decode(plain.subarray(5, 5 + envelopeLength)));
  } catch (cause) {
    throw new FrameError("envelope is not valid JSON", { cause });
  }
  if (
    typeof envelope !== "object" || envelope === null || typeof envelope.s !== "string" ||
    typeof envelope.i !== "string" || typeof envelope.w !== "string" ||
    typeof envelope.t !== "string" || (envelope.ti !== undefined && typeof envelope.ti !== "string")
  ) {
    throw new FrameError("envelope is malformed");
  }
  return { envelope, end: 5 + envelopeLength };
}

/**
 * Reads a batch's plaintext. Throws {@linkcode FrameError} on any
 * malformation, and for a batch of more than `maxMessages` messages
 * (before decoding the one past the cap).
 */
export function decodeBatch(
  plain: Uint8Array,
  maxMessages: number = DEFAULT_MAX_BATCH_MESSAGES,
): { envelope: Envelope; messages: Message[] } {
  if (plain.length < 5) throw new FrameError("batch is truncated");
  if (plain[0] !== PAYLOAD_VERSION) {
    throw new FrameError(
      `payload version ${plain[0]} is not supported (expected ${PAYLOAD_VERSION})`,
    );
  }
  const { envelope, end } = decodeEnvelope(plain);
  const view = new DataView(plain.buffer, plain.byteOffset, plain.byteLength);
  const messages: Message[] = [];
  let at = end;
  while (at < plain.length) {
    if (at + 4 > plain.length) throw new FrameError("record length is truncated");
    const length = view.getUint32(at);
    if (at + 4 + length > plain.length) throw new FrameError("record runs past the batch");
    if (messages.length === maxMessages) {
      throw new FrameError(`batch holds more than ${maxMessages} messages`);
    }
    messages.push(decodeRecord(plain.subarray(at + 4, at + 4 + length)));
    at += 4 + length;
  }
  return { envelope, messages };
}
