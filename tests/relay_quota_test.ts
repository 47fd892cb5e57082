/**
 * Quotas a user can see: a relay refuses registrations beyond its limits
 * (per source address, per network, in all, unproven connections) with a
 * clear GOAWAY and counts each refusal by reason; a node refused by one relay
 * (or unable to reach it) hears it as a `relayrefused` event and goes on
 * with its other relays.
 *
 * Real relays and real sockets, no mocks; waits are bounded only to catch
 * hangs.
 */

import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { Node, type RelayRefusal } from "../mod.ts";
import { CloseCode, FrameType } from "../lib/frame.ts";
import type { Relay } from "../relay/mod.ts";
import { deadline, testNetwork, waitFor } from "./_fixtures.ts";
import {
  codeName,
  meetVia,
  rawIdentity,
  RelayRawClient,
  remoteOptions,
  startRelay,
} from "./_relay_fixtures.ts";

/** Raw clients registered as `names` of `net` at `address`; `await using` closes them all. */
async function registerAll(
  net: ReturnType<typeof testNetwork>,
  names: string[],
  address: string,
): Promise<AsyncDisposable & { clients: RelayRawClient[] }> {
  const clients: RelayRawClient[] = [];
  const dispose = async () => {
    await Promise.all(clients.map((c) => c[Symbol.asyncDispose]()));
  };
  try {
    for (const name of names) {
      const client = await RelayRawClient.connect(address, { keepMembers: false });
      clients.push(client);
      await client.register(await rawIdentity(net, name));
    }
  } catch (error) {
    await dispose();
    throw error;
  }
  return { clients, [Symbol.asyncDispose]: dispose };
}

/** The GOAWAY a raw registration of `name` in `net` at `address` is answered with. */
async function refusalOf(
  net: ReturnType<typeof testNetwork>,
  name: string,
  address: string,
): Promise<{ code: number; reason: string }> {
  await using client = await RelayRawClient.connect(address);
  await client.sendRegister(await rawIdentity(net, name));
  const outcome = await client.outcome();
  ok(outcome.goaway, `the relay refused ${name} with a GOAWAY`);
  ok(
    !client.frames.some((f) => f.type === FrameType.REGISTERED),
    `${name} was not registered`,
  );
  return outcome.goaway;
}

/** The refusal counters that are not zero. */
function refusals(relay: Relay): Record<string, number> {
  return Object.fromEntries(Object.entries(relay.stats.refusals).filter(([, n]) => n > 0));
}

/** Records every `relayrefused` event of `node`. */
function watchRefusals(node: Node): RelayRefusal[] {
  const seen: RelayRefusal[] = [];
  node.addEventListener("relayrefused", (e) => seen.push(e.detail));
  return seen;
}

/** A remote-only node that answers `where` with the relay the call came through. */
function whereNode(net: ReturnType<typeof testNetwork>, name: string, servers: string[]): Node {
  return new Node(remoteOptions(net, name, servers, {
    commands: { where: (_n, _a, _k, ctx) => ctx.relay },
  }));
}

Deno.test({
  name: "a registration beyond maxPerAddress is refused with GOAWAY QUOTA naming the quota",
  async fn() {
    const net = testNetwork("quota");
    await using r = await startRelay({ maxPerAddress: 2 });
    const { relay, address } = r;
    await using _two = await registerAll(net, ["a", "b"], address);
    const goaway = await refusalOf(testNetwork("quota"), "c", address);
    strictEqual(codeName(goaway.code), codeName(CloseCode.QUOTA));
    ok(goaway.reason.includes("per source address"), goaway.reason);
    ok(goaway.reason.includes("2"), goaway.reason);
    deepStrictEqual(refusals(relay), { "address-quota": 1 });
    strictEqual(relay.stats.nodes, 2);
  },
});

Deno.test({
  name:
    "a registration beyond maxPerNetwork is refused with GOAWAY QUOTA; other networks still join",
  async fn() {
    const net = testNetwork("quota");
    await using r = await startRelay({ maxPerNetwork: 2 });
    const { relay, address } = r;
    await using _two = await registerAll(net, ["a", "b"], address);
    const goaway = await refusalOf(net, "c", address);
    strictEqual(codeName(goaway.code), codeName(CloseCode.QUOTA));
    ok(goaway.reason.includes("per network"), goaway.reason);
    ok(goaway.reason.includes("2"), goaway.reason);
    await using _other = await registerAll(testNetwork("quota"), ["c"], address);
    deepStrictEqual(refusals(relay), { "network-quota": 1 });
    strictEqual(relay.stats.nodes, 3);
    strictEqual(relay.stats.networks, 2);
  },
});

Deno.test({
  name: "a registration beyond maxNodes is refused with GOAWAY FULL",
  async fn() {
    await using r = await startRelay({ maxNodes: 2 });
    const { relay, address } = r;
    await using _one = await registerAll(testNetwork("quota"), ["a"], address);
    await using _two = await registerAll(testNetwork("quota"), ["b"], address);
    const goaway = await refusalOf(testNetwork("quota"), "c", address);
    strictEqual(codeName(goaway.code), codeName(CloseCode.FULL));
    ok(goaway.reason.includes("full"), goaway.reason);
    deepStrictEqual(refusals(relay), { full: 1 });
    strictEqual(relay.stats.nodes, 2);
  },
});

Deno.test({
  name:
    "a node whose first relay is full gets a relayrefused event naming it and why, and calls through its other relay",
  async fn() {
    const net = testNetwork("quota");
    await using full = await startRelay({ maxNodes: 2 });
    await using spare = await startRelay();
    const servers = [full.address, spare.address];
    await using peer = whereNode(net, "peer", servers);
    await peer.start();
    // The peer holds one place at the full relay; a throwaway registration takes the other.
    await using _filler = await registerAll(testNetwork("filler"), ["filler"], full.address);
    strictEqual(full.relay.stats.nodes, 2);

    await using node = whereNode(net, "node", servers);
    const refused = watchRefusals(node);
    await deadline(node.start(), "start() with one relay full");
    await waitFor(() => refused.length > 0, "a relayrefused event");
    strictEqual(refused[0]!.relay, full.address);
    strictEqual(refused[0]!.code, CloseCode.FULL);
    ok(refused[0]!.reason.includes("full"), refused[0]!.reason);
    deepStrictEqual(refused.filter((r) => r.relay !== full.address), []);

    await meetVia([peer, node], spare.address);
    for (let i = 0; i < 5; i++) {
      strictEqual(await node.command("where", { target: "peer" }), spare.address);
      strictEqual(await peer.command("where", { target: "node" }), spare.address);
    }
    deepStrictEqual(
      node.relays,
      [
        { address: full.address, up: false, maintained: true },
        { address: spare.address, up: true, maintained: true },
      ].sort((x, y) => x.address < y.address ? -1 : 1),
    );
    deepStrictEqual(Object.keys(refusals(full.relay)), ["full"]);
  },
});

Deno.test({
  name:
    "a relay that cannot be reached at start fires relayrefused with code null; start() resolves",
  async fn() {
    const net = testNetwork("quota");
    // A port that was free a moment ago and has no listener now.
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const closed = `127.0.0.1:${listener.addr.port}`;
    listener.close();
    await using node = new Node(remoteOptions(net, "node", closed));
    const refused = watchRefusals(node);
    await deadline(node.start(), "start() with an unreachable relay");
    await waitFor(() => refused.length > 0, "a relayrefused event");
    strictEqual(refused.length, 1);
    strictEqual(refused[0]!.relay, closed);
    strictEqual(refused[0]!.code, null);
    ok(refused[0]!.reason.startsWith("cannot connect"), refused[0]!.reason);
    deepStrictEqual(node.relays, [{ address: closed, up: false, maintained: true }]);
  },
});

Deno.test({
  name:
    "a connection beyond maxUnproven from one address is closed at once with GOAWAY POLICY and counted as rate",
  async fn() {
    await using r = await startRelay({ maxUnproven: 2 });
    const { relay, address } = r;
    // Two connections that read the CHALLENGE and never register hold both places.
    await using first = await RelayRawClient.connect(address);
    await using second = await RelayRawClient.connect(address);
    await first.nonce();
    await second.nonce();

    await using extra = await RelayRawClient.connect(address);
    const outcome = await extra.outcome();
    strictEqual(codeName(outcome.goaway?.code), codeName(CloseCode.POLICY));
    ok(outcome.goaway!.reason.includes("unregistered"), outcome.goaway!.reason);
    deepStrictEqual(
      extra.frames.map((f) => f.type),
      [FrameType.GOAWAY],
      "no CHALLENGE: nothing is verified for it",
    );
    deepStrictEqual(refusals(relay), { rate: 1 });
    ok(!first.closed && !second.closed, "the two held connections stay open");
  },
});
