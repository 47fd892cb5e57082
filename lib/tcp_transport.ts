/**
 * Plain TCP streams (`Deno.connect`, `Deno.listen`) with Nagle disabled.
 *
 * @module
 */

import { formatHostPort, type HostPort } from "./address.ts";
import type { ConnectionGate } from "./connection_gate.ts";
import type { Listener, ListenOptions, Stream, Transport } from "./transport.ts";

/**
 * Wraps an open TCP connection as a {@linkcode Stream}, with `TCP_NODELAY`
 * set; `onClose` runs once, when the stream is closed.
 */
export function tcpStream(conn: Deno.TcpConn, onClose?: () => void): Stream {
  conn.setNoDelay(true);
  return connStream(conn, formatHostPort(conn.remoteAddr), onClose);
}

/**
 * Wraps any open `Deno.Conn` (TCP or TLS) as a {@linkcode Stream}; `onClose`
 * runs once, when the stream is closed.
 */
export function connStream(conn: Deno.Conn, remoteAddress: string, onClose?: () => void): Stream {
  return new ConnStream(conn, remoteAddress, onClose ?? null);
}

/** A `Deno.Conn` as a {@linkcode Stream}: one small object per connection, methods shared. */
class ConnStream implements Stream {
  readonly remoteAddress: string;
  #conn: Deno.Conn;
  #onClose: (() => void) | null;
  #closed = false;

  constructor(conn: Deno.Conn, remoteAddress: string, onClose: (() => void) | null) {
    this.#conn = conn;
    this.remoteAddress = remoteAddress;
    this.#onClose = onClose;
  }

  read(into: Uint8Array): Promise<number | null> {
    return this.#conn.read(into);
  }

  write(bytes: Uint8Array): Promise<void> {
    // Nearly always all of it, in one call: then no async function runs for it.
    try {
      return this.#conn.write(bytes).then((n) =>
        n < bytes.length ? this.#writeRest(bytes, n) : undefined
      );
    } catch (error) {
      return Promise.reject(error);
    }
  }

  async #writeRest(bytes: Uint8Array, at: number): Promise<void> {
    while (at < bytes.length) at += await this.#conn.write(bytes.subarray(at));
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeQuietly(this.#conn);
    this.#onClose?.();
  }
}

/**
 * A {@linkcode Listener} over a `Deno.TcpListener`. With a `gate`, a
 * connection over a cap is closed the moment it is accepted (nothing is
 * read from it) and the next one is awaited.
 */
export function tcpListener(listener: Deno.TcpListener, gate?: ConnectionGate): Listener {
  let closed = false;
  return {
    address: { hostname: listener.addr.hostname, port: listener.addr.port },
    async accept() {
      while (true) {
        const conn = await listener.accept();
        if (!gate) return tcpStream(conn);
        const slot = gate.admit(formatHostPort(conn.remoteAddr));
        if (typeof slot !== "string") return tcpStream(conn, slot.release);
        closeQuietly(conn);
      }
    },
    close() {
      if (closed) return;
      closed = true;
      try {
        listener.close();
      } catch {
        // Already closed.
      }
    },
  };
}

/**
 * The plain TCP transport.
 *
 * @example Dial a listener on loopback and exchange bytes
 * ```ts
 * import { tcpTransport } from "./tcp_transport.ts";
 * import assert from "node:assert/strict";
 *
 * const listener = await tcpTransport.listen({ hostname: "127.0.0.1", port: 0 });
 * const accepted = listener.accept();
 * const client = await tcpTransport.dial(listener.address);
 * const server = await accepted;
 * await client.write(new Uint8Array([1, 2, 3]));
 * const buffer = new Uint8Array(8);
 * assert.equal(await server.read(buffer), 3);
 * client.close();
 * server.close();
 * listener.close();
 * ```
 */
export const tcpTransport: Transport = {
  async dial(address: HostPort, signal?: AbortSignal): Promise<Stream> {
    const conn = await Deno.connect({
      hostname: address.hostname,
      port: address.port,
      ...(signal ? { signal } : {}),
    });
    return tcpStream(conn);
  },
  listen(address: HostPort, options: ListenOptions = {}): Promise<Listener> {
    try {
      return Promise.resolve(
        tcpListener(Deno.listen({ hostname: address.hostname, port: address.port }), options.gate),
      );
    } catch (error) {
      return Promise.reject(error);
    }
  },
};

/**
 * Closes `conn`, ignoring that the runtime or the peer closed it already.
 *
 * @example
 * ```ts
 * import { closeQuietly } from "./tcp_transport.ts";
 *
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const conn = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
 * (await listener.accept()).close();
 * closeQuietly(conn);
 * closeQuietly(conn); // A second close does not throw.
 * listener.close();
 * ```
 */
export function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}
