/**
 * Relays: nodes on different LANs call each other through them, end to end
 * encrypted; relays keep their limits, refuse impostors, fail over and log
 * nothing about peers.
 *
 * Remote-only nodes (`useLocal: false`) and relays never advertise on UDP,
 * so tests that use only them run anywhere; a test that also starts a LAN
 * node needs the private network namespace (`testIf(IN_NETNS, ...)`).
 */

import { deepStrictEqual, match, ok, rejects, strictEqual } from "node:assert/strict";
import {
  type CallContext,
  MessageTooLargeError,
  NameTakenError,
  Node,
  NodeEvent,
  RelayRefusedError,
  RemoteError,
} from "../mod.ts";
import { Relay } from "../relay/mod.ts";
import { RELAY_VERSION } from "../relay.ts";
import { CloseCode, FrameType, PROTOCOL_VERSION } from "../lib/frame.ts";
import {
  decodeMembers,
  encodeBeat,
  encodeControl,
  RELAY_PROTOCOL_VERSION,
} from "../lib/relay_protocol.ts";
import { signRegistration } from "../lib/admission.ts";
import { IN_NETNS, NETNS_REASON, testIf } from "./_env.ts";
import {
  deadline,
  nextEvent,
  nodeOptions,
  sealFrame,
  sleep,
  testNetwork,
  waitFor,
} from "./_fixtures.ts";
import {
  codeName,
  dataFrame,
  lineJson,
  meetVia,
  networkIdOf,
  PING,
  pseudonymOf,
  rawIdentity,
  reachesVia,
  registerFrame,
  type RelayProcess,
  RelayRawClient,
  remoteOptions,
  spawnRelay,
  spawnRelayNode,
  startRelay,
} from "./_relay_fixtures.ts";

/** The relay's gauges: registered nodes, networks with a node, open connections. */
function counts(relay: Relay): { nodes: number; networks: number; connections: number } {
  const { nodes, networks, connections } = relay.stats;
  return { nodes, networks, connections };
}

Deno.test({
  name: "two remote-only nodes in two processes call each other through a relay process",
  async fn() {
    const net = testNetwork("relay");
    await using relay = await spawnRelay();
    const servers = [relay.address];
    await using left = await spawnRelayNode({ name: "left", net, servers, call: "right" });
    await using right = await spawnRelayNode({ name: "right", net, servers, call: "left" });
    const [fromLeft, fromRight] = await Promise.all([left.line("result "), right.line("result ")]);
    const leftSaw = lineJson(fromLeft, "result ");
    const rightSaw = lineJson(fromRight, "result ");
    deepStrictEqual(leftSaw, {
      name: "right",
      pid: right.child.pid,
      caller: "left",
      via: "relay",
      relay: relay.address,
    });
    deepStrictEqual(rightSaw, {
      name: "left",
      pid: left.child.pid,
      caller: "right",
      via: "relay",
      relay: relay.address,
    });
    for (const node of [left, right]) {
      const status = await node.stop("SIGTERM");
      strictEqual(status.code, 0, node.stderr);
    }
  },
});

Deno.test({
  name: "a call through an in-process relay reports via 'relay' and the relay's address",
  async fn() {
    const net = testNetwork("relay");
    await using relay = new Relay({ hostname: "127.0.0.1", port: 0 });
    await relay.start();
    const address = `127.0.0.1:${relay.addr.port}`;
    await using a = new Node(remoteOptions(net, "a", address, {
      commands: {
        who: (_n, _a, _k, ctx) => ({ caller: ctx.caller, via: ctx.via, relay: ctx.relay }),
      },
    }));
    await using b = new Node(remoteOptions(net, "b", address));
    await a.start();
    await b.start();
    await meetVia([a, b], address);
    const seen = await deadline(b.command("who", { target: "a", raiseErrors: true }), "the call");
    deepStrictEqual(seen, { caller: "b", via: "relay", relay: address });
    ok(a.address === null, "a remote-only node has no listener");
  },
});

Deno.test({
  name:
    "calls fail over to another relay when the relay carrying them is killed, and each runs at most once",
  async fn() {
    const net = testNetwork("relay");
    await using r1 = await spawnRelay();
    await using r2 = await spawnRelay();
    const servers = [r1.address, r2.address];
    const runs = new Map<number, number>();
    const carriers = new Set<string>();
    await using target = new Node(remoteOptions(net, "target", servers, {
      commands: {
        count: (_n, args, _k, ctx) => {
          const value = args[0] as number;
          runs.set(value, (runs.get(value) ?? 0) + 1);
          carriers.add(ctx.relay!);
          return value;
        },
      },
    }));
    await using caller = new Node(remoteOptions(net, "caller", servers));
    await target.start();
    await caller.start();
    await meetVia([target, caller], r1.address);
    await meetVia([target, caller], r2.address);
    const total = 300;
    const inFlight = 4;
    let next = 0;
    let done = 0;
    const failures: string[] = [];
    let killed: string | null = null;
    const worker = async () => {
      while (next < total) {
        const value = next++;
        try {
          const got = await caller.command("count", {
            target: "target",
            args: [value],
            raiseErrors: true,
            timeout: 8000,
          });
          strictEqual(got, value);
        } catch (error) {
          failures.push(`${value}: ${(error as Error).name}: ${(error as Error).message}`);
        }
        done++;
        if (done === 50 && killed === null) {
          // Kill the relay that carried the calls so far, with calls in flight.
          killed = [...carriers][0]!;
          (killed === r1.address ? r1 : r2).process.kill("SIGKILL");
        }
      }
    };
    await deadline(
      Promise.all(Array.from({ length: inFlight }, worker)),
      "the stream of calls",
      30_000,
    );
    deepStrictEqual(failures, []);
    ok(killed !== null);
    strictEqual(runs.size, total);
    const repeated = [...runs].filter(([, n]) => n !== 1);
    deepStrictEqual(repeated, [], "each request ran exactly once");
    ok(carriers.size === 2, `calls went through both relays: ${[...carriers]}`);
  },
});

Deno.test({
  name: "calls made after a relay is killed go through the other relay the target is on",
  async fn() {
    const net = testNetwork("relay");
    await using r1 = await spawnRelay();
    await using r2 = await spawnRelay();
    const servers = [r1.address, r2.address];
    await using target = new Node(remoteOptions(net, "target", servers, {
      commands: { where: (_n, _a, _k, ctx) => ctx.relay },
    }));
    await using caller = new Node(remoteOptions(net, "caller", servers));
    await target.start();
    await caller.start();
    await meetVia([target, caller], r1.address);
    await meetVia([target, caller], r2.address);
    const first = await caller.command<string>("where", { target: "target", raiseErrors: true });
    const [dead, alive] = first === r1.address ? [r1, r2] : [r2, r1];
    const down = nextEvent(caller, "relaydown", (d) => d.relay === dead.address);
    dead.process.kill("SIGKILL");
    await down;
    await waitFor(
      () => !reachesVia(caller, "target", dead.address),
      "the caller to forget the target's route through the dead relay",
    );
    for (let i = 0; i < 20; i++) {
      strictEqual(
        await caller.command("where", { target: "target", raiseErrors: true }),
        alive.address,
      );
    }
    const info = caller.relays.find((r) => r.address === dead.address);
    deepStrictEqual(info, { address: dead.address, up: false, maintained: true });
  },
});

Deno.test({
  name: "a relay restarted on the same port is reconnected automatically and calls work again",
  async fn() {
    const net = testNetwork("relay");
    const relays: RelayProcess[] = [await spawnRelay()];
    try {
      const { address, port } = relays[0]!;
      await using a = new Node(remoteOptions(net, "a", address, {
        commands: { add: (_n, args) => (args as number[]).reduce((x, y) => x + y, 0) },
      }));
      await using b = new Node(remoteOptions(net, "b", address));
      const ups: string[] = [];
      const downs: string[] = [];
      for (const node of [a, b]) {
        node.addEventListener("relayup", (e) => ups.push(`${node.name} ${e.detail.relay}`));
        node.addEventListener("relaydown", (e) => downs.push(`${node.name} ${e.detail.relay}`));
      }
      await a.start();
      await b.start();
      await meetVia([a, b], address);
      strictEqual(await b.command("add", { target: "a", args: [1, 2], raiseErrors: true }), 3);

      relays[0]!.process.kill("SIGKILL");
      await waitFor(() => downs.length === 2, "both nodes to see the relay go down");
      await waitFor(() => b.peers.length === 0, "b to forget a, reachable only through the relay");
      strictEqual(b.relays[0]?.up, false);

      relays.push(await spawnRelay({ port }));
      await waitFor(() => ups.length === 4, "both nodes to register again");
      deepStrictEqual(ups.toSorted(), [
        `a ${address}`,
        `a ${address}`,
        `b ${address}`,
        `b ${address}`,
      ]);
      await meetVia([a, b], address);
      strictEqual(await b.command("add", { target: "a", args: [3, 4], raiseErrors: true }), 7);
      deepStrictEqual(b.relays, [{ address, up: true, maintained: true }]);
    } finally {
      for (const relay of relays) await relay.process.stop("SIGKILL").catch(() => {});
    }
  },
});

Deno.test({
  name:
    "a relay refuses a second live instance of a name (NameTakenError) and accepts the same instance reconnecting",
  async fn() {
    const net = testNetwork("relay");
    const relays: RelayProcess[] = [await spawnRelay()];
    try {
      const { address, port } = relays[0]!;
      await using alice = new Node(remoteOptions(net, "alice", address));
      let ups = 0;
      alice.addEventListener("relayup", () => ups++);
      await alice.start();
      strictEqual(ups, 1);

      const impostor = new Node(remoteOptions(net, "alice", address));
      const refused = await deadline(impostor.start().then(() => null, (e) => e), "start()");
      ok(refused instanceof NameTakenError, String(refused));
      strictEqual(refused.peer, "alice");
      strictEqual(refused.network, net.network);
      await impostor.close();

      // The relay dies and comes back: alice (same instance) registers again.
      relays[0]!.process.kill("SIGKILL");
      relays.push(await spawnRelay({ port }));
      await waitFor(() => ups === 2, "alice to register again with the restarted relay");
      deepStrictEqual(alice.relays, [{ address, up: true, maintained: true }]);

      // And she holds the name again.
      const second = new Node(remoteOptions(net, "alice", address));
      const again = await deadline(second.start().then(() => null, (e) => e), "start()");
      ok(again instanceof NameTakenError, String(again));
      await second.close();
    } finally {
      for (const relay of relays) await relay.process.stop("SIGKILL").catch(() => {});
    }
  },
});

Deno.test({
  name:
    "a relay lets the same instance replace its live connection silently and refuses another instance",
  async fn() {
    const net = testNetwork("relay");
    await using relay = new Relay({ hostname: "127.0.0.1", port: 0 });
    await relay.start();
    const address = `127.0.0.1:${relay.addr.port}`;
    const observerId = await rawIdentity(net, "observer");
    await using observer = await RelayRawClient.connect(address);
    await observer.register(observerId);
    // The same instance is the holder of the same instance key.
    const x = await rawIdentity(net, "x");
    await using first = await RelayRawClient.connect(address);
    await first.register(x);
    await using second = await RelayRawClient.connect(address);
    const registered = await second.register(x);
    deepStrictEqual(registered.members, [[
      observerId.pseudonym,
      observerId.credentials.instance.id,
      observerId.credentials.card,
    ]]);
    const replaced = await first.outcome();
    strictEqual(replaced.goaway?.code, CloseCode.NORMAL);
    ok(replaced.goaway?.reason.includes("replaced"), replaced.goaway?.reason);

    // Another instance of x (another instance key) is refused.
    await using third = await RelayRawClient.connect(address);
    await third.sendRegister(await rawIdentity(net, "x"));
    const refused = await third.outcome();
    strictEqual(codeName(refused.goaway?.code), "NAME_TAKEN");

    // A later join is pushed after any leave of x would have been: there was none.
    const laterId = await rawIdentity(net, "later");
    await using later = await RelayRawClient.connect(address);
    await later.register(laterId);
    const pushes = () =>
      observer.frames.filter((f) => f.type === FrameType.MEMBERS).map((f) => decodeMembers(f));
    await waitFor(
      () => pushes().some((m) => m.join.some(([pseudonym]) => pseudonym === laterId.pseudonym)),
      "the observer to hear of 'later'",
    );
    deepStrictEqual(pushes().flatMap((m) => m.leave), []);
    deepStrictEqual(
      pushes().flatMap((m) => m.join.map(([pseudonym]) => pseudonym))
        .filter((pseudonym) => pseudonym !== observerId.pseudonym),
      [x.pseudonym, laterId.pseudonym],
    );
    strictEqual(relay.stats.nodes, 3);
  },
});

Deno.test({
  name: "a relay full of nodes refuses one more with GOAWAY FULL",
  async fn() {
    const net = testNetwork("relay");
    await using relay = new Relay({ hostname: "127.0.0.1", port: 0, maxNodes: 2 });
    await relay.start();
    const address = `127.0.0.1:${relay.addr.port}`;
    await using a = await RelayRawClient.connect(address);
    await a.register(await rawIdentity(net, "a"));
    await using b = await RelayRawClient.connect(address);
    await b.register(await rawIdentity(testNetwork("other"), "b"));
    await using c = await RelayRawClient.connect(address);
    await c.sendRegister(await rawIdentity(net, "c"));
    strictEqual(codeName((await c.outcome()).goaway?.code), "FULL");
    deepStrictEqual(counts(relay), { nodes: 2, networks: 2, connections: 2 });
  },
});

Deno.test({
  name: "a member cannot call through a relay as another name: the stamped sender is checked",
  async fn() {
    const net = testNetwork("relay");
    const { relay, address } = await startRelay();
    await using _relay = relay;
    const calls: string[] = [];
    await using bob = new Node(remoteOptions(net, "bob", address, {
      commands: { secret: (_n, args, _k, ctx) => void calls.push(`${ctx.caller} ${args[0]}`) },
    }));
    await using alice = new Node(remoteOptions(net, "alice", address));
    let bobDown = 0;
    bob.addEventListener("relaydown", () => bobDown++);
    await bob.start();
    await alice.start();
    await meetVia([alice, bob], address);

    // Mallory holds the network key, registers as herself and seals a request as alice.
    await using mallory = await RelayRawClient.connect(address);
    const malloryId = await rawIdentity(net, "mallory");
    const malloryInstance = malloryId.credentials.instance.id;
    await mallory.register(malloryId);
    await mallory.write(
      await sealFrame(net, { name: "alice", instance: alice.instance }, "bob", [
        { k: "q", id: 1, p: "secret", a: ["forged"], kw: {} },
      ], { id: 1 }),
    );
    await mallory.write(
      await sealFrame(net, { name: "mallory", instance: malloryInstance }, "bob", [
        { k: "q", id: 2, p: "secret", a: ["honest"], kw: {} },
      ], { id: 2 }),
    );
    // Either bob ran mallory's honest request after refusing the forged one, or he dropped
    // the relay connection on the forged one (the honest one is then lost with it).
    await waitFor(() => calls.length > 0 || bobDown > 0, "bob to handle mallory's frames");
    await meetVia([alice, bob], address);
    await alice.command("secret", { target: "bob", args: ["real"], raiseErrors: true });
    ok(!calls.some((call) => call.endsWith(" forged")), `calls: ${calls}`);
    ok(calls.includes("alice real"), `calls: ${calls}`);
    deepStrictEqual(calls.filter((call) => call.startsWith("alice ")), ["alice real"]);
  },
});

Deno.test({
  name: "a junk frame from one relay member does not cut the receiver off the relay",
  async fn() {
    const net = testNetwork("relay");
    const { relay, address } = await startRelay();
    await using _relay = relay;
    const calls: string[] = [];
    await using bob = new Node(remoteOptions(net, "bob", address, {
      commands: { secret: (_n, args, _k, ctx) => void calls.push(`${ctx.caller} ${args[0]}`) },
    }));
    let bobDown = 0;
    bob.addEventListener("relaydown", () => bobDown++);
    await bob.start();
    await using mallory = await RelayRawClient.connect(address);
    const malloryId = await rawIdentity(net, "mallory");
    const instance = malloryId.credentials.instance.id;
    await mallory.register(malloryId);
    await mallory.write(
      dataFrame(
        malloryId.networkId,
        pseudonymOf(net, "bob"),
        malloryId.pseudonym,
        new TextEncoder().encode("junk"),
      ),
    );
    await mallory.write(
      await sealFrame(net, { name: "mallory", instance }, "bob", [
        { k: "q", id: 2, p: "secret", a: ["honest"], kw: {} },
      ], { id: 2 }),
    );
    await waitFor(() => calls.length > 0 || bobDown > 0, "bob to handle mallory's frames");
    deepStrictEqual(calls, ["mallory honest"]);
    strictEqual(bobDown, 0);
  },
});

Deno.test({
  name:
    "a node learns another relay from a peer's sealed report and connects to it, within maxRemotes",
  async fn(t) {
    const net = testNetwork("relay");
    const one = await startRelay();
    const two = await startRelay();
    await using _r1 = one.relay;
    await using _r2 = two.relay;
    await using a = new Node(remoteOptions(net, "a", [one.address, two.address]));
    await a.start();
    deepStrictEqual(a.relays.map((r) => r.up), [true, true]);

    await t.step("without a limit, c connects to the reported relay", async () => {
      await using c = new Node(remoteOptions(net, "c", one.address));
      const learned = nextEvent(c, "relayup", (d) => d.relay === two.address);
      await c.start();
      deepStrictEqual(await learned, { relay: two.address, reason: "registered" });
      deepStrictEqual(
        c.relays,
        [
          { address: one.address, up: true, maintained: true },
          { address: two.address, up: true, maintained: false },
        ].sort((x, y) => x.address < y.address ? -1 : 1),
      );
      await waitFor(
        () => reachesVia(c, "a", two.address),
        "c to reach a through the learned relay",
      );

      // A learned relay that fails is dropped, not retried.
      await two.relay.close();
      await waitFor(() => c.relays.length === 1, "c to drop the learned relay");
      deepStrictEqual(c.relays, [{ address: one.address, up: true, maintained: true }]);
    });

    await t.step("with maxRemotes: 1, d does not connect to it", async () => {
      await using d = new Node(remoteOptions(net, "d", one.address, {
        maxRemotes: 1,
        commands: { relays: (node) => node.relays.length },
      }));
      let ups = 0;
      d.addEventListener("relayup", () => ups++);
      // Start a fresh second relay so that a has one to report.
      const three = await startRelay();
      await using _r3 = three.relay;
      const extra = new Node(remoteOptions(net, "a2", [one.address, three.address]));
      await using _extra = extra;
      await extra.start();
      await d.start();
      await meetVia([extra, d], one.address);
      // a2's report reached d before this call: both travel in order on one relay connection.
      strictEqual(await extra.command("relays", { target: "d", raiseErrors: true }), 1);
      deepStrictEqual(d.relays, [{ address: one.address, up: true, maintained: true }]);
      strictEqual(ups, 1);
    });
  },
});

Deno.test({
  name:
    "a relay restricted to other networks refuses a node: start() rejects with RelayRefusedError",
  async fn() {
    const served = testNetwork("served");
    const other = testNetwork("other");
    const { relay, address } = await startRelay({
      networks: [`${served.network}:${await networkIdOf(served)}`],
    });
    await using _relay = relay;
    await using member = new Node(remoteOptions(served, "member", address));
    await member.start();
    const stranger = new Node(remoteOptions(other, "stranger", address));
    let ups = 0;
    stranger.addEventListener("relayup", () => ups++);
    const error = await deadline(stranger.start().then(() => null, (e) => e), "start()");
    ok(error instanceof RelayRefusedError, String(error));
    strictEqual(error.relay, address);
    // The relay knows networks by id only: its reason cannot name the network.
    ok(error.message.includes("does not serve that network"), error.message);
    strictEqual(ups, 0);
    await stranger.close();
    deepStrictEqual(counts(relay), { nodes: 1, networks: 1, connections: 1 });
  },
});

/** Bytes of a frame header announcing `length` bytes, with `version` and `type`. */
function rawHeader(
  length: number,
  version: number = PROTOCOL_VERSION,
  type: number = FrameType.PING,
): Uint8Array {
  const bytes = new Uint8Array(4 + Math.min(length, 15));
  const view = new DataView(bytes.buffer);
  view.setUint32(0, length);
  bytes[4] = version;
  bytes[5] = type;
  return bytes;
}

Deno.test({
  name: "garbage, truncated and oversize frames at a relay close only their own connection",
  async fn(t) {
    const net = testNetwork("relay");
    const { relay, address } = await startRelay({ maxFrame: 64 * 1024 });
    await using _relay = relay;
    await using a = new Node(remoteOptions(net, "a", address, {
      commands: { add: (_n, args) => (args as number[]).reduce((x, y) => x + y, 0) },
    }));
    await using b = new Node(remoteOptions(net, "b", address));
    await a.start();
    await b.start();
    await meetVia([a, b], address);
    const text = new TextEncoder();
    // Registers nowhere: every REGISTER of it below is refused.
    const bad = await rawIdentity(net, "bad");
    const cases: Array<
      { name: string; code: string | null; send: (c: RelayRawClient) => Promise<void> }
    > = [
      {
        name: "an HTTP request",
        code: "TOO_LARGE",
        send: (c) => c.write(text.encode("GET / HTTP/1.1\r\nHost: relay\r\n\r\n")),
      },
      {
        name: "a frame of another protocol version",
        code: "VERSION",
        send: (c) => c.write(rawHeader(15, 9)),
      },
      {
        name: "a frame of an unknown type",
        code: "MALFORMED",
        send: (c) => c.write(rawHeader(15, PROTOCOL_VERSION, 0x7f)),
      },
      {
        name: "a frame shorter than its header",
        code: "MALFORMED",
        send: (c) => c.write(rawHeader(3)),
      },
      {
        name: "a frame above maxFrame",
        code: "TOO_LARGE",
        send: (c) => c.write(rawHeader(1024 * 1024, PROTOCOL_VERSION, FrameType.DATA)),
      },
      {
        name: "a frame cut short by EOF",
        code: null,
        send: async (c) => {
          await c.write(rawHeader(500, PROTOCOL_VERSION, FrameType.DATA));
          await c.closeWrite();
        },
      },
      {
        name: "a PONG before REGISTER",
        code: "POLICY",
        send: (c) => c.write(encodeBeat(FrameType.PONG)),
      },
      {
        name: "a malformed REGISTER body",
        code: "AUTH",
        send: async (c) => {
          await c.nonce();
          await c.write(
            encodeControl(FrameType.REGISTER, bad.networkId, bad.pseudonym, {
              v: RELAY_PROTOCOL_VERSION,
              i: "nope",
            }),
          );
        },
      },
      {
        name: "a REGISTER of an older registration version",
        code: "VERSION",
        send: async (c) => {
          await c.nonce();
          await c.write(encodeControl(FrameType.REGISTER, bad.networkId, bad.pseudonym, { v: 1 }));
        },
      },
      {
        name: "a REGISTER whose sender is not a pseudonym",
        code: "AUTH",
        send: async (c) => {
          const body = await signRegistration({
            ...bad.credentials,
            name: bad.name,
            nonce: await c.nonce(),
            address,
            tick: 1000,
            clientOnly: false,
          });
          await c.write(encodeControl(FrameType.REGISTER, bad.networkId, "bad.name", body));
        },
      },
      {
        name: "a REGISTER proving another nonce",
        code: "AUTH",
        send: async (c) => {
          await c.nonce();
          await c.write(await registerFrame(bad, new Uint8Array(32), address));
        },
      },
      {
        name: "a REGISTER proving another relay address",
        code: "AUTH",
        send: (c) => c.sendRegister(bad, { address: "127.0.0.1:1" }),
      },
      {
        name: "a registered client's DATA frame for another network",
        code: "ROUTING",
        send: async (c) => {
          const wanderer = await rawIdentity(net, "wanderer");
          await c.register(wanderer);
          const elsewhere = await networkIdOf(testNetwork("elsewhere"));
          await c.write(
            dataFrame(elsewhere, pseudonymOf(net, "a"), wanderer.pseudonym, new Uint8Array(8)),
          );
        },
      },
      {
        name: "a registered client's garbage",
        code: "TOO_LARGE",
        send: async (c) => {
          await c.register(await rawIdentity(net, "babbler"));
          await c.write(text.encode("\xff\xff\xff\xff garbage"));
        },
      },
      {
        name: "a registered client's REGISTERED frame (relay to node only)",
        code: "MALFORMED",
        send: async (c) => {
          const mimic = await rawIdentity(net, "mimic");
          await c.register(mimic);
          await c.write(
            encodeControl(FrameType.REGISTERED, mimic.networkId, mimic.pseudonym, {}),
          );
        },
      },
    ];
    for (const { name, code, send } of cases) {
      await t.step(
        `${name} closes that connection${code ? ` with GOAWAY ${code}` : ""}`,
        async () => {
          await using client = await RelayRawClient.connect(address);
          await send(client);
          const outcome = await client.outcome();
          ok(outcome.closed);
          if (code !== null) {
            strictEqual(codeName(outcome.goaway?.code), code, outcome.goaway?.reason);
          }
          strictEqual(await b.command("add", { target: "a", args: [2, 3], raiseErrors: true }), 5);
        },
      );
    }
    await waitFor(() => relay.stats.connections === 2, "the relay to forget the raw clients");
    deepStrictEqual(counts(relay), { nodes: 2, networks: 1, connections: 2 });
    deepStrictEqual(a.relays.map((r) => r.up), [true]);
    deepStrictEqual(b.relays.map((r) => r.up), [true]);
  },
});

Deno.test({
  name: "a relay ignores a PING before REGISTER and registers the node that sent it",
  async fn() {
    const net = testNetwork("relay");
    const { relay, address } = await startRelay();
    await using _relay = relay;
    await using early = await RelayRawClient.connect(address);
    await early.write(PING);
    const registered = await early.register(await rawIdentity(net, "early"));
    deepStrictEqual(registered.members, []);
    strictEqual(relay.stats.nodes, 1);
    ok(!early.closed);
  },
});

Deno.test({
  name: "a relay disconnects a client that reads too slowly while others keep calling",
  async fn() {
    const net = testNetwork("relay");
    const frame = 256 * 1024;
    const { relay, address } = await startRelay({ maxFrame: frame + 1024, maxBuffered: 2 * frame });
    await using _relay = relay;
    await using a = new Node(remoteOptions(net, "a", address, {
      commands: { echo: (_n, args) => args[0] },
    }));
    await using b = new Node(remoteOptions(net, "b", address));
    await a.start();
    await b.start();
    await meetVia([a, b], address);

    // The slow client reads the relay's CHALLENGE, answers it and never reads again.
    await using slow = await RelayRawClient.connect(address, { read: false });
    const slowId = await rawIdentity(net, "slow");
    await slow.sendRegister(slowId);
    await waitFor(() => b.peers.some((p) => p.name === "slow"), "slow to register");
    const floodId = await rawIdentity(net, "flood");
    await using flood = await RelayRawClient.connect(address);
    await flood.register(floodId);
    const body = new Uint8Array(frame);
    const bytes = dataFrame(floodId.networkId, slowId.pseudonym, floodId.pseudonym, body);
    // The kernel buffers some MiB on loopback before the relay's own queue grows. Then the
    // relay slows flood (it stops reading it) until it gives up on slow, once nothing queued
    // for slow has been written for its silence timeout, so the loop stops on the relay's
    // count, not on a frame budget.
    const cap = 16_384; // 4 GiB: only a relay that never drops slow reaches it
    let sent = 0;
    for (; sent < cap && relay.stats.nodes === 4; sent++) {
      await flood.write(bytes);
      if (sent % 8 === 0) {
        strictEqual(
          await b.command("echo", { target: "a", args: [sent], raiseErrors: true }),
          sent,
        );
      }
    }
    ok(sent < cap, "the relay dropped the slow reader");
    await waitFor(() => !b.peers.some((p) => p.name === "slow"), "members to see slow leave");
    const outcome = await slow.outcome();
    ok(outcome.closed);
    if (outcome.goaway) {
      strictEqual(codeName(outcome.goaway.code), "POLICY");
      ok(outcome.goaway.reason.includes("reading too slowly"), outcome.goaway.reason);
    }
    // What reached slow is what the kernel held: the relay dropped the rest, it did not queue it.
    const got = slow.frames.filter((f) => f.type === FrameType.DATA).length;
    ok(got < sent, `slow got ${got} of the ${sent} frames sent to it`);
    strictEqual(relay.stats.nodes, 3);
    strictEqual(
      await b.command("echo", { target: "a", args: ["after"], raiseErrors: true }),
      "after",
    );
    ok(!flood.closed, "the sender is not punished");
  },
});

Deno.test({
  name: "a relay closes a connection that does not register in time with GOAWAY POLICY",
  async fn() {
    const { relay, address } = await startRelay({ registerDeadline: 100 });
    await using _relay = relay;
    await using idle = await RelayRawClient.connect(address);
    const outcome = await idle.outcome();
    strictEqual(codeName(outcome.goaway?.code), "POLICY");
    ok(outcome.goaway?.reason.includes("register"), outcome.goaway?.reason);
    await waitFor(() => relay.stats.connections === 0, "the relay to forget the connection");
  },
});

Deno.test({
  name: "a relay drops a silent node after max(timeout, 3 ticks) and members see it leave",
  async fn() {
    const net = testNetwork("relay");
    const { relay, address } = await startRelay({ timeout: 1000 });
    await using _relay = relay;
    await using watcher = new Node(remoteOptions(net, "watcher", address));
    await watcher.start();
    // A node whose tick is longer than the relay's timeout is judged by its 3 ticks.
    await using slowBeat = new Node(
      remoteOptions(net, "slow-beat", address, { keepaliveTick: 1500 }),
    );
    let slowBeatDown = 0;
    slowBeat.addEventListener("relaydown", () => slowBeatDown++);
    await slowBeat.start();
    const joined = nextEvent(watcher, "peerjoin", (p) => p.name === "quiet");
    const left = nextEvent(watcher, "peerleave", (p) => p.name === "quiet");
    await using quiet = await RelayRawClient.connect(address);
    const quietId = await rawIdentity(net, "quiet");
    const instance = quietId.credentials.instance.id;
    await quiet.register(quietId, { tick: 50 });
    // A client that pings every tick stays registered meanwhile.
    await using chatty = await RelayRawClient.connect(address);
    await chatty.register(await rawIdentity(net, "chatty"), { tick: 100 });
    const beat = setInterval(() => void chatty.write(PING).catch(() => {}), 100);
    try {
      strictEqual((await joined).instance, instance);
      const gone = await left;
      strictEqual(gone.instance, instance);
      const outcome = await quiet.outcome();
      strictEqual(codeName(outcome.goaway?.code), "POLICY");
      ok(outcome.goaway?.reason.includes("silent"), outcome.goaway?.reason);
      // A few more silence sweeps (one a second) pass over the slow beat's 1.5 s gaps.
      await sleep(2500);
      ok(watcher.peers.some((p) => p.name === "chatty"), "chatty is still there");
      ok(!chatty.closed);
      ok(watcher.peers.some((p) => p.name === "slow-beat"), "slow-beat is still there");
      strictEqual(slowBeatDown, 0);
    } finally {
      clearInterval(beat);
    }
  },
});

Deno.test({
  name: "a node that closes leaves a relay at once, long before the relay's timeout",
  async fn() {
    const net = testNetwork("relay");
    const { relay, address } = await startRelay({ timeout: 600_000 });
    await using _relay = relay;
    await using stays = new Node(remoteOptions(net, "stays", address));
    await using goes = new Node(remoteOptions(net, "goes", address));
    await stays.start();
    await goes.start();
    await meetVia([stays, goes], address);
    const left = nextEvent(stays, "peerleave", (p) => p.name === "goes");
    await goes.close();
    deepStrictEqual(await left, {
      name: "goes",
      instance: goes.instance,
      local: false,
      address: null,
      relays: [address],
      conflict: false,
    });
    strictEqual(relay.stats.nodes, 1);
  },
});

Deno.test({
  name: "a remote-only node runs without --unstable-net and answers calls through a relay",
  async fn() {
    const net = testNetwork("relay");
    const { relay, address } = await startRelay();
    await using _relay = relay;
    await using child = await spawnRelayNode({
      name: "plain",
      net,
      servers: [address],
      flags: ["--no-config"],
    });
    strictEqual(await child.line("listenDatagram: "), "listenDatagram: undefined");
    await using caller = new Node(remoteOptions(net, "caller", address));
    await caller.start();
    await waitFor(() => reachesVia(caller, "plain", address), "the caller to see the child");
    deepStrictEqual(await caller.command("whoami", { target: "plain", raiseErrors: true }), {
      name: "plain",
      pid: child.child.pid,
      caller: "caller",
      via: "relay",
      relay: address,
    });
    strictEqual((await child.stop("SIGTERM")).code, 0, child.stderr);
  },
});

/** The stderr of a relay process that nobody connects to, from start to SIGTERM (port: `PORT`). */
async function idleRelayStderr(): Promise<string> {
  const idle = await spawnRelay();
  try {
    strictEqual((await idle.process.stop("SIGTERM")).code, 0);
    return idle.process.stderr.replaceAll(String(idle.port), "PORT");
  } finally {
    await idle.process.stop("SIGKILL").catch(() => {});
  }
}

Deno.test({
  name: "a relay process writes only its start and stop lines, nothing about peers or traffic",
  async fn() {
    const net = testNetwork("zanzibar");
    const relay = await spawnRelay();
    try {
      const names = ["ulysses-7q", "penelope-3x"];
      await using u = new Node(remoteOptions(net, names[0]!, relay.address, {
        commands: { hello: (_n, args) => `hello ${args[0]}` },
      }));
      await using p = new Node(remoteOptions(net, names[1]!, relay.address));
      await u.start();
      await p.start();
      await meetVia([u, p], relay.address);
      for (let i = 0; i < 20; i++) {
        await p.command("hello", { target: names[0]!, args: [i], raiseErrors: true });
      }
      // Refusals and bad frames are not logged either.
      const twin = new Node(remoteOptions(net, names[0]!, relay.address));
      await twin.start().catch(() => {});
      await twin.close();
      await using junk = await RelayRawClient.connect(relay.address);
      await junk.write(new TextEncoder().encode("GET /penelope-3x HTTP/1.1\r\n\r\n"));
      await junk.outcome();
      await p.close();
      const status = await relay.process.stop("SIGTERM");
      strictEqual(status.code, 0);
      deepStrictEqual(relay.process.lines, [], "stdout is empty");
      const lines = relay.process.stderr.trimEnd().split("\n");
      strictEqual(lines[0], `peerbase-relay ${RELAY_VERSION} listening on 127.0.0.1:${relay.port}`);
      strictEqual(lines.at(-1), "peerbase-relay stopped");
      // Whatever else it writes (notices about its configuration, its drain), a relay that
      // nobody used writes too.
      deepStrictEqual(
        relay.process.stderr.replaceAll(String(relay.port), "PORT"),
        await idleRelayStderr(),
      );
      const pseudonyms = names.map((name) => pseudonymOf(net, name));
      const id = await networkIdOf(net);
      for (const secret of [...names, net.network, "zanzibar", ...pseudonyms, id]) {
        ok(!relay.process.stderr.includes(secret), `stderr mentions ${secret}`);
      }
    } finally {
      await relay.process.stop("SIGKILL").catch(() => {});
    }
  },
});

Deno.test({
  name: "a call larger than the relay's maxFrame fails with MessageTooLargeError before sending",
  async fn() {
    const net = testNetwork("relay");
    const { relay, address } = await startRelay({ maxFrame: 4096 });
    await using _relay = relay;
    let runs = 0;
    await using a = new Node(remoteOptions(net, "a", address, {
      commands: {
        take: (_n, args) => (runs++, (args[0] as string).length),
        give: (_n, args) => "y".repeat(args[0] as number),
      },
    }));
    await using b = new Node(remoteOptions(net, "b", address));
    await a.start();
    await b.start();
    await meetVia([a, b], address);
    const error = await b.command("take", {
      target: "a",
      args: ["x".repeat(8000)],
      raiseErrors: true,
    })
      .then(() => null, (e) => e);
    ok(error instanceof MessageTooLargeError, String(error));
    strictEqual(error.limit, 4096);
    strictEqual(runs, 0);
    // Small calls still pass, and an answer too large for the relay comes back as an error.
    strictEqual(
      await b.command("take", { target: "a", args: ["x".repeat(100)], raiseErrors: true }),
      100,
    );
    const big = await b.command("give", { target: "a", args: [8000], raiseErrors: true })
      .then(() => null, (e) => e);
    ok(big instanceof RemoteError, String(big));
    strictEqual(big.remoteName, "MessageTooLargeError");
    deepStrictEqual(b.relays.map((r) => r.up), [true]);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a node both on the LAN and on a relay calls a peer directly (via 'local')",
  async fn() {
    const net = testNetwork("relay");
    const { relay, address } = await startRelay();
    await using _relay = relay;
    const via = (_n: Node, _a: unknown[], _k: unknown, ctx: CallContext) => ctx.via;
    await using a = new Node(nodeOptions(net, "a", { servers: address, commands: { via } }));
    await using b = new Node(nodeOptions(net, "b", { servers: address, commands: { via } }));
    await a.start();
    await b.start();
    const both = (node: Node, name: string) =>
      node.peers.some((p) => p.name === name && p.local && p.relays.includes(address));
    await waitFor(() => both(a, "b") && both(b, "a"), "a and b to see each other on both paths");
    strictEqual(await a.command("via", { target: "b", raiseErrors: true }), "local");
    strictEqual(await b.command("via", { target: "a", raiseErrors: true }), "local");
  },
});

Deno.test({
  name: "a relay stamps forwarded frames with the sender's registered pseudonym and fans out '*'",
  async fn() {
    const net = testNetwork("relay");
    const { relay, address } = await startRelay();
    await using _relay = relay;
    await using mallory = await RelayRawClient.connect(address);
    await using victim = await RelayRawClient.connect(address);
    await using bystander = await RelayRawClient.connect(address);
    const [m, v] = [await rawIdentity(net, "mallory"), await rawIdentity(net, "victim")];
    await mallory.register(m);
    await victim.register(v);
    await bystander.register(await rawIdentity(net, "bystander"));
    const alice = pseudonymOf(net, "alice");
    const body = new TextEncoder().encode("opaque token bytes");
    const honest = dataFrame(m.networkId, v.pseudonym, m.pseudonym, body, 7);
    await mallory.write(dataFrame(m.networkId, v.pseudonym, alice, body, 6));
    await mallory.write(honest);
    await mallory.write(dataFrame(m.networkId, "*", alice, body, 8));
    await mallory.write(dataFrame(m.networkId, pseudonymOf(net, "nobody"), m.pseudonym, body, 9));
    const data = (client: RelayRawClient) => client.frames.filter((f) => f.type === FrameType.DATA);
    await waitFor(() => data(victim).length === 3, "the victim to receive three frames");
    await waitFor(() => data(bystander).length === 1, "the bystander to receive the broadcast");
    deepStrictEqual(
      data(victim).map((f) => [f.id, f.target, f.sender]),
      [[6, v.pseudonym, m.pseudonym], [7, v.pseudonym, m.pseudonym], [8, "*", m.pseudonym]],
    );
    // An honest frame is forwarded as the very bytes that were sent.
    deepStrictEqual(data(victim)[1]!.raw, honest);
    deepStrictEqual(data(victim).map((f) => new TextDecoder().decode(f.body)), [
      "opaque token bytes",
      "opaque token bytes",
      "opaque token bytes",
    ]);
    deepStrictEqual(data(bystander).map((f) => [f.id, f.sender]), [[8, m.pseudonym]]);
    deepStrictEqual(data(mallory), [], "a broadcast does not come back to its sender");
    ok(!mallory.closed, "a frame for an absent target is dropped, not punished");
  },
});

Deno.test("a call while every relay of a remote-only node is down fails with a PeerNotFoundError that says no relay is up", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close(); // Nothing listens there: the relay stays down.
  await using node = new Node(remoteOptions(testNetwork("norelay"), "alone", `127.0.0.1:${port}`));
  await node.start();
  await rejects(
    node.command("math.add", { target: "bob", args: [1, 2] }),
    (error: Error) => {
      strictEqual(error.name, "PeerNotFoundError");
      match(error.message, /none of this node's 1 relay\(s\) is up right now/);
      return true;
    },
  );
});

Deno.test("once relayup fires or start() resolves, a remote-only node knows the members already at its relay: a '*' call right away reaches them", async () => {
  await using r = await startRelay();
  const net = testNetwork("startknows");
  await using first = new Node(remoteOptions(net, "first", r.address, { commands: {} }));
  await first.start();
  await using second = new Node(remoteOptions(net, "second", r.address));
  const seenAtRelayUp: string[][] = [];
  second.addEventListener(NodeEvent.RELAY_UP, () => {
    seenAtRelayUp.push(second.peers.map((peer) => peer.name));
  });
  await second.start();
  deepStrictEqual(seenAtRelayUp, [["first"]]); // relayup comes with the members, not before them.
  deepStrictEqual(second.peers.map((peer) => peer.name), ["first"]);
  deepStrictEqual(Object.keys(await second.command("__echo__", { args: ["hi"] })), ["first"]);
});
