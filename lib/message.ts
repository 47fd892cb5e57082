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
import { BytesMemo } from "./bytes_memo.ts";
import { valueJson } from "./value_json.ts";

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
  /** On a piece of a large message: 1 asks the receiver for `ack` messages (docs/PROTOCOL.md, "Chunks"). */
  a?: 1;
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
  | { k: "relays"; id: number; l: string[] }
  | { k: "ack"; id: number; n: number };

/**
 * Encodes one message as a record (without its length prefix). Throws
 * {@linkcode EncodeError} for values JSON plus `Uint8Array` cannot carry.
 */
export function encodeRecord(message: Message): Uint8Array {
  const blobs: Uint8Array[] = [];
  let json: string;
  try {
    json = valueJson(message, blobs);
  } catch (cause) {
    if (cause instanceof EncodeError) throw cause;
    throw new EncodeError(cause instanceof Error ? cause.message : String(cause), { cause });
  }
  let size = 0;
  for (const blob of blobs) size += 4 + blob.length;
  // The JSON is nearly always ASCII, one byte a character: written straight into the record.
  let out = new Uint8Array(4 + json.length + size);
  let jsonBytes = json.length;
  if (!writeAscii(json, out, 4)) {
    const text = textEncoder.encode(json);
    jsonBytes = text.length;
    out = new Uint8Array(4 + jsonBytes + size);
    out.set(text, 4);
  }
  writeU32(out, 0, jsonBytes);
  writePrefixed(out, 4 + jsonBytes, blobs);
  return out;
}

/**
 * Longest text handled by the TypeScript loops of {@linkcode writeAscii} and
 * {@linkcode readText}; longer text goes through the runtime's encoder and
 * decoder, which are faster per byte but cost a call each (about 1 µs, as
 * much as a small message's whole JSON).
 */
const SHORT_TEXT = 256;

/** Writes `text` at `at` when it is ASCII (one byte per character); false (partly written) otherwise. */
function writeAscii(text: string, out: Uint8Array, at: number): boolean {
  if (text.length > SHORT_TEXT) {
    const { read, written } = textEncoder.encodeInto(text, out.subarray(at));
    return read === text.length && written === text.length;
  }
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code >= 0x80) return false;
    out[at + i] = code;
  }
  return true;
}

/** Strict UTF-8 `bytes` as text; short ASCII is read in TypeScript. */
function readText(bytes: Uint8Array): string {
  if (bytes.length > SHORT_TEXT) return textDecoder.decode(bytes);
  for (let i = 0; i < bytes.length; i++) if (bytes[i]! >= 0x80) return textDecoder.decode(bytes);
  return String.fromCharCode.apply(null, bytes as unknown as number[]);
}

/** Writes each part as `u32 length, bytes` into `out` from `at`; returns the end. */
function writePrefixed(out: Uint8Array, at: number, parts: readonly Uint8Array[]): number {
  for (const part of parts) {
    writeU32(out, at, part.length);
    out.set(part, at + 4);
    at += 4 + part.length;
  }
  return at;
}

/** The big-endian u32 at `at` (in bounds: checked by the caller). No `DataView` is made for it. */
function readU32(bytes: Uint8Array, at: number): number {
  return ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!) >>>
    0;
}

/** Writes `value` as a big-endian u32 at `at`. */
function writeU32(out: Uint8Array, at: number, value: number): void {
  out[at] = value >>> 24;
  out[at + 1] = value >>> 16;
  out[at + 2] = value >>> 8;
  out[at + 3] = value;
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
  const jsonLength = readU32(record, 0);
  const extra = Number.isFinite(dl) ? `,"t":${t},"dl":${dl}}` : `,"t":${t}}`; // ASCII
  const out = new Uint8Array(record.length - 1 + extra.length);
  writeU32(out, 0, jsonLength - 1 + extra.length);
  out.set(record.subarray(4, 4 + jsonLength - 1), 4);
  writeAscii(extra, out, 4 + jsonLength - 1);
  out.set(record.subarray(4 + jsonLength), 4 + jsonLength - 1 + extra.length);
  return out;
}

/** Decodes one record (without its length prefix). Throws {@linkcode FrameError}. */
export function decodeRecord(record: Uint8Array): Message {
  if (record.length < 4) throw new FrameError("message record is truncated");
  const jsonLength = readU32(record, 0);
  if (4 + jsonLength > record.length) throw new FrameError("message JSON runs past its record");
  const blobs: Uint8Array[] = [];
  let at = 4 + jsonLength;
  while (at < record.length) {
    if (at + 4 > record.length) throw new FrameError("blob length is truncated");
    const length = readU32(record, at);
    if (at + 4 + length > record.length) throw new FrameError("blob runs past its record");
    blobs.push(record.subarray(at + 4, at + 4 + length));
    at += 4 + length;
  }
  let parsed: unknown;
  try {
    const json = readText(record.subarray(4, 4 + jsonLength));
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
    case "ack":
      if ((m.id as number) < 1 || !Number.isSafeInteger(m.n) || (m.n as number) < 1) break;
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
  const envelopeLength = readU32(plain, 1);
  if (envelopeLength > MAX_ENVELOPE) {
    throw new FrameError(`envelope is longer than ${MAX_ENVELOPE} bytes`);
  }
  if (5 + envelopeLength > plain.length) throw new FrameError("envelope runs past the batch");
  const end = 5 + envelopeLength;
  const known = recentEnvelopes.get(plain, 5, end); // In place: no view made for a known one.
  return { envelope: known ?? parseEnvelope(plain.subarray(5, end)), end };
}

/**
 * Envelopes decoded lately: every batch on a link carries the same one, and
 * parsing it again cost a receiver about 4 µs of a 100 B call. Each keeps
 * only its known members (strings) and is frozen, as every batch with the
 * same bytes shares one.
 */
const recentEnvelopes = new BytesMemo<Envelope>(8, MAX_ENVELOPE);

function parseEnvelope(bytes: Uint8Array): Envelope {
  let envelope: Envelope;
  try {
    envelope = JSON.parse(textDecoder.decode(bytes));
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
  // Only the known members: the shared object is immutable for good.
  const { s, i, w, t, ti, a } = envelope;
  const kept: Envelope = ti === undefined ? { s, i, w, t } : { s, i, w, t, ti };
  if (a === 1) kept.a = 1;
  Object.freeze(kept);
  recentEnvelopes.set(bytes, kept);
  return kept;
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
  const messages: Message[] = [];
  let at = end;
  while (at < plain.length) {
    if (at + 4 > plain.length) throw new FrameError("record length is truncated");
    const length = readU32(plain, at);
    if (at + 4 + length > plain.length) throw new FrameError("record runs past the batch");
    if (messages.length === maxMessages) {
      throw new FrameError(`batch holds more than ${maxMessages} messages`);
    }
    messages.push(decodeRecord(plain.subarray(at + 4, at + 4 + length)));
    at += 4 + length;
  }
  return { envelope, messages };
}
