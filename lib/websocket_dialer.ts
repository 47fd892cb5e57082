/**
 * A node's side of a WebSocket link (`ws://` and `wss://` relays). On Deno
 * it dials with the node's own TCP or TLS (Nagle off) and speaks WebSocket
 * itself (`websocket_client.ts`); in a browser it uses the browser's
 * `WebSocket`. Either way each frame goes out as one binary message, and
 * messages come in as a byte stream for the frame decoder. See
 * `docs/PROTOCOL.md`, "Links: TCP, TLS or WebSocket".
 *
 * @module
 */

import { formatHostPort, type HostPort } from "./address.ts";
import { DEFAULT_MAX_FRAME_SIZE } from "./frame.ts";
import { FrameCutter } from "./frame_cutter.ts";
import { concatBytes } from "./encoding.ts";
import type { Listener, Stream, Transport } from "./transport.ts";
import { tcpTransport } from "./tcp_transport.ts";
import { TlsDialer } from "./tls_dial.ts";
import { openWebSocket } from "./websocket_client.ts";
import { denoRuntime } from "./runtime.ts";

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
  /** Extra trusted roots (PEM) for `wss://`, on Deno (a browser trusts its own). @default [] */
  caCerts?: string[];
  /** Largest message accepted, bytes (a frame). @default DEFAULT_MAX_FRAME_SIZE */
  maxMessage?: number;
  /** Most bytes received and not read yet; past it the link is closed. @default MAX_UNREAD_BYTES */
  maxUnread?: number;
  /**
   * Use the runtime's `WebSocket` class, as a browser does, even on Deno
   * (whose `WebSocket` turns Nagle's algorithm on: ~40 ms stalls). The
   * limits above apply to it only: on Deno's own sockets the frame decoder
   * reads as it goes. @default false on Deno; always, where there is no Deno
   */
  runtimeWebSocket?: boolean;
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
    return denoRuntime() !== null && !this.#options.runtimeWebSocket
      ? this.#dialDeno(address, signal)
      : this.#dialBrowser(address, signal);
  }

  /** On Deno: TCP or TLS with Nagle off, then the handshake, within `signal`. */
  async #dialDeno(address: HostPort, signal?: AbortSignal): Promise<Stream> {
    const { tls, path = "/", caCerts } = this.#options;
    const transport = tls ? new TlsDialer(caCerts?.length ? { caCerts } : {}) : tcpTransport;
    const inner = await transport.dial(address, signal);
    if (signal?.aborted) {
      inner.close();
      throw signal.reason;
    }
    const onAbort = () => inner.close(); // Ends a handshake that hangs.
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      return await openWebSocket(inner, { host: formatHostPort(address), path, tls });
    } catch (error) {
      throw signal?.aborted ? signal.reason : error;
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  /** In a browser (or with `runtimeWebSocket`): the runtime's `WebSocket`. */
  #dialBrowser(address: HostPort, signal?: AbortSignal): Promise<Stream> {
    const url = this.url(address);
    let socket: WebSocket;
    try {
      socket = new WebSocket(url);
    } catch (error) {
      return Promise.reject(error);
    }
    socket.binaryType = "arraybuffer";
    const stream = new BrowserWebSocketStream(socket, formatHostPort(address), {
      maxMessage: this.#options.maxMessage ?? DEFAULT_MAX_FRAME_SIZE,
      maxUnread: this.#options.maxUnread ?? MAX_UNREAD_BYTES,
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

/** What a {@linkcode BrowserWebSocketStream} accepts. */
interface StreamLimits {
  maxMessage: number;
  maxUnread: number;
}

/** A browser's `WebSocket` as a {@linkcode Stream}. */
class BrowserWebSocketStream implements Stream {
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
      this.#socket.send(
        this.#partial.length === 0 ? piece : concatBytes([...this.#partial, piece]),
      );
      this.#partial = [];
    }
    while (this.#socket.bufferedAmount > HIGH_WATER && !this.#ended) {
      await new Promise((resolve) => setTimeout(resolve, DRAIN_POLL));
    }
  }

  #end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#wake?.();
  }

  close(): void {
    if (this.#socket.readyState < WebSocket.CLOSING) this.#socket.close(1000);
    this.#end();
  }
}
