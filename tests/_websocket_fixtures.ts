/**
 * A raw WebSocket client for tests of a relay's WebSocket port (`wsPort`):
 * a plain `Deno.connect` socket that can send any handshake bytes and any
 * frame (masked or not, any opcode, FIN or not, reserved bits, any declared
 * length) and reads the relay's raw answer: the HTTP status line, the
 * server's frames decoded, the messages they make, the peerbase frames in
 * them, and the close code.
 *
 * Every wait is bounded by `HANG_TIMEOUT` from `_fixtures.ts`: it only
 * catches hangs, it never measures how fast something happened.
 *
 * @module
 */

import { decodeGoaway, type Frame, FrameDecoder, FrameType } from "../lib/frame.ts";
import { decodeRegistered, type RegisteredBody } from "../lib/relay_protocol.ts";
import { deadline, HANG_TIMEOUT, waitFor } from "./_fixtures.ts";
import {
  challengeNonce,
  type RawIdentity,
  type RawRegisterOptions,
  registerFrame,
  SerialWriter,
} from "./_relay_fixtures.ts";

/** WebSocket opcodes (RFC 6455, section 5.2), as the relay's codec names them. */
export { Opcode as Op } from "../lib/websocket_codec.ts";
import { Opcode as Op } from "../lib/websocket_codec.ts";
import { concatBytes } from "../lib/encoding.ts";

/** Reserved bits of a frame's first byte, as {@linkcode WsFrameOptions.rsv} takes them. */
export const Rsv = { RSV1: 4, RSV2: 2, RSV3: 1 } as const;

/** Options of {@linkcode wsFrame}. */
export interface WsFrameOptions {
  /** The FIN bit. @default true */
  fin?: boolean;
  /** The masking key; null sends the frame unmasked (as a server would). @default 4 random bytes */
  mask?: Uint8Array | null;
  /** Reserved bits, 0..7 (RSV1 = 4, RSV2 = 2, RSV3 = 1). @default 0 */
  rsv?: number;
  /** The payload length the header declares (the payload itself is sent as given). @default its length */
  declared?: number | bigint;
}

/** One WebSocket frame as a client sends it: header, masking key, masked payload. */
export function wsFrame(
  opcode: number,
  payload: Uint8Array = new Uint8Array(0),
  options: WsFrameOptions = {},
): Uint8Array {
  const declared = BigInt(options.declared ?? payload.length);
  const mask = options.mask === undefined
    ? crypto.getRandomValues(new Uint8Array(4))
    : options.mask;
  const size = declared < 126n ? 2 : declared < 65536n ? 4 : 10;
  const out = new Uint8Array(size + (mask ? 4 : 0) + payload.length);
  const view = new DataView(out.buffer);
  out[0] = ((options.fin ?? true) ? 0x80 : 0) | ((options.rsv ?? 0) << 4) | (opcode & 0x0f);
  const masked = mask ? 0x80 : 0;
  if (size === 2) out[1] = masked | Number(declared);
  else if (size === 4) {
    out[1] = masked | 126;
    view.setUint16(2, Number(declared));
  } else {
    out[1] = masked | 127;
    view.setBigUint64(2, declared);
  }
  const at = size + (mask ? 4 : 0);
  if (mask) out.set(mask, size);
  for (let i = 0; i < payload.length; i++) {
    out[at + i] = mask ? payload[i]! ^ mask[i & 3]! : payload[i]!;
  }
  return out;
}

/** A close frame's payload: the code, then a UTF-8 reason. */
export function closePayload(code: number, reason = ""): Uint8Array {
  const text = new TextEncoder().encode(reason);
  const out = new Uint8Array(2 + text.length);
  out[0] = code >> 8;
  out[1] = code & 0xff;
  out.set(text, 2);
  return out;
}

/** Options of {@linkcode upgradeRequest}. */
export interface UpgradeOptions {
  /** The request target. @default "/" */
  path?: string;
  /** The request line, replacing `GET <path> HTTP/1.1`. */
  requestLine?: string;
  /** Headers to set (replacing the default of the same name) or, with null, to leave out. */
  headers?: Record<string, string | null>;
}

/** An opening handshake request head (request line, headers, blank line). */
export function upgradeRequest(options: UpgradeOptions = {}): Uint8Array {
  const headers = new Map<string, string>([
    ["Host", "relay.test"],
    ["Upgrade", "websocket"],
    ["Connection", "Upgrade"],
    ["Sec-WebSocket-Version", "13"],
    ["Sec-WebSocket-Key", crypto.getRandomValues(new Uint8Array(16)).toBase64()],
  ]);
  for (const [name, value] of Object.entries(options.headers ?? {})) {
    if (value === null) headers.delete(name);
    else headers.set(name, value);
  }
  const line = options.requestLine ?? `GET ${options.path ?? "/"} HTTP/1.1`;
  const lines = [line, ...[...headers].map(([name, value]) => `${name}: ${value}`)];
  return new TextEncoder().encode(`${lines.join("\r\n")}\r\n\r\n`);
}

/** A frame the server sent. */
export interface ServerFrame {
  /** The FIN bit: the last fragment of its message. */
  fin: boolean;
  /** Reserved bits (0 from a relay). */
  rsv: number;
  /** One of {@linkcode Op}, or whatever the server sent. */
  opcode: number;
  /** True when the server masked it (it must not). */
  masked: boolean;
  /** The payload, unmasked. */
  payload: Uint8Array;
}

/**
 * Decodes the frames a server sends, from chunks of any size. Payloads are
 * copied out whole (a test reads at most a few large ones).
 */
export class ServerFrameReader {
  #buffer = new Uint8Array(4096);
  #start = 0;
  #end = 0;

  /** Appends `chunk`; returns the frames now complete. */
  push(chunk: Uint8Array): ServerFrame[] {
    this.#append(chunk);
    const frames: ServerFrame[] = [];
    while (true) {
      const frame = this.#next();
      if (!frame) return frames;
      frames.push(frame);
    }
  }

  #append(chunk: Uint8Array): void {
    if (this.#end + chunk.length > this.#buffer.length) {
      const held = this.#end - this.#start;
      let size = this.#buffer.length;
      while (size < held + chunk.length) size *= 2;
      const grown = size === this.#buffer.length ? this.#buffer : new Uint8Array(size);
      grown.set(this.#buffer.subarray(this.#start, this.#end), 0);
      this.#buffer = grown;
      this.#start = 0;
      this.#end = held;
    }
    this.#buffer.set(chunk, this.#end);
    this.#end += chunk.length;
  }

  #next(): ServerFrame | null {
    const bytes = this.#buffer.subarray(this.#start, this.#end);
    if (bytes.length < 2) return null;
    const short = bytes[1]! & 0x7f;
    const masked = (bytes[1]! & 0x80) !== 0;
    let at = 2;
    let length = short;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    if (short === 126) {
      if (bytes.length < 4) return null;
      length = view.getUint16(2);
      at = 4;
    } else if (short === 127) {
      if (bytes.length < 10) return null;
      length = Number(view.getBigUint64(2));
      at = 10;
    }
    const mask = masked ? bytes.slice(at, at + 4) : null;
    if (masked) at += 4;
    if (bytes.length < at + length) return null;
    const payload = bytes.slice(at, at + length);
    if (mask) { for (let i = 0; i < payload.length; i++) payload[i] = payload[i]! ^ mask[i & 3]!; }
    this.#start += at + length;
    return {
      fin: (bytes[0]! & 0x80) !== 0,
      rsv: (bytes[0]! >> 4) & 7,
      opcode: bytes[0]! & 0x0f,
      masked,
      payload,
    };
  }
}

/** Options of {@linkcode RawWebSocket.connect}. */
export interface RawWebSocketOptions {
  /** The host to connect to. @default "127.0.0.1" */
  hostname?: string;
  /**
   * Read the server's frames as they come. When false, only the HTTP answer
   * is read and everything after it is left unread in the socket (a client
   * that does not read), until {@linkcode RawWebSocket.readOn}. @default true
   */
  read?: boolean;
}

/** What the relay did with a connection, once it ended. */
export interface WsOutcome {
  /** The HTTP status it answered, or null when it closed before answering. */
  status: number | null;
  /** Its close frame, or null when it sent none. */
  close: { code: number | null; reason: string } | null;
  /** The GOAWAY it sent in a binary message, or null. */
  goaway: { code: number; reason: string } | null;
}

/** A raw WebSocket client of a relay's `wsPort`. */
export class RawWebSocket implements AsyncDisposable {
  readonly #conn: Deno.TcpConn;
  readonly #frameReader = new ServerFrameReader();
  #readFrames: boolean;
  #head: Uint8Array = new Uint8Array(0);
  #reading: Promise<void> | null = null;
  /** Wakes a paused reader (`read: false`). */
  #resume: (() => void) | null = null;
  readonly #writer: SerialWriter;
  /** Payload of the message being received, in fragments. */
  #fragments: Uint8Array[] | null = null;
  /** The port connected to. */
  readonly port: number;
  /** The HTTP status the relay answered with, once its head arrived. */
  status: number | null = null;
  /** The HTTP response head, as text. */
  responseHead = "";
  /** The HTTP response body (of a refusal), as text. */
  body = "";
  /** Every frame the relay sent. */
  readonly frames: ServerFrame[] = [];
  /** Every complete binary message, and how many fragments each came in. */
  readonly messages: { bytes: Uint8Array; fragments: number }[] = [];
  /** The peerbase frames of the messages, and how many each message held. */
  readonly peerbase: Frame[] = [];
  /** Messages whose bytes were not exactly one peerbase frame. */
  badMessages = 0;
  /** Pong payloads received. */
  readonly pongs: Uint8Array[] = [];
  /** Text messages received (a relay sends none). */
  texts = 0;
  /** The relay's close frame. */
  close: { code: number | null; reason: string } | null = null;
  /** The GOAWAY the relay sent. */
  goaway: { code: number; reason: string } | null = null;
  /** True once the relay closed the socket (EOF or reset). */
  ended = false;
  /** Bytes read from the socket. */
  received = 0;

  private constructor(conn: Deno.TcpConn, port: number, read: boolean) {
    this.#conn = conn;
    this.#writer = new SerialWriter(conn);
    this.port = port;
    this.#readFrames = read;
  }

  /** Connects to `port` and starts reading; sends nothing yet. */
  static async connect(port: number, options: RawWebSocketOptions = {}): Promise<RawWebSocket> {
    const conn = await Deno.connect({ hostname: options.hostname ?? "127.0.0.1", port });
    const socket = new RawWebSocket(conn, port, options.read ?? true);
    socket.#reading = socket.#read();
    return socket;
  }

  /** Connects, sends a valid opening request and waits for the relay's 101. */
  static async open(port: number, options: RawWebSocketOptions = {}): Promise<RawWebSocket> {
    const socket = await RawWebSocket.connect(port, options);
    try {
      const status = await socket.upgrade();
      if (status !== 101) throw new Error(`Expected 101, got ${status}: ${socket.body}`);
    } catch (error) {
      await socket[Symbol.asyncDispose]();
      throw error;
    }
    return socket;
  }

  /** The relay address a registration proof names for this link. */
  get address(): string {
    return `ws://127.0.0.1:${this.port}`;
  }

  async #read(): Promise<void> {
    const buffer = new Uint8Array(65536);
    try {
      while (true) {
        if (!this.#readFrames && this.status !== null) {
          await new Promise<void>((resolve) => this.#resume = resolve);
        }
        const n = await this.#conn.read(buffer);
        if (n === null) break;
        this.received += n;
        this.#take(buffer.subarray(0, n));
      }
    } catch {
      // Reset by the relay, or closed by us.
    } finally {
      this.ended = true;
    }
  }

  /** A client made with `read: false` starts reading what the relay sent. */
  readOn(): void {
    this.#readFrames = true;
    this.#resume?.();
    this.#resume = null;
  }

  #take(chunk: Uint8Array): void {
    if (this.status === null) {
      const head = this.#head = joinBytes([this.#head, chunk]);
      const end = headEnd(head);
      if (end < 0) return;
      this.responseHead = new TextDecoder().decode(head.subarray(0, end));
      this.status = Number(/^HTTP\/1\.1 (\d{3})/.exec(this.responseHead)?.[1] ?? 0);
      this.#head = new Uint8Array(0);
      if (end + 4 < head.length) this.#take(head.subarray(end + 4));
      return;
    }
    if (this.status !== 101) {
      this.body += new TextDecoder().decode(chunk);
      return;
    }
    for (const frame of this.#frameReader.push(chunk)) this.#onFrame(frame);
  }

  #onFrame(frame: ServerFrame): void {
    this.frames.push(frame);
    switch (frame.opcode) {
      case Op.PONG:
        this.pongs.push(frame.payload);
        return;
      case Op.CLOSE: {
        const p = frame.payload;
        this.close ??= {
          code: p.length >= 2 ? (p[0]! << 8) | p[1]! : null,
          reason: new TextDecoder().decode(p.subarray(2)),
        };
        return;
      }
      case Op.TEXT:
        this.texts++;
        return;
      case Op.BINARY:
      case Op.CONTINUATION: {
        const parts = this.#fragments ??= [];
        parts.push(frame.payload);
        if (frame.fin) {
          this.#fragments = null;
          this.#onMessage(joinBytes(parts), parts.length);
        }
      }
    }
  }

  #onMessage(bytes: Uint8Array, fragments: number): void {
    this.messages.push({ bytes, fragments });
    let frames: Frame[] = [];
    try {
      const decoder = new FrameDecoder(2 ** 31);
      frames = decoder.push(bytes);
      if (!decoder.idle) frames = [];
    } catch {
      // Counted below.
    }
    if (frames.length !== 1) {
      this.badMessages++;
      return;
    }
    const frame = frames[0]!;
    if (frame.type === FrameType.GOAWAY) this.goaway ??= decodeGoaway(frame.body);
    this.peerbase.push(frame);
  }

  /** Writes raw bytes after every earlier write (rejects once the socket is gone). */
  write(bytes: Uint8Array): Promise<void> {
    return this.#writer.write(bytes);
  }

  /** Sends an opening request and resolves with the HTTP status of the answer (10 s cap). */
  async upgrade(options: UpgradeOptions = {}): Promise<number | null> {
    await this.write(upgradeRequest(options));
    return await this.answer();
  }

  /** Waits for the relay's HTTP answer (or its close): its status, or null (10 s cap). */
  async answer(ms: number = HANG_TIMEOUT): Promise<number | null> {
    await waitFor(() => this.status !== null || this.ended, "the HTTP answer", ms);
    return this.status;
  }

  /** Sends one frame (see {@linkcode wsFrame}). */
  send(opcode: number, payload?: Uint8Array, options?: WsFrameOptions): Promise<void> {
    return this.write(wsFrame(opcode, payload, options));
  }

  /** Sends `bytes` (a peerbase frame) as one masked binary message. */
  sendMessage(bytes: Uint8Array): Promise<void> {
    return this.send(Op.BINARY, bytes);
  }

  /** The first peerbase frame passing `predicate` (10 s cap; fails early once the socket ends). */
  async frame(predicate: (frame: Frame) => boolean, what: string): Promise<Frame> {
    await waitFor(() => this.peerbase.some(predicate) || this.ended, what);
    const found = this.peerbase.find(predicate);
    if (!found) {
      throw new Error(`The relay closed the WebSocket before ${what}: ${this.#describe()}`);
    }
    return found;
  }

  /** The CHALLENGE nonce. */
  async nonce(): Promise<Uint8Array> {
    return challengeNonce(await this.frame((f) => f.type === FrameType.CHALLENGE, "CHALLENGE"));
  }

  /** Registers `who` (REGISTER as one message) and resolves with REGISTERED's body. */
  async register(who: RawIdentity, options: RawRegisterOptions = {}): Promise<RegisteredBody> {
    await this.sendMessage(await registerFrame(who, await this.nonce(), this.address, options));
    return decodeRegistered(
      await this.frame((f) => f.type === FrameType.REGISTERED, `REGISTERED for ${who.name}`),
    );
  }

  /** Resolves once the relay has closed the socket (10 s cap unless `ms`). */
  async outcome(ms: number = HANG_TIMEOUT): Promise<WsOutcome> {
    this.readOn();
    await deadline(this.#reading!, `the relay to close the WebSocket (${this.#describe()})`, ms);
    return { status: this.status, close: this.close, goaway: this.goaway };
  }

  #describe(): string {
    return JSON.stringify({ status: this.status, close: this.close, goaway: this.goaway });
  }

  /** Closes the socket and waits for the reader. */
  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.#conn.close();
    } catch {
      // Already closed.
    }
    this.readOn();
    await this.#reading;
  }
}

/** Where `\r\n\r\n` starts in `bytes`, or -1. */
function headEnd(bytes: Uint8Array): number {
  for (let i = 0; i + 3 < bytes.length; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) {
      return i;
    }
  }
  return -1;
}

/** `parts` joined into one array. */
export function joinBytes(parts: Uint8Array[]): Uint8Array {
  return parts.length === 1 ? parts[0]! : concatBytes(parts);
}
