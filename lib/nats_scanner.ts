/**
 * Bounds on what a NATS server sends a relay, checked before npm `nats`'s
 * parser sees it (sans-IO: bytes in, a refusal out). The parser buffers a
 * message or a control line for as long as it lasts, so a broken or hostile
 * server could grow the relay without end; the scanner follows the server's
 * framing and refuses a line (INFO, MSG, -ERR, …) over
 * {@linkcode MAX_NATS_LINE}, a message over {@linkcode MAX_NATS_MESSAGE}
 * (NATS's own ceiling for `max_payload`: a server of the cluster may deliver
 * messages up to another server's larger limit), and a payload not followed
 * by CRLF (the parser would skip to the next line end there, and the two
 * would no longer agree on where messages start).
 *
 * @module
 */

/** The longest line (INFO, MSG, HMSG, -ERR, …) accepted from a NATS server, bytes. */
export const MAX_NATS_LINE = 64 * 1024;
/** The largest message accepted from a NATS server, bytes (NATS's own ceiling for `max_payload`). */
export const MAX_NATS_MESSAGE = 64 * 1024 * 1024;

const LF = 0x0a;
const CR = 0x0d;
const SPACE = 0x20;
const TAB = 0x09;

/**
 * Follows a NATS server's stream and says when it breaks a bound.
 *
 * @example A message over the bound is refused at its header
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
  /** The current line so far (its first {@linkcode MAX_NATS_LINE} bytes). */
  readonly #line = new Uint8Array(MAX_NATS_LINE);
  #length = 0;
  /** Payload bytes still to pass before the payload's CRLF. */
  #skip = 0;
  /** The bytes of the CRLF after a payload still expected: 2, 1 or 0. */
  #trailer = 0;

  /** `maxMessage`: the largest message accepted, bytes (at most {@linkcode MAX_NATS_MESSAGE}). */
  constructor(maxMessage: number = MAX_NATS_MESSAGE) {
    this.#maxMessage = Math.min(Math.max(0, maxMessage), MAX_NATS_MESSAGE);
  }

  /** Takes the next bytes; returns why the server is refused, or null. */
  push(bytes: Uint8Array): string | null {
    let at = 0;
    while (at < bytes.length) {
      if (this.#skip > 0) {
        const n = Math.min(this.#skip, bytes.length - at);
        this.#skip -= n;
        at += n;
      } else if (this.#trailer > 0) {
        if (bytes[at] !== (this.#trailer === 2 ? CR : LF)) {
          return "a message of the NATS server did not end with CRLF";
        }
        this.#trailer--;
        at++;
      } else {
        const end = bytes.indexOf(LF, at);
        const stop = end < 0 ? bytes.length : end;
        const part = bytes.subarray(at, stop);
        if (this.#length + part.length > MAX_NATS_LINE) {
          return `a line of the NATS server is over ${MAX_NATS_LINE} bytes`;
        }
        this.#line.set(part, this.#length);
        this.#length += part.length;
        at = stop;
        if (end >= 0) {
          const why = this.#ended();
          if (why !== null) return why;
          at++;
        }
      }
    }
    return null;
  }

  /** A whole line: sets up its payload, if it has one. */
  #ended(): string | null {
    const line = this.#line.subarray(0, this.#length);
    this.#length = 0;
    const op = opOf(line);
    if (op === null) return null;
    const size = lastNumber(line);
    if (size === null) return `a ${op} line of the NATS server has no size`;
    if (size > this.#maxMessage) {
      return `the NATS server sent a message of ${size} bytes, over ${this.#maxMessage}`;
    }
    this.#skip = size;
    this.#trailer = 2;
    return null;
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
