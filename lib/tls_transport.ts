/**
 * TLS streams with Nagle disabled on both ends.
 *
 * The dialling side opens TCP, sets `TCP_NODELAY`, then upgrades with
 * `Deno.startTls`. The listening side uses a `node:tls` server, because
 * connections accepted by `Deno.listenTls` cannot disable Nagle: with
 * delayed ACKs a 64 KiB call would stall about 40 ms. It is the one
 * transport that imports `node:tls` (`@peerbase/peerbase/relay` exports it).
 * Every connection has {@linkcode DEFAULT_TLS_HANDSHAKE_TIMEOUT} to finish its
 * handshake, on both sides. The dialling half lives in `tls_dial.ts`, free of
 * `node:` imports, so that nodes can dial TLS relays. A listening transport
 * can swap its certificate without dropping connections
 * ({@linkcode TlsTransport.reload}). A listener's connection caps (its
 * `gate`) apply before the handshake. Deno 2.9's `node:tls` server stops
 * accepting for good after an accept fails for want of file descriptors,
 * silently; an idle listener therefore dials itself every two seconds and
 * listens anew when that connection never arrives. An accepted stream
 * holds at most 256 KiB its reader has not taken; past that it stops
 * reading its TCP connection, so a peer that is not read is held back by
 * TCP flow control.
 *
 * @module
 */

import type { Socket } from "node:net";
import { createServer, type Server, type TLSSocket } from "node:tls";
import { formatHostPort, type HostPort } from "./address.ts";
import type { ConnectionGate } from "./connection_gate.ts";
import type { Listener, ListenOptions, Stream, Transport } from "./transport.ts";
import { DEFAULT_TLS_HANDSHAKE_TIMEOUT, dialTls } from "./tls_dial.ts";
import { delay } from "./delay.ts";

export { DEFAULT_TLS_HANDSHAKE_TIMEOUT };

/** Options of {@linkcode TlsTransport}. PEM text, not file names. */
export interface TlsTransportOptions {
  /** Certificate chain the listener presents (PEM). Needed to listen; `reload()` replaces it. */
  cert?: string;
  /** Private key of `cert` (PEM). Needed to listen; `reload()` replaces it. */
  key?: string;
  /** Extra trusted roots for dialling (PEM), besides the default ones. */
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

/**
 * Decrypted bytes a TLS stream holds for its reader before it stops
 * reading its TCP connection (256 KiB): a peer whose stream is not read
 * (flow control holds it) costs this plus one chunk (64 KiB in Deno 2.9),
 * however much it sends. 64 KiB made a 1 MiB echo about 10% slower.
 */
const READ_HIGH_WATER = 256 * 1024;

/** A certificate and its key, as PEM text. */
interface TlsCertificate {
  /** Certificate chain (PEM), the server's own certificate first. */
  cert: string;
  /** Private key of `cert` (PEM). */
  key: string;
}

/**
 * The TLS transport.
 *
 * Give the listener `cert` and `key` (PEM text, e.g. from
 * `Deno.readTextFile`); give diallers `caCerts` when the certificate is not
 * signed by a root the system trusts. {@linkcode TlsTransport.reload} swaps
 * the certificate of its listeners; connections already open keep theirs.
 *
 * @example Listening needs a certificate and its key
 * ```ts
 * import { TlsTransport } from "@peerbase/peerbase/relay";
 * import assert from "node:assert/strict";
 *
 * const tls = new TlsTransport({ caCerts: [] });
 * await assert.rejects(tls.listen({ hostname: "127.0.0.1", port: 0 }), TypeError);
 * assert.throws(() => tls.reload({ cert: "not PEM", key: "not PEM" }), TypeError);
 * ```
 */
export class TlsTransport implements Transport {
  /** Relay addresses name this transport `tls://host:port`. */
  readonly scheme = "tls";
  readonly #options: TlsTransportOptions;
  readonly #listeners = new Set<TlsListener>();
  #certificate: TlsCertificate | null;

  /** Creates the transport; `cert` and `key` are needed only to listen. */
  constructor(options: TlsTransportOptions = {}) {
    this.#options = options;
    const { cert, key } = options;
    this.#certificate = cert && key ? { cert, key } : null;
  }

  /**
   * Opens TCP with Nagle off, then runs the TLS handshake; `signal` and the
   * handshake timeout both cut the handshake short.
   */
  dial(address: HostPort, signal?: AbortSignal): Promise<Stream> {
    return dialTls(address, this.#options, signal);
  }

  get #handshakeTimeout(): number {
    return this.#options.handshakeTimeout ?? DEFAULT_TLS_HANDSHAKE_TIMEOUT;
  }

  /**
   * Listens with a `node:tls` server; rejects with a `TypeError` when
   * `cert`/`key` are missing or unusable, or when the port is taken. The
   * `gate` admits each connection before its handshake.
   */
  async listen(address: HostPort, options: ListenOptions = {}): Promise<Listener> {
    if (!this.#certificate) {
      throw new TypeError(
        "Cannot listen with TLS: pass cert and key (PEM text) to new TlsTransport()",
      );
    }
    const certificate = checkCertificate(this.#certificate, "listen with TLS");
    const listener = new TlsListener(
      certificate,
      address,
      this.#handshakeTimeout,
      options.gate,
      () => {
        this.#listeners.delete(listener);
      },
    );
    await listener.ready;
    this.#listeners.add(listener);
    return listener;
  }

  /**
   * Serves `certificate` from now on: on the open listeners (new
   * connections get it; open ones keep theirs) and on later ones. Throws a
   * `TypeError`, and changes nothing, when the PEM text holds no certificate,
   * no key, or a key that does not match the certificate.
   */
  reload(certificate: { cert: string; key: string }): void {
    const checked = checkCertificate(certificate, "reload the TLS certificate");
    this.#certificate = checked;
    for (const listener of this.#listeners) listener.setCertificate(checked);
  }
}

/**
 * Returns `certificate` if its PEM text parses and the key matches the
 * certificate; throws a `TypeError` saying what is wrong otherwise.
 * (`node:tls` takes anything and fails every handshake later.) An HTTP
 * client with a client certificate makes the runtime's TLS library check
 * both, without opening a socket.
 */
function checkCertificate(certificate: TlsCertificate, action: string): TlsCertificate {
  const { cert, key } = certificate ?? {};
  if (typeof cert !== "string" || typeof key !== "string") {
    throw new TypeError(`Cannot ${action}: cert and key must be PEM text`);
  }
  try {
    Deno.createHttpClient({ cert, key }).close();
  } catch (error) {
    throw new TypeError(
      `Cannot ${action}: ${
        (error as Error).message
      }; give the PEM certificate chain and its own private key`,
      { cause: error },
    );
  }
  return { cert, key };
}

/**
 * How often a TLS listener that accepted nothing looks whether it still
 * can, ms: `node:tls` servers of Deno 2.9 stop accepting for good once an
 * accept failed for want of file descriptors (without an error event), so
 * an idle listener dials itself and, when that connection never arrives,
 * listens anew on the same address.
 */
const ACCEPT_WATCH_INTERVAL = 2000;

/** Accepted sockets of a `node:tls` server, handed out by `accept()`. */
class TlsListener implements Listener {
  #server: Server;
  readonly #ready: Promise<void>;
  readonly #queue: Stream[] = [];
  readonly #waiting: Array<{ resolve: (s: Stream) => void; reject: (e: Error) => void }> = [];
  readonly #handshaking = new Map<Socket, ReturnType<typeof setTimeout>>();
  readonly #handshakeTimeout: number;
  readonly #gate: ConnectionGate | undefined;
  readonly #onClose: () => void;
  #certificate: TlsCertificate;
  #address: HostPort;
  #closed = false;
  /** Raw connections seen; the accept watch compares it between rounds. */
  #arrivals = 0;
  /** True while a new server could not listen (the accept watch tries again). */
  #down = false;
  /** Aborts on close: ends the accept watch. */
  readonly #lifetime = new AbortController();

  constructor(
    certificate: TlsCertificate,
    address: HostPort,
    handshakeTimeout: number,
    gate: ConnectionGate | undefined,
    onClose: () => void,
  ) {
    this.#certificate = certificate;
    this.#address = address;
    this.#handshakeTimeout = handshakeTimeout;
    this.#gate = gate;
    this.#onClose = onClose;
    this.#server = this.#newServer();
    this.#ready = this.#listen(this.#server).then(() => void this.#watchAccepts());
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

  /** Serves `certificate` to connections from now on; open ones keep theirs. */
  setCertificate(certificate: TlsCertificate): void {
    this.#certificate = certificate;
    this.#server.setSecureContext(certificate);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#lifetime.abort();
    this.#onClose();
    this.#server.close();
    for (const socket of [...this.#handshaking.keys()]) socket.destroy();
    for (const stream of this.#queue.splice(0)) stream.close();
    for (const waiter of this.#waiting.splice(0)) waiter.reject(new Error("Listener is closed"));
  }

  /** A `node:tls` server that hands its connections to this listener. */
  #newServer(): Server {
    const server = createServer(this.#certificate);
    server.on("connection", (socket: Socket) => this.#arrived(socket));
    server.on("secureConnection", (socket: TLSSocket) => this.#accepted(socket));
    server.on("tlsClientError", () => {}); // A failed or slow handshake concerns that client only.
    return server;
  }

  /** Binds `server` to the listener's address; later server errors are ignored. */
  #listen(server: Server): Promise<void> {
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.#address.port, this.#address.hostname, () => {
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

  /** A raw connection arrived: over a cap it is cut at once, else it has a deadline to handshake. */
  #arrived(socket: Socket): void {
    this.#arrivals++;
    if (this.#closed) {
      socket.destroy();
      return;
    }
    if (this.#gate) {
      const remote = { hostname: socket.remoteAddress ?? "?", port: socket.remotePort ?? 0 };
      const slot = this.#gate.admit(formatHostPort(remote));
      if (typeof slot === "string") {
        socket.destroy();
        return;
      }
      socket.once("close", slot.release);
    }
    // Until its handshake ends, the socket is the listener's to close, within the deadline.
    const deadline = setTimeout(() => socket.destroy(), this.#handshakeTimeout);
    this.#handshaking.set(socket, deadline);
    socket.once("close", () => this.#settled(socket));
  }

  /**
   * The accept watch: nothing to do while connections arrive; after a
   * round with none, dial this listener, and listen anew when that
   * connection never arrives. Ends when the listener closes.
   */
  async #watchAccepts(): Promise<void> {
    const signal = this.#lifetime.signal;
    let seen = this.#arrivals;
    while (!signal.aborted) {
      await delay(ACCEPT_WATCH_INTERVAL, signal);
      if (signal.aborted) return;
      if (this.#down || (this.#arrivals === seen && await this.#stuck(signal))) {
        await this.#restart();
      }
      seen = this.#arrivals;
    }
  }

  /**
   * Dials this listener and closes the connection at once; true when it has
   * not arrived a round later, or when the dial timed out (the backlog is
   * full and nothing takes from it). A dial that fails otherwise (out of
   * descriptors here too) proves nothing.
   */
  async #stuck(signal: AbortSignal): Promise<boolean> {
    const before = this.#arrivals;
    const { port } = this.#address;
    const hostname = this.#address.hostname === "0.0.0.0"
      ? "127.0.0.1"
      : this.#address.hostname === "::"
      ? "::1"
      : this.#address.hostname;
    // Never prompted for: without the permission to dial itself, the listener is not watched.
    const query = { name: "net", host: formatHostPort({ hostname, port }) } as const;
    if (Deno.permissions.querySync(query).state !== "granted") return false;
    const timeout = AbortSignal.timeout(ACCEPT_WATCH_INTERVAL);
    try {
      const conn = await Deno.connect({
        hostname,
        port,
        signal: AbortSignal.any([signal, timeout]),
      });
      conn.close();
    } catch {
      return timeout.aborted && !signal.aborted;
    }
    await delay(ACCEPT_WATCH_INTERVAL, signal);
    return this.#arrivals === before && !signal.aborted;
  }

  /**
   * Stops the stuck server and listens anew on the same address (the next
   * round tries again when that fails). Connections waiting in the old
   * server's backlog are reset; open ones stay.
   */
  async #restart(): Promise<void> {
    this.#gate?.acceptFailed(); // Accepts failed unseen: counted once per new server.
    this.#server.close();
    const server = this.#server = this.#newServer();
    try {
      await this.#listen(server);
      this.#down = false;
    } catch {
      // Out of descriptors still, or the port was taken meanwhile: the next round tries again.
      this.#down = true;
    }
    if (this.#closed) server.close();
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

/** The part of a TCP handle that stops and restarts reading (Deno's and Node's). */
interface ReadHandle {
  readStop(): unknown;
  readStart(): unknown;
}

/**
 * Stops reading the TCP connection under `socket`, or starts it again.
 * `pause()` alone stops the `data` events of a `node:tls` socket, but Deno
 * 2.9 goes on reading and decrypting into memory whatever the peer sends;
 * stopping the TCP handle (the socket's `_parent`) stops that, and lets TCP
 * flow control hold the peer back.
 */
function setReading(socket: TLSSocket, reading: boolean): void {
  const tcp = (socket as unknown as { _parent?: { _handle?: Partial<ReadHandle> | null } })
    ._parent?._handle;
  try {
    if (reading) {
      tcp?.readStart?.();
      socket.resume();
    } else {
      socket.pause();
      tcp?.readStop?.();
    }
  } catch {
    // The connection is closing: nothing left to read.
  }
}

/**
 * A `node:tls` socket as a {@linkcode Stream}: reads copy from buffered
 * chunks; past {@linkcode READ_HIGH_WATER} bytes the socket stops reading
 * until the reader drains them.
 */
function socketStream(socket: TLSSocket): Stream {
  const chunks: Uint8Array[] = [];
  let buffered = 0;
  let paused = false;
  let ended = false;
  let wake: (() => void) | null = null;
  const notify = () => {
    wake?.();
    wake = null;
  };
  socket.on("data", (chunk: Uint8Array) => {
    chunks.push(chunk);
    buffered += chunk.length;
    if (buffered > READ_HIGH_WATER && !paused) {
      paused = true;
      setReading(socket, false);
    }
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
      if (paused && buffered <= READ_HIGH_WATER) {
        paused = false;
        setReading(socket, true);
      }
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
