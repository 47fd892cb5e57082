/**
 * Bugs fixed in the routing, each test named for the bug: a direct dial
 * that fails falls back to a relay, closing a node fails its in-flight
 * calls with NodeClosedError (and retries nothing), and a closing link
 * throws the retriable ConnectionClosedError.
 */

import { ok, strictEqual, throws } from "node:assert/strict";
import {
  type CallContext,
  CommandError,
  CommandTimeoutError,
  ConnectionClosedError,
  Node,
  NodeClosedError,
  type RouteDecision,
} from "../mod.ts";
import { Discovery } from "../lib/discovery.ts";
import { InstanceKey } from "../lib/instance_key.ts";
import { Fernet, generateKey } from "../lib/fernet.ts";
import { Link } from "../lib/link.ts";
import { networkId, Pseudonyms } from "../lib/network_identity.ts";
import { FramedConnection } from "../lib/connection.ts";
import { isRetriable } from "../lib/calls.ts";
import { encodeRecord } from "../lib/message.ts";
import { IN_NETNS, NETNS_REASON, testIf } from "./_env.ts";
import {
  deadline,
  loopbackStreams,
  nodeOptions,
  sleep,
  startNodes,
  type TestNetwork,
  testNetwork,
  waitFor,
} from "./_fixtures.ts";
import { meetVia, remoteOptions, startRelay } from "./_relay_fixtures.ts";
import { fakeAnnouncer } from "./_advert_fixtures.ts";

/** A TCP port on 127.0.0.1 that refuses connections (bound, then released). */
function refusingPort(): number {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = probe.addr;
  probe.close();
  return port;
}

/**
 * Sealed LAN announces, under `net`'s key, that say node `name` (an
 * instance of its own: only the node itself can sign for its instance)
 * takes direct calls on 127.0.0.1:`port`: what a peer behind a firewall
 * that passes multicast but blocks TCP looks like.
 */
async function advertiseAt(
  net: TestNetwork,
  name: string,
  port: number,
): Promise<Discovery> {
  return new Discovery({
    name,
    network: net.network,
    instanceKey: await InstanceKey.generate(),
    fernet: new Fernet(net.networkKey),
    rpcPort: port,
    host: "127.0.0.1",
    interval: 500,
    onAnnounce: () => {},
    onBye: () => {},
  });
}

/** A handler that records that it started, then answers after `ms` (honouring its signal). */
function slow(ms: number, started: { count: number }) {
  return async (_node: Node, _args: unknown[], _kwargs: unknown, ctx: CallContext) => {
    started.count++;
    await sleep(ms, ctx.signal);
    return "done";
  };
}

// ---- A failed direct dial falls back to a relay ----

testIf(IN_NETNS, NETNS_REASON, {
  name:
    "bug: a peer advertised on the LAN at an address that refuses TCP is still called through its relay",
  async fn() {
    const net = testNetwork("failover");
    await using relay = await startRelay();
    // b is reachable only through the relay; its LAN advert points at a port that refuses TCP.
    await using b = new Node(remoteOptions(net, "b", relay.address, {
      commands: { who: (_n, _a, _k, ctx) => ({ via: ctx.via, relay: ctx.relay }) },
    }));
    await using a = new Node(nodeOptions(net, "a", { servers: [relay.address], debug: true }));
    await b.start();
    await a.start();
    await using _advert = await advertiseAt(net, "b", refusingPort());
    await _advert.start();
    await waitFor(
      () => a.peers.some((p) => p.name === "b" && p.local && p.relays.includes(relay.address)),
      "a to know b both on the LAN and through the relay",
    );
    const decisions: RouteDecision[] = [];
    a.addEventListener("debug", (event) => decisions.push(event.detail));
    for (let i = 0; i < 2; i++) {
      const seen = await deadline(a.command("who", { target: "b" }), `call ${i}`);
      strictEqual(JSON.stringify(seen), JSON.stringify({ via: "relay", relay: relay.address }));
    }
    strictEqual(decisions[0]?.route, "direct", JSON.stringify(decisions));
    strictEqual(decisions[0]?.attempt, 0);
    strictEqual(decisions[1]?.route, relay.address, JSON.stringify(decisions));
    strictEqual(decisions[1]?.attempt, 1);
    strictEqual(decisions[1]?.id, decisions[0]?.id, "the retry is the same request");
    const stats = a.stats;
    strictEqual(stats.routes[relay.address]?.sent, 2);
    strictEqual(stats.routes.direct?.sent ?? 0, 0, "nothing went out directly");
    strictEqual(stats.retries, 2);
    strictEqual(stats.failovers, 0, "direct to relay is a retry, not a relay failover");
  },
});

// ---- Closing a node fails its in-flight calls with NodeClosedError ----

Deno.test("bug: closing a node rejects its in-flight relayed calls with NodeClosedError, not ConnectionClosedError", async () => {
  const net = testNetwork("failover");
  await using relay = await startRelay();
  const started = { count: 0 };
  await using b = new Node(remoteOptions(net, "b", relay.address, {
    commands: { slow: slow(5000, started) },
  }));
  const a = new Node(remoteOptions(net, "a", relay.address));
  try {
    await b.start();
    await a.start();
    await meetVia([a, b], relay.address);
    const single = a.command("slow", { target: "b", timeout: Infinity }).catch((e) => e);
    const many = a.command("slow", { target: ["b"], timeout: Infinity }).catch((e) => e);
    await waitFor(() => started.count === 2, "both calls to reach b");
    await deadline(a.close(), "a to close");
    const error = await deadline(single, "the single call to fail");
    ok(error instanceof NodeClosedError, String(error));
    strictEqual(error.node, "a");
    const fanned = await deadline(many, "the fan-out to fail");
    ok(fanned instanceof CommandError, String(fanned));
    ok(fanned.results.b instanceof NodeClosedError, String(fanned.results.b));
  } finally {
    await a.close();
  }
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "bug: closing a node rejects its in-flight direct calls with NodeClosedError",
  async fn() {
    const started = { count: 0 };
    await using group = await startNodes(["a", "b"], {
      each: { b: { commands: { slow: slow(5000, started) } } },
    });
    const a = group.get("a");
    const call = a.command("slow", { target: "b", timeout: Infinity }).catch((e) => e);
    await waitFor(() => started.count === 1, "the call to reach b");
    await deadline(a.close(), "a to close");
    const error = await deadline(call, "the call to fail");
    ok(error instanceof NodeClosedError, String(error));
  },
});

Deno.test("bug: a node that is closing retries no call through another relay", async () => {
  const net = testNetwork("failover");
  await using r1 = await startRelay();
  await using r2 = await startRelay();
  const servers = [r1.address, r2.address];
  const started = { count: 0 };
  await using b = new Node(remoteOptions(net, "b", servers, {
    commands: { slow: slow(1500, started) },
  }));
  const a = new Node(remoteOptions(net, "a", servers));
  try {
    await b.start();
    await a.start();
    await meetVia([a, b], r1.address);
    await meetVia([a, b], r2.address);
    const call = a.command("slow", { target: "b", timeout: Infinity }).catch((e) => e);
    await waitFor(() => started.count === 1, "the call to reach b");
    await deadline(a.close(), "a to close");
    const error = await deadline(call, "the call to fail");
    ok(error instanceof NodeClosedError, String(error));
    // A retry through the other relay would run the handler a second time.
    await sleep(300);
    strictEqual(started.count, 1, "b ran the call once");
  } finally {
    await a.close();
  }
});

// ---- A closing link throws the retriable ConnectionClosedError ----

/** A Link over one end of a real loopback TCP connection, and the other end. */
async function linkPair() {
  const [stream, other] = await loopbackStreams();
  const peer = new FramedConnection(other);
  peer.start(() => {});
  const key = generateKey();
  const link = new Link(new FramedConnection(stream), {
    keys: [{
      fernet: new Fernet(key),
      id: await networkId(key, "office"),
      pseudonyms: Pseudonyms.fromKey(key, "office"),
    }],
    self: { name: "a", instance: "0123456789abcdef", network: "office" },
    maxFrameSize: 1 << 20,
    replayWindow: 60_000,
    nextId: (() => {
      let id = 0;
      return () => ++id;
    })(),
    onBatch: () => {},
  });
  return {
    link,
    peer,
    async [Symbol.asyncDispose]() {
      await link.close();
      await peer.close();
    },
  };
}

const RECORD = encodeRecord({ k: "q", id: 1, p: "x", a: [], kw: {} });

function isRetriableClosed(error: unknown): boolean {
  ok(error instanceof ConnectionClosedError, `${(error as Error)?.name}: ${error}`);
  strictEqual(error.peer, "b");
  ok(isRetriable(error), "isRetriable() agrees");
  return true;
}

Deno.test("bug: Link.send() on a link that is closing throws ConnectionClosedError, which isRetriable() accepts", async () => {
  await using pair = await linkPair();
  pair.link.send("b", undefined, RECORD); // open: queued
  const closing = pair.link.close();
  ok(pair.link.connection.isClosed, "closing has begun");
  throws(() => pair.link.send("b", undefined, RECORD), isRetriableClosed);
  await deadline(closing, "the link to close");
  throws(() => pair.link.send("b", undefined, RECORD), isRetriableClosed);
});

Deno.test("bug: Link.send() after the other end closed throws ConnectionClosedError naming why", async () => {
  await using pair = await linkPair();
  await pair.peer.close(1, "going away");
  await deadline(pair.link.closed, "the link to see the close");
  throws(() => pair.link.send("b", "fedcba9876543210", RECORD), (error: unknown) => {
    isRetriableClosed(error);
    ok((error as ConnectionClosedError).reason.includes("going away"), String(error));
    return true;
  });
});

Deno.test("isRetriable() accepts only ConnectionClosedError", () => {
  ok(isRetriable(new ConnectionClosedError("b", "reset")));
  ok(!isRetriable(new NodeClosedError("a")));
  ok(!isRetriable(new Error("Connection is closed")));
  ok(!isRetriable(new RangeError("x")));
  ok(!isRetriable(undefined));
});

// ---- A call that gives up while its dial still hangs ----

/**
 * A veth pair in this test's namespace whose far end has no address:
 * nobody answers for `peer`, so a TCP connect to it hangs (no answer, no
 * reset) until its own timeout, as behind a firewall that drops SYNs.
 */
async function blackhole(): Promise<{ peer: string } & AsyncDisposable> {
  const link = `pbd${crypto.getRandomValues(new Uint8Array(3)).toHex()}`;
  const net = `10.213.${crypto.getRandomValues(new Uint8Array(1))[0]!}`;
  const ip = async (...args: string[]) => {
    const { success, stderr } = await new Deno.Command("ip", { args, stderr: "piped" }).output();
    if (!success) throw new Error(`ip ${args.join(" ")}: ${new TextDecoder().decode(stderr)}`);
  };
  await ip("link", "add", link, "type", "veth", "peer", "name", `${link}x`);
  try {
    await ip("addr", "add", `${net}.1/24`, "dev", link);
    await ip("link", "set", link, "up");
    await ip("link", "set", `${link}x`, "up");
  } catch (error) {
    await ip("link", "del", link);
    throw error;
  }
  return { peer: `${net}.2`, [Symbol.asyncDispose]: () => ip("link", "del", link) };
}

/** Sealed announces for `name` at `host`:7000, sent on loopback every 100 ms until disposed. */
async function announceOnLoopback(
  net: TestNetwork,
  name: string,
  host: string,
): Promise<Disposable> {
  const socket = Deno.listenDatagram({
    transport: "udp",
    hostname: "127.0.0.1",
    port: 0,
    loopback: true,
  });
  const next = await fakeAnnouncer(new Fernet(net.networkKey), {
    network: net.network,
    name,
    host,
    interval: 500,
  });
  const group: Deno.NetAddr = { transport: "udp", hostname: "239.255.80.66", port: 41993 };
  const send = () => next().then((d) => socket.send(d, group)).catch(() => {});
  const timer = setInterval(send, 100);
  void send();
  return {
    [Symbol.dispose]() {
      clearInterval(timer);
      socket.close();
    },
  };
}

testIf(IN_NETNS, NETNS_REASON, {
  name:
    "bug: a call that gives up while its direct dial hangs rejects with its own error at once and leaves nothing unhandled",
  async fn(t) {
    await using hole = await blackhole();
    const net = testNetwork("hang");
    await using a = new Node(nodeOptions(net, "a", { connectTimeout: 5000 }));
    await a.start();
    using _advert = await announceOnLoopback(net, "b", hole.peer);
    await a.waitForPeer("b", { timeout: 5000 });
    await t.step("the timeout", async () => {
      const started = performance.now();
      const error = await a.command("x", { target: "b", timeout: 300 }).catch((e) => e);
      ok(error instanceof CommandTimeoutError, String(error));
      ok(performance.now() - started < 2000, "not held until the connect timeout");
    });
    await t.step("the signal", async () => {
      const error = await a.command("x", { target: "b", signal: AbortSignal.timeout(200) })
        .catch((e) => e);
      ok(error instanceof DOMException && error.name === "TimeoutError", String(error));
    });
    await t.step("closing the node", async () => {
      const call = a.command("x", { target: "b", timeout: Infinity }).catch((e) => e);
      await sleep(100);
      await a.close();
      const error = await deadline(call, "the call to fail");
      ok(error instanceof NodeClosedError, String(error));
    });
  },
});
