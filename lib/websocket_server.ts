/**
 * The relay's side of a WebSocket link: a {@linkcode Stream} that answers
 * the opening handshake, then carries frames one per binary message over
 * the stream it was accepted on (TCP or TLS, Nagle already off). See
 * `docs/PROTOCOL.md`, "Links: TCP, TLS or WebSocket".
 *
 * @module
 */

import type { HostPort } from "./address.ts";
import { FrameCutter } from "./frame_cutter.ts";
import {
  headEnd,
  MAX_HANDSHAKE_HEAD,
  Opcode,
  parseUpgradeRequest,
  refusalResponse,
  upgradeResponse,
  WsClose,
  WsDecoder,
  type WsEvent,
  wsHeader,
} from "./websocket_codec.ts";
import type { Listener, Stream } from "./transport.ts";

/** Payloads up to this size go out in one write with their header (one copy, one syscall). */
const COALESCE_LIMIT = 16 * 1024;

/** How long a closing stream waits for its close frame to be written, ms. */
const CLOSE_FRAME_DEADLINE = 200;

/**
 * A server-side WebSocket over an accepted stream. The first `read()`
 * (or write) answers the opening handshake (at most {@linkcode MAX_HANDSHAKE_HEAD}
 * bytes; the caller's deadline closes a slow one); writes wait for it.
 * Reads return the payload of binary messages; writes send each frame as
 * one message, in fragments when it arrives in pieces.
 *
 * @example
 * ```ts
 * import { WebSocketServerStream } from "./websocket_server.ts";
 * import { tcpTransport } from "./tcp_transport.ts";
 * import { encodeBeat } from "./relay_protocol.ts";
 * import { FrameType } from "./frame.ts";
 * import assert from "node:assert/strict";
 *
 * const listener = await tcpTransport.listen({ hostname: "127.0.0.1", port: 0 });
 * const accepted = listener.accept().then((stream) => new WebSocketServerStream(stream));
 * const { port } = listener.address;
 * const socket = new WebSocket(`ws://127.0.0.1:${port}/`);
 * socket.binaryType = "arraybuffer";
 * const got = new Promise<ArrayBuffer>((resolve) => socket.onmessage = (e) => resolve(e.data));
 * const server = await accepted;
 * await server.write(encodeBeat(FrameType.PING));
 * assert.equal(new Uint8Array(await got)[5], FrameType.PING);
 * const closed = new Promise((resolve) => socket.onclose = resolve);
 * server.close();
 * await closed;
 * listener.close();
 * ```
 */
export class WebSocketServerStream implements Stream {
  readonly remoteAddress: string;
  readonly #inner: Stream;
  readonly #decoder = new WsDecoder();
  readonly #incoming = new FrameCutter();
  readonly #outgoing = new FrameCutter();
  readonly #events: WsEvent[] = [];
  /** Resolves true once the handshake is answered, false when it failed. */
  readonly #open: Promise<boolean>;
  #resolveOpen!: (open: boolean) => void;
  #handshaking = false;
  /** The handshake's outcome once known; null while it runs (or before it starts). */
  #opened: boolean | null = null;
  /** Bytes that came after the request head, read before any frame. */
  #early: Uint8Array | null = null;
  /** Frames in the message being received. */
  #framesInMessage = 0;
  /** Writes, serialised: data, pongs and the close frame never interleave within a frame. */
  #writing: Promise<void> = Promise.resolve();
  #ended = false;
  #closed = false;

  /** Takes over `inner`, freshly accepted; nothing is read until the first `read()`. */
  constructor(inner: Stream) {
    this.#inner = inner;
    this.remoteAddress = inner.remoteAddress;
    this.#open = new Promise((resolve) => this.#resolveOpen = resolve);
  }

  async read(into: Uint8Array): Promise<number | null> {
    if (!await this.#start()) return null;
    while (!this.#ended) {
      const count = await this.#fill(into);
      if (count === null) return null;
      const delivered = this.#decode(into, count);
      if (delivered > 0) return delivered;
    }
    return null;
  }

  /** Runs the handshake once, on the first read or write; resolves true once the link is open. */
  #start(): Promise<boolean> {
    if (!this.#handshaking) {
      this.#handshaking = true;
      void this.#handshake().catch(() => false).then((opened) => {
        this.#opened = opened;
        this.#resolveOpen(opened);
      });
    }
    return this.#open;
  }

  /** Reads the request head and answers it; true when the link is open. */
  async #handshake(): Promise<boolean> {
    const head = new Uint8Array(MAX_HANDSHAKE_HEAD);
    let length = 0;
    let end = -1;
    while (end < 0) {
      if (length === head.length) {
        await this.#refuse({ status: 431, reason: "request head over 4096 bytes" });
        return false;
      }
      const count = await this.#inner.read(head.subarray(length));
      if (count === null) return false;
      length += count;
      end = headEnd(head, length);
    }
    const request = parseUpgradeRequest(String.fromCharCode(...head.subarray(0, end)));
    if ("status" in request) {
      await this.#refuse(request);
      return false;
    }
    if (end < length) this.#early = head.slice(end, length);
    await this.#inner.write(await upgradeResponse(request));
    return true;
  }

  async #refuse(refusal: { status: number; reason: string }): Promise<void> {
    await this.#inner.write(refusalResponse(refusal)).catch(() => {});
    this.#ended = true;
    this.#inner.close();
  }

  /** Raw bytes into `into`: the early bytes first, then the socket's. */
  #fill(into: Uint8Array): Promise<number | null> {
    const early = this.#early;
    if (!early) return this.#inner.read(into);
    const count = Math.min(early.length, into.length);
    into.set(early.subarray(0, count));
    this.#early = count < early.length ? early.subarray(count) : null;
    return Promise.resolve(count);
  }

  /**
   * Decodes `into[0, count)` in place: payload bytes are moved to the front;
   * returns how many. Answers pings and closes; ends the stream on a
   * violation.
   */
  #decode(into: Uint8Array, count: number): number {
    const events = this.#events;
    events.length = 0;
    this.#decoder.feed(into, 0, count, events);
    let out = 0;
    for (const event of events) {
      switch (event.kind) {
        case "data":
          if (!this.#checkFrames(into, event.start, event.end)) {
            return this.#fail(WsClose.PROTOCOL_ERROR, "a message must hold exactly one frame");
          }
          into.copyWithin(out, event.start, event.end);
          out += event.end - event.start;
          break;
        case "end":
          if (!this.#incoming.atBoundary || this.#framesInMessage !== 1) {
            return this.#fail(WsClose.PROTOCOL_ERROR, "a message must hold exactly one frame");
          }
          this.#framesInMessage = 0;
          break;
        case "ping":
          this.#send(wsHeader(Opcode.PONG, true, event.payload.length), event.payload);
          break;
        case "close":
          return this.#fail(WsClose.NORMAL, "", out);
        case "error":
          return this.#fail(event.code, event.reason, out);
      }
    }
    return out;
  }

  /** Follows frame boundaries through one message's payload; false when a second frame starts. */
  #checkFrames(bytes: Uint8Array, start: number, end: number): boolean {
    let at = start;
    while (at < end) {
      if (this.#incoming.atBoundary && ++this.#framesInMessage > 1) return false;
      const next = this.#incoming.next(bytes, at, end);
      if (next < 0) break;
      at = next;
    }
    return true;
  }

  /** Sends a close frame, then ends: reads return what was decoded (`out`), then the end. */
  #fail(code: number, reason: string, out = 0): number {
    if (!this.#ended) {
      this.#ended = true;
      this.#closeWith(code, reason);
    }
    return out;
  }

  async write(bytes: Uint8Array): Promise<void> {
    if (!await this.#start()) throw new Error("Cannot write: the WebSocket handshake failed");
    let at = 0;
    while (at < bytes.length) {
      const first = this.#outgoing.atBoundary;
      const end = this.#outgoing.next(bytes, at, bytes.length);
      const last = end >= 0;
      const upTo = last ? end : bytes.length;
      const payload = bytes.subarray(at, upTo);
      const opcode = first ? Opcode.BINARY : Opcode.CONTINUATION;
      await this.#send(wsHeader(opcode, last, payload.length), payload);
      at = upTo;
    }
  }

  /** Queues one frame (header and payload) behind earlier writes. */
  #send(header: Uint8Array, payload: Uint8Array): Promise<void> {
    const inner = this.#inner;
    const write = async () => {
      if (payload.length <= COALESCE_LIMIT) {
        const whole = new Uint8Array(header.length + payload.length);
        whole.set(header);
        whole.set(payload, header.length);
        await inner.write(whole);
      } else {
        await inner.write(header);
        await inner.write(payload);
      }
    };
    const done = this.#writing.then(write);
    this.#writing = done.catch(() => {});
    return done;
  }

  /** Sends a close frame with `code` (and a short reason), then closes the socket. */
  #closeWith(code: number, reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    const text = new TextEncoder().encode(reason.slice(0, 100));
    const body = new Uint8Array(2 + text.length);
    body[0] = code >> 8;
    body[1] = code & 0xff;
    body.set(text, 2);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, CLOSE_FRAME_DEADLINE);
    });
    void Promise.race([this.#send(wsHeader(Opcode.CLOSE, true, body.length), body), deadline])
      .catch(() => {})
      .finally(() => {
        clearTimeout(timer);
        this.#inner.close();
      });
  }

  close(): void {
    this.#ended = true;
    if (this.#opened === true) return this.#closeWith(WsClose.NORMAL, "");
    if (this.#closed) return;
    // No link yet: close the socket at once (a pending handshake read ends with it).
    this.#closed = true;
    this.#inner.close();
    if (!this.#handshaking) this.#resolveOpen(false);
  }
}

/**
 * A {@linkcode Listener} whose streams are WebSocket links: each accepted
 * stream of `listener` is wrapped in a {@linkcode WebSocketServerStream}
 * (its handshake runs on its first read, not in the accept loop).
 */
export function webSocketListener(listener: Listener): Listener {
  return {
    get address(): HostPort {
      return listener.address;
    },
    async accept() {
      return new WebSocketServerStream(await listener.accept());
    },
    close() {
      listener.close();
    },
  };
}
