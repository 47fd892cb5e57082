/**
 * The relay's side of a WebSocket link: answers the opening handshake on a
 * stream accepted on its WebSocket port (TCP or TLS, Nagle already off),
 * then carries frames one per binary message (see `websocket_link.ts`).
 * See `docs/PROTOCOL.md`, "Links: TCP, TLS or WebSocket".
 *
 * @module
 */

import type { HostPort } from "./address.ts";
import {
  headEnd,
  MAX_HANDSHAKE_HEAD,
  parseUpgradeRequest,
  refusalResponse,
  type UpgradeRefusal,
  upgradeResponse,
} from "./websocket_codec.ts";
import { WebSocketLink, type WebSocketRole } from "./websocket_link.ts";
import type { Listener, Stream } from "./transport.ts";

/**
 * Reads an opening request head from `inner` (at most
 * {@linkcode MAX_HANDSHAKE_HEAD} bytes) and answers it: 101, or an HTTP
 * error and a rejection. Resolves to the bytes read past the head.
 */
async function answerHandshake(inner: Stream): Promise<Uint8Array> {
  const head = new Uint8Array(MAX_HANDSHAKE_HEAD);
  let length = 0;
  let end = -1;
  while (end < 0) {
    if (length === head.length) {
      return refuse(inner, { status: 431, reason: "request head over 4096 bytes" });
    }
    const count = await inner.read(head.subarray(length));
    if (count === null) throw new Error("Cannot open WebSocket: closed before its request");
    length += count;
    end = headEnd(head, length);
  }
  const request = parseUpgradeRequest(String.fromCharCode(...head.subarray(0, end)));
  if ("status" in request) return refuse(inner, request);
  await inner.write(await upgradeResponse(request));
  return head.slice(end, length);
}

/** Answers a refused request with its HTTP error, then rejects. */
async function refuse(inner: Stream, refusal: UpgradeRefusal): Promise<never> {
  await inner.write(refusalResponse(refusal)).catch(() => {});
  throw new Error(`Cannot open WebSocket: ${refusal.status} ${refusal.reason}`);
}

/** The relay's role: unmasked frames out, masked frames in, the handshake answered. */
const SERVER: WebSocketRole = { client: false, handshake: answerHandshake };

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
export class WebSocketServerStream extends WebSocketLink {
  /** Takes over `inner`, freshly accepted; nothing is read until the first read or write. */
  constructor(inner: Stream) {
    super(inner, SERVER);
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
