/**
 * The node's side of a WebSocket link (`lib/websocket_dialer.ts`) against a
 * plain `Deno.serve` WebSocket server on loopback: one frame per message
 * however it is written, and the limits on what a relay may push at it.
 */

import { deepStrictEqual, ok, rejects, strictEqual } from "node:assert/strict";
import { WebSocketDialer } from "../lib/websocket_dialer.ts";
import { acceptValue, applyMask, Opcode, wsHeader } from "../lib/websocket_codec.ts";
import type { Stream } from "../lib/transport.ts";
import { deadline } from "./_fixtures.ts";

/** A WebSocket server on loopback that records binary messages and runs `onOpen` per socket. */
function server(onOpen: (socket: WebSocket) => void = () => {}) {
  const messages: Uint8Array[] = [];
  const sockets: WebSocket[] = [];
  const http = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    const { socket, response } = Deno.upgradeWebSocket(request);
    socket.binaryType = "arraybuffer";
    sockets.push(socket);
    socket.onopen = () => onOpen(socket);
    socket.onmessage = (event) => messages.push(new Uint8Array(event.data as ArrayBuffer));
    return response;
  });
  return {
    address: { hostname: "127.0.0.1", port: http.addr.port },
    messages,
    async [Symbol.asyncDispose]() {
      for (const socket of sockets) if (socket.readyState === WebSocket.OPEN) socket.close();
      await http.shutdown();
    },
  };
}

/** A frame of `body` bytes: the u32 length field, then the body. */
function frame(body: number, fill = 7): Uint8Array {
  const bytes = new Uint8Array(4 + body).fill(fill);
  new DataView(bytes.buffer).setUint32(0, body);
  return bytes;
}

/** Reads until the stream ends; resolves to the bytes read. */
async function readAll(stream: Stream): Promise<number> {
  const buffer = new Uint8Array(65536);
  let total = 0;
  while (true) {
    const count = await stream.read(buffer);
    if (count === null) return total;
    total += count;
  }
}

async function waitForMessages(messages: Uint8Array[], count: number): Promise<void> {
  const until = Date.now() + 10_000;
  while (messages.length < count && Date.now() < until) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

for (const runtimeWebSocket of [false, true]) {
  const client = runtimeWebSocket ? "the runtime's WebSocket (as in a browser)" : "Deno's sockets";
  Deno.test(`on ${client}, a frame written in pieces leaves as one message, and two frames in one write as two`, async () => {
    await using s = server();
    const stream = await new WebSocketDialer({ tls: false, runtimeWebSocket }).dial(s.address);
    try {
      const whole = frame(10);
      await stream.write(whole.subarray(0, 3)); // Not even the whole length field.
      await stream.write(whole.subarray(3, 9));
      await stream.write(whole.subarray(9));
      await stream.write(new Uint8Array([...frame(1, 1), ...frame(2, 2)]));
      await waitForMessages(s.messages, 3);
      deepStrictEqual(s.messages, [whole, frame(1, 1), frame(2, 2)]);
    } finally {
      stream.close();
    }
  });

  Deno.test(`on ${client}, a dial to a port where nothing listens rejects, and an aborted dial rejects with the reason`, async () => {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    listener.close();
    const dialer = new WebSocketDialer({ tls: false, path: "/pb", runtimeWebSocket });
    await rejects(dialer.dial({ hostname: "127.0.0.1", port }));
    const stop = new AbortController();
    stop.abort(new Error("gave up"));
    await rejects(dialer.dial({ hostname: "127.0.0.1", port }, stop.signal), /gave up/);
  });
}

Deno.test("a server that answers the opening request with an HTTP error is named in the dial's rejection", async () => {
  const http = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response("no", { status: 404 }),
  );
  try {
    const dialer = new WebSocketDialer({ tls: false, path: "/pb" });
    await rejects(
      dialer.dial({ hostname: "127.0.0.1", port: http.addr.port }),
      new RegExp(
        `Cannot open WebSocket ws://127\\.0\\.0\\.1:${http.addr.port}/pb: the server answered 404`,
      ),
    );
  } finally {
    await http.shutdown();
  }
});

Deno.test("a message larger than maxMessage closes the link and lets go of what it queued", async () => {
  await using _s = server((socket) => socket.send(new Uint8Array(2048)));
  const dialer = new WebSocketDialer({ tls: false, maxMessage: 1024, runtimeWebSocket: true });
  const stream = await dialer.dial(_s.address);
  strictEqual(await deadline(readAll(stream), "the link to close"), 0);
});

Deno.test("more than maxUnread bytes received and not read closes the link", async () => {
  await using _s = server((socket) => {
    for (let i = 0; i < 8; i++) socket.send(new Uint8Array(1000)); // 8,000 bytes, unread.
  });
  const dialer = new WebSocketDialer({ tls: false, maxUnread: 4096, runtimeWebSocket: true });
  const stream = await dialer.dial(_s.address);
  await new Promise((resolve) => setTimeout(resolve, 200)); // Let them all arrive, unread.
  strictEqual(await deadline(readAll(stream), "the link to close"), 0);
});

/**
 * A raw TCP server on loopback that reads the opening request, answers with
 * `answer(accept)`, and keeps what the node sends next in `received`.
 */
function rawServer(answer: (accept: string) => Promise<Uint8Array[]>) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const received: number[] = [];
  const done = (async () => {
    const conn = await listener.accept();
    try {
      const buffer = new Uint8Array(4096);
      const count = await conn.read(buffer) ?? 0;
      const head = new TextDecoder().decode(buffer.subarray(0, count));
      const key = /Sec-WebSocket-Key: (\S+)/i.exec(head)?.[1] ?? "";
      for (const bytes of await answer(await acceptValue(key))) await conn.write(bytes);
      while (true) { // Until the node closes.
        const more = await conn.read(buffer).catch(() => null);
        if (more === null) break;
        received.push(...buffer.subarray(0, more));
      }
    } finally {
      conn.close();
    }
  })();
  return {
    address: { hostname: "127.0.0.1", port: (listener.addr as Deno.NetAddr).port },
    received,
    done,
    async [Symbol.asyncDispose]() {
      listener.close();
      await done.catch(() => {});
    },
  };
}

const head = (accept: string) =>
  new TextEncoder().encode(
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
  );

Deno.test("a Deno node refuses a relay's 101 whose Sec-WebSocket-Accept does not match its key", async () => {
  await using s = rawServer(() => Promise.resolve([head("bm90IHRoZSByaWdodCBvbmU=")]));
  await rejects(
    new WebSocketDialer({ tls: false }).dial(s.address),
    /Cannot open WebSocket ws:\/\/127\.0\.0\.1:\d+\/: a wrong Sec-WebSocket-Accept/,
  );
});

Deno.test("a Deno node closes a link whose relay sends a masked frame, with close code 1002", async () => {
  const mask = new Uint8Array([1, 2, 3, 4]);
  const payload = frame(3);
  applyMask(payload, 0, payload.length, mask, 0);
  await using s = rawServer((accept) =>
    Promise.resolve([head(accept), wsHeader(Opcode.BINARY, true, payload.length, mask), payload])
  );
  const stream = await new WebSocketDialer({ tls: false }).dial(s.address);
  strictEqual(await deadline(readAll(stream), "the link to close"), 0);
  await deadline(s.done, "the node to close the socket");
  // The node's close frame: FIN + close, masked, then the code under its mask.
  const [first, second, ...rest] = s.received;
  strictEqual(first, 0x88);
  ok(second! & 0x80, "a client's close frame is masked");
  const code = ((rest[4]! ^ rest[0]!) << 8) | (rest[5]! ^ rest[1]!);
  strictEqual(code, 1002);
});
