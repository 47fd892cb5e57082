/**
 * The API that fails loudly: errors thrown by default, `timeout: Infinity`
 * (or `null`) for no limit, `waitForPeer()`, the argument checks that catch
 * Python habits, `node.address`, `node.stats` and the `debug` event. Real
 * nodes over loopback sockets; LAN nodes need the private network
 * namespace, remote-only nodes with an in-process relay run anywhere.
 */

import { deepStrictEqual, ok, rejects, strictEqual } from "node:assert/strict";
import {
  type CallContext,
  CommandError,
  CommandTimeoutError,
  type ManyResult,
  Node,
  NodeClosedError,
  NodeNotStartedError,
  PeerNotFoundError,
  RemoteError,
  type RouteDecision,
  UnknownCommandError,
} from "../mod.ts";
import { IN_NETNS, NETNS_REASON, testIf } from "./_env.ts";
import {
  deadline,
  nodeOptions,
  RawClient,
  sleep,
  startNodes,
  testNetwork,
  waitFor,
} from "./_fixtures.ts";
import { meetVia, remoteOptions, startRelay } from "./_relay_fixtures.ts";

/** A handler that answers `value` after `ms`, honouring its signal. */
function after(ms: number, value: unknown) {
  return async (_node: Node, _args: unknown[], _kwargs: unknown, ctx: CallContext) => {
    await sleep(ms, ctx.signal);
    return value;
  };
}

const failing = () => {
  throw new TypeError("broken");
};

/** `node.command` as plain JavaScript sees it: any arguments. */
function untyped(node: Node): (...args: unknown[]) => Promise<unknown> {
  return (node.command as unknown as (...args: unknown[]) => Promise<unknown>).bind(node);
}

// ---- Errors are thrown by default ----

testIf(IN_NETNS, NETNS_REASON, {
  name: "command() on a single target rejects with the typed error by default",
  async fn(t) {
    await using group = await startNodes(["caller", "bad"], {
      each: { bad: { commands: { run: failing } } },
    });
    const caller = group.get("caller");
    await t.step("a handler that throws: RemoteError", async () => {
      const error = await caller.command("run", { target: "bad" }).catch((e) => e);
      ok(error instanceof RemoteError, String(error));
      strictEqual(error.remoteName, "TypeError");
    });
    await t.step("an unknown command: UnknownCommandError", async () => {
      await rejects(caller.command("nope", { target: "bad" }), UnknownCommandError);
    });
    await t.step("an unknown peer: PeerNotFoundError", async () => {
      await rejects(caller.command("run", { target: "ghost" }), PeerNotFoundError);
    });
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "command() on several targets rejects with CommandError keeping partial results by default",
  async fn() {
    await using group = await startNodes(["caller", "good", "bad"], {
      each: { good: { commands: { run: () => "fine" } }, bad: { commands: { run: failing } } },
    });
    const error = await group.get("caller").command("run", { target: ["good", "bad", "ghost"] })
      .catch((e) => e);
    ok(error instanceof CommandError, String(error));
    strictEqual(error.path, "run");
    strictEqual(error.results.good, "fine");
    ok(error.results.bad instanceof RemoteError, String(error.results.bad));
    ok(error.results.ghost instanceof PeerNotFoundError, String(error.results.ghost));
    strictEqual(error.errors.length, 2);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "command() with raiseErrors: false yields null for failures instead of rejecting",
  async fn(t) {
    await using group = await startNodes(["caller", "good", "bad"], {
      each: { good: { commands: { run: () => "fine" } }, bad: { commands: { run: failing } } },
    });
    const caller = group.get("caller");
    await t.step("single target", async () => {
      strictEqual(await caller.command("run", { target: "bad", raiseErrors: false }), null);
      strictEqual(await caller.command("run", { target: "ghost", raiseErrors: false }), null);
    });
    await t.step("several targets", async () => {
      deepStrictEqual(
        await caller.command("run", { target: ["good", "bad", "ghost"], raiseErrors: false }),
        { good: "fine", bad: null, ghost: null },
      );
    });
  },
});

// ---- Timeouts ----

testIf(IN_NETNS, NETNS_REASON, {
  name: "command() with timeout: Infinity or null arms no timer: a 300 ms answer still arrives",
  async fn(t) {
    await using group = await startNodes(["caller", "slow"], {
      each: { slow: { commands: { slow: after(300, "late") } } },
    });
    const caller = group.get("caller");
    // setTimeout(fn, Infinity) would fire at once and fail the call with CommandTimeoutError.
    for (const timeout of [Infinity, null]) {
      await t.step(`timeout: ${timeout}`, async () => {
        const started = performance.now();
        strictEqual(await caller.command("slow", { target: "slow", timeout }), "late");
        ok(performance.now() - started >= 250, "the handler really took its time");
      });
    }
    await t.step("several targets with timeout: Infinity", async () => {
      deepStrictEqual(await caller.command("slow", { target: ["slow"], timeout: Infinity }), {
        slow: "late",
      });
    });
    await t.step("a finite timeout shorter than the handler still fails", async () => {
      await rejects(caller.command("slow", { target: "slow", timeout: 50 }), CommandTimeoutError);
    });
  },
});

Deno.test("command() rejects a timeout of 0, negative, NaN or too large with a RangeError naming Infinity", async (t) => {
  const node = new Node(
    remoteOptions(testNetwork("api"), "alone", "127.0.0.1:9", { commands: {} }),
  );
  for (const timeout of [0, -1, NaN, -Infinity, 2 ** 31]) {
    await t.step(`timeout: ${timeout}`, async () => {
      await rejects(node.command("p", { target: "bob", timeout }), (error: unknown) => {
        ok(error instanceof RangeError, String(error));
        ok(error.message.includes("timeout"), error.message);
        ok(error.message.includes("Infinity"), error.message);
        return true;
      });
    });
  }
});

Deno.test("command() on several targets keeps a peer named __proto__ as a result key, not as the prototype", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close(); // No relay: every target is unknown.
  await using node = new Node(remoteOptions(testNetwork("api"), "alone", `127.0.0.1:${port}`));
  await node.start();
  const out = await node.command("p", { target: ["__proto__", "bob"], raiseErrors: false });
  deepStrictEqual(Object.keys(out), ["__proto__", "bob"]);
  strictEqual(Object.getPrototypeOf(out), Object.prototype);
  strictEqual(Object.getOwnPropertyDescriptor(out, "__proto__")?.value, null);
});

// ---- waitForPeer ----

testIf(IN_NETNS, NETNS_REASON, {
  name: "waitForPeer(name) resolves with the peer's PeerInfo once it starts",
  async fn() {
    const net = testNetwork("api");
    await using waiter = new Node(nodeOptions(net, "waiter"));
    await using late = new Node(nodeOptions(net, "late"));
    await waiter.start();
    const waiting = waiter.waitForPeer("late");
    await sleep(100);
    await late.start();
    const info = await deadline(waiting, "waitForPeer('late')");
    strictEqual(info.name, "late");
    strictEqual(info.instance, late.instance);
    strictEqual(info.local, true);
    strictEqual(info.address, late.address);
    strictEqual(await waiter.command("__echo__", { target: "late", args: ["hi"] }) !== null, true);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "waitForPeer([x, y]) resolves with both PeerInfos, in the order asked",
  async fn() {
    const net = testNetwork("api");
    await using waiter = new Node(nodeOptions(net, "waiter"));
    await using x = new Node(nodeOptions(net, "x"));
    await using y = new Node(nodeOptions(net, "y"));
    await waiter.start();
    const waiting = waiter.waitForPeer(["y", "x"]);
    await x.start();
    await sleep(100);
    await y.start();
    const infos = await deadline(waiting, "waitForPeer(['y', 'x'])");
    deepStrictEqual(infos.map((p) => [p.name, p.instance]), [["y", y.instance], ["x", x.instance]]);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "waitForPeer() resolves at once for a peer that is already known",
  async fn() {
    await using group = await startNodes(["a", "b"]);
    const info = await deadline(group.get("a").waitForPeer("b", { timeout: 50 }), "waitForPeer");
    strictEqual(info.name, "b");
  },
});

Deno.test("waitForPeer() rejects with PeerNotFoundError naming the peer after its timeout", async () => {
  await using node = new Node(remoteOptions(testNetwork("api"), "alone", "127.0.0.1:9"));
  const started = performance.now();
  const error = await deadline(
    node.waitForPeer(["ghost"], { timeout: 200 }).catch((e) => e),
    "the wait",
  );
  ok(error instanceof PeerNotFoundError, String(error));
  strictEqual(error.peer, "ghost");
  ok(error.message.includes("200 ms"), error.message);
  ok(performance.now() - started >= 190, "it waited the timeout");
});

Deno.test("waitForPeer() rejects with the signal's reason on abort, and at once for an aborted signal", async (t) => {
  await using node = new Node(remoteOptions(testNetwork("api"), "alone", "127.0.0.1:9"));
  await t.step("aborted while waiting", async () => {
    const stop = new AbortController();
    const reason = new Error("stop waiting");
    const waiting = node.waitForPeer("ghost", { signal: stop.signal, timeout: Infinity });
    await sleep(50);
    stop.abort(reason);
    strictEqual(await deadline(waiting.catch((e) => e), "the wait to end"), reason);
  });
  await t.step("already aborted", async () => {
    const reason = new Error("never mind");
    const waiting = node.waitForPeer("ghost", { signal: AbortSignal.abort(reason) });
    strictEqual(await deadline(waiting.catch((e) => e), "the wait to end"), reason);
  });
});

Deno.test("waitForPeer() with timeout null waits until the node closes, then rejects with NodeClosedError", async () => {
  const node = new Node(remoteOptions(testNetwork("api"), "alone", "127.0.0.1:9"));
  try {
    const waiting = node.waitForPeer("ghost", { timeout: null }).catch((e) => e);
    await sleep(50);
    await node.close();
    const error = await deadline(waiting, "the wait to end on close");
    ok(error instanceof NodeClosedError, String(error));
  } finally {
    await node.close();
  }
});

Deno.test("waitForPeer() rejects with TypeError for a name that is not a string", async (t) => {
  await using node = new Node(remoteOptions(testNetwork("api"), "alone", "127.0.0.1:9"));
  const wait = node.waitForPeer.bind(node) as unknown as (name: unknown) => Promise<unknown>;
  for (const name of [42, null, [1], ["ok", {}], { name: "x" }]) {
    await t.step(JSON.stringify(name), async () => {
      await rejects(wait(name), TypeError);
    });
  }
});

// ---- Python habits and self-calls ----

Deno.test("command() called Python-style with positional arguments rejects with a TypeError naming { args, kwargs, target }", async (t) => {
  await using node = new Node(remoteOptions(testNetwork("api"), "alone", "127.0.0.1:9"));
  const command = untyped(node);
  const calls: Array<[string, unknown[]]> = [
    ["command(path, args, kwargs, target)", ["p", [1, 2], {}, "bob"]],
    ["command(path, args)", ["p", [1, 2]]],
    ["command(path, options, extra)", ["p", { target: "bob" }, "extra"]],
  ];
  for (const [what, args] of calls) {
    await t.step(what, async () => {
      await rejects(command(...args), (error: unknown) => {
        ok(error instanceof TypeError, String(error));
        ok(error.message.includes("{ args, kwargs, target }"), error.message);
        return true;
      });
    });
  }
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "command() targeting the node itself rejects with a RangeError saying it is this node",
  async fn(t) {
    await using group = await startNodes(["self", "other"]);
    const node = group.get("self");
    const isSelfError = (error: unknown) => {
      ok(error instanceof RangeError, String(error));
      ok(error.message.includes("'self'"), error.message);
      ok(error.message.includes("this node itself"), error.message);
      return true;
    };
    await t.step("target: its own name", async () => {
      await rejects(node.command("__echo__", { target: "self" }), isSelfError);
    });
    await t.step("target: a list that includes its own name", async () => {
      await rejects(node.command("__echo__", { target: ["other", "self"] }), isSelfError);
    });
  },
});

Deno.test("command() before start() rejects with NodeNotStartedError, after close() with NodeClosedError", async () => {
  const node = new Node(remoteOptions(testNetwork("api"), "early", "127.0.0.1:9"));
  const error = await node.command("__echo__", { target: "bob" }).catch((e) => e);
  ok(error instanceof NodeNotStartedError, String(error));
  strictEqual(error.node, "early");
  await node.close();
  await rejects(node.command("__echo__", { target: "bob" }), NodeClosedError);
});

// ---- node.address ----

testIf(IN_NETNS, NETNS_REASON, {
  name: "node.address of a node bound to 0.0.0.0 is a callable address, not 0.0.0.0",
  async fn() {
    await using node = new Node(nodeOptions(testNetwork("api"), "wild", { hostname: "0.0.0.0" }));
    const before: string | null = node.address;
    strictEqual(before, null, "null before start");
    await node.start();
    const address = node.address;
    ok(address !== null && /^[\d.]+:\d+$/.test(address), String(address));
    ok(!address.startsWith("0.0.0.0:"), address);
    ok(!address.endsWith(":0"), address);
    await using client = await RawClient.connect(address);
    ok(!client.closed, "the address accepts connections");
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "node.address of a node bound to 127.0.0.1 is 127.0.0.1:<its port>, as its peers see it",
  async fn() {
    await using group = await startNodes(["a", "b"]);
    const a = group.get("a");
    const address = a.address!;
    ok(/^127\.0\.0\.1:[1-9]\d*$/.test(address), address);
    strictEqual(group.get("b").peers.find((p) => p.name === "a")?.address, address);
  },
});

// ---- node.stats ----

testIf(IN_NETNS, NETNS_REASON, {
  name: "node.stats counts direct calls as sent by the caller and served by the target",
  async fn() {
    await using group = await startNodes(["caller", "calc"], {
      each: { calc: { commands: { add: (_n, args) => (args as number[])[0]! + 1 } } },
    });
    const caller = group.get("caller");
    const calc = group.get("calc");
    for (let i = 0; i < 3; i++) await caller.command("add", { target: "calc", args: [i] });
    const sent = caller.stats;
    strictEqual(sent.sent, 3);
    deepStrictEqual(sent.routes.direct, { sent: 3, served: 0 });
    strictEqual(sent.retries, 0);
    strictEqual(sent.failovers, 0);
    await waitFor(() => calc.stats.served === 3, "calc to count three served calls");
    deepStrictEqual(calc.stats.routes.direct, { sent: 0, served: 3 });
    strictEqual(calc.stats.sent, 0);
  },
});

Deno.test("node.stats counts relayed calls under the relay's host:port and reports its round trip", async () => {
  await using relay = await startRelay();
  const net = testNetwork("api");
  await using a = new Node(remoteOptions(net, "a", relay.address));
  await using b = new Node(remoteOptions(net, "b", relay.address, { commands: { ok: () => 1 } }));
  strictEqual(Object.keys(a.stats.relayRtt).length, 0, "no relay before start");
  await a.start();
  await b.start();
  await meetVia([a, b], relay.address);
  const rtt = a.stats.relayRtt[relay.address];
  ok(typeof rtt === "number" && rtt >= 0, `relayRtt ${rtt} after registration`);
  await a.command("ok", { target: "b" });
  await a.command("ok", { target: "b" });
  deepStrictEqual(a.stats.routes, { [relay.address]: { sent: 2, served: 0 } });
  strictEqual(a.stats.sent, 2);
  await waitFor(() => b.stats.served === 2, "b to count two served calls");
  deepStrictEqual(b.stats.routes, { [relay.address]: { sent: 0, served: 2 } });
});

Deno.test("node.stats is a snapshot: later calls do not change an earlier one", async () => {
  await using relay = await startRelay();
  const net = testNetwork("api");
  await using a = new Node(remoteOptions(net, "a", relay.address));
  await using b = new Node(remoteOptions(net, "b", relay.address, { commands: { ok: () => 1 } }));
  await a.start();
  await b.start();
  await meetVia([a, b], relay.address);
  const before = a.stats;
  await a.command("ok", { target: "b" });
  strictEqual(before.sent, 0);
  deepStrictEqual(before.routes, {});
  strictEqual(a.stats.sent, 1);
});

// ---- debug events ----

/** Collects `node`'s debug events until disposed. */
function collectDebug(node: Node): RouteDecision[] & Disposable {
  const seen = [] as unknown as RouteDecision[] & Disposable;
  const listener = (event: CustomEvent<RouteDecision>) => seen.push(event.detail);
  node.addEventListener("debug", listener);
  seen[Symbol.dispose] = () => node.removeEventListener("debug", listener);
  return seen;
}

testIf(IN_NETNS, NETNS_REASON, {
  name: "with debug: true a node dispatches a debug event for each route decision of a call",
  async fn(t) {
    await using group = await startNodes(["caller", "calc"], {
      each: { caller: { debug: true }, calc: { commands: { add: () => 3 } } },
    });
    const caller = group.get("caller");
    const calc = group.get("calc");
    await t.step("a direct call", async () => {
      using seen = collectDebug(caller);
      await caller.command("add", { target: "calc" });
      strictEqual(seen.length, 1, JSON.stringify(seen));
      const [decision] = seen;
      deepStrictEqual(Object.keys(decision!).sort(), [
        "attempt",
        "id",
        "path",
        "peer",
        "reason",
        "route",
      ]);
      strictEqual(decision!.peer, "calc");
      strictEqual(decision!.path, "add");
      ok(Number.isInteger(decision!.id) && decision!.id > 0, String(decision!.id));
      strictEqual(decision!.attempt, 0);
      strictEqual(decision!.route, "direct");
      strictEqual(decision!.reason, `direct to ${calc.address}`);
    });
    await t.step("a call with no route reports route null and why", async () => {
      using seen = collectDebug(caller);
      await rejects(caller.command("add", { target: "ghost" }), PeerNotFoundError);
      strictEqual(seen.length, 1, JSON.stringify(seen));
      strictEqual(seen[0]!.peer, "ghost");
      strictEqual(seen[0]!.route, null);
      ok(seen[0]!.reason.includes("ghost"), seen[0]!.reason);
    });
    await t.step("each call has its own id", async () => {
      using seen = collectDebug(caller);
      await caller.command("add", { target: ["calc"] });
      await caller.command("add", { target: "calc" });
      strictEqual(seen.length, 2);
      ok(seen[0]!.id !== seen[1]!.id, JSON.stringify(seen));
    });
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "without debug a node dispatches no debug event",
  async fn() {
    await using group = await startNodes(["caller", "calc"], {
      each: { calc: { commands: { add: () => 3 } } },
    });
    const caller = group.get("caller");
    using seen = collectDebug(caller);
    await caller.command("add", { target: "calc" });
    await rejects(caller.command("add", { target: "ghost" }), PeerNotFoundError);
    strictEqual(seen.length, 0, JSON.stringify(seen));
  },
});

Deno.test("a debug event for a relayed call names the relay's host:port as its route", async () => {
  await using relay = await startRelay();
  const net = testNetwork("api");
  await using a = new Node(remoteOptions(net, "a", relay.address, { debug: true }));
  await using b = new Node(remoteOptions(net, "b", relay.address, { commands: { ok: () => 1 } }));
  await a.start();
  await b.start();
  await meetVia([a, b], relay.address);
  using seen = collectDebug(a);
  await a.command("ok", { target: "b" });
  strictEqual(seen.length, 1, JSON.stringify(seen));
  strictEqual(seen[0]!.route, relay.address);
  strictEqual(seen[0]!.reason, `through relay ${relay.address}`);
});

// ---- Result types (checked by `deno check`; the body never runs a call) ----

Deno.test("command() result types: a string target that may be '*' includes the record shape", () => {
  // Only types matter here; the node is never started.
  const node = new Node(remoteOptions(testNetwork("api"), "types", "127.0.0.1:9"));
  const typesOnly = false as boolean;
  if (typesOnly) {
    const target: string = "*";
    void (async () => {
      // @ts-expect-error a string variable may hold "*": the result is not a single value
      const single: number = await node.command("p", { target });
      // @ts-expect-error with T and the target's type given, the record shape is included
      const typed: number = await node.command<number, string>("p", { target });
      const either: number | ManyResult<number, Record<never, never>> = await node.command<
        number,
        string
      >("p", { target });
      const one: number = await node.command<number>("p", { target: "calc" });
      const all: Record<string, number> = await node.command<number>("p", { target: "*" });
      const list: Record<string, number> = await node.command<number>("p", { target: ["a"] });
      void [single, typed, either, one, all, list];
    })();
  }
  ok(node instanceof Node);
});
