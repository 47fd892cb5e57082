/**
 * Key rotation (docs/PROTOCOL.md, "Key rotation"): nodes restarted one by
 * one with the new key as `networkKey` and the old one as `previousKey`
 * keep calling nodes still on the old key, and nodes already on the new
 * one, through relays and directly on the LAN.
 */

import { deepStrictEqual, strictEqual, throws } from "node:assert/strict";
import { generateKey, Node, type NodeOptions } from "../mod.ts";
import { IN_NETNS, NETNS_REASON, testIf } from "./_env.ts";
import { nodeOptions, testNetwork, waitFor } from "./_fixtures.ts";
import { remoteOptions, startRelay } from "./_relay_fixtures.ts";

const echo = { echo: (_node: Node, [value]: unknown[]) => value };

/** Every node calls every other one once; resolves to the failures, as "from->to: error". */
async function mesh(nodes: Node[]): Promise<string[]> {
  const failures: string[] = [];
  await Promise.all(nodes.flatMap((from) =>
    nodes.filter((to) => to !== from).map(async (to) => {
      try {
        const value = await from.command("echo", { target: to.name, args: [from.name] });
        if (value !== from.name) failures.push(`${from.name}->${to.name}: got ${value}`);
      } catch (error) {
        failures.push(`${from.name}->${to.name}: ${(error as Error).message}`);
      }
    })
  ));
  return failures;
}

/** Calls between two nodes until `stop` aborts; resolves to the failures. */
async function callLoop(a: Node, b: Node, stop: AbortSignal): Promise<string[]> {
  const failures: string[] = [];
  for (let i = 0; i < 100_000 && !stop.aborted; i++) {
    const [from, to] = i % 2 === 0 ? [a, b] : [b, a];
    try {
      await from.command("echo", { target: to.name, args: [i] });
    } catch (error) {
      failures.push(`${from.name}->${to.name}: ${(error as Error).message}`);
    }
  }
  return failures;
}

Deno.test("new Node() refuses a previousKey that is not a key, or is the current key", () => {
  const net = testNetwork("rot");
  throws(
    () => new Node({ ...net, name: "a", previousKey: "nope" }),
    /previousKey must be 32 bytes/,
  );
  throws(
    () => new Node({ ...net, name: "a", previousKey: net.networkKey }),
    /previousKey is the same as networkKey/,
  );
});

Deno.test({
  name: "a network rotates its key through a relay, node by node, with zero failed calls",
  async fn() {
    await using relay = await startRelay();
    const oldKey = generateKey();
    const newKey = generateKey();
    const net = { network: testNetwork("rot").network, networkKey: oldKey };
    const names = ["a", "b", "c"];
    const options = (name: string, extra: Partial<NodeOptions<Node>> = {}) =>
      remoteOptions(net, name, relay.address, { commands: echo, ...extra });
    const nodes = new Map(names.map((name) => [name, new Node(options(name))]));
    try {
      for (const node of nodes.values()) await node.start();
      for (const node of nodes.values()) {
        await node.waitForPeer(names.filter((n) => n !== node.name));
      }
      deepStrictEqual(await mesh([...nodes.values()]), []);
      // Each round: one node restarts; the other two call each other all along.
      type Round = [string, Partial<NodeOptions<Node>>];
      const rounds: Round[] = [
        ...names.map((name): Round => [name, { networkKey: newKey, previousKey: oldKey }]),
        ...names.map((name): Round => [name, { networkKey: newKey }]),
      ];
      for (const [name, keys] of rounds) {
        const others = [...nodes.values()].filter((node) => node.name !== name);
        const stop = new AbortController();
        const loop = callLoop(others[0]!, others[1]!, stop.signal);
        await nodes.get(name)!.close();
        const fresh = new Node(options(name, keys));
        nodes.set(name, fresh);
        await fresh.start();
        await fresh.waitForPeer(others.map((node) => node.name));
        // The others know the new instance (not the closed one they may still list).
        for (const other of others) {
          await waitFor(
            () => other.peers.some((p) => p.name === name && p.instance === fresh.instance),
            `${other.name} to see the new ${name}`,
          );
        }
        stop.abort();
        deepStrictEqual(await loop, [], `while ${name} restarted`);
        deepStrictEqual(await mesh([...nodes.values()]), [], `after ${name} restarted`);
      }
    } finally {
      await Promise.all([...nodes.values()].map((node) => node.close()));
    }
  },
});

Deno.test({
  name: "a node holding the previous key registers at each relay under both network ids",
  async fn() {
    await using relay = await startRelay();
    const net = testNetwork("rot");
    await using node = new Node(
      remoteOptions(net, "both", relay.address, { previousKey: generateKey() }),
    );
    await node.start();
    strictEqual(relay.relay.stats.nodes, 2);
    strictEqual(relay.relay.stats.networks, 2);
    deepStrictEqual(node.relays.map((r) => r.address), [relay.address]);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "on the LAN, a rotated node and a node on the old key call each other directly",
  async fn() {
    const oldKey = generateKey();
    const net = { network: testNetwork("rot").network, networkKey: oldKey };
    await using old = new Node(nodeOptions(net, "old", { commands: echo }));
    await using rotated = new Node(
      nodeOptions(net, "rotated", {
        commands: echo,
        networkKey: generateKey(),
        previousKey: oldKey,
      }),
    );
    await old.start();
    await rotated.start();
    await old.waitForPeer("rotated");
    await rotated.waitForPeer("old");
    strictEqual(await old.command("echo", { target: "rotated", args: ["o"] }), "o");
    strictEqual(await rotated.command("echo", { target: "old", args: ["r"] }), "r");
    strictEqual(old.peers.find((p) => p.name === "rotated")?.local, true);
    strictEqual(rotated.peers.find((p) => p.name === "old")?.local, true);
  },
});

Deno.test({
  name:
    "two nodes that both hold the current and previous key call each other under the current one",
  async fn() {
    await using relay = await startRelay();
    const net = testNetwork("rot");
    const previousKey = generateKey();
    const extra = { commands: echo, previousKey, debug: true };
    await using a = new Node(remoteOptions(net, "a", relay.address, extra));
    await using b = new Node(remoteOptions(net, "b", relay.address, extra));
    await a.start();
    await b.start();
    // A barrier: c registers under the current key only, after b; once a lists c, a's
    // current-key relay link has told it about b too (MEMBERS arrive in order).
    await using c = new Node(remoteOptions(net, "c", relay.address, { commands: echo }));
    await c.start();
    await a.waitForPeer(["b", "c"]);
    const routes: unknown[] = [];
    a.addEventListener("debug", (e) => routes.push(e.detail.route));
    for (let i = 0; i < 5; i++) strictEqual(await a.command("echo", { target: "b", args: [i] }), i);
    deepStrictEqual(new Set(routes), new Set([relay.address]));
    deepStrictEqual(a.peers.find((p) => p.name === "b")?.relays, [relay.address]);
  },
});
