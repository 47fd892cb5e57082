/**
 * One relay process with a thousand registered clients: every one of them
 * stays registered and receives the frame addressed to it.
 *
 * The clients are raw TCP connections in this process that speak the relay
 * protocol (CHALLENGE, a signed REGISTER, PING) without a node behind them,
 * so the test measures the relay, not a thousand Node instances.
 */

import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { FrameType } from "../lib/frame.ts";
import { decodeMembers } from "../lib/relay_protocol.ts";
import { sleep, testNetwork, waitFor } from "./_fixtures.ts";
import {
  dataFrame,
  PING,
  type RawIdentity,
  rawIdentity,
  RelayRawClient,
  spawnRelay,
} from "./_relay_fixtures.ts";

/** Clients registered at once; the fd limit here is far above twice this. */
const CLIENTS = 1000;
/** Connections opened at a time. */
const BATCH = 100;
/** Keepalive tick of the clients, ms; the relay's timeout is 3 s, so silence would show. */
const TICK = 300;

Deno.test({
  name: `a relay process keeps ${CLIENTS} registered clients and forwards a frame to each`,
  async fn() {
    const net = testNetwork("scale");
    await using relay = await spawnRelay({ args: ["--timeout", "3"] });
    const clients: RelayRawClient[] = [];
    const byName = new Map<string, RelayRawClient>();
    const names = Array.from({ length: CLIENTS }, (_, i) => `c${i}`);
    const identities = new Map<string, RawIdentity>();
    for (const name of names) identities.set(name, await rawIdentity(net, name));
    const pseudonym = (name: string) => identities.get(name)!.pseudonym;
    const beat = setInterval(() => {
      for (const client of clients) void client.write(PING).catch(() => {});
    }, TICK);
    try {
      for (let at = 0; at < CLIENTS; at += BATCH) {
        const batch = await Promise.all(
          names.slice(at, at + BATCH).map(async (name) => {
            const client = await RelayRawClient.connect(relay.address, {
              keepMembers: false,
              readSize: 4096,
            });
            byName.set(name, client);
            await client.register(identities.get(name)!, { tick: TICK });
            clients.push(client); // From now on it pings every tick.
            return client;
          }),
        );
        strictEqual(batch.length, Math.min(BATCH, CLIENTS - at));
      }

      // A last client sees every other one listed at registration.
      await using sender = await RelayRawClient.connect(relay.address);
      const senderId = await rawIdentity(net, "sender");
      const registered = await sender.register(senderId, { tick: TICK });
      clients.push(sender);
      deepStrictEqual(
        registered.members.map(([member]) => member).sort(),
        names.map(pseudonym).sort(),
      );

      // Several of the relay's silence sweeps pass: the pinging clients all stay.
      await sleep(4000);
      const dropped = [...byName].filter(([, client]) => client.closed);
      deepStrictEqual(
        dropped.map(([name, client]) => `${name}: ${client.goaway?.reason}`),
        [],
        "every client is still connected",
      );
      ok(!sender.closed, "the sender is still connected");

      const encoder = new TextEncoder();
      for (const [i, name] of names.entries()) {
        await sender.write(
          dataFrame(
            senderId.networkId,
            pseudonym(name),
            senderId.pseudonym,
            encoder.encode(name),
            i + 1,
          ),
        );
      }
      const delivered = (client: RelayRawClient, name: string) =>
        client.frames.some((f) =>
          f.type === FrameType.DATA && f.target === pseudonym(name) &&
          f.sender === senderId.pseudonym
        );
      await waitFor(
        () => names.every((name) => delivered(byName.get(name)!, name)),
        "every client to receive its frame",
        30_000,
      );
      for (const [name, client] of byName) {
        const data = client.frames.filter((f) => f.type === FrameType.DATA);
        strictEqual(data.length, 1, `${name} got exactly its own frame`);
        strictEqual(new TextDecoder().decode(data[0]!.body), name);
        ok(!client.closed, `${name} is still connected`);
      }
      // Nobody left meanwhile.
      const leaves = sender.frames
        .filter((f) => f.type === FrameType.MEMBERS)
        .flatMap((f) => decodeMembers(f).leave);
      deepStrictEqual(leaves, []);
    } finally {
      clearInterval(beat);
      await Promise.all([...byName.values()].map((client) => client[Symbol.asyncDispose]()));
    }
    strictEqual((await relay.process.stop("SIGTERM")).code, 0, relay.process.stderr);
  },
});
