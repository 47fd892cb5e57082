/**
 * Bounds on what a NATS server sends a relay, checked before npm `nats`'s
 * parser sees it (sans-IO: bytes in, a refusal out). The parser buffers a
 * message or a control line for as long as it lasts, so a broken or hostile
 * server could grow the relay without end; the scanner follows the server's
 * framing and refuses a control line over {@linkcode MAX_NATS_CONTROL_LINE}
 * (an INFO line over {@linkcode MAX_NATS_INFO}) and a message over the
 * `max_payload` the server announced.
 *
 * @module
 */

/** The longest control line (MSG, HMSG, PING, -ERR, …) accepted, bytes (nats-server's default). */
export const MAX_NATS_CONTROL_LINE = 4096;
/** The longest INFO line accepted, bytes. */
export const MAX_NATS_INFO = 64 * 1024;
/** The largest message accepted whatever `max_payload` the server announces, bytes (NATS's own ceiling). */
export const MAX_NATS_MESSAGE = 64 * 1024 * 1024;

const LF = 0x0a;
const SPACE = 0x20;
const TAB = 0x09;
const CR = 0x0d;

/**
 * Follows a NATS server's stream and says when it breaks a bound.
 *
 * @example A message over the announced maximum is refused
 * ```ts
 * import assert from "node:assert/strict";
 * import { NatsScanner } from "./nats_scanner.ts";
 *
 * const scanner = new NatsScanner(1024);
 * const bytes = (s: string) => new TextEncoder().encode(s);
 * assert.equal(scanner.push(bytes("PING\r\nMSG a 1 5\r\nhello\r\n")), null);
 * assert.match(scanner.push(bytes("MSG a 1 2048\r\n")) ?? "", /2048 bytes/);
 * ```
 */
export class NatsScanner {
  readonly #maxMessage: number;
  /** The start of the current control line (enough to read MSG and HMSG sizes). */
  readonly #head = new Uint8Array(MAX_NATS_CONTROL_LINE);
  #length = 0;
  /** Payload bytes (and their CRLF) still to pass before the next control line. */
  #skip = 0;

  /** `maxPayload`: the server's announced `max_payload` (capped at {@linkcode MAX_NATS_MESSAGE}). */
  constructor(maxPayload: number) {
    this.#maxMessage = Math.min(Math.max(0, maxPayload), MAX_NATS_MESSAGE);
  }

  /** Takes the next bytes; returns why the server is refused, or null. */
  push(bytes: Uint8Array): string | null {
    let at = 0;
    while (at < bytes.length) {
      if (this.#skip > 0) {
        const n = Math.min(this.#skip, bytes.length - at);
        this.#skip -= n;
        at += n;
        continue;
      }
      const end = bytes.indexOf(LF, at);
      const stop = end < 0 ? bytes.length : end;
      const why = this.#take(bytes.subarray(at, stop));
      if (why !== null) return why;
      at = stop;
      if (end >= 0) {
        const done = this.#line();
        if (done !== null) return done;
        at++;
      }
    }
    return null;
  }

  /** Adds part of a control line. */
  #take(part: Uint8Array): string | null {
    const room = this.#head.length - this.#length;
    this.#head.set(part.subarray(0, room), this.#length);
    this.#length += part.length;
    const limit = this.#isInfo() ? MAX_NATS_INFO : MAX_NATS_CONTROL_LINE;
    return this.#length > limit ? `a control line of the NATS server is over ${limit} bytes` : null;
  }

  /** A whole control line: sets up its payload, if it has one. */
  #line(): string | null {
    const line = this.#head.subarray(0, Math.min(this.#length, this.#head.length));
    this.#length = 0;
    const op = opOf(line);
    if (op === null) return null;
    const size = lastNumber(line);
    if (size === null) return `a ${op} line of the NATS server has no size`;
    if (size > this.#maxMessage) {
      return `the NATS server sent a message of ${size} bytes, over its max_payload of ${this.#maxMessage}`;
    }
    this.#skip = size + 2;
    return null;
  }

  #isInfo(): boolean {
    const h = this.#head;
    return this.#length >= 4 && (h[0]! | 0x20) === 0x69 && (h[1]! | 0x20) === 0x6e &&
      (h[2]! | 0x20) === 0x66 && (h[3]! | 0x20) === 0x6f;
  }
}

/** "MSG" or "HMSG" when `line` starts with that operation (any case), else null. */
function opOf(line: Uint8Array): "MSG" | "HMSG" | null {
  const at = (line[0]! | 0x20) === 0x68 ? 1 : 0; // h
  const msg = line.length > at + 3 && (line[at]! | 0x20) === 0x6d && // m
    (line[at + 1]! | 0x20) === 0x73 && (line[at + 2]! | 0x20) === 0x67 && // s g
    blank(line[at + 3]!);
  return msg ? (at === 1 ? "HMSG" : "MSG") : null;
}

/** The line's last word as a non-negative integer, or null. */
function lastNumber(line: Uint8Array): number | null {
  let end = line.length;
  while (end > 0 && blank(line[end - 1]!)) end--;
  let start = end;
  while (start > 0 && !blank(line[start - 1]!)) start--;
  if (start === end || end - start > 15) return null;
  let n = 0;
  for (let i = start; i < end; i++) {
    const digit = line[i]! - 0x30;
    if (digit < 0 || digit > 9) return null;
    n = n * 10 + digit;
  }
  return n;
}

function blank(byte: number): boolean {
  return byte === SPACE || byte === TAB || byte === CR;
}
