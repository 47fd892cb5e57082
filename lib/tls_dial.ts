/**
 * The dialling half of TLS, for nodes: `Deno.connect`, `TCP_NODELAY`, then
 * `Deno.startTls`. It imports nothing from `node:` (the node's module graph
 * stays free of it); the listening half, a `node:tls` server, is
 * {@linkcode TlsTransport} in `tls_transport.ts`, which dials through here.
 *
 * It also decides which dial failures are TLS failures
 * ({@linkcode tlsDialError}): a certificate the node does not trust or that
 * is for another host, or a relay that does not speak TLS, as opposed to a
 * relay that is down or unreachable.
 *
 * @module
 */

import { formatHostPort, type HostPort } from "./address.ts";
import { closeQuietly, connStream } from "./tcp_transport.ts";
import type { Listener, Stream, Transport } from "./transport.ts";
import { RelayTlsError } from "./errors.ts";
import { denoRuntime } from "./runtime.ts";

/** Default time a TLS handshake may take: 5000 ms (`node:tls` would wait 120 s). */
export const DEFAULT_TLS_HANDSHAKE_TIMEOUT = 5000;

/** Options of a TLS dial. PEM text, not file names. */
export interface TlsDialOptions {
  /** Extra trusted roots (PEM), besides the default ones. */
  caCerts?: string[];
  /** Name checked against the server's certificate. @default the dialled host */
  serverName?: string;
  /**
   * Time the TLS handshake may take, ms, after which the connection is cut.
   * @default DEFAULT_TLS_HANDSHAKE_TIMEOUT
   */
  handshakeTimeout?: number;
}

/**
 * Opens TCP to `address` with Nagle off, then runs the TLS handshake;
 * `signal` and the handshake timeout both cut it short (rejecting with the
 * signal's reason). A certificate that is not trusted rejects with the
 * runtime's `Deno.errors.InvalidData`.
 */
export async function dialTls(
  address: HostPort,
  options: TlsDialOptions = {},
  signal?: AbortSignal,
): Promise<Stream> {
  const tcp = await Deno.connect({
    hostname: address.hostname,
    port: address.port,
    ...(signal ? { signal } : {}),
  });
  tcp.setNoDelay(true);
  const { caCerts, serverName } = options;
  const conn = await Deno.startTls(tcp, {
    hostname: serverName ?? address.hostname,
    ...(caCerts && caCerts.length > 0 ? { caCerts } : {}),
  });
  const limit = AbortSignal.timeout(options.handshakeTimeout ?? DEFAULT_TLS_HANDSHAKE_TIMEOUT);
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

/**
 * A transport that only dials TLS (what a node needs to reach `tls://`
 * relays); `listen()` rejects, pointing to {@linkcode TlsTransport}.
 *
 * @example A dial to a closed port fails like a TCP dial
 * ```ts
 * import { TlsDialer } from "./tls_dial.ts";
 * import assert from "node:assert/strict";
 *
 * const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const { port } = closed.addr;
 * closed.close();
 * const tls = new TlsDialer();
 * await assert.rejects(tls.dial({ hostname: "127.0.0.1", port }), Deno.errors.ConnectionRefused);
 * await assert.rejects(tls.listen({ hostname: "127.0.0.1", port: 0 }), TypeError);
 * ```
 */
export class TlsDialer implements Transport {
  /** Relay addresses name this transport `tls://host:port`. */
  readonly scheme = "tls";
  readonly #options: TlsDialOptions;

  /** Creates the dialler; `caCerts` are trusted besides the default roots. */
  constructor(options: TlsDialOptions = {}) {
    this.#options = options;
  }

  /** Dials `address` over TLS (see {@linkcode dialTls}). */
  dial(address: HostPort, signal?: AbortSignal): Promise<Stream> {
    return dialTls(address, this.#options, signal);
  }

  /** Always rejects with a `TypeError`: listening needs a certificate and `node:tls`. */
  listen(_address: HostPort): Promise<Listener> {
    return Promise.reject(
      new TypeError(
        "Cannot listen with TLS here: use TlsTransport from @peerbase/peerbase/relay with cert and key",
      ),
    );
  }
}

/**
 * The {@linkcode RelayTlsError} for a failed dial of the relay at `address`
 * (`tls://host:port` or `wss://…`) when `error` is a TLS failure: a certificate that is
 * not trusted or not for that host, a relay that answered with something
 * other than TLS, or one that hung up during the handshake. Null for
 * anything else (refused, unreachable, timed out, aborted) and for a relay
 * that is not `tls://` or `wss://`.
 *
 * @example
 * ```ts
 * import { tlsDialError } from "./tls_dial.ts";
 * import assert from "node:assert/strict";
 *
 * const untrusted = new Deno.errors.InvalidData("invalid peer certificate: UnknownIssuer");
 * const error = tlsDialError("tls://relay.example:7000", untrusted);
 * assert.equal(error?.relay, "tls://relay.example:7000");
 * assert.equal(error?.reason, "invalid peer certificate (UnknownIssuer)");
 * assert.match(error?.message ?? "", /caCerts/);
 * assert.equal(tlsDialError("tls://relay.example:7000", new Deno.errors.ConnectionRefused("refused")), null);
 * assert.equal(tlsDialError("relay.example:7000", untrusted), null);
 * assert.equal(tlsDialError("wss://relay.example:443/pb", untrusted)?.relay, "wss://relay.example:443/pb");
 * ```
 */
export function tlsDialError(address: string, error: unknown): RelayTlsError | null {
  if (!/^(tls|wss):\/\//i.test(address) || !(error instanceof Error)) return null;
  // A browser's own TLS fails without saying why (and there is no Deno).
  const errors = denoRuntime()?.errors;
  if (!errors) return null;
  let reason: string;
  if (error instanceof errors.UnexpectedEof) {
    reason = "the relay closed the connection during the TLS handshake";
  } else if (
    error instanceof errors.InvalidData ||
    /certificate|UnknownIssuer|NotValidForName|handshake/i.test(error.message)
  ) {
    reason = error.message.replace(
      /^invalid peer certificate: (\w+)$/,
      "invalid peer certificate ($1)",
    );
  } else {
    return null;
  }
  return new RelayTlsError(address, reason, { cause: error });
}
