/**
 * The relay's per-connection outbox (`lib/relay_outbox.ts`) over a real
 * loopback connection: what it writes, and what it refunds when the
 * connection closes.
 */

import { deepStrictEqual } from "node:assert/strict";
import { FramedConnection } from "../lib/connection.ts";
import { Outbox } from "../lib/relay_outbox.ts";
import { tcpTransport } from "../lib/tcp_transport.ts";
import { deadline, waitFor } from "./_fixtures.ts";

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
