/**
 * The relay's per-connection outbox (`lib/relay_outbox.ts`) over a real
 * loopback connection: what it writes, and what it refunds when the
 * connection closes.
 */

import { deepStrictEqual, ok } from "node:assert/strict";
import { FramedConnection } from "../lib/connection.ts";
import { Outbox } from "../lib/relay_outbox.ts";
import { closeQuietly, connStream, tcpTransport } from "../lib/tcp_transport.ts";
import { deadline, sleep, waitFor } from "./_fixtures.ts";

Deno.test("a frame queued behind one being written when the connection closes is refunded by clear(), not lost", async () => {
  const listener = await tcpTransport.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept();
  const client = await tcpTransport.dial(listener.address);
  const server = await accepted;
  try {
    const connection = new FramedConnection(client);
    connection.start(() => {});
    const written: number[] = [];
    const outbox = new Outbox<string>(connection, "receiver", (_, bytes) => written.push(bytes));
    outbox.data(new Uint8Array(10), "first"); // Written at once.
    outbox.data(new Uint8Array(20), "second"); // Queued behind it.
    const closing = connection.close(); // Closed while the first write is in progress.
    await waitFor(() => written.length > 0, "the first frame's write to settle");
    const refunded: number[] = [];
    outbox.clear((bytes) => refunded.push(bytes));
    deepStrictEqual(written, [10], "the first frame went out");
    deepStrictEqual(refunded, [20], "the second never did, and is refunded");
    await deadline(closing, "the connection to close");
  } finally {
    client.close();
    server.close();
    listener.close();
  }
});

Deno.test("a frame whose write fails on a connection not yet closed, and every frame after it, are refunded by clear()", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const server = await accepted;
  try {
    const connection = new FramedConnection(connStream(conn, "127.0.0.1:0"));
    connection.start(() => {});
    await conn.closeWrite(); // Writes now fail, while the read side (and so the connection) stays open.
    const written: number[] = [];
    const outbox = new Outbox<string>(connection, "receiver", (_, bytes) => written.push(bytes));
    outbox.data(new Uint8Array(10), "first");
    await sleep(50); // Its write fails.
    ok(!connection.isClosed, "the connection is still open");
    outbox.data(new Uint8Array(20), "second");
    await sleep(50);
    const refunded: number[] = [];
    await deadline(connection.close(), "the connection to close");
    outbox.clear((bytes) => refunded.push(bytes));
    deepStrictEqual(written, [], "nothing was written");
    deepStrictEqual(refunded.sort((a, b) => a - b), [10, 20], "both are refunded");
  } finally {
    closeQuietly(conn); // Closed already, unless the test failed early.
    server.close();
    listener.close();
  }
});
