/**
 * The transport seam: how peerbase opens, accepts and uses byte streams.
 *
 * Links, the router, the relay client and the relay server see only a
 * {@linkcode Stream} (read into a buffer, write, close, remote address) from
 * a {@linkcode Transport} (dial, listen). Plain TCP is one implementation,
 * TLS another; a WebSocket one fits the same interface, one frame per
 * message. Every implementation disables Nagle's algorithm: calls are small
 * writes that must leave at once.
 *
 * @module
 */

import type { HostPort } from "./address.ts";
import type { ConnectionGate } from "./connection_gate.ts";
import { delay } from "./delay.ts";

/** A connected, reliable, ordered byte stream. */
export interface Stream {
  /** The other end, as `host:port` (for messages, never for trust). */
  readonly remoteAddress: string;
  /** Reads up to `into.length` bytes into `into`; resolves to the count, or null at the end. */
  read(into: Uint8Array): Promise<number | null>;
  /** Writes all of `bytes`; resolves once they are handed to the system. */
  write(bytes: Uint8Array): Promise<void>;
  /** Closes the stream at once; pending reads end. Safe to call twice. */
  close(): void;
}

/** Accepts streams on a bound address. */
export interface Listener {
  /** The bound address (the real port when 0 was asked for). */
  readonly address: HostPort;
  /** The next accepted stream; rejects once the listener is closed, or on a failed accept. */
  accept(): Promise<Stream>;
  /** Stops listening. Safe to call twice. */
  close(): void;
}

/** Options of {@linkcode Transport.listen}. */
export interface ListenOptions {
  /**
   * Connection caps: each accepted connection is admitted by the gate,
   * before anything is read from it (before a TLS handshake), or closed at
   * once; an admitted one frees its slot when it closes. A transport that
   * cannot apply it (a custom one) may ignore it. @default no caps
   */
  gate?: ConnectionGate;
}

/** Opens and accepts {@linkcode Stream}s. */
export interface Transport {
  /** What a relay address names this transport by: `tls` for `tls://host:port`. @default "tcp" */
  readonly scheme?: "tcp" | "tls";
  /** Opens a stream to `address`; rejects when `signal` aborts first. */
  dial(address: HostPort, signal?: AbortSignal): Promise<Stream>;
  /** Binds `address` (port 0: any free port); rejects when it is taken. */
  listen(address: HostPort, options?: ListenOptions): Promise<Listener>;
}

/** Pause after an accept failed for a reason other than closing (EMFILE, say), ms. */
export const ACCEPT_RETRY_DELAY = 100;

/**
 * Accepts streams from `listener` and hands each to `onStream` until
 * `signal` aborts. An accept that fails while the signal is live (EMFILE,
 * ENFILE, ECONNABORTED: out of file descriptors, a reset in the backlog) is
 * counted on `gate` and retried after {@linkcode ACCEPT_RETRY_DELAY} ms:
 * the loop ends only on shutdown. Streams accepted after shutdown began are
 * closed.
 */
export async function acceptLoop(
  listener: Listener,
  onStream: (stream: Stream) => void,
  signal: AbortSignal,
  gate?: Pick<ConnectionGate, "acceptFailed">,
): Promise<void> {
  while (!signal.aborted) {
    let stream: Stream;
    try {
      stream = await listener.accept();
    } catch {
      if (signal.aborted) return;
      gate?.acceptFailed();
      await delay(ACCEPT_RETRY_DELAY, signal);
      continue;
    }
    if (signal.aborted) stream.close();
    else onStream(stream);
  }
}
