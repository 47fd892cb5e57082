/**
 * Calls between nodes of one process over real loopback sockets: targets,
 * results, errors, encoding, timeouts, cancellation and concurrency.
 */

import { deepStrictEqual, ok, rejects, strictEqual } from "node:assert/strict";
import {
  type CallContext,
  CommandError,
  CommandTimeoutError,
  EncodeError,
  MessageTooLargeError,
  Node,
  PeerNotFoundError,
  RemoteError,
  UnknownCommandError,
} from "../mod.ts";
import { IN_NETNS, NETNS_REASON, testIf } from "./_env.ts";
import { deadline, nodeOptions, sleep, startNodes, testNetwork, waitFor } from "./_fixtures.ts";

/** Counts how many runs of a handler overlap, and how they end. */
class Gauge {
  active = 0;
  max = 0;
  started = 0;
  aborted: unknown[] = [];

  /** A handler that waits `ms` (honouring its signal) while counted as active. */
  handler(ms: number) {
    return async (_node: Node, _args: unknown[], _kwargs: unknown, ctx: CallContext) => {
      this.started++;
      this.active++;
      this.max = Math.max(this.max, this.active);
      try {
        await sleep(ms, ctx.signal);
        return "done";
      } catch (error) {
        this.aborted.push(ctx.signal.reason);
        throw error;
      } finally {
        this.active--;
      }
    };
  }
}

class CustomError extends Error {
  override name = "CustomError";
}

// ---- Targets and results ----

testIf(IN_NETNS, NETNS_REASON, {
  name: "command() on a single target resolves to that target's value",
  async fn() {
    await using group = await startNodes(["caller", "calc"], {
      each: {
        calc: {
          commands: { math: { add: (_n, args) => (args as number[]).reduce((a, b) => a + b, 0) } },
        },
      },
    });
    const value = await group.get("caller").command<number>("math.add", {
      target: "calc",
      args: [2, 3, 4],
    });
    strictEqual(value, 9);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "command() on an array target or '*' resolves to { name: value }, even with one peer",
  async fn(t) {
    await using group = await startNodes(["caller", "solo"], {
      common: { commands: { who: (node) => node.name } },
    });
    const caller = group.get("caller");
    await t.step("array of one", async () => {
      deepStrictEqual(await caller.command("who", { target: ["solo"] }), { solo: "solo" });
    });
    await t.step("'*' with one peer", async () => {
      deepStrictEqual(await caller.command("who", { target: "*" }), { solo: "solo" });
    });
    await t.step("default target is '*'", async () => {
      deepStrictEqual(await caller.command("who"), { solo: "solo" });
    });
    await t.step("duplicates in the array are called once", async () => {
      deepStrictEqual(await caller.command("who", { target: ["solo", "solo"] }), { solo: "solo" });
    });
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "command() on '*' reaches every peer and not the caller itself",
  async fn() {
    await using group = await startNodes(["a", "b", "c", "d"], {
      common: { commands: { who: (node) => node.name } },
    });
    deepStrictEqual(await group.get("a").command("who", { target: "*" }), {
      b: "b",
      c: "c",
      d: "d",
    });
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "command() on '*' with no peers resolves to {}",
  async fn() {
    await using alone = new Node(nodeOptions(testNetwork(), "alone"));
    await alone.start();
    deepStrictEqual(await alone.command("__echo__", { target: "*", raiseErrors: true }), {});
  },
});

// ---- Failures per target ----

testIf(IN_NETNS, NETNS_REASON, {
  name: "command() on an unknown peer rejects with PeerNotFoundError at once with raiseErrors",
  async fn() {
    await using alone = new Node(nodeOptions(testNetwork(), "alone"));
    await alone.start();
    // A 60 s call timeout: only an immediate failure beats the 10 s hang guard.
    const call = alone.command("__echo__", { target: "ghost", raiseErrors: true, timeout: 60_000 });
    const error = await deadline(call.catch((e) => e), "the call to fail");
    ok(error instanceof PeerNotFoundError, String(error));
    strictEqual(error.peer, "ghost");
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "command() on an unknown peer resolves to null at once with raiseErrors: false",
  async fn() {
    await using alone = new Node(nodeOptions(testNetwork(), "alone"));
    await alone.start();
    const call = alone.command("__echo__", {
      target: "ghost",
      timeout: 60_000,
      raiseErrors: false,
    });
    strictEqual(await deadline(call, "the call to settle"), null);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "command() with raiseErrors: false yields null for each failed target and keeps the others",
  async fn(t) {
    await using group = await startNodes(["caller", "good", "bad"], {
      each: {
        good: { commands: { run: () => "ok" } },
        bad: {
          commands: {
            run: () => {
              throw new Error("no");
            },
          },
        },
      },
    });
    const caller = group.get("caller");
    await t.step("several targets", async () => {
      deepStrictEqual(
        await caller.command("run", { target: ["good", "bad", "ghost"], raiseErrors: false }),
        { good: "ok", bad: null, ghost: null },
      );
    });
    await t.step("single target", async () => {
      strictEqual(await caller.command("run", { target: "bad", raiseErrors: false }), null);
    });
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "command() with raiseErrors on a single target rejects with that target's error",
  async fn() {
    await using group = await startNodes(["caller", "bad"], {
      each: {
        bad: {
          commands: {
            run: () => {
              throw new CustomError("broken");
            },
          },
        },
      },
    });
    const error = await group.get("caller").command("run", { target: "bad", raiseErrors: true })
      .catch((e) => e);
    ok(error instanceof RemoteError, String(error));
    strictEqual(error.remoteName, "CustomError");
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "command() with raiseErrors rejects with CommandError carrying partial results",
  async fn() {
    await using group = await startNodes(["caller", "good", "bad"], {
      each: {
        good: { commands: { run: () => ({ fine: true }) } },
        bad: {
          commands: {
            run: () => {
              throw new CustomError("broken");
            },
          },
        },
      },
    });
    const error = await group.get("caller")
      .command("run", { target: ["good", "bad", "ghost"], raiseErrors: true })
      .catch((e) => e);
    ok(error instanceof CommandError, String(error));
    strictEqual(error.path, "run");
    deepStrictEqual(error.results.good, { fine: true });
    ok(error.results.bad instanceof RemoteError);
    ok(error.results.ghost instanceof PeerNotFoundError);
    strictEqual(error.errors.length, 2);
    ok(error.errors.includes(error.results.bad) && error.errors.includes(error.results.ghost));
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "command() of a path the peer does not serve rejects with UnknownCommandError",
  async fn(t) {
    await using group = await startNodes(["caller", "srv"], {
      each: { srv: { commands: { math: { add: () => 0 } } } },
    });
    const caller = group.get("caller");
    for (const path of ["math.mul", "math", "nothing.at.all", "math.add.deeper"]) {
      await t.step(path, async () => {
        const error = await caller.command(path, { target: "srv", raiseErrors: true }).catch((e) =>
          e
        );
        ok(error instanceof UnknownCommandError, String(error));
        strictEqual(error.peer, "srv");
        strictEqual(error.path, path);
      });
    }
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "command() rejects with RemoteError carrying the remote name and message but no stack",
  async fn(t) {
    await using group = await startNodes(["caller", "srv"], {
      each: {
        srv: {
          commands: {
            custom: () => {
              throw new CustomError("custom failure");
            },
            type: () => {
              throw new TypeError("wrong type");
            },
            asyncThrow: async () => {
              await sleep(1);
              throw new RangeError("later");
            },
            string: () => {
              throw "just a string";
            },
          },
        },
      },
    });
    const caller = group.get("caller");
    const cases: [string, string, string][] = [
      ["custom", "CustomError", "custom failure"],
      ["type", "TypeError", "wrong type"],
      ["asyncThrow", "RangeError", "later"],
      ["string", "Error", "just a string"],
    ];
    for (const [path, remoteName, remoteMessage] of cases) {
      await t.step(path, async () => {
        const error = await caller.command(path, { target: "srv", raiseErrors: true }).catch((e) =>
          e
        );
        ok(error instanceof RemoteError, String(error));
        strictEqual(error.peer, "srv");
        strictEqual(error.path, path);
        strictEqual(error.remoteName, remoteName);
        strictEqual(error.remoteMessage, remoteMessage);
        ok(!error.message.includes("rpc_test.ts"), "the remote stack leaked into the message");
        ok(!Object.values(error).some((v) => typeof v === "string" && v.includes("rpc_test.ts")));
      });
    }
  },
});

// ---- Encoding ----

testIf(IN_NETNS, NETNS_REASON, {
  name: "command() with an unencodable argument rejects with EncodeError before sending",
  async fn(t) {
    let runs = 0;
    await using group = await startNodes(["caller", "srv"], {
      each: { srv: { commands: { count: () => ++runs } } },
    });
    const caller = group.get("caller");
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    const cases: [string, { args?: unknown[]; kwargs?: Record<string, unknown> }][] = [
      ["function", { args: [() => 1] }],
      ["bigint", { args: [10n] }],
      ["Map", { args: [new Map([[1, 2]])] }],
      ["Set in kwargs", { kwargs: { s: new Set([1]) } }],
      ["NaN", { args: [NaN] }],
      ["Infinity in kwargs", { kwargs: { x: Infinity } }],
      ["symbol", { args: [Symbol("s")] }],
      ["cyclic", { args: [cyclic] }],
      ["class instance", { args: [new CustomError("x")] }],
      ["typed array other than Uint8Array", { args: [new Uint16Array(2)] }],
      ["nested function", { kwargs: { deep: { deeper: [() => 1] } } }],
    ];
    for (const [what, options] of cases) {
      await t.step(what, async () => {
        await rejects(
          caller.command("count", { target: "srv", raiseErrors: true, ...options }),
          EncodeError,
        );
      });
    }
    // The same link then carries a good call: it is the first run the handler sees.
    strictEqual(await caller.command("count", { target: "srv", raiseErrors: true }), 1);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "command() rejects with RemoteError naming EncodeError when the result is unencodable",
  async fn(t) {
    await using group = await startNodes(["caller", "srv"], {
      each: {
        srv: {
          commands: {
            fn: () => () => 1,
            map: () => new Map(),
            big: () => 1n,
            nan: () => ({ x: NaN }),
          },
        },
      },
    });
    const caller = group.get("caller");
    for (const path of ["fn", "map", "big", "nan"]) {
      await t.step(path, async () => {
        const error = await caller.command(path, { target: "srv", raiseErrors: true }).catch((e) =>
          e
        );
        ok(error instanceof RemoteError, String(error));
        strictEqual(error.remoteName, "EncodeError");
      });
    }
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "command() reports a result larger than the peer's maxFrameSize as RemoteError",
  async fn() {
    await using group = await startNodes(["caller", "srv"], {
      each: {
        srv: { maxFrameSize: 64 * 1024, commands: { big: () => new Uint8Array(100 * 1024) } },
      },
    });
    const error = await group.get("caller").command("big", { target: "srv", raiseErrors: true })
      .catch((e) => e);
    ok(error instanceof RemoteError, String(error));
    strictEqual(error.remoteName, "MessageTooLargeError");
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "command() carries Uint8Array in args, kwargs and results, nested, empty and 1 MiB",
  async fn(t) {
    await using group = await startNodes(["caller", "srv"], {
      each: { srv: { commands: { echo: (_n, args, kwargs) => ({ args, kwargs }) } } },
    });
    const caller = group.get("caller");
    const big = fill(new Uint8Array(1024 * 1024));
    const cases: [string, unknown[], Record<string, unknown>][] = [
      ["empty", [new Uint8Array(0)], { e: new Uint8Array(0) }],
      ["small", [new Uint8Array([0, 1, 255])], { b: new Uint8Array([7]) }],
      ["nested", [{ list: [new Uint8Array([1]), { deep: new Uint8Array([2, 3]) }] }], {
        a: [[new Uint8Array([4])]],
      }],
      ["1 MiB", [big], { copy: big }],
      ["several blobs in one message", [
        new Uint8Array([1]),
        new Uint8Array([2]),
        new Uint8Array(0),
      ], {
        x: new Uint8Array([3]),
      }],
    ];
    for (const [what, args, kwargs] of cases) {
      await t.step(what, async () => {
        const value = await caller.command("echo", {
          target: "srv",
          args,
          kwargs,
          raiseErrors: true,
        });
        deepStrictEqual(normalise(value), normalise({ args, kwargs }));
      });
    }
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "command() preserves user objects whose keys are '$b' or '$e'",
  async fn(t) {
    await using group = await startNodes(["caller", "srv"], {
      each: { srv: { commands: { echo: (_n, args, kwargs) => ({ args, kwargs }) } } },
    });
    const caller = group.get("caller");
    const cases: [string, unknown][] = [
      ["{$b: 0}", { $b: 0 }],
      ["{$e: 1}", { $e: 1 }],
      ["{$e: {}}", { $e: {} }],
      ["{$e: {$b: 0}}", { $e: { $b: 0 } }],
      ["{$b: {$b: 1}}", { $b: { $b: 1 } }],
      ["{$b: 'x', other: 2}", { $b: "x", other: 2 }],
      ["{$b: Uint8Array}", { $b: new Uint8Array([9]) }],
      ["{$e: null}", { $e: null }],
      ["array of them", [{ $b: 0 }, { $e: 0 }, { $b: 1, $e: 2 }]],
      ["next to a blob", [new Uint8Array([1]), { $b: 0 }]],
    ];
    for (const [what, value] of cases) {
      await t.step(what, async () => {
        const got = await caller.command("echo", {
          target: "srv",
          args: [value],
          kwargs: { v: value, $b: 0, $e: { $b: 1 } },
          raiseErrors: true,
        });
        deepStrictEqual(
          normalise(got),
          normalise({ args: [value], kwargs: { v: value, $b: 0, $e: { $b: 1 } } }),
        );
      });
    }
  },
});

/** Deterministic bytes. */
function fill(bytes: Uint8Array): Uint8Array {
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 31 + 7) & 0xff;
  return bytes;
}

/** Copies every Uint8Array (decoded ones are views into a larger buffer) for comparison. */
function normalise(value: unknown): unknown {
  if (value instanceof Uint8Array) return new Uint8Array(value);
  if (Array.isArray(value)) return value.map(normalise);
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, normalise(v)]));
  }
  return value;
}

// ---- Timeouts, cancellation, concurrency ----

testIf(IN_NETNS, NETNS_REASON, {
  name: "command() rejects with CommandTimeoutError and the remote handler's signal aborts",
  async fn() {
    const gauge = new Gauge();
    await using group = await startNodes(["caller", "srv"], {
      each: { srv: { commands: { slow: gauge.handler(60_000) } } },
    });
    const error = await group.get("caller")
      .command("slow", { target: "srv", raiseErrors: true, timeout: 300 })
      .catch((e) => e);
    ok(error instanceof CommandTimeoutError, String(error));
    strictEqual(error.peer, "srv");
    strictEqual(error.path, "slow");
    strictEqual(error.timeout, 300);
    await waitFor(() => gauge.aborted.length === 1, "the remote handler's signal to abort");
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "command() with raiseErrors: false yields null for a target that timed out",
  async fn() {
    const gauge = new Gauge();
    await using group = await startNodes(["caller", "srv"], {
      each: { srv: { commands: { slow: gauge.handler(60_000) } } },
    });
    strictEqual(
      await group.get("caller").command("slow", {
        target: "srv",
        timeout: 200,
        raiseErrors: false,
      }),
      null,
    );
    await waitFor(() => gauge.aborted.length === 1, "the remote handler's signal to abort");
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "command() rejects with the signal's reason on abort and aborts the remote handler",
  async fn() {
    const gauge = new Gauge();
    await using group = await startNodes(["caller", "srv"], {
      each: { srv: { commands: { slow: gauge.handler(60_000) } } },
    });
    const controller = new AbortController();
    const call = group.get("caller").command("slow", {
      target: "srv",
      signal: controller.signal,
      timeout: 60_000,
    });
    await waitFor(() => gauge.started === 1, "the remote handler to start");
    const reason = new Error("user gave up");
    controller.abort(reason);
    strictEqual(await deadline(call.catch((e) => e), "the call to reject"), reason);
    await waitFor(() => gauge.aborted.length === 1, "the remote handler's signal to abort");
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "command() with an already aborted signal rejects with its reason and sends nothing",
  async fn() {
    const gauge = new Gauge();
    await using group = await startNodes(["caller", "srv"], {
      each: { srv: { commands: { slow: gauge.handler(10) } } },
    });
    const reason = new Error("too late");
    await rejects(
      group.get("caller").command("slow", { target: "srv", signal: AbortSignal.abort(reason) }),
      (e) => e === reason,
    );
    strictEqual(await group.get("caller").command("slow", { target: "srv" }), "done");
    strictEqual(gauge.started, 1);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "command() calls at most maxConcurrency targets at once",
  async fn() {
    const gauge = new Gauge();
    const servers = ["s1", "s2", "s3", "s4"];
    await using group = await startNodes(["caller", ...servers], {
      common: { commands: { slow: gauge.handler(200) } },
    });
    const result = await group.get("caller").command("slow", {
      target: servers,
      maxConcurrency: 2,
    });
    deepStrictEqual(result, { s1: "done", s2: "done", s3: "done", s4: "done" });
    strictEqual(gauge.max, 2);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "command() counts each target's timeout from its send, not while it is queued",
  async fn() {
    const gauge = new Gauge();
    const servers = ["s1", "s2", "s3", "s4"];
    await using group = await startNodes(["caller", ...servers], {
      common: { commands: { slow: gauge.handler(400) } },
    });
    // One at a time: the last target waits for three 400 ms calls, more than its 1000 ms timeout.
    const result = await group.get("caller").command("slow", {
      target: servers,
      maxConcurrency: 1,
      timeout: 1000,
      raiseErrors: true,
    });
    deepStrictEqual(result, { s1: "done", s2: "done", s3: "done", s4: "done" });
    strictEqual(gauge.max, 1);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "maxInboundConcurrency caps the handlers running at once on a node",
  async fn() {
    const gauge = new Gauge();
    await using group = await startNodes(["caller", "srv"], {
      each: { srv: { maxInboundConcurrency: 2, commands: { slow: gauge.handler(100) } } },
    });
    const caller = group.get("caller");
    const results = await Promise.all(
      Array.from({ length: 6 }, () => caller.command("slow", { target: "srv", raiseErrors: true })),
    );
    deepStrictEqual(results, Array(6).fill("done"));
    strictEqual(gauge.started, 6);
    strictEqual(gauge.max, 2);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "command() survives 2000 concurrent calls to one peer",
  async fn() {
    await using group = await startNodes(["caller", "srv"], {
      each: { srv: { commands: { double: (_n, args) => (args[0] as number) * 2 } } },
    });
    const caller = group.get("caller");
    const results = await Promise.all(
      Array.from(
        { length: 2000 },
        (_, i) =>
          caller.command<number>("double", {
            target: "srv",
            args: [i],
            raiseErrors: true,
            timeout: 30_000,
          }),
      ),
    );
    deepStrictEqual(results, Array.from({ length: 2000 }, (_, i) => i * 2));
  },
});

// ---- What handlers see, built-ins ----

testIf(IN_NETNS, NETNS_REASON, {
  name: "a handler's ctx names the caller, its instance, the path and via 'local'",
  async fn() {
    await using group = await startNodes(["caller", "srv"], {
      each: {
        srv: {
          commands: {
            ns: {
              ctx: (_n, _a, _k, ctx) => ({
                caller: ctx.caller,
                instance: ctx.instance,
                path: ctx.path,
                via: ctx.via,
                relay: ctx.relay ?? null,
                aborted: ctx.signal.aborted,
              }),
            },
          },
        },
      },
    });
    const caller = group.get("caller");
    deepStrictEqual(await caller.command("ns.ctx", { target: "srv", raiseErrors: true }), {
      caller: "caller",
      instance: caller.instance,
      path: "ns.ctx",
      via: "local",
      relay: null,
      aborted: false,
    });
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "__echo__ returns the args, kwargs, the node's name and an ISO time",
  async fn() {
    await using group = await startNodes(["caller", "srv"]);
    const echo = await group.get("caller").command<Record<string, unknown>>("__echo__", {
      target: "srv",
      args: [1, "two", null, [3]],
      kwargs: { k: { v: true } },
      raiseErrors: true,
    });
    ok(echo !== null);
    deepStrictEqual(echo.args, [1, "two", null, [3]]);
    deepStrictEqual(echo.kwargs, { k: { v: true } });
    strictEqual(echo.node, "srv");
    strictEqual(typeof echo.time, "string");
    strictEqual(new Date(echo.time as string).toISOString(), echo.time);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "__list_commands__ and getCommands() list the peer's commands flattened and sorted",
  async fn(t) {
    const handler = () => null;
    await using group = await startNodes(["caller", "srv"], {
      each: {
        srv: {
          commands: {
            zeta: handler,
            math: { mul: handler, add: handler, deep: { sq: handler } },
            alpha: handler,
          },
        },
      },
    });
    const caller = group.get("caller");
    group.get("srv").registerCommand("math.deep.cube", handler);
    const expected = [
      "__echo__",
      "__list_commands__",
      "__peers__",
      "alpha",
      "math.add",
      "math.deep.cube",
      "math.deep.sq",
      "math.mul",
      "zeta",
    ];
    await t.step("__list_commands__", async () => {
      deepStrictEqual(
        await caller.command("__list_commands__", { target: "srv", raiseErrors: true }),
        expected,
      );
    });
    await t.step("getCommands() on one target", async () => {
      deepStrictEqual(await caller.getCommands({ target: "srv" }), expected);
    });
    await t.step("getCommands() on '*'", async () => {
      deepStrictEqual(await caller.getCommands(), { srv: expected });
    });
    await t.step("getCommands() on an unknown target", async () => {
      strictEqual(await caller.getCommands({ target: "ghost", raiseErrors: false }), null);
      await rejects(caller.getCommands({ target: "ghost" }), PeerNotFoundError);
    });
    await t.step("node.commands", () => {
      deepStrictEqual(group.get("srv").commands, expected);
    });
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "__peers__ returns the peer's view of the network",
  async fn() {
    await using group = await startNodes(["a", "b", "c"]);
    const [a, b, c] = [group.get("a"), group.get("b"), group.get("c")];
    const peers = await a.command("__peers__", { target: "b", raiseErrors: true });
    deepStrictEqual(peers, [
      {
        name: "a",
        instance: a.instance,
        local: true,
        address: a.address,
        relays: [],
        conflict: false,
      },
      {
        name: "c",
        instance: c.instance,
        local: true,
        address: c.address,
        relays: [],
        conflict: false,
      },
    ]);
    deepStrictEqual(peers, b.peers);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "commands registered after start() are callable at once",
  async fn() {
    await using group = await startNodes(["caller", "srv"]);
    const srv = group.get("srv");
    srv.registerCommand("late.one", () => 1);
    srv.registerCommands({ two: () => 2, sub: { three: () => 3 } }, "late");
    const caller = group.get("caller");
    deepStrictEqual(
      await Promise.all(
        ["late.one", "late.two", "late.sub.three"].map((path) =>
          caller.command(path, { target: "srv", raiseErrors: true })
        ),
      ),
      [1, 2, 3],
    );
  },
});

// ---- Size limits ----

testIf(IN_NETNS, NETNS_REASON, {
  name:
    "command() whose arguments exceed the caller's maxFrameSize rejects with MessageTooLargeError",
  async fn() {
    let runs = 0;
    await using group = await startNodes(["caller", "srv"], {
      each: { caller: { maxFrameSize: 64 * 1024 }, srv: { commands: { count: () => ++runs } } },
    });
    const caller = group.get("caller");
    const error = await caller
      .command("count", { target: "srv", args: [new Uint8Array(100 * 1024)], raiseErrors: true })
      .catch((e) => e);
    ok(error instanceof MessageTooLargeError, String(error));
    strictEqual(error.limit, 64 * 1024);
    strictEqual(await caller.command("count", { target: "srv", raiseErrors: true }), 1);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name:
    "command() whose arguments exceed the peer's maxFrameSize rejects with MessageTooLargeError before sending",
  async fn() {
    let runs = 0;
    await using group = await startNodes(["caller", "srv"], {
      each: { srv: { maxFrameSize: 64 * 1024, commands: { count: () => ++runs } } },
    });
    const caller = group.get("caller");
    const error = await caller
      .command("count", { target: "srv", args: [new Uint8Array(100 * 1024)], raiseErrors: true })
      .catch((e) => e);
    ok(error instanceof MessageTooLargeError, String(error));
    strictEqual(await caller.command("count", { target: "srv", raiseErrors: true }), 1);
  },
});
