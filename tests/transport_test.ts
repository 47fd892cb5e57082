/**
 * The transport seam: the TCP implementation over real loopback sockets,
 * the one accept loop (with scripted listeners for the failures a real
 * socket cannot be made to produce on demand), and a framed connection
 * over a TCP stream.
 */

import { deepStrictEqual, ok, rejects, strictEqual } from "node:assert/strict";
import { ACCEPT_RETRY_DELAY, acceptLoop, type Listener, type Stream } from "../lib/transport.ts";
import { tcpTransport } from "../lib/tcp_transport.ts";
import { WebSocketServerStream } from "../lib/websocket_server.ts";
import { type CloseInfo, FramedConnection } from "../lib/connection.ts";
import { CloseCode, encodeFrame, encodeName, type Frame, FrameType } from "../lib/frame.ts";
import { deadline, sleep, waitFor } from "./_fixtures.ts";

const LOOPBACK = { hostname: "127.0.0.1", port: 0 };

/** Reads from `stream` until `count` bytes arrived (10 s cap). */
async function readBytes(stream: Stream, count: number): Promise<Uint8Array> {
  const out = new Uint8Array(count);
  let at = 0;
  while (at < count) {
    const n = await deadline(stream.read(out.subarray(at)), `${count} bytes`);
    if (n === null) throw new Error(`EOF after ${at} of ${count} bytes`);
    at += n;
  }
  return out;
}

/** A listener, a dialled stream and the accepted stream; closes all three. */
async function connectedPair() {
  const listener = await tcpTransport.listen(LOOPBACK);
  const accepted = listener.accept();
  const client = await tcpTransport.dial(listener.address);
  const server = await accepted;
  return {
    listener,
    client,
    server,
    [Symbol.dispose]() {
      client.close();
      server.close();
      listener.close();
    },
  };
}

/** A port on 127.0.0.1 that nothing listens on (bound, then released). */
function closedPort(): number {
  const probe = Deno.listen(LOOPBACK);
  const { port } = probe.addr;
  probe.close();
  return port;
}

// ---- tcpTransport ----

Deno.test("tcpTransport.listen() on port 0 reports the real port it bound", async () => {
  const listener = await tcpTransport.listen(LOOPBACK);
  try {
    strictEqual(listener.address.hostname, "127.0.0.1");
    ok(listener.address.port > 0, `port ${listener.address.port}`);
  } finally {
    listener.close();
  }
});

Deno.test("tcpTransport dials a listener and both streams carry bytes each way", async () => {
  using pair = await connectedPair();
  await pair.client.write(new Uint8Array([1, 2, 3]));
  deepStrictEqual(await readBytes(pair.server, 3), new Uint8Array([1, 2, 3]));
  const big = crypto.getRandomValues(new Uint8Array(60_000));
  await Promise.all([
    pair.server.write(big),
    readBytes(pair.client, big.length).then((got) => {
      deepStrictEqual(got, big);
    }),
  ]);
});

Deno.test("tcpTransport streams name the other end as host:port", async () => {
  using pair = await connectedPair();
  strictEqual(pair.client.remoteAddress, `127.0.0.1:${pair.listener.address.port}`);
  ok(/^127\.0\.0\.1:\d+$/.test(pair.server.remoteAddress), pair.server.remoteAddress);
});

Deno.test("a tcpTransport stream reads null once the other end closes", async () => {
  using pair = await connectedPair();
  pair.client.close();
  strictEqual(await deadline(pair.server.read(new Uint8Array(8)), "EOF"), null);
});

Deno.test("tcpTransport stream and listener close() are safe to call twice", async () => {
  const pair = await connectedPair();
  pair.client.close();
  pair.client.close();
  pair.server.close();
  pair.server.close();
  pair.listener.close();
  pair.listener.close();
});

Deno.test("tcpTransport listener accept() rejects once the listener is closed", async () => {
  const listener = await tcpTransport.listen(LOOPBACK);
  const accepting = listener.accept();
  listener.close();
  await rejects(deadline(accepting, "accept() to reject"));
});

Deno.test("tcpTransport.dial() to a port nobody listens on rejects", async () => {
  await rejects(
    deadline(tcpTransport.dial({ hostname: "127.0.0.1", port: closedPort() }), "the dial"),
    Deno.errors.ConnectionRefused,
  );
});

Deno.test("tcpTransport.dial() with an aborted signal rejects", async () => {
  const listener = await tcpTransport.listen(LOOPBACK);
  try {
    const reason = new Error("gave up");
    await rejects(
      deadline(tcpTransport.dial(listener.address, AbortSignal.abort(reason)), "the dial"),
    );
  } finally {
    listener.close();
  }
});

Deno.test("tcpTransport.listen() on a port in use rejects with AddrInUse", async () => {
  const first = await tcpTransport.listen(LOOPBACK);
  try {
    await rejects(
      tcpTransport.listen({ hostname: "127.0.0.1", port: first.address.port }),
      Deno.errors.AddrInUse,
    );
  } finally {
    first.close();
  }
});

// ---- acceptLoop ----

/** A stream that only records whether it was closed. */
class FakeStream implements Stream {
  readonly remoteAddress: string;
  closed = 0;
  constructor(name: string) {
    this.remoteAddress = `${name}:1`;
  }
  read(): Promise<number | null> {
    return Promise.resolve(null);
  }
  write(): Promise<void> {
    return Promise.resolve();
  }
  close(): void {
    this.closed++;
  }
}

/**
 * A listener whose `accept()` calls are answered by the test: each call
 * waits until `resolveNext`, `rejectNext` or `close` settles it.
 */
class ScriptedListener implements Listener {
  readonly address = { hostname: "127.0.0.1", port: 1 };
  accepts = 0;
  #waiting: { resolve: (s: Stream) => void; reject: (e: Error) => void } | null = null;
  #closed = false;

  accept(): Promise<Stream> {
    this.accepts++;
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("listener closed"));
    return new Promise((resolve, reject) => this.#waiting = { resolve, reject });
  }

  /** True while an `accept()` waits. */
  get waiting(): boolean {
    return this.#waiting !== null;
  }

  resolveNext(stream: Stream): void {
    const waiting = this.#take();
    waiting.resolve(stream);
  }

  rejectNext(error: Error): void {
    const waiting = this.#take();
    waiting.reject(error);
  }

  close(): void {
    this.#closed = true;
    this.#waiting?.reject(new Deno.errors.BadResource("listener closed"));
    this.#waiting = null;
  }

  #take() {
    const waiting = this.#waiting;
    if (!waiting) throw new Error("No accept() is waiting");
    this.#waiting = null;
    return waiting;
  }
}

Deno.test("acceptLoop() keeps accepting after accept() fails while the signal is live", async () => {
  const listener = new ScriptedListener();
  const stop = new AbortController();
  const seen: Stream[] = [];
  const loop = acceptLoop(listener, (stream) => seen.push(stream), stop.signal);
  await waitFor(() => listener.waiting, "the first accept()");
  const failedAt = performance.now();
  listener.rejectNext(new Error("Too many open files (os error 24)"));
  await waitFor(() => listener.waiting && listener.accepts === 2, "accept() after the failure");
  ok(
    performance.now() - failedAt >= ACCEPT_RETRY_DELAY - 10,
    "the loop pauses before accepting again",
  );
  const stream = new FakeStream("after-failure");
  listener.resolveNext(stream);
  await waitFor(() => seen.length === 1, "the stream to be handed over");
  strictEqual(seen[0], stream);
  strictEqual(stream.closed, 0);
  stop.abort();
  listener.close();
  await deadline(loop, "the loop to end");
});

Deno.test("acceptLoop() survives several failed accepts in a row", async () => {
  const listener = new ScriptedListener();
  const stop = new AbortController();
  const seen: Stream[] = [];
  const loop = acceptLoop(listener, (stream) => seen.push(stream), stop.signal);
  for (let i = 1; i <= 3; i++) {
    await waitFor(() => listener.waiting && listener.accepts === i, `accept() #${i}`);
    listener.rejectNext(new Error(`failure ${i}`));
  }
  await waitFor(() => listener.waiting && listener.accepts === 4, "accept() #4");
  listener.resolveNext(new FakeStream("x"));
  await waitFor(() => seen.length === 1, "the stream to be handed over");
  stop.abort();
  listener.close();
  await deadline(loop, "the loop to end");
});

Deno.test("acceptLoop() counts each failed accept on the gate it is given", async () => {
  const listener = new ScriptedListener();
  const stop = new AbortController();
  let failures = 0;
  const loop = acceptLoop(listener, () => {}, stop.signal, { acceptFailed: () => failures++ });
  for (let i = 1; i <= 2; i++) {
    await waitFor(() => listener.waiting && listener.accepts === i, `accept() #${i}`);
    listener.rejectNext(new Error("Too many open files (os error 24)"));
  }
  await waitFor(() => listener.waiting && listener.accepts === 3, "accept() #3");
  strictEqual(failures, 2);
  stop.abort();
  listener.close();
  await deadline(loop, "the loop to end");
  strictEqual(failures, 2, "closing is not a failure");
});

Deno.test("acceptLoop() ends when the signal aborts and the listener closes", async () => {
  const listener = new ScriptedListener();
  const stop = new AbortController();
  const loop = acceptLoop(listener, () => {}, stop.signal);
  await waitFor(() => listener.waiting, "accept()");
  stop.abort();
  listener.close();
  await deadline(loop, "the loop to end");
  strictEqual(listener.accepts, 1, "no accept() after shutdown");
});

Deno.test("acceptLoop() ends at once when the signal aborts during the pause after a failure", async () => {
  const listener = new ScriptedListener();
  const stop = new AbortController();
  const loop = acceptLoop(listener, () => {}, stop.signal);
  await waitFor(() => listener.waiting, "accept()");
  listener.rejectNext(new Error("EMFILE"));
  await sleep(0);
  stop.abort();
  // No listener.close(): the loop must notice the abort by itself, well before the pause ends.
  await deadline(loop, "the loop to end", ACCEPT_RETRY_DELAY / 2);
  strictEqual(listener.accepts, 1);
});

Deno.test("acceptLoop() returns at once for a signal that is already aborted", async () => {
  const listener = new ScriptedListener();
  await deadline(acceptLoop(listener, () => {}, AbortSignal.abort()), "the loop to end");
  strictEqual(listener.accepts, 0);
});

Deno.test("acceptLoop() closes a stream accepted after shutdown began, without handing it over", async () => {
  const listener = new ScriptedListener();
  const stop = new AbortController();
  const seen: Stream[] = [];
  const loop = acceptLoop(listener, (stream) => seen.push(stream), stop.signal);
  await waitFor(() => listener.waiting, "accept()");
  stop.abort();
  const late = new FakeStream("late");
  listener.resolveNext(late);
  await deadline(loop, "the loop to end");
  strictEqual(late.closed, 1, "the late stream is closed");
  strictEqual(seen.length, 0, "the late stream is not handed over");
});

Deno.test("acceptLoop() over a tcpTransport listener hands over every dialled stream", async () => {
  const listener = await tcpTransport.listen(LOOPBACK);
  const stop = new AbortController();
  const seen: Stream[] = [];
  const loop = acceptLoop(listener, (stream) => seen.push(stream), stop.signal);
  const clients = await Promise.all([1, 2, 3].map(() => tcpTransport.dial(listener.address)));
  try {
    await waitFor(() => seen.length === 3, "three accepted streams");
  } finally {
    stop.abort();
    listener.close();
    await deadline(loop, "the loop to end");
    for (const stream of [...clients, ...seen]) stream.close();
  }
});

// ---- FramedConnection over a tcp stream ----

function dataFrame(id: number, body: Uint8Array): Uint8Array {
  return encodeFrame(FrameType.DATA, id, {
    network: encodeName("office", "network"),
    target: encodeName("bob", "target"),
    sender: encodeName("alice", "sender"),
  }, body);
}

Deno.test("a FramedConnection over a tcp stream sends and receives frames", async () => {
  using pair = await connectedPair();
  const received: Frame[] = [];
  const left = new FramedConnection(pair.client);
  const right = new FramedConnection(pair.server);
  left.start(() => {});
  right.start((frame) => {
    received.push(frame);
  });
  const body = new Uint8Array(100_000).map((_, i) => i * 7);
  await left.write(dataFrame(7, new Uint8Array([1, 2, 3])));
  await left.write(dataFrame(8, body));
  await waitFor(() => received.length === 2, "two frames");
  const [first, second] = received;
  strictEqual(first!.type, FrameType.DATA);
  strictEqual(first!.id, 7);
  strictEqual(first!.network, "office");
  strictEqual(first!.target, "bob");
  strictEqual(first!.sender, "alice");
  deepStrictEqual(first!.body, new Uint8Array([1, 2, 3]));
  strictEqual(second!.id, 8);
  deepStrictEqual(second!.body, body);
  strictEqual(left.remoteAddr, pair.client.remoteAddress);
  await left.close(CloseCode.NORMAL, "done");
  await deadline(right.closed, "the other side to close");
});

Deno.test("closing a FramedConnection over tcp tells the other side why (GOAWAY)", async () => {
  using pair = await connectedPair();
  const left = new FramedConnection(pair.client);
  const right = new FramedConnection(pair.server);
  left.start(() => {});
  right.start(() => {});
  const mine: CloseInfo = await deadline(left.close(CloseCode.POLICY, "bye now"), "close()");
  deepStrictEqual(mine, { code: CloseCode.POLICY, reason: "bye now", remote: false });
  const theirs = await deadline(right.closed, "the other side to close");
  strictEqual(theirs.remote, true);
  strictEqual(theirs.code, CloseCode.POLICY);
  ok(theirs.reason.includes("bye now"), theirs.reason);
  ok(right.isClosed);
  await rejects(right.write(dataFrame(1, new Uint8Array(1))), /closed/);
});

Deno.test("FramedConnection.bytesWritten counts a write once the system has taken all of it, not when it starts", async () => {
  using pair = await connectedPair();
  const left = new FramedConnection(pair.client);
  left.start(() => {});
  // More than loopback's socket buffers hold while the other side reads nothing: the write waits.
  const big = new Uint8Array(48 * 1024 * 1024);
  let settled = false;
  const writing = left.write(big).then(() => settled = true);
  await sleep(200);
  ok(!settled, "the write waits for the reader");
  strictEqual(left.bytesWritten, 0, "bytes still waiting for room are not counted");
  const buffer = new Uint8Array(1 << 20);
  for (let read = 0; read < big.length;) {
    const n = await deadline(pair.server.read(buffer), "the server to read");
    if (n === null) throw new Error("the stream ended early");
    read += n;
  }
  await deadline(writing, "the write to settle");
  strictEqual(left.bytesWritten, big.length);
  await left.close();
});

Deno.test("a FramedConnection over a WebSocket link grows its read buffer: each message then takes one socket read", async () => {
  const listener = await tcpTransport.listen(LOOPBACK);
  let socketReads = 0;
  const accepted = listener.accept().then((stream) => {
    const counted: Stream = {
      remoteAddress: stream.remoteAddress,
      read: (into) => (socketReads++, stream.read(into)),
      write: (bytes) => stream.write(bytes),
      close: () => stream.close(),
    };
    return new WebSocketServerStream(counted);
  });
  const socket = new WebSocket(`ws://127.0.0.1:${listener.address.port}/`);
  const opened = new Promise((resolve) => socket.onopen = resolve);
  const received: Frame[] = [];
  // The relay's first read size: 128 bytes. A WebSocket link returns the payload without its
  // header, so no read ever returns the whole buffer.
  const server = new FramedConnection(await accepted, { initialReadSize: 128 });
  server.start((frame) => {
    received.push(frame);
  });
  await deadline(opened, "the WebSocket to open");
  const frame = dataFrame(1, new Uint8Array(300).fill(7)); // About a 100 B call's size.
  const send = async (count: number) => {
    for (let i = 0; i < count; i++) {
      const before = received.length;
      socket.send(frame);
      await waitFor(() => received.length === before + 1, "the message");
    }
  };
  await send(8); // The buffer grows over the first messages.
  const before = socketReads;
  await send(20);
  strictEqual(socketReads - before, 20, "one socket read per message");
  const closed = new Promise((resolve) => socket.onclose = resolve);
  await server.close();
  await deadline(closed, "the WebSocket to close");
  listener.close();
});
