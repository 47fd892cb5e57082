/**
 * The version policy (docs/PROTOCOL.md, "Versioning"): a node and a relay
 * that speak different frame versions learn it at once, as a typed
 * `ProtocolVersionError` naming both versions, never as silence.
 */

import { ok, strictEqual } from "node:assert/strict";
import { Node, PROTOCOL_VERSION, ProtocolVersionError, type RelayRefusal } from "../mod.ts";
import { CloseCode, encodeFrame, encodeGoaway, FrameType } from "../lib/frame.ts";
import { testNetwork, waitFor } from "./_fixtures.ts";
import { RelayRawClient, remoteOptions, startRelay } from "./_relay_fixtures.ts";

/**
 * A relay of the previous frame version, as far as a newer node can tell:
 * it answers the first bytes it reads with a version-1 GOAWAY 3.
 */
function olderRelay(): { address: string } & AsyncDisposable {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const goaway = encodeFrame(
    FrameType.GOAWAY,
    0,
    { network: new Uint8Array(0), target: new Uint8Array(0), sender: new Uint8Array(0) },
    encodeGoaway(
      CloseCode.VERSION,
      `Cannot read frame: protocol version ${PROTOCOL_VERSION} is not supported (this build speaks version 1)`,
    ),
  );
  goaway[4] = 1; // The frame's version byte.
  const served = (async () => {
    for await (const conn of listener) {
      try {
        await conn.read(new Uint8Array(1024));
        await conn.write(goaway);
      } catch {
        // The node went away first.
      } finally {
        conn.close();
      }
    }
  })();
  return {
    address: `127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    async [Symbol.asyncDispose]() {
      listener.close();
      await served;
    },
  };
}

Deno.test("a node at a relay of an older frame version gets a relayrefused event with ProtocolVersionError naming both versions", async () => {
  await using relay = olderRelay();
  await using node = new Node(remoteOptions(testNetwork("ver"), "new", relay.address));
  const refusals: RelayRefusal[] = [];
  node.addEventListener("relayrefused", (e) => refusals.push(e.detail));
  await node.start();
  await waitFor(() => refusals.length > 0, "the refusal");
  const { relay: where, code, error } = refusals[0]!;
  strictEqual(where, relay.address);
  strictEqual(code, CloseCode.VERSION);
  ok(error instanceof ProtocolVersionError, String(error));
  strictEqual(error.received, 1);
  strictEqual(error.supported, PROTOCOL_VERSION);
  ok(error.message.includes("version 1") && error.message.includes(`version ${PROTOCOL_VERSION}`));
});

Deno.test("a relay answers a frame of an older version with GOAWAY 3 naming both versions", async () => {
  await using relay = await startRelay();
  await using client = await RelayRawClient.connect(relay.address);
  const ping = encodeFrame(
    FrameType.PING,
    0,
    { network: new Uint8Array(0), target: new Uint8Array(0), sender: new Uint8Array(0) },
    new Uint8Array(0),
  );
  ping[4] = 1;
  await client.write(ping);
  const { goaway } = await client.outcome();
  strictEqual(goaway?.code, CloseCode.VERSION);
  ok(goaway.reason.includes("version 1") && goaway.reason.includes(`version ${PROTOCOL_VERSION}`));
});
