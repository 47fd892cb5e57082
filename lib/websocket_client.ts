/**
 * A Deno node's side of a WebSocket link: the opening handshake sent on a
 * stream it dialled with its own transport (TCP, or TLS with `caCerts`), so
 * Nagle's algorithm is off as on every other link. (Deno's `WebSocket`
 * client turns it on: measured, a 100 B call waited ~40 ms for the relay's
 * delayed ACK, and 16 calls in flight fell from 14,795 to 363 calls/s.)
 * Browsers use their own `WebSocket` (see `websocket_dialer.ts`).
 *
 * @module
 */

import {
  checkUpgradeResponse,
  headEnd,
  MAX_HANDSHAKE_HEAD,
  upgradeRequest,
} from "./websocket_codec.ts";
import { WebSocketLink } from "./websocket_link.ts";
import type { Stream } from "./transport.ts";

/** Where the opening request goes: the `Host` header's `host:port`, and the path. */
export interface WebSocketTarget {
  /** `host:port`, as the URL names it. */
  host: string;
  /** The HTTP path, from `/`. */
  path: string;
  /** True when `inner` is TLS (for messages: `wss://`). @default false */
  tls?: boolean;
}

/**
 * Opens a WebSocket over `inner` (a fresh connection to the server): sends
 * the request, checks the answer (at most {@linkcode MAX_HANDSHAKE_HEAD}
 * bytes). Rejects naming the URL when the server refuses; `inner` is then
 * closed. The caller's deadline bounds it (close `inner` to end it).
 *
 * @example
 * ```ts
 * import { openWebSocket } from "./websocket_client.ts";
 * import { tcpTransport } from "./tcp_transport.ts";
 * import assert from "node:assert/strict";
 *
 * const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
 *   const { socket, response } = Deno.upgradeWebSocket(request);
 *   socket.onmessage = (event) => socket.send(event.data); // An echo.
 *   return response;
 * });
 * const address = { hostname: "127.0.0.1", port: server.addr.port };
 * const link = await openWebSocket(await tcpTransport.dial(address), {
 *   host: `127.0.0.1:${address.port}`,
 *   path: "/",
 * });
 * await link.write(new Uint8Array([0, 0, 0, 1, 42])); // One 1-byte frame: one message.
 * const into = new Uint8Array(16);
 * assert.deepEqual([...into.subarray(0, await link.read(into) ?? 0)], [0, 0, 0, 1, 42]);
 * link.close();
 * await server.shutdown();
 * ```
 */
export async function openWebSocket(inner: Stream, target: WebSocketTarget): Promise<Stream> {
  const link = new WebSocketLink(inner, {
    client: true,
    handshake: (stream) => sendHandshake(stream, target),
  });
  if (await link.open()) return link;
  const why = link.openError?.message ?? "closed";
  const url = `${target.tls ? "wss" : "ws"}://${target.host}${target.path}`;
  throw new Error(`Cannot open WebSocket ${url}: ${why}`, {
    cause: link.openError,
  });
}

/** Sends the opening request and checks the answer; resolves to the bytes read past it. */
async function sendHandshake(inner: Stream, target: WebSocketTarget): Promise<Uint8Array> {
  const key = crypto.getRandomValues(new Uint8Array(16)).toBase64();
  await inner.write(upgradeRequest(target.host, target.path, key));
  const head = new Uint8Array(MAX_HANDSHAKE_HEAD);
  let length = 0;
  let end = -1;
  while (end < 0) {
    if (length === head.length) throw new Error("the server's answer is over 4096 bytes");
    const count = await inner.read(head.subarray(length));
    if (count === null) {
      throw new Error(
        "the server closed before answering (is this the relay's WebSocket port, its --ws-port?)",
      );
    }
    length += count;
    end = headEnd(head, length);
  }
  const refused = await checkUpgradeResponse(String.fromCharCode(...head.subarray(0, end)), key);
  if (refused !== null) throw new Error(refused);
  return head.slice(end, length);
}
