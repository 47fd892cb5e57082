/**
 * A node's side of a WebSocket link (`ws://` and `wss://` relays), on the
 * runtime's own `WebSocket`: the browser's, or Deno's. Each frame goes out
 * as one binary message; messages come in as a byte stream for the frame
 * decoder. See `docs/PROTOCOL.md`, "Links: TCP, TLS or WebSocket".
 *
 * @module
 */

import { formatHostPort, type HostPort } from "./address.ts";
import { DEFAULT_MAX_FRAME_SIZE } from "./frame.ts";
import { FrameCutter } from "./frame_cutter.ts";
import type { Listener, Stream, Transport } from "./transport.ts";

/** Most bytes received and not read yet before a link is closed as too slow a reader. */
export const MAX_UNREAD_BYTES = 64 * 1024 * 1024;

/** Above this many bytes queued by `send()`, writes wait for the socket to drain. */
const HIGH_WATER = 1024 * 1024;

/** How often a write waiting for the socket to drain looks again, ms. */
const DRAIN_POLL = 2;

/** Options of {@linkcode WebSocketDialer}. */
export interface WebSocketDialerOptions {
  /** `wss://` (TLS) when true, `ws://` when false. */
  tls: boolean;
  /** The HTTP path to open, from `/`. @default "/" */
  path?: string;
  /** Extra trusted roots (PEM) for `wss://`, on Deno. @default [] */
  caCerts?: string[];
  /** Largest message accepted, bytes (a frame). @default DEFAULT_MAX_FRAME_SIZE */
  maxMessage?: number;
  /** Most bytes received and not read yet; past it the link is closed. @default MAX_UNREAD_BYTES */
  maxUnread?: number;
}

/**
 * Dials relays over WebSocket. It cannot listen: nodes only dial relays.
 *
 * @example
 * ```ts
 * import { WebSocketDialer } from "./websocket_dialer.ts";
 * import assert from "node:assert/strict";
 *
 * const dialer = new WebSocketDialer({ tls: false, path: "/peerbase" });
 * assert.equal(dialer.url({ hostname: "::1", port: 7000 }), "ws://[::1]:7000/peerbase");
 * await assert.rejects(dialer.listen(), TypeError);
 * ```
 */
export class WebSocketDialer implements Transport {
  readonly #options: WebSocketDialerOptions;

  /** A dialler for one scheme and path. */
  constructor(options: WebSocketDialerOptions) {
    this.#options = options;
  }

  /** The URL dialled for `address`. */
  url(address: HostPort): string {
    const { tls, path = "/" } = this.#options;
    return `${tls ? "wss" : "ws"}://${formatHostPort(address)}${path}`;
  }

  /** Opens a WebSocket to `address`; rejects when it fails or `signal` aborts first. */
  dial(address: HostPort, signal?: AbortSignal): Promise<Stream> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    const url = this.url(address);
    const client = httpClient(this.#options);
    let socket: WebSocket;
    try {
      socket = client ? new WebSocket(url, { client } as WebSocketOptions) : new WebSocket(url);
    } catch (error) {
      client?.close();
      return Promise.reject(error);
    }
    socket.binaryType = "arraybuffer";
    const stream = new WebSocketStream(socket, formatHostPort(address), {
      maxMessage: this.#options.maxMessage ?? DEFAULT_MAX_FRAME_SIZE,
      maxUnread: this.#options.maxUnread ?? MAX_UNREAD_BYTES,
      onClose: () => client?.close(),
    });
    return new Promise<Stream>((resolve, reject) => {
      const fail = (error: Error) => {
        signal?.removeEventListener("abort", onAbort);
        stream.close();
        reject(error);
      };
      const onAbort = () => fail(signal!.reason as Error);
      signal?.addEventListener("abort", onAbort, { once: true });
      stream.opened.then(() => {
        signal?.removeEventListener("abort", onAbort);
        resolve(stream);
      }, fail);
    });
  }

  /** Nodes do not listen over WebSocket; always rejects. */
  listen(): Promise<Listener> {
    return Promise.reject(
      new TypeError("Cannot listen over WebSocket: a relay serves it (--ws-port); nodes only dial"),
    );
  }
}

/** Deno only, with `caCerts` for `wss://`: an HTTP client trusting them. */
function httpClient(options: WebSocketDialerOptions): Deno.HttpClient | null {
  const deno = (globalThis as { Deno?: typeof Deno }).Deno;
  if (!options.tls || !options.caCerts?.length || !deno?.createHttpClient) return null;
  return deno.createHttpClient({ caCerts: options.caCerts });
}

/** What a {@linkcode WebSocketStream} accepts, and what it calls once closed. */
interface StreamLimits {
  maxMessage: number;
  maxUnread: number;
  onClose: () => void;
}

/** A runtime `WebSocket` as a {@linkcode Stream}. */
class WebSocketStream implements Stream {
  readonly remoteAddress: string;
  /** Resolves once open; rejects when the socket fails or closes first. */
  readonly opened: Promise<void>;
  readonly #socket: WebSocket;
  readonly #limits: StreamLimits;
  readonly #cutter = new FrameCutter();
  /** Received messages not read yet, and the read position in the first. */
  #queue: Uint8Array[] = [];
  #unread = 0;
  #offset = 0;
  /** Pieces of a frame written in parts, sent once it is whole. */
  #partial: Uint8Array[] = [];
  #wake: (() => void) | null = null;
  #ended = false;

  constructor(socket: WebSocket, remoteAddress: string, limits: StreamLimits) {
    this.#socket = socket;
    this.remoteAddress = remoteAddress;
    this.#limits = limits;
    this.opened = new Promise((resolve, reject) => {
      socket.onopen = () => resolve();
      socket.onerror = (event) => {
        const message = (event as ErrorEvent).message || "connection failed";
        reject(new Error(`Cannot open WebSocket ${socket.url}: ${message}`));
      };
      socket.onclose = (event) => {
        reject(new Error(`Cannot open WebSocket ${socket.url}: closed (${event.code})`));
        this.#end();
      };
    });
    this.opened.catch(() => {});
    socket.onmessage = (event) => this.#receive(event.data);
  }

  #receive(data: unknown): void {
    if (this.#ended) return;
    if (!(data instanceof ArrayBuffer)) return this.close(); // Text: not ours.
    const { maxMessage, maxUnread } = this.#limits;
    if (data.byteLength > maxMessage || this.#unread + data.byteLength > maxUnread) {
      this.#queue = []; // What it holds is let go: the link is cut.
      this.#unread = 0;
      return this.close();
    }
    this.#queue.push(new Uint8Array(data));
    this.#unread += data.byteLength;
    this.#wake?.();
  }

  async read(into: Uint8Array): Promise<number | null> {
    while (this.#queue.length === 0) {
      if (this.#ended) return null;
      await new Promise<void>((resolve) => this.#wake = resolve);
      this.#wake = null;
    }
    let count = 0;
    while (count < into.length && this.#queue.length > 0) {
      const first = this.#queue[0]!;
      const take = Math.min(first.length - this.#offset, into.length - count);
      into.set(first.subarray(this.#offset, this.#offset + take), count);
      count += take;
      this.#offset += take;
      if (this.#offset === first.length) {
        this.#queue.shift();
        this.#offset = 0;
      }
    }
    this.#unread -= count;
    return count;
  }

  async write(bytes: Uint8Array): Promise<void> {
    let at = 0;
    while (at < bytes.length) {
      if (this.#ended) throw new Error(`Cannot write: WebSocket ${this.#socket.url} is closed`);
      const end = this.#cutter.next(bytes, at, bytes.length);
      const piece = bytes.subarray(at, end < 0 ? bytes.length : end);
      at += piece.length;
      if (end < 0) {
        this.#partial.push(piece.slice());
        continue;
      }
      this.#socket.send(this.#partial.length === 0 ? piece : join([...this.#partial, piece]));
      this.#partial = [];
    }
    while (this.#socket.bufferedAmount > HIGH_WATER && !this.#ended) {
      await new Promise((resolve) => setTimeout(resolve, DRAIN_POLL));
    }
  }

  #end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#limits.onClose();
    this.#wake?.();
  }

  close(): void {
    if (this.#socket.readyState < WebSocket.CLOSING) this.#socket.close(1000);
    this.#end();
  }
}

function join(parts: Uint8Array[]): Uint8Array {
  const whole = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of parts) {
    whole.set(part, at);
    at += part.length;
  }
  return whole;
}
