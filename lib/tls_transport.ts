/**
 * TLS streams with Nagle disabled on both ends.
 *
 * The dialling side opens TCP, sets `TCP_NODELAY`, then upgrades with
 * `Deno.startTls`. The listening side uses a `node:tls` server, because
 * connections accepted by `Deno.listenTls` cannot disable Nagle: with
 * delayed ACKs a 64 KiB call would stall about 40 ms. It is the one
 * transport that imports `node:tls` (`@peerbase/peerbase/relay` exports it).
 * Every connection has {@linkcode DEFAULT_TLS_HANDSHAKE_TIMEOUT} to finish its
 * handshake, on both sides.
 *
 * @module
 */

import type { Socket } from "node:net";
import { createServer, type Server, type TLSSocket } from "node:tls";
import { formatHostPort, type HostPort } from "./address.ts";
import { connStream } from "./tcp_transport.ts";
import type { Listener, Stream, Transport } from "./transport.ts";

/** Options of {@linkcode TlsTransport}. PEM text, not file names. */
export interface TlsTransportOptions {
  /** Certificate chain the listener presents (PEM). Needed to listen. */
  cert?: string;
  /** Private key of `cert` (PEM). Needed to listen. */
  key?: string;
  /** Extra trusted roots for dialling (PEM); the system's roots otherwise. */
  caCerts?: string[];
  /** Name checked against the server's certificate when dialling. @default the dialled host */
  serverName?: string;
  /**
   * Time a connection has to finish its TLS handshake, ms; the slower one is
   * cut (on both sides), before anything else may spend time on it.
   * @default DEFAULT_TLS_HANDSHAKE_TIMEOUT
   */
  handshakeTimeout?: number;
}

/** Default time a TLS handshake may take: 5000 ms (`node:tls` would wait 120 s). */
export const DEFAULT_TLS_HANDSHAKE_TIMEOUT = 5000;

/** Bytes buffered from a TLS socket before reading pauses it. */
const READ_HIGH_WATER = 1 << 20;

/**
 * The TLS transport.
 *
 * Give the listener `cert` and `key` (PEM text, e.g. from
 * `Deno.readTextFile`); give diallers `caCerts` when the certificate is not
 * signed by a root the system trusts.
 *
 * @example Listening needs a certificate and its key
 * ```ts
 * import { TlsTransport } from "@peerbase/peerbase/relay";
 * import assert from "node:assert/strict";
 *
 * const tls = new TlsTransport({ caCerts: [] });
 * await assert.rejects(tls.listen({ hostname: "127.0.0.1", port: 0 }), TypeError);
 * ```
 */
export class TlsTransport implements Transport {
  readonly #options: TlsTransportOptions;

  /** Creates the transport; `cert` and `key` are needed only to listen. */
  constructor(options: TlsTransportOptions = {}) {
    this.#options = options;
  }

  /**
   * Opens TCP with Nagle off, then runs the TLS handshake; `signal` and the
   * handshake timeout both cut the handshake short.
   */
  async dial(address: HostPort, signal?: AbortSignal): Promise<Stream> {
    const tcp = await Deno.connect({
      hostname: address.hostname,
      port: address.port,
      ...(signal ? { signal } : {}),
    });
    tcp.setNoDelay(true);
    const { caCerts, serverName } = this.#options;
    const conn = await Deno.startTls(tcp, {
      hostname: serverName ?? address.hostname,
      ...(caCerts ? { caCerts } : {}),
    });
    const limit = AbortSignal.timeout(this.#handshakeTimeout);
    const cut = signal ? AbortSignal.any([signal, limit]) : limit;
    const abort = () => closeQuietly(conn);
    cut.addEventListener("abort", abort, { once: true });
    try {
      await conn.handshake();
      cut.throwIfAborted();
      return connStream(conn, formatHostPort(address));
    } catch (error) {
      closeQuietly(conn);
      throw cut.aborted ? cut.reason : error;
    } finally {
      cut.removeEventListener("abort", abort);
    }
  }

  get #handshakeTimeout(): number {
    return this.#options.handshakeTimeout ?? DEFAULT_TLS_HANDSHAKE_TIMEOUT;
  }

  /** Listens with a `node:tls` server; rejects when `cert`/`key` are missing or the port is taken. */
  async listen(address: HostPort): Promise<Listener> {
    const { cert, key } = this.#options;
    if (!cert || !key) {
      throw new TypeError(
        "Cannot listen with TLS: pass cert and key (PEM text) to new TlsTransport()",
      );
    }
    const server = createServer({ cert, key });
    const listener = new TlsListener(server, address, this.#handshakeTimeout);
    await listener.ready;
    return listener;
  }
}

/** Accepted sockets of a `node:tls` server, handed out by `accept()`. */
class TlsListener implements Listener {
  readonly #server: Server;
  readonly #ready: Promise<void>;
  readonly #queue: Stream[] = [];
  readonly #waiting: Array<{ resolve: (s: Stream) => void; reject: (e: Error) => void }> = [];
  readonly #handshaking = new Map<Socket, ReturnType<typeof setTimeout>>();
  #address: HostPort;
  #closed = false;

  constructor(server: Server, address: HostPort, handshakeTimeout: number) {
    this.#server = server;
    this.#address = address;
    server.on("connection", (socket: Socket) => {
      // Until its handshake ends, the socket is the listener's to close, within the deadline.
      const deadline = setTimeout(() => socket.destroy(), handshakeTimeout);
      this.#handshaking.set(socket, deadline);
      socket.once("close", () => this.#settled(socket));
    });
    server.on("secureConnection", (socket: TLSSocket) => this.#accepted(socket));
    server.on("tlsClientError", () => {}); // A failed or slow handshake concerns that client only.
    this.#ready = new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(address.port, address.hostname, () => {
        server.off("error", reject);
        // Later server errors (a failed accept) must not crash the process; accept() goes on.
        server.on("error", () => {});
        const bound = server.address();
        if (bound && typeof bound === "object") {
          this.#address = { hostname: bound.address, port: bound.port };
        }
        resolve();
      });
    });
  }

  get address(): HostPort {
    return this.#address;
  }

  /** Resolves once bound (the port is known). */
  get ready(): Promise<void> {
    return this.#ready;
  }

  accept(): Promise<Stream> {
    if (this.#closed) return Promise.reject(new Error("Listener is closed"));
    const next = this.#queue.shift();
    if (next) return Promise.resolve(next);
    return new Promise((resolve, reject) => this.#waiting.push({ resolve, reject }));
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#server.close();
    for (const socket of [...this.#handshaking.keys()]) socket.destroy();
    for (const stream of this.#queue.splice(0)) stream.close();
    for (const waiter of this.#waiting.splice(0)) waiter.reject(new Error("Listener is closed"));
  }

  /** The handshake of `socket` ended (or the socket did): it is no longer the listener's. */
  #settled(socket: Socket): void {
    clearTimeout(this.#handshaking.get(socket));
    this.#handshaking.delete(socket);
  }

  #accepted(socket: TLSSocket): void {
    if (this.#closed) {
      socket.destroy();
      return;
    }
    for (const raw of this.#handshaking.keys()) {
      // The raw socket under this TLS socket: same remote end.
      if (raw.remotePort === socket.remotePort && raw.remoteAddress === socket.remoteAddress) {
        this.#settled(raw);
      }
    }
    socket.setNoDelay(true);
    const stream = socketStream(socket);
    const waiter = this.#waiting.shift();
    if (waiter) waiter.resolve(stream);
    else this.#queue.push(stream);
  }
}

/** A `node:tls` socket as a {@linkcode Stream}: reads copy from buffered chunks. */
function socketStream(socket: TLSSocket): Stream {
  const chunks: Uint8Array[] = [];
  let buffered = 0;
  let ended = false;
  let wake: (() => void) | null = null;
  const notify = () => {
    wake?.();
    wake = null;
  };
  socket.on("data", (chunk: Uint8Array) => {
    chunks.push(chunk);
    buffered += chunk.length;
    if (buffered > READ_HIGH_WATER) socket.pause();
    notify();
  });
  socket.on("end", () => {
    ended = true;
    notify();
  });
  socket.on("close", () => {
    ended = true;
    notify();
  });
  socket.on("error", () => {
    ended = true;
    notify();
  });
  const remoteAddress = formatHostPort({
    hostname: socket.remoteAddress ?? "?",
    port: socket.remotePort ?? 0,
  });
  return {
    remoteAddress,
    async read(into) {
      while (chunks.length === 0) {
        if (ended) return null;
        await new Promise<void>((resolve) => wake = resolve);
      }
      const head = chunks[0]!;
      const n = Math.min(head.length, into.length);
      into.set(head.subarray(0, n));
      if (n === head.length) chunks.shift();
      else chunks[0] = head.subarray(n);
      buffered -= n;
      if (buffered <= READ_HIGH_WATER) socket.resume();
      return n;
    },
    write(bytes) {
      return new Promise((resolve, reject) => {
        if (ended || socket.destroyed) {
          reject(new Error("Connection is closed"));
          return;
        }
        socket.write(bytes, (error?: Error | null) => error ? reject(error) : resolve());
      });
    },
    close() {
      ended = true;
      socket.destroy();
      notify();
    },
  };
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}
