/**
 * The Node's lifecycle, its options and command registry, and how its RPC
 * port copes with hostile or broken clients (raw TCP, real sockets).
 */

import { deepStrictEqual, ok, rejects, strictEqual, throws } from "node:assert/strict";
import {
  type CallContext,
  ConnectionClosedError,
  generateKey,
  Node,
  NodeClosedError,
  NodeNotStartedError,
  type NodeOptions,
  PortInUseError,
} from "../mod.ts";
import { CloseCode, encodeFrame, encodeName, FrameType, PROTOCOL_VERSION } from "../lib/frame.ts";
import { ErrorCode } from "../lib/message.ts";
import { IN_NETNS, NETNS_REASON, testIf } from "./_env.ts";
import {
  deadline,
  newInstance,
  nodeOptions,
  RawClient,
  type RawIdentity,
  sealFrame,
  sleep,
  startNodes,
  testNetwork,
  waitFor,
  wireNames,
} from "./_fixtures.ts";

// ---- Options ----

Deno.test("new Node() rejects invalid options with TypeError or RangeError", async (t) => {
  const base: NodeOptions<Node> = { name: "a", network: "net", networkKey: generateKey() };
  const cases: [string, Record<string, unknown>, ErrorConstructor][] = [
    ["empty name", { name: "" }, RangeError],
    ["name with '.'", { name: "a.b" }, RangeError],
    ["name with '|'", { name: "a|b" }, RangeError],
    ["name with ':'", { name: "a:b" }, RangeError],
    ["name with '*'", { name: "*" }, RangeError],
    ["name over 255 bytes", { name: "é".repeat(128) }, RangeError],
    ["name not a string", { name: 42 }, TypeError],
    ["empty network", { network: "" }, RangeError],
    ["network with '.'", { network: "lan.office" }, RangeError],
    ["network with ':'", { network: "a:b" }, RangeError],
    ["key not a string", { networkKey: 1234 }, TypeError],
    ["key of the wrong length", { networkKey: "c2hvcnQ=" }, TypeError],
    ["key with characters outside base64url", { networkKey: `${"+".repeat(43)}=` }, TypeError],
    ["maxRemotes below the number of servers", {
      servers: ["10.0.0.1:7000", "10.0.0.2:7000"],
      maxRemotes: 1,
    }, RangeError],
    ["maxRemotes negative", { maxRemotes: -1 }, RangeError],
    ["local port above 65535", { ports: [70000, 41993] }, RangeError],
    ["local port negative", { ports: [-1, 41993] }, RangeError],
    ["local port not an integer", { ports: [1.5, 41993] }, RangeError],
    ["advertiser port 0", { ports: [0, 0] }, RangeError],
    ["advertiser port above 65535", { ports: [0, 65536] }, RangeError],
    ["server without a port", { servers: "relay.example" }, TypeError],
    ["server with port 0", { servers: ["relay.example:0"] }, TypeError],
    ["server with a port above 65535", { servers: ["relay.example:70000"] }, TypeError],
    ["IPv6 server without brackets", { servers: ["::1:7000"] }, TypeError],
    ["server with a space", { servers: ["relay example:7000"] }, TypeError],
    ["useLocal false without servers", { useLocal: false }, RangeError],
    ["advertiseInterval 0", { advertiseInterval: 0 }, RangeError],
    ["maxInboundConcurrency 0", { maxInboundConcurrency: 0 }, RangeError],
    ["maxFrameSize below 1 KiB", { maxFrameSize: 100 }, RangeError],
    ["replayWindow below 1 s", { replayWindow: 10 }, RangeError],
    ["connectTimeout 0", { connectTimeout: 0 }, RangeError],
  ];
  for (const [what, override, type] of cases) {
    await t.step(what, () => {
      throws(() => new Node({ ...base, ...override } as NodeOptions<Node>), type);
    });
  }
  await t.step("no options object", () => {
    throws(() => new Node(undefined as unknown as NodeOptions<Node>), TypeError);
  });
});

Deno.test("new Node() accepts valid options and exposes its name, network and instance", () => {
  const node = new Node({
    name: "ålice ☕",
    network: "büro",
    networkKey: generateKey(),
    ports: [0, 41993],
    servers: ["relay.example:7000", "[::1]:7001"],
    maxRemotes: 2,
  });
  strictEqual(node.name, "ålice ☕");
  strictEqual(node.network, "büro");
  throws(() => node.instance, NodeNotStartedError);
  strictEqual(node.address, null);
  deepStrictEqual(node.peers, []);
});

// ---- Command registry ----

Deno.test("registerCommand(), registerCommands() and the commands option build one sorted tree", () => {
  const h = () => null;
  const node = new Node({
    name: "a",
    network: "net",
    networkKey: generateKey(),
    commands: { math: { add: h }, top: h },
  });
  node.registerCommand("math.mul", h);
  node.registerCommand("x.y.z", h);
  node.registerCommands({ deep: { er: h }, flat: h }, "math");
  node.registerCommands({ root: h });
  deepStrictEqual(node.commands, [
    "__echo__",
    "__list_commands__",
    "__peers__",
    "math.add",
    "math.deep.er",
    "math.flat",
    "math.mul",
    "root",
    "top",
    "x.y.z",
  ]);
});

Deno.test("registering a command where a namespace is, or under a command, throws TypeError", async (t) => {
  const h = () => null;
  const make = () =>
    new Node({
      name: "a",
      network: "net",
      networkKey: generateKey(),
      commands: { math: { add: h }, top: h },
    });
  await t.step("function over a namespace", () => {
    throws(() => make().registerCommand("math", h), TypeError);
  });
  await t.step("namespace under a function", () => {
    throws(() => make().registerCommand("top.sub", h), TypeError);
  });
  await t.step("tree with a namespace under a function", () => {
    throws(() => make().registerCommands({ sub: h }, "top"), TypeError);
  });
  await t.step("tree with a function over a namespace", () => {
    throws(() => make().registerCommands({ math: h }), TypeError);
  });
  await t.step("commands option: a built-in used as a namespace", () => {
    throws(
      () =>
        new Node({
          name: "a",
          network: "net",
          networkKey: generateKey(),
          commands: { __echo__: { x: h } },
        }),
      TypeError,
    );
  });
  await t.step("handler that is not a function", () => {
    throws(() => make().registerCommand("bad", 42 as unknown as () => null), TypeError);
  });
});

Deno.test("registering a command at a malformed path throws RangeError", async (t) => {
  const h = () => null;
  const node = new Node({ name: "a", network: "net", networkKey: generateKey() });
  for (const path of ["", ".a", "a.", "a..b"]) {
    await t.step(`registerCommand('${path}')`, () => {
      throws(() => node.registerCommand(path, h), RangeError);
    });
  }
  await t.step("tree key with a dot", () => {
    throws(() => node.registerCommands({ "a.b": h }), RangeError);
  });
  await t.step("commands option with a dotted key", () => {
    throws(
      () =>
        new Node({ name: "b", network: "net", networkKey: generateKey(), commands: { "a.b": h } }),
      RangeError,
    );
  });
  await t.step("registerCommands() at a malformed top", () => {
    throws(() => node.registerCommands({ x: h }, "a..b"), RangeError);
  });
});

// ---- Lifecycle ----

Deno.test("command() before start() rejects with NodeNotStartedError", async () => {
  const node = new Node({ name: "a", network: "net", networkKey: generateKey() });
  await rejects(node.command("__echo__", { target: "b" }), NodeNotStartedError);
  await rejects(node.command("__echo__"), NodeNotStartedError);
  await rejects(node.getCommands(), NodeNotStartedError);
});

Deno.test('command() rejects a target that is not a name, an array of names or "*" with TypeError', async () => {
  const node = new Node({ name: "a", network: "n", networkKey: generateKey() });
  for (const target of [5, [1], null, { name: "b" }]) {
    await rejects(
      node.command("x", { target: target as unknown as string }),
      TypeError,
      String(target),
    );
  }
});

Deno.test("close() before start() is safe; then start() and command() reject with NodeClosedError", async () => {
  const node = new Node({ name: "a", network: "net", networkKey: generateKey() });
  await node.close();
  await node.close();
  await node.finished;
  await rejects(node.start(), NodeClosedError);
  await rejects(node.command("__echo__", { target: "b" }), NodeClosedError);
});

Deno.test("command() rejects invalid call options with TypeError or RangeError", async (t) => {
  const node = new Node({ name: "a", network: "net", networkKey: generateKey() });
  const cases: [string, string, Record<string, unknown>, ErrorConstructor][] = [
    ["empty path", "", {}, TypeError],
    ["args not an array", "x", { args: { a: 1 } }, TypeError],
    ["kwargs an array", "x", { kwargs: [1] }, TypeError],
    ["kwargs null", "x", { kwargs: null }, TypeError],
    ["timeout 0", "x", { timeout: 0 }, RangeError],
    ["timeout NaN", "x", { timeout: NaN }, RangeError],
    ["maxConcurrency 0", "x", { maxConcurrency: 0 }, RangeError],
    ["maxConcurrency 1.5", "x", { maxConcurrency: 1.5 }, RangeError],
  ];
  for (const [what, path, options, type] of cases) {
    await t.step(what, async () => {
      await rejects(node.command(path, options as { target: string }), type);
    });
  }
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "start() and close() are safe to call twice; finished resolves after close()",
  async fn() {
    const node = new Node(nodeOptions(testNetwork(), "twice"));
    const first = node.start();
    strictEqual(node.start(), first);
    await first;
    await node.start();
    ok(node.address?.startsWith("127.0.0.1:"), String(node.address));
    const closing = node.close();
    strictEqual(node.close(), closing);
    await closing;
    await node.close();
    await deadline(node.finished, "finished to resolve");
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "start() after close() rejects with NodeClosedError",
  async fn() {
    const node = new Node(nodeOptions(testNetwork(), "once"));
    await node.start();
    await node.close();
    await rejects(node.start(), NodeClosedError);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "command() after close() rejects with NodeClosedError",
  async fn() {
    await using group = await startNodes(["caller", "srv"]);
    const caller = group.get("caller");
    await caller.close();
    await rejects(caller.command("__echo__", { target: "srv" }), NodeClosedError);
    await rejects(caller.command("__echo__"), NodeClosedError);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "close() right after start() without awaiting it leaves nothing running",
  async fn() {
    const node = new Node(nodeOptions(testNetwork(), "hasty"));
    const starting = node.start();
    await node.close();
    await starting.catch(() => {});
    await rejects(node.command("__echo__"), NodeClosedError);
  },
});

/** A slow handler that records when its signal aborts. */
function slowHandler(log: { started: number; aborted: number }) {
  return async (_n: Node, _a: unknown[], _k: unknown, ctx: CallContext) => {
    log.started++;
    try {
      await sleep(60_000, ctx.signal);
    } catch (error) {
      log.aborted++;
      throw error;
    }
  };
}

testIf(IN_NETNS, NETNS_REASON, {
  name: "close() of the caller rejects its calls in flight with NodeClosedError",
  async fn() {
    const log = { started: 0, aborted: 0 };
    await using group = await startNodes(["caller", "srv"], {
      each: { srv: { commands: { slow: slowHandler(log) } } },
    });
    const caller = group.get("caller");
    const calls = [1, 2, 3].map(() =>
      caller.command("slow", { target: "srv", raiseErrors: true, timeout: 60_000 }).catch((e) => e)
    );
    await waitFor(() => log.started === 3, "three handlers to start");
    await caller.close();
    for (const error of await deadline(Promise.all(calls), "the calls to reject")) {
      ok(error instanceof NodeClosedError, String(error));
    }
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "close() of the caller aborts the signals of its calls' remote handlers",
  async fn() {
    const log = { started: 0, aborted: 0 };
    await using group = await startNodes(["caller", "srv"], {
      each: { srv: { commands: { slow: slowHandler(log) } } },
    });
    const caller = group.get("caller");
    const calls = [1, 2].map(() =>
      caller.command("slow", { target: "srv", timeout: 60_000 }).catch((e) => e)
    );
    await waitFor(() => log.started === 2, "two handlers to start");
    await caller.close();
    await Promise.all(calls);
    await waitFor(() => log.aborted === 2, "the remote handlers' signals to abort");
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "close() of the serving node aborts its handlers and its callers get ConnectionClosedError",
  async fn() {
    const log = { started: 0, aborted: 0 };
    await using group = await startNodes(["caller", "srv"], {
      each: { srv: { commands: { slow: slowHandler(log) } } },
    });
    const caller = group.get("caller");
    const calls = [1, 2].map(() =>
      caller.command("slow", { target: "srv", raiseErrors: true, timeout: 60_000 }).catch((e) => e)
    );
    await waitFor(() => log.started === 2, "two handlers to start");
    await group.get("srv").close();
    strictEqual(log.aborted, 2);
    for (const error of await deadline(Promise.all(calls), "the calls to reject")) {
      ok(error instanceof ConnectionClosedError, String(error));
      strictEqual(error.peer, "srv");
    }
  },
});

// ---- Hostile and broken clients on the RPC port ----

/** A node `srv` serving `count`, and a `client` node that proves it still serves. */
async function serverAndClient() {
  let runs = 0;
  const group = await startNodes(["client", "srv"], {
    each: {
      srv: {
        commands: {
          count: () => ++runs,
          unshowable: () => {
            throw Object.create(null); // String() of it throws.
          },
        },
      },
    },
  });
  const srv = group.get("srv");
  return {
    group,
    srv,
    address: srv.address!,
    runs: () => runs,
    /** Calls `count` from the client node: the server still serves. */
    stillServes: async () => {
      const before = runs;
      strictEqual(
        await group.get("client").command("count", { target: "srv", raiseErrors: true }),
        before + 1,
      );
    },
  };
}

/** A frame with arbitrary header bytes. */
function rawFrame(length: number, rest: number[]): Uint8Array {
  const out = new Uint8Array(4 + rest.length);
  new DataView(out.buffer).setUint32(0, length);
  out.set(rest, 4);
  return out;
}

testIf(IN_NETNS, NETNS_REASON, {
  name:
    "a raw connection sending a malformed frame is closed with a GOAWAY and the node keeps serving",
  async fn(t) {
    const env = await serverAndClient();
    await using _group = env.group;
    const net = env.group.net;
    const raw: RawIdentity = { name: "raw", instance: newInstance() };
    const valid = await sealFrame(net, raw, "srv", [{ k: "q", id: 1, p: "count", a: [], kw: {} }]);
    const withByte = (at: number, value: number) => {
      const copy = valid.slice();
      copy[at] = value;
      return copy;
    };
    const wire = await wireNames(net);
    const header = (network: string) => ({
      network: encodeName(network === net.network ? wire.id : network, "network"),
      target: encodeName(wire.pseudonyms.of("srv"), "target"),
      sender: encodeName(wire.pseudonyms.of("raw"), "sender"),
    });
    const junk = rawFrame(0xfffffff0, []);
    const validThenJunk = new Uint8Array(valid.length + junk.length);
    validThenJunk.set(valid);
    validThenJunk.set(junk, valid.length);
    const cases: [string, Uint8Array, number][] = [
      ["length above maxFrameSize", rawFrame(0xfffffff0, [1, 1]), CloseCode.TOO_LARGE],
      [
        "an HTTP request",
        new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        CloseCode.TOO_LARGE,
      ],
      ["length shorter than a header", rawFrame(5, [1, 1, 0, 0, 0]), CloseCode.MALFORMED],
      ["unknown protocol version", withByte(4, PROTOCOL_VERSION + 1), CloseCode.VERSION],
      ["protocol version 0", withByte(4, 0), CloseCode.VERSION],
      ["unknown frame type", withByte(5, 0x7f), CloseCode.MALFORMED],
      [
        "names running past the frame",
        rawFrame(15, [PROTOCOL_VERSION, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 200, 0, 0]),
        CloseCode.MALFORMED,
      ],
      [
        "DATA whose body is not a token",
        encodeFrame(
          FrameType.DATA,
          1,
          header(net.network),
          crypto.getRandomValues(new Uint8Array(200)),
        ),
        CloseCode.AUTH,
      ],
      [
        "DATA for another network",
        encodeFrame(FrameType.DATA, 1, header("elsewhere"), valid.subarray(valid.length - 200)),
        CloseCode.ROUTING,
      ],
      [
        "DATA for another node",
        await sealFrame(net, raw, "someone-else", [{ k: "q", id: 1, p: "count", a: [], kw: {} }]),
        CloseCode.ROUTING,
      ],
      ["oversize header right after a valid frame", validThenJunk, CloseCode.TOO_LARGE],
    ];
    for (const [what, bytes, code] of cases) {
      await t.step(what, async () => {
        await using client = await RawClient.hello(env.address, net, raw);
        await client.write(bytes);
        const outcome = await client.outcome();
        ok(outcome.closed);
        ok(outcome.goaway, `no GOAWAY; frames: ${outcome.frames.length}`);
        strictEqual(outcome.goaway.code, code, outcome.goaway.reason);
        await env.stillServes();
      });
    }
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a raw connection that ends mid-frame is closed and the node keeps serving",
  async fn() {
    const env = await serverAndClient();
    await using _group = env.group;
    const frame = await sealFrame(env.group.net, { name: "raw", instance: newInstance() }, "srv", [
      { k: "q", id: 1, p: "count", a: [], kw: {} },
    ]);
    await using client = await RawClient.connect(env.address);
    await client.write(frame.subarray(0, Math.floor(frame.length / 2)));
    await client.closeWrite();
    const outcome = await client.outcome();
    ok(outcome.closed);
    strictEqual(env.runs(), 0);
    await env.stillServes();
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a request sealed with another network key runs nothing and its connection is closed",
  async fn() {
    const env = await serverAndClient();
    await using _group = env.group;
    const wrongKey = { network: env.group.net.network, networkKey: generateKey() };
    // The header names the right network id: only the token's key is wrong.
    const frame = await sealFrame(wrongKey, { name: "raw", instance: newInstance() }, "srv", [
      { k: "q", id: 1, p: "count", a: [], kw: {} },
    ], { headerOf: env.group.net });
    await using client = await RawClient.connect(env.address);
    await client.write(frame);
    const outcome = await client.outcome();
    ok(outcome.goaway);
    strictEqual(outcome.goaway.code, CloseCode.AUTH, outcome.goaway.reason);
    ok(outcome.goaway.reason.includes("bad-mac"), outcome.goaway.reason);
    strictEqual(outcome.frames.filter((f) => f.type === FrameType.DATA).length, 0);
    strictEqual(env.runs(), 0);
    await env.stillServes();
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a replayed request frame runs its handler once and every copy gets the same answer",
  async fn() {
    const env = await serverAndClient();
    await using _group = env.group;
    const net = env.group.net;
    const raw = { name: "raw", instance: newInstance() };
    const frame = await sealFrame(net, raw, "srv", [
      { k: "q", id: 7, p: "count", a: [], kw: {} },
    ]);
    await using first = await RawClient.hello(env.address, net, raw);
    await first.write(frame);
    await first.write(frame);
    await using second = await RawClient.hello(env.address, net, raw);
    await second.write(frame);
    deepStrictEqual(await first.messages(net, 2), [{ k: "r", id: 7, v: 1 }, {
      k: "r",
      id: 7,
      v: 1,
    }]);
    deepStrictEqual(await second.messages(net, 1), [{ k: "r", id: 7, v: 1 }]);
    strictEqual(env.runs(), 1);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a request id twice in one batch runs once and is answered once",
  async fn() {
    const env = await serverAndClient();
    await using _group = env.group;
    const net = env.group.net;
    const raw = { name: "raw", instance: newInstance() };
    const count = (id: number) => ({ k: "q" as const, id, p: "count", a: [], kw: {} });
    const frame = await sealFrame(net, raw, "srv", [count(7), count(7), count(8)]);
    await using client = await RawClient.hello(env.address, net, raw);
    await client.write(frame);
    deepStrictEqual(await client.messages(net, 2), [{ k: "r", id: 7, v: 1 }, {
      k: "r",
      id: 8,
      v: 2,
    }]);
    strictEqual(env.runs(), 2);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name:
    "a handler that throws a value with no text is answered with an error and the batch's later requests are served",
  async fn() {
    const env = await serverAndClient();
    await using _group = env.group;
    const net = env.group.net;
    const raw = { name: "raw", instance: newInstance() };
    const frame = await sealFrame(net, raw, "srv", [
      { k: "q", id: 5, p: "count", a: [], kw: {} },
      { k: "q", id: 6, p: "unshowable", a: [], kw: {} },
      { k: "q", id: 7, p: "count", a: [], kw: {} },
    ]);
    await using client = await RawClient.hello(env.address, net, raw);
    await client.write(frame);
    const [first, failed, last] = await client.messages(net, 3);
    deepStrictEqual(first, { k: "r", id: 5, v: 1 });
    ok(
      failed?.k === "e" && failed.id === 6 && failed.c === ErrorCode.HANDLER,
      JSON.stringify(failed),
    );
    deepStrictEqual(last, { k: "r", id: 7, v: 2 });
    await env.stillServes();
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a request whose token is older than the replay window is refused",
  async fn() {
    const env = await serverAndClient();
    await using _group = env.group;
    const frame = await sealFrame(env.group.net, { name: "raw", instance: newInstance() }, "srv", [
      { k: "q", id: 1, p: "count", a: [], kw: {} },
    ], { now: Date.now() - 2 * 60_000 });
    await using client = await RawClient.connect(env.address);
    await client.write(frame);
    const outcome = await client.outcome();
    ok(outcome.goaway);
    strictEqual(outcome.goaway.code, CloseCode.AUTH, outcome.goaway.reason);
    ok(outcome.goaway.reason.includes("expired"), outcome.goaway.reason);
    strictEqual(env.runs(), 0);
    await env.stillServes();
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a raw client sealing with the network key is answered on its own connection",
  async fn() {
    const env = await serverAndClient();
    await using _group = env.group;
    const net = env.group.net;
    const raw = { name: "raw", instance: newInstance() };
    const frame = await sealFrame(net, raw, "srv", [
      { k: "q", id: 1, p: "count", a: [], kw: {} },
      { k: "q", id: 2, p: "__echo__", a: ["hi"], kw: {} },
      { k: "ping", id: 3 },
    ]);
    await using client = await RawClient.hello(env.address, net, raw);
    await client.write(frame);
    const messages = await client.messages(net, 3);
    const byId = new Map(messages.map((m) => [m.id, m]));
    deepStrictEqual(byId.get(1), { k: "r", id: 1, v: 1 });
    strictEqual(byId.get(2)?.k, "r");
    deepStrictEqual(byId.get(3), { k: "pong", id: 3 });
  },
});

Deno.test("start() rejects with PortInUseError naming ports[0] when the direct-call port is held", async () => {
  const holder = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const node = new Node(nodeOptions(testNetwork(), "a", { ports: [holder.addr.port, 41993] }));
    const error = await node.start().then(() => null, (e) => e);
    ok(error instanceof PortInUseError, String(error));
    strictEqual(error.port, holder.addr.port);
    strictEqual(error.option, "ports[0]");
    ok(error.message.includes("TCP port for direct calls"), error.message);
    await node.close();
  } finally {
    holder.close();
  }
});
