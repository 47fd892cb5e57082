/**
 * WebSocket (RFC 6455) for relay links, sans-IO: the opening handshake as
 * text in, text out (both sides), and a frame decoder that unmasks payload
 * in place and reports events. No sockets here; `websocket_link.ts` runs it
 * on a stream. `docs/PROTOCOL.md` ("Links: TCP, TLS or
 * WebSocket") says what a relay accepts.
 *
 * @module
 */

import { textEncoder } from "./encoding.ts";

/** Largest opening request head (request line and headers), bytes. */
export const MAX_HANDSHAKE_HEAD = 4096;

/** WebSocket opcodes. */
export const Opcode = {
  CONTINUATION: 0x0,
  TEXT: 0x1,
  BINARY: 0x2,
  CLOSE: 0x8,
  PING: 0x9,
  PONG: 0xa,
} as const;

/** Close codes the relay sends. */
export const WsClose = {
  NORMAL: 1000,
  PROTOCOL_ERROR: 1002,
  UNSUPPORTED_DATA: 1003,
} as const;

/** The GUID RFC 6455 appends to the client's key. */
const ACCEPT_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/** A valid opening request: what the relay needs to answer it. */
export interface UpgradeRequest {
  /** The request target, e.g. `/` or `/peerbase`. */
  path: string;
  /** `Sec-WebSocket-Key`, as sent. */
  key: string;
}

/** A refused opening request: the HTTP status and a one-line reason. */
export interface UpgradeRefusal {
  /** 400, 426 or 431. */
  status: number;
  /** Why, for the response body. */
  reason: string;
}

/**
 * The index just past the `\r\n\r\n` ending a request head in
 * `bytes[0, length)`, or -1 when it has not arrived yet.
 */
export function headEnd(bytes: Uint8Array, length: number): number {
  for (let i = 3; i < length; i++) {
    if (
      bytes[i] === 10 && bytes[i - 1] === 13 && bytes[i - 2] === 10 && bytes[i - 3] === 13
    ) return i + 1;
  }
  return -1;
}

/**
 * Parses an opening request head (Latin-1 text up to the blank line).
 *
 * @example
 * ```ts
 * import { parseUpgradeRequest } from "./websocket_codec.ts";
 * import assert from "node:assert/strict";
 *
 * const head = "GET /peerbase HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\n" +
 *   "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
 *   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
 * assert.deepEqual(parseUpgradeRequest(head), {
 *   path: "/peerbase",
 *   key: "dGhlIHNhbXBsZSBub25jZQ==",
 * });
 * assert.equal((parseUpgradeRequest("GET / HTTP/1.1\r\n\r\n") as { status: number }).status, 426);
 * ```
 */
export function parseUpgradeRequest(head: string): UpgradeRequest | UpgradeRefusal {
  const lines = head.split("\r\n");
  const request = /^GET (\S+) HTTP\/1\.1$/.exec(lines[0] ?? "");
  if (!request) return { status: 400, reason: "expected GET <path> HTTP/1.1" };
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    if (line === "") continue;
    const colon = line.indexOf(":");
    if (colon <= 0) return { status: 400, reason: "malformed header line" };
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    headers.set(name, headers.has(name) ? `${headers.get(name)}, ${value}` : value);
  }
  const tokens = (name: string) =>
    (headers.get(name) ?? "").toLowerCase().split(",").map((token) => token.trim());
  if (!tokens("upgrade").includes("websocket")) {
    return { status: 426, reason: "this port speaks WebSocket only: send Upgrade: websocket" };
  }
  if (!tokens("connection").includes("upgrade")) {
    return { status: 400, reason: "missing Connection: Upgrade" };
  }
  if (!headers.get("host")) return { status: 400, reason: "missing Host" };
  if (headers.get("sec-websocket-version") !== "13") {
    return { status: 400, reason: "Sec-WebSocket-Version must be 13" };
  }
  const key = headers.get("sec-websocket-key") ?? "";
  if (!/^[A-Za-z0-9+/]{22}==$/.test(key)) {
    return { status: 400, reason: "Sec-WebSocket-Key must be 16 bytes in base64" };
  }
  return { path: request[1]!, key };
}

/**
 * `Sec-WebSocket-Accept` for a client's key: base64 of SHA-1(key + GUID).
 *
 * @example
 * ```ts
 * import { acceptValue } from "./websocket_codec.ts";
 * import assert from "node:assert/strict";
 *
 * // RFC 6455, section 1.3.
 * assert.equal(await acceptValue("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
 * ```
 */
export async function acceptValue(key: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", textEncoder.encode(key + ACCEPT_GUID));
  return new Uint8Array(digest).toBase64();
}

/**
 * A client's opening request head for `path` on `host` (`host:port`), with
 * its `key` (16 random bytes in base64).
 *
 * @example
 * ```ts
 * import { parseUpgradeRequest, upgradeRequest } from "./websocket_codec.ts";
 * import assert from "node:assert/strict";
 *
 * const head = new TextDecoder().decode(upgradeRequest("relay:7001", "/pb", "dGhlIHNhbXBsZSBub25jZQ=="));
 * assert.deepEqual(parseUpgradeRequest(head), { path: "/pb", key: "dGhlIHNhbXBsZSBub25jZQ==" });
 * ```
 */
export function upgradeRequest(host: string, path: string, key: string): Uint8Array {
  return textEncoder.encode(
    `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );
}

/**
 * Checks a server's response head to a request made with `key`: null when
 * it accepted (101 with the right `Sec-WebSocket-Accept`, no extension or
 * subprotocol), else why not.
 *
 * @example
 * ```ts
 * import { checkUpgradeResponse } from "./websocket_codec.ts";
 * import assert from "node:assert/strict";
 *
 * const ok = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
 *   "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
 * assert.equal(await checkUpgradeResponse(ok, "dGhlIHNhbXBsZSBub25jZQ=="), null);
 * assert.match(
 *   (await checkUpgradeResponse("HTTP/1.1 404 Not Found\r\n\r\n", "x"))!,
 *   /404 Not Found/,
 * );
 * ```
 */
export async function checkUpgradeResponse(head: string, key: string): Promise<string | null> {
  const lines = head.split("\r\n");
  const status = /^HTTP\/1\.1 (\d{3})(?: (.*))?$/.exec(lines[0] ?? "");
  if (!status) return "the answer is not HTTP/1.1";
  if (status[1] !== "101") return `the server answered ${status[1]} ${status[2] ?? ""}`.trim();
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon > 0) {
      headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
    }
  }
  if (headers.get("upgrade")?.toLowerCase() !== "websocket") return "no Upgrade: websocket";
  const connection = (headers.get("connection") ?? "").toLowerCase().split(",");
  if (!connection.some((token) => token.trim() === "upgrade")) return "no Connection: Upgrade";
  if (headers.get("sec-websocket-accept") !== await acceptValue(key)) {
    return "a wrong Sec-WebSocket-Accept";
  }
  if (headers.has("sec-websocket-extensions") || headers.has("sec-websocket-protocol")) {
    return "an extension or subprotocol that was not asked for";
  }
  return null;
}

/** The `101 Switching Protocols` response head for an accepted request. */
export async function upgradeResponse(request: UpgradeRequest): Promise<Uint8Array> {
  return textEncoder.encode(
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      `Sec-WebSocket-Accept: ${await acceptValue(request.key)}\r\n\r\n`,
  );
}

/** The HTTP response for a refused request; the connection closes after it. */
export function refusalResponse(refusal: UpgradeRefusal): Uint8Array {
  const text =
    { 400: "Bad Request", 426: "Upgrade Required", 431: "Request Header Fields Too Large" }[
      refusal.status
    ] ?? "Bad Request";
  const body = `${refusal.reason}\n`;
  const upgrade = refusal.status === 426 ? "Upgrade: websocket\r\nConnection: Upgrade\r\n" : "";
  return textEncoder.encode(
    `HTTP/1.1 ${refusal.status} ${text}\r\n${upgrade}Content-Type: text/plain\r\n` +
      `Content-Length: ${textEncoder.encode(body).length}\r\nConnection: close\r\n\r\n${body}`,
  );
}

/**
 * One WebSocket frame header: FIN, the opcode, the payload length and, when
 * `mask` is given (a client's frames), the masking key. The payload itself
 * follows it unchanged (or masked by the caller, see {@linkcode applyMask}).
 *
 * @example
 * ```ts
 * import { Opcode, wsHeader } from "./websocket_codec.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual([...wsHeader(Opcode.BINARY, true, 5)], [0x82, 5]);
 * assert.deepEqual([...wsHeader(Opcode.CONTINUATION, false, 300)], [0x00, 126, 1, 44]);
 * assert.deepEqual([...wsHeader(Opcode.BINARY, true, 70_000)], [0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
 * assert.deepEqual([...wsHeader(Opcode.BINARY, true, 2 ** 40)].slice(2, 6), [0, 0, 1, 0]);
 * ```
 */
export function wsHeader(
  opcode: number,
  fin: boolean,
  length: number,
  mask?: Uint8Array,
): Uint8Array {
  const header = new Uint8Array(wsHeaderSize(length, mask !== undefined));
  writeWsHeader(header, opcode, fin, length, mask);
  return header;
}

/** Bytes of the header {@linkcode writeWsHeader} writes for `length` bytes of payload. */
export function wsHeaderSize(length: number, masked: boolean): number {
  return (length < 126 ? 2 : length < 65536 ? 4 : 10) + (masked ? 4 : 0);
}

/**
 * Writes the header of {@linkcode wsHeader} at the start of `into` (at least
 * {@linkcode wsHeaderSize} bytes), so a frame can be built in one buffer.
 */
export function writeWsHeader(
  into: Uint8Array,
  opcode: number,
  fin: boolean,
  length: number,
  mask?: Uint8Array,
): void {
  into[0] = (fin ? 0x80 : 0) | opcode;
  const masked = mask ? 0x80 : 0;
  let at = 2;
  if (length < 126) into[1] = masked | length;
  else if (length < 65536) {
    into[1] = masked | 126;
    into[2] = length >>> 8;
    into[3] = length & 0xff;
    at = 4;
  } else {
    into[1] = masked | 127;
    const high = Math.floor(length / 2 ** 32);
    for (let i = 0; i < 4; i++) into[2 + i] = (high >>> (24 - 8 * i)) & 0xff;
    for (let i = 0; i < 4; i++) into[6 + i] = (length >>> (24 - 8 * i)) & 0xff;
    at = 10;
  }
  if (mask) into.set(mask, at);
}

/** From this many bytes on, {@linkcode applyMask} works a 32-bit word at a time. */
const WORD_MASK_FROM = 1024;

/**
 * XORs `bytes[start, end)` in place with the 4-byte `mask`, beginning at
 * `phase` bytes into it (a payload may arrive across several reads).
 */
export function applyMask(
  bytes: Uint8Array,
  start: number,
  end: number,
  mask: Uint8Array,
  phase: number,
): void {
  let i = start;
  if (end - start >= WORD_MASK_FROM) {
    // Byte by byte until 4-aligned in memory, then a word at a time: about 4x faster at 64 KiB.
    for (; ((bytes.byteOffset + i) & 3) !== 0; i++) {
      bytes[i] = bytes[i]! ^ mask[(phase + i - start) & 3]!;
    }
    const words = (end - i) >>> 2;
    const s = (phase + i - start) & 3;
    // The key from byte s on, as a little-endian word (the platforms Deno runs on).
    const word = (mask[s]! | mask[(s + 1) & 3]! << 8 | mask[(s + 2) & 3]! << 16 |
      mask[(s + 3) & 3]! << 24) >>> 0;
    const view = new Uint32Array(bytes.buffer, bytes.byteOffset + i, words);
    for (let k = 0; k < words; k++) view[k]! ^= word;
    i += words * 4;
  }
  // Small payloads (a 100 B call's token is ~350 bytes): no allocation at all.
  for (; i < end; i++) bytes[i] = bytes[i]! ^ mask[(phase + i - start) & 3]!;
}

/** What the decoder found in the bytes it was fed. */
export type WsEvent =
  /** Payload of a data message, unmasked in place: `bytes[start, end)` of the fed buffer. */
  | { kind: "data"; start: number; end: number }
  /** The data message in progress is complete. */
  | { kind: "end" }
  /** A ping, with its payload (at most 125 bytes, copied). */
  | { kind: "ping"; payload: Uint8Array }
  /** The other side closes; `code` is null when its close frame carried none. */
  | { kind: "close"; code: number | null }
  /** A violation: close with `code`; nothing after it is read. */
  | { kind: "error"; code: number; reason: string };

const HEADER = 0;
const PAYLOAD = 1;
const DEAD = 2;

/** Options of {@linkcode WsDecoder}. */
export interface WsDecoderOptions {
  /**
   * True on a server: a client's frames must be masked (RFC 6455). False
   * on a client: a server's frames must not be. @default true
   */
  masked?: boolean;
}

/**
 * Decodes WebSocket frames in place: payload bytes are unmasked where they
 * lie and reported as ranges, so memory does not grow with what a header
 * declares. Control frames are gathered (125 bytes at most); pongs are
 * dropped.
 *
 * @example
 * ```ts
 * import { applyMask, Opcode, WsDecoder, type WsEvent, wsHeader } from "./websocket_codec.ts";
 * import assert from "node:assert/strict";
 *
 * const mask = new Uint8Array([1, 2, 3, 4]);
 * const payload = new Uint8Array([10, 20, 30]);
 * applyMask(payload, 0, 3, mask, 0);
 * const bytes = new Uint8Array([...wsHeader(Opcode.BINARY, true, 3, mask), ...payload]);
 * const events: WsEvent[] = [];
 * new WsDecoder().feed(bytes, 0, bytes.length, events);
 * assert.deepEqual(events, [{ kind: "data", start: 6, end: 9 }, { kind: "end" }]);
 * assert.deepEqual([...bytes.subarray(6)], [10, 20, 30]);
 * ```
 */
export class WsDecoder {
  #state = HEADER;
  readonly #header = new Uint8Array(14);
  #have = 0;
  #opcode = 0;
  #fin = false;
  #remaining = 0;
  readonly #mask = new Uint8Array(4);
  #phase = 0;
  #inMessage = false;
  #control: Uint8Array | null = null;
  #controlAt = 0;
  readonly #masked: boolean;

  /** A decoder for frames from a client (`masked`, the default) or from a server. */
  constructor(options: WsDecoderOptions = {}) {
    this.#masked = options.masked ?? true;
  }

  /** Feeds `bytes[start, end)`; appends what it found to `events`. */
  feed(bytes: Uint8Array, start: number, end: number, events: WsEvent[]): void {
    let at = start;
    while (at < end && this.#state !== DEAD) {
      if (this.#state === HEADER) at = this.#readHeader(bytes, at, end, events);
      else at = this.#readPayload(bytes, at, end, events);
    }
  }

  #fail(events: WsEvent[], code: number, reason: string): number {
    this.#state = DEAD;
    events.push({ kind: "error", code, reason });
    return 0; // Nothing more is read: feed() stops on DEAD.
  }

  #readHeader(bytes: Uint8Array, at: number, end: number, events: WsEvent[]): number {
    const header = this.#header;
    while (at < end && this.#have < 2) header[this.#have++] = bytes[at++]!;
    if (this.#have < 2) return at;
    const short = header[1]! & 0x7f;
    const size = 2 + (short === 126 ? 2 : short === 127 ? 8 : 0) + (this.#masked ? 4 : 0);
    while (at < end && this.#have < size) header[this.#have++] = bytes[at++]!;
    if (this.#have < size) return at;
    this.#have = 0;
    const error = this.#startFrame(size, short);
    if (error) return this.#fail(events, ...error);
    if (this.#remaining === 0) this.#finishFrame(events);
    return at;
  }

  /** Judges the header just gathered; returns a close code and reason for a violation. */
  #startFrame(size: number, short: number): [number, string] | null {
    const header = this.#header;
    const first = header[0]!;
    if ((first & 0x70) !== 0) return [WsClose.PROTOCOL_ERROR, "reserved bits set"];
    if (((header[1]! & 0x80) !== 0) !== this.#masked) {
      return [
        WsClose.PROTOCOL_ERROR,
        this.#masked ? "client frames must be masked" : "server frames must not be masked",
      ];
    }
    const opcode = first & 0x0f;
    const fin = (first & 0x80) !== 0;
    const length = short === 126
      ? header[2]! << 8 | header[3]!
      : short === 127
      ? (header[2]! * 2 ** 24 + (header[3]! << 16 | header[4]! << 8 | header[5]!)) * 2 ** 32 +
        (header[6]! * 2 ** 24 + (header[7]! << 16 | header[8]! << 8 | header[9]!))
      : short;
    if (!Number.isSafeInteger(length)) return [WsClose.PROTOCOL_ERROR, "length out of range"];
    if (opcode >= 0x8) {
      if (opcode !== Opcode.CLOSE && opcode !== Opcode.PING && opcode !== Opcode.PONG) {
        return [WsClose.PROTOCOL_ERROR, `unknown opcode ${opcode}`];
      }
      if (!fin || length > 125) {
        return [WsClose.PROTOCOL_ERROR, "control frames must be whole and at most 125 bytes"];
      }
      this.#control = new Uint8Array(length);
      this.#controlAt = 0;
    } else if (opcode === Opcode.TEXT) {
      return [WsClose.UNSUPPORTED_DATA, "text messages are not accepted: send binary"];
    } else if (opcode === Opcode.BINARY) {
      if (this.#inMessage) return [WsClose.PROTOCOL_ERROR, "new message inside a fragmented one"];
    } else if (opcode === Opcode.CONTINUATION) {
      if (!this.#inMessage) return [WsClose.PROTOCOL_ERROR, "continuation without a message"];
    } else return [WsClose.PROTOCOL_ERROR, `unknown opcode ${opcode}`];
    this.#opcode = opcode;
    this.#fin = fin;
    this.#remaining = length;
    if (this.#masked) this.#mask.set(header.subarray(size - 4, size));
    else this.#mask.fill(0);
    this.#phase = 0;
    this.#state = PAYLOAD;
    if (opcode < 0x8) this.#inMessage = true;
    return null;
  }

  #readPayload(bytes: Uint8Array, at: number, end: number, events: WsEvent[]): number {
    const take = Math.min(this.#remaining, end - at);
    if (this.#masked) applyMask(bytes, at, at + take, this.#mask, this.#phase);
    this.#phase = (this.#phase + take) & 3;
    this.#remaining -= take;
    if (this.#control) {
      this.#control.set(bytes.subarray(at, at + take), this.#controlAt);
      this.#controlAt += take;
    } else if (take > 0) events.push({ kind: "data", start: at, end: at + take });
    if (this.#remaining === 0) this.#finishFrame(events);
    return at + take;
  }

  #finishFrame(events: WsEvent[]): void {
    this.#state = HEADER;
    const control = this.#control;
    this.#control = null;
    if (this.#opcode === Opcode.PING) events.push({ kind: "ping", payload: control! });
    else if (this.#opcode === Opcode.CLOSE) {
      if (control!.length === 1) {
        this.#state = DEAD;
        events.push({
          kind: "error",
          code: WsClose.PROTOCOL_ERROR,
          reason: "a 1-byte close frame",
        });
        return;
      }
      const code = control!.length >= 2 ? (control![0]! << 8) | control![1]! : null;
      this.#state = DEAD;
      events.push({ kind: "close", code });
    } else if (this.#opcode < 0x8 && this.#fin) {
      this.#inMessage = false;
      events.push({ kind: "end" });
    }
  }
}
