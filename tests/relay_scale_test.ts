/**
 * One relay process with a thousand registered clients: every one of them
 * stays registered and receives the frame addressed to it.
 *
 * The clients are raw TCP connections in this process that speak the relay
 * protocol (REGISTER, PING) without a node behind them, so the test
 * measures the relay, not a thousand Node instances.
 */

import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { FrameType } from "../lib/frame.ts";
import { decodeMembers } from "../lib/relay_protocol.ts";
import { newInstance, sleep, testNetwork, waitFor } from "./_fixtures.ts";
import { dataFrame, PING, RelayRawClient, spawnRelay } from "./_relay_fixtures.ts";

/** Clients registered at once; the fd limit here is far above twice this. */
const CLIENTS = 1000;
/** Connections opened at a time. */
const BATCH = 100;
/** Keepalive tick of the clients, ms; the relay's timeout is 3 s, so silence would show. */
const TICK = 300;

Deno.test({
  name: `a relay process keeps ${CLIENTS} registered clients and forwards a frame to each`,
  async fn() {
    const { network } = testNetwork("scale");
    await using relay = await spawnRelay({ args: ["--timeout", "3"] });
    const clients: RelayRawClient[] = [];
    const byName = new Map<string, RelayRawClient>();
    const names = Array.from({ length: CLIENTS }, (_, i) => `c${i}`);
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
            await client.register(network, name, newInstance(), TICK);
            clients.push(client); // From now on it pings every tick.
            return client;
          }),
        );
        strictEqual(batch.length, Math.min(BATCH, CLIENTS - at));
      }

      // A last client sees every other one listed at registration.
      await using sender = await RelayRawClient.connect(relay.address);
      const registered = await sender.register(network, "sender", newInstance(), TICK);
      clients.push(sender);
      deepStrictEqual(registered.members.map(([name]) => name).sort(), names.toSorted());

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
        await sender.write(dataFrame(network, name, "sender", encoder.encode(name), i + 1));
      }
      const delivered = (client: RelayRawClient, name: string) =>
        client.frames.some((f) =>
          f.type === FrameType.DATA && f.target === name && f.sender === "sender"
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
