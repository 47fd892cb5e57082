/**
 * `node.waitForRelay()`: resolves with the first relay up (as `relayup`
 * means it), waits for one that comes up later, and otherwise rejects with
 * a typed error: `NoRelayError` on timeout or without `servers`, the
 * signal's reason on abort, `NodeClosedError` when the node closes.
 *
 * Remote-only nodes and relays on loopback: no multicast, so these tests
 * run anywhere. Every wait is bounded (`deadline`, `HANG_TIMEOUT`).
 */

import { deepStrictEqual, match, ok, rejects, strictEqual } from "node:assert/strict";
import { Node, NodeClosedError, NoRelayError } from "../mod.ts";
import { Relay } from "../relay/mod.ts";
import { deadline, nextEvent, testNetwork } from "./_fixtures.ts";
import { type RelayProcess, remoteOptions, spawnRelay, startRelay } from "./_relay_fixtures.ts";

/** A short wait for relays that never come up, ms: only makes the timeout path end soon. */
const SHORT = 300;

/** A loopback port a relay listened on a moment ago and no longer does. */
async function freedPort(): Promise<number> {
  const relay = new Relay({ hostname: "127.0.0.1", port: 0 });
  await relay.start();
  const port = relay.addr.port;
  await relay.close();
  return port;
}

/** The rejection of `promise` (within the hang limit); fails when it resolves. */
async function rejection(promise: Promise<unknown>, what: string): Promise<unknown> {
  return await deadline(
    promise.then((value) => {
      throw new Error(`${what} resolved with ${JSON.stringify(value)}`);
    }, (error) => error),
    what,
  );
}

Deno.test("waitForRelay() resolves at once with the relay when one is already up", async () => {
  const net = testNetwork("wfr");
  await using relay = await startRelay();
  await using node = new Node(remoteOptions(net, "gw", relay.address));
  await node.start();
  const first = await deadline(node.waitForRelay(), "the relay to come up");
  deepStrictEqual(first, { address: relay.address, up: true, maintained: true });
  // Up already: it answers before a 1 ms timer could fire, and arms none.
  deepStrictEqual(await node.waitForRelay({ timeout: 1 }), first);
});

Deno.test("waitForRelay() resolves once a relay that was down comes up later", async () => {
  const net = testNetwork("wfr");
  const port = await freedPort();
  const address = `127.0.0.1:${port}`;
  await using node = new Node(remoteOptions(net, "gw", address));
  await node.start(); // The relay is down: start() resolves, the node retries in the background.
  strictEqual(node.relays[0]?.up, false);
  const waiting = node.waitForRelay({ timeout: 20_000 });
  await using relay = new Relay({ hostname: "127.0.0.1", port });
  await relay.start();
  const info = await deadline(waiting, "the relay started after the node", 20_000);
  deepStrictEqual(info, { address, up: true, maintained: true });
  deepStrictEqual(node.relays, [info]);
});

Deno.test("waitForRelay() before start() waits, and resolves once start() brings a relay up", async () => {
  const net = testNetwork("wfr");
  await using relay = await startRelay();
  await using node = new Node(remoteOptions(net, "gw", relay.address));
  const waiting = node.waitForRelay();
  await node.start();
  const info = await deadline(waiting, "the relay, once started");
  deepStrictEqual(info, { address: relay.address, up: true, maintained: true });
});

Deno.test("waitForRelay() resolves only once the relay's members are known, as relayup", async () => {
  const net = testNetwork("wfr");
  await using relay = await startRelay();
  await using calc = new Node(remoteOptions(net, "calc", relay.address));
  await calc.start();
  await deadline(calc.waitForRelay(), "calc's relay");
  await using gw = new Node(remoteOptions(net, "gw", relay.address));
  let ups = 0;
  gw.addEventListener("relayup", () => ups++);
  // calc joins while gw applies the member list: registered (`up` in node.relays), but
  // relayup not fired yet. A wait started then resolves only with relayup.
  let registered = false;
  let during: Promise<number> | undefined;
  gw.addEventListener("peerjoin", () => {
    registered = gw.relays[0]?.up === true;
    during = gw.waitForRelay().then(() => ups);
  }, { once: true });
  await gw.start();
  ok(during, "calc joined during start()");
  ok(registered, "the relay was registered when calc joined");
  strictEqual(await deadline(during, "the wait started mid-registration"), 1);
  ok(gw.peers.some((peer) => peer.name === "calc"), "calc, listed at registration, is known");
});

Deno.test("waitForRelay() rejects with NoRelayError naming the relay when none comes up in time", async () => {
  const net = testNetwork("wfr");
  const address = `127.0.0.1:${await freedPort()}`;
  await using node = new Node(remoteOptions(net, "gw", address));
  // Waiting from before start() hears the relay's refusal too, and names it.
  const waiting = node.waitForRelay({ timeout: SHORT });
  await node.start();
  const error = await rejection(waiting, "waitForRelay() with no relay listening");
  ok(error instanceof NoRelayError, String(error));
  strictEqual(error.name, "NoRelayError");
  strictEqual(error.node, "gw");
  deepStrictEqual(error.relays, [address]);
  strictEqual(error.timeout, SHORT);
  match(error.message, /^Cannot reach a relay from node 'gw': /);
  match(error.message, new RegExp(`${address.replaceAll(".", "\\.")} \\(cannot connect: `));
  match(error.message, new RegExp(`did not come up within ${SHORT} ms; check each address`));
  match(error.message, /the relay's log and the network key/);
  // A wait started later (the refusal was reported before it) still names the relay.
  const later = await rejection(node.waitForRelay({ timeout: SHORT }), "a second wait");
  ok(later instanceof NoRelayError, String(later));
  match(later.message, new RegExp(`'gw': ${address.replaceAll(".", "\\.")} did not come up`));
});

Deno.test("waitForRelay() rejects with the signal's reason when it aborts", async () => {
  const net = testNetwork("wfr");
  const address = `127.0.0.1:${await freedPort()}`;
  await using node = new Node(remoteOptions(net, "gw", address));
  await node.start();
  const controller = new AbortController();
  const reason = new Error("the request went away");
  const waiting = node.waitForRelay({ timeout: null, signal: controller.signal });
  controller.abort(reason);
  strictEqual(await rejection(waiting, "an aborted wait"), reason);
  const gone = new Error("aborted before");
  const early = node.waitForRelay({ signal: AbortSignal.abort(gone) });
  strictEqual(await rejection(early, "a wait with an aborted signal"), gone);
});

Deno.test("waitForRelay() rejects with NodeClosedError when the node closes meanwhile", async () => {
  const net = testNetwork("wfr");
  const address = `127.0.0.1:${await freedPort()}`;
  const node = new Node(remoteOptions(net, "gw", address));
  await node.start();
  const waiting = node.waitForRelay({ timeout: Infinity });
  await node.close();
  const error = await rejection(waiting, "a wait on a closing node");
  ok(error instanceof NodeClosedError, String(error));
  await rejects(node.waitForRelay(), NodeClosedError, "a closed node refuses at once");
  // As waitForPeer() does.
  await rejects(node.waitForPeer("calc"), NodeClosedError);
});

Deno.test("waitForRelay() refuses at once, naming the servers option, when the node has none", async () => {
  const net = testNetwork("wfr");
  const node = new Node({ name: "lan", ...net, hostname: "127.0.0.1" }); // never started
  const error = await rejection(node.waitForRelay({ timeout: null }), "a wait without servers");
  ok(error instanceof NoRelayError, String(error));
  deepStrictEqual(error.relays, []);
  strictEqual(error.timeout, 0);
  match(error.message, /^Cannot reach a relay from node 'lan': it has no servers/);
  match(error.message, /list relays in the servers option/);
  await node.close();
});

Deno.test("waitForRelay() checks its options", async () => {
  const net = testNetwork("wfr");
  await using node = new Node(remoteOptions(net, "gw", "127.0.0.1:1"));
  await rejects(node.waitForRelay({ timeout: 0 }), RangeError);
  await rejects(node.waitForRelay({ timeout: -5 }), RangeError);
  await rejects(node.waitForRelay(null as unknown as object), TypeError);
  await rejects(
    node.waitForRelay({ signal: "stop" as unknown as AbortSignal }),
    /signal must be an AbortSignal/,
  );
});

Deno.test("waitForRelay() resolves again after its relay is killed and restarted", async () => {
  const net = testNetwork("wfr");
  const relays: RelayProcess[] = [await spawnRelay()];
  try {
    const { address, port } = relays[0]!;
    await using node = new Node(remoteOptions(net, "gw", address));
    await node.start();
    await deadline(node.waitForRelay(), "the relay");
    const down = nextEvent(node, "relaydown", (detail) => detail.relay === address);
    relays[0]!.process.kill("SIGKILL");
    await down;
    const error = await rejection(node.waitForRelay({ timeout: SHORT }), "a wait while it is down");
    ok(error instanceof NoRelayError, String(error));
    const waiting = node.waitForRelay({ timeout: 20_000 });
    relays.push(await spawnRelay({ port }));
    const info = await deadline(waiting, "the restarted relay", 20_000);
    deepStrictEqual(info, { address, up: true, maintained: true });
  } finally {
    for (const relay of relays) await relay.process.stop("SIGKILL").catch(() => {});
  }
});
