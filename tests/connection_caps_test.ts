/**
 * Connection caps: the gate's counts, its defaults under the open-file
 * limit, and listeners (TCP, TLS), relays and nodes that close a connection
 * over a cap the moment it is accepted, while others are still served.
 * Real sockets on loopback; the relay listens on `::` so that `::1` is a
 * second source address next to 127.0.0.1.
 */

import { deepStrictEqual, ok, rejects, strictEqual, throws } from "node:assert/strict";
import {
  connectionCap,
  ConnectionGate,
  openFileLimit,
  parseOpenFileLimit,
  perAddressCap,
  sourceOf,
} from "../lib/connection_gate.ts";
import {
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
  resolveRelayOptions,
} from "../lib/relay_options.ts";
import {
  DEFAULT_MAX_INBOUND_CONNECTIONS,
  DEFAULT_MAX_INBOUND_CONNECTIONS_PER_ADDRESS,
  resolveOptions,
} from "../lib/options.ts";
import { tcpTransport } from "../lib/tcp_transport.ts";
import { TlsTransport } from "../lib/tls_transport.ts";
import { Relay } from "../lib/relay_server.ts";
import { Node } from "../mod.ts";
import { parseRelayArgs, UsageError } from "../relay.ts";
import { deadline, nodeOptions, testNetwork, waitFor } from "./_fixtures.ts";
import { remoteOptions } from "./_relay_fixtures.ts";
import { IN_NETNS, NETNS_REASON, testIf } from "./_env.ts";
import { selfSigned } from "./_tls_fixtures.ts";

const LOOPBACK = { hostname: "127.0.0.1", port: 0 };

/** A raw TCP client whose first read says whether it was served (bytes) or closed at once. */
class RawProbe implements AsyncDisposable {
  readonly first: Promise<"data" | "closed">;
  readonly #conn: Deno.TcpConn;

  private constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
    const buffer = new Uint8Array(1024);
    this.first = conn.read(buffer).then((n) => n === null ? "closed" : "data", () => "closed");
  }

  static async open(hostname: string, port: number): Promise<RawProbe> {
    return new RawProbe(await Deno.connect({ hostname, port }));
  }

  /** Resolves with the first read's outcome (10 s cap). */
  outcome(): Promise<"data" | "closed"> {
    return deadline(this.first, "the probe's first read");
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.#conn.close();
    } catch {
      // Closed by the other side already.
    }
    await this.first;
  }
}

/** Opens `count` probes to `hostname:port`; `await using` closes them all. */
async function probes(
  count: number,
  hostname: string,
  port: number,
): Promise<RawProbe[] & AsyncDisposable> {
  const list: RawProbe[] = [];
  for (let i = 0; i < count; i++) list.push(await RawProbe.open(hostname, port));
  return Object.assign(list, {
    [Symbol.asyncDispose]: async () => {
      await Promise.all(list.map((p) => p[Symbol.asyncDispose]()));
    },
  });
}

// ---- The gate ----

Deno.test("ConnectionGate refuses over the per-address cap, charges an IPv6 /64 as one source, and frees slots on release", async (t) => {
  const gate = new ConnectionGate({ maxConnections: 100, maxConnectionsPerAddress: 2 });
  const slots = [gate.admit("10.0.0.1:1"), gate.admit("[::ffff:10.0.0.1]:2")];
  await t.step("an IPv4-mapped address is the IPv4 source", () => {
    strictEqual(gate.admit("10.0.0.1:3"), "per-address");
  });
  await t.step("two hosts of one /64 share its slots; another /64 has its own", () => {
    ok(typeof gate.admit("[2001:db8::1]:1") !== "string");
    ok(typeof gate.admit("[2001:db8::2]:1") !== "string");
    strictEqual(gate.admit("[2001:db8::3]:1"), "per-address");
    ok(typeof gate.admit("[2001:db8:0:1::1]:1") !== "string");
  });
  await t.step("a release frees one slot of its source, once", () => {
    const slot = slots[0]!;
    ok(typeof slot !== "string");
    slot.release();
    slot.release();
    ok(typeof gate.admit("10.0.0.1:4") !== "string");
    strictEqual(gate.admit("10.0.0.1:5"), "per-address");
  });
  deepStrictEqual(gate.counts, {
    open: 5,
    acceptFailures: 0,
    refused: { total: 0, perAddress: 3 },
  });
});

Deno.test("ConnectionGate refuses over the total cap before looking at the source, and counts accept failures", () => {
  const gate = new ConnectionGate({ maxConnections: 2, maxConnectionsPerAddress: 1 });
  gate.admit("10.0.0.1:1");
  gate.admit("10.0.0.2:1");
  strictEqual(gate.admit("10.0.0.1:2"), "total");
  gate.acceptFailed();
  gate.acceptFailed();
  deepStrictEqual(gate.counts, {
    open: 2,
    acceptFailures: 2,
    refused: { total: 1, perAddress: 0 },
  });
});

Deno.test("sourceOf() keeps the relay's rules: IPv4 address, IPv6 /64", () => {
  strictEqual(sourceOf("127.0.0.1:7000"), "127.0.0.1");
  strictEqual(sourceOf("[::1]:7000"), "0:0:0:0::/64");
  strictEqual(sourceOf("[FE80::1:2:3:4]:1"), "fe80:0:0:0::/64");
});

// ---- Defaults under the open-file limit ----

Deno.test("openFileLimit() reads the soft 'Max open files' of /proc/self/limits", async () => {
  const text = await Deno.readTextFile("/proc/self/limits").catch(() => null);
  strictEqual(openFileLimit(), text === null ? null : parseOpenFileLimit(text));
  strictEqual(
    parseOpenFileLimit("Max processes  100  200  processes\nMax open files  1024  4096  files\n"),
    1024,
  );
  strictEqual(parseOpenFileLimit(""), null);
});

Deno.test("connectionCap() keeps a reserve of an eighth of the open-file limit, at least 64, and never exceeds its ceiling", () => {
  for (
    const [ceiling, limit, cap] of [
      [131_072, 256, 192],
      [131_072, 512, 448],
      [131_072, 1024, 896],
      [131_072, 65_536, 57_344],
      [131_072, 1_048_576, 131_072],
      [16_384, 1_048_576, 16_384],
      [131_072, 64, 32],
      [131_072, 1, 1],
      [16_384, null, 16_384],
    ] as const
  ) {
    strictEqual(connectionCap(ceiling, limit), cap, `ceiling ${ceiling}, limit ${limit}`);
  }
});

Deno.test("perAddressCap() keeps one address to a quarter of the total cap, so it cannot take every slot", () => {
  for (
    const [ceiling, total, cap] of [
      [1024, 16_384, 1024],
      [1024, 896, 224], // a node under ulimit -n 1024
      [2048, 896, 224], // a relay under ulimit -n 1024
      [2048, 57_344, 2048],
      [1024, 3, 1],
      [1024, 1, 1],
    ] as const
  ) {
    strictEqual(perAddressCap(ceiling, total), cap, `ceiling ${ceiling}, total ${total}`);
  }
  for (const limit of [64, 256, 1024, 4096, 65_536, 1_048_576]) {
    const total = connectionCap(DEFAULT_MAX_INBOUND_CONNECTIONS, limit);
    ok(perAddressCap(DEFAULT_MAX_INBOUND_CONNECTIONS_PER_ADDRESS, total) * 4 <= total, `${limit}`);
  }
});

Deno.test("relay and node options default their connection caps under the open-file limit and check given ones", () => {
  const relay = resolveRelayOptions({});
  strictEqual(relay.maxConnections, connectionCap(DEFAULT_MAX_CONNECTIONS));
  strictEqual(
    relay.maxConnectionsPerAddress,
    perAddressCap(DEFAULT_MAX_CONNECTIONS_PER_ADDRESS, relay.maxConnections),
  );
  const small = resolveRelayOptions({ maxConnections: 100 });
  strictEqual(small.maxConnectionsPerAddress, 25, "the default follows a given total cap");
  strictEqual(
    resolveRelayOptions({ maxConnections: 100, maxConnectionsPerAddress: 90 })
      .maxConnectionsPerAddress,
    90,
    "a given per-address cap is kept",
  );
  const set = resolveRelayOptions({ maxConnections: 5_000_000, maxConnectionsPerAddress: 3 });
  strictEqual(set.maxConnections, 5_000_000, "a given cap is kept, even above the limit");
  strictEqual(set.maxConnectionsPerAddress, 3);
  throws(() => resolveRelayOptions({ maxConnections: 0 }), RangeError);
  throws(() => resolveRelayOptions({ maxConnectionsPerAddress: 1.5 }), /maxConnectionsPerAddress/);
  const net = testNetwork("caps");
  const node = resolveOptions(nodeOptions(net, "a"));
  strictEqual(node.maxInboundConnections, connectionCap(DEFAULT_MAX_INBOUND_CONNECTIONS));
  strictEqual(
    node.maxInboundConnectionsPerAddress,
    perAddressCap(DEFAULT_MAX_INBOUND_CONNECTIONS_PER_ADDRESS, node.maxInboundConnections),
  );
  const smallNode = resolveOptions(nodeOptions(net, "a", { maxInboundConnections: 960 }));
  strictEqual(
    smallNode.maxInboundConnectionsPerAddress,
    240,
    "one address gets a quarter, not all",
  );
  const given = { maxInboundConnections: 960, maxInboundConnectionsPerAddress: 1024 };
  strictEqual(resolveOptions(nodeOptions(net, "a", given)).maxInboundConnectionsPerAddress, 1024);
  throws(() => resolveOptions(nodeOptions(net, "a", { maxInboundConnections: 0 })), RangeError);
});

Deno.test("relay --max-connections and --max-connections-per-address set the caps; 0 is a usage error", async () => {
  const options = await parseRelayArgs([
    "--max-connections",
    "500",
    "--max-connections-per-address",
    "20",
    "--max-per-address",
    "7",
  ]);
  ok(typeof options === "object");
  strictEqual(options.maxConnections, 500);
  strictEqual(options.maxConnectionsPerAddress, 20);
  strictEqual(options.maxPerAddress, 7, "the registration quota is a separate option");
  await rejects(parseRelayArgs(["--max-connections", "0"]), UsageError);
  await rejects(
    parseRelayArgs(["--max-connections-per-address", "x"]),
    /Invalid --max-connections-per-address 'x'/,
  );
});

// ---- Listeners ----

Deno.test("a TCP listener with a gate closes a connection over a cap at once and hands over the others", async () => {
  const gate = new ConnectionGate({ maxConnections: 10, maxConnectionsPerAddress: 2 });
  const listener = await tcpTransport.listen(LOOPBACK, { gate });
  // Deno takes one accept() at a time; the third one closes the third client, then waits on.
  let next: Promise<unknown> = Promise.resolve();
  try {
    await using clients = await probes(3, "127.0.0.1", listener.address.port);
    const streams = [
      await deadline(listener.accept(), "the first stream"),
      await deadline(listener.accept(), "the second stream"),
    ];
    next = listener.accept().catch(() => {});
    strictEqual(await clients[2]!.outcome(), "closed", "the third is closed at once");
    strictEqual(gate.counts.refused.perAddress, 1);
    strictEqual(gate.counts.open, 2);
    await streams[0]!.write(new Uint8Array([1]));
    strictEqual(await clients[0]!.outcome(), "data", "the first is served");
    for (const stream of streams) stream.close();
    strictEqual(gate.counts.open, 0, "closing a stream frees its slot");
  } finally {
    listener.close();
    await next;
  }
});

Deno.test("a TLS listener with a gate closes a connection over the cap before its handshake", async () => {
  const gate = new ConnectionGate({ maxConnections: 1, maxConnectionsPerAddress: 10 });
  const { cert, key } = await selfSigned();
  const tls = new TlsTransport({ cert, key });
  const listener = await tls.listen(LOOPBACK, { gate });
  try {
    const dialer = new TlsTransport({ caCerts: [cert] });
    const accepted = listener.accept();
    const first = await dialer.dial(listener.address);
    const stream = await deadline(accepted, "the first TLS stream");
    await using over = await RawProbe.open("127.0.0.1", listener.address.port);
    strictEqual(await over.outcome(), "closed", "the second is closed before any TLS byte");
    deepStrictEqual(gate.counts.refused, { total: 1, perAddress: 0 });
    await first.write(new Uint8Array([7]));
    const buffer = new Uint8Array(4);
    strictEqual(await deadline(stream.read(buffer), "a byte over TLS"), 1);
    first.close();
    stream.close();
    await waitFor(() => gate.counts.open === 0, "the slot to be freed when the socket closes");
  } finally {
    listener.close();
  }
});

// ---- Relays ----

Deno.test("a relay closes connections over its per-address cap at once, and still admits a node from another address", async () => {
  const net = testNetwork("caps");
  await using relay = await startDualStackRelay({ maxConnectionsPerAddress: 3 });
  await using clients = await probes(4, "127.0.0.1", relay.port);
  const outcomes = await Promise.all(clients.map((c) => c.outcome()));
  deepStrictEqual(outcomes.toSorted(), ["closed", "data", "data", "data"]);
  deepStrictEqual(relay.relay.stats.connectionsRefused, { total: 0, perAddress: 1 });
  await using node = new Node(remoteOptions(net, "a", `[::1]:${relay.port}`));
  await node.start();
  strictEqual(node.relays[0]?.up, true, "the node from ::1 registered");
  strictEqual(relay.relay.stats.nodes, 1);
});

Deno.test("a relay closes connections over its total cap at once, and serves again once one closes", async () => {
  const net = testNetwork("caps");
  await using relay = await startDualStackRelay({ maxConnections: 3, maxConnectionsPerAddress: 3 });
  const clients = await probes(4, "127.0.0.1", relay.port);
  try {
    const outcomes = await Promise.all(clients.map((c) => c.outcome()));
    deepStrictEqual(outcomes.toSorted(), ["closed", "data", "data", "data"]);
    deepStrictEqual(relay.relay.stats.connectionsRefused, { total: 1, perAddress: 0 });
  } finally {
    await clients[Symbol.asyncDispose]();
  }
  await waitFor(() => relay.relay.stats.connections === 0, "the probes to be forgotten");
  await using node = new Node(remoteOptions(net, "a", `[::1]:${relay.port}`));
  await node.start();
  strictEqual(node.relays[0]?.up, true, "the node registered once slots were free");
});

/** A relay on `::` (IPv4 and IPv6 loopback), any free port. */
async function startDualStackRelay(
  options: ConstructorParameters<typeof Relay>[0],
): Promise<{ relay: Relay; port: number } & AsyncDisposable> {
  const relay = new Relay({ hostname: "::", port: 0, ...options });
  await relay.start();
  return { relay, port: relay.addr.port, [Symbol.asyncDispose]: () => relay.close() };
}

// ---- Nodes ----

testIf(IN_NETNS, NETNS_REASON, {
  name:
    "a node closes direct connections over its per-address cap at once, and calls on its open links go on",
  async fn() {
    const net = testNetwork("caps");
    await using server = new Node(
      nodeOptions(net, "server", {
        maxInboundConnectionsPerAddress: 2,
        commands: { add: (_n, args) => (args as number[]).reduce((a, b) => a + b, 0) },
      }),
    );
    await using caller = new Node(nodeOptions(net, "caller"));
    await server.start();
    await caller.start();
    await caller.waitForPeer("server");
    strictEqual(await caller.command<number>("add", { target: "server", args: [1, 2] }), 3);
    const port = Number(server.address!.split(":").at(-1));
    await using extra = await probes(2, "127.0.0.1", port); // the caller's link + one = the cap
    strictEqual(await extra[1]!.outcome(), "closed", "the connection over the cap is closed");
    strictEqual(server.stats.connections.refused.perAddress, 1);
    strictEqual(server.stats.connections.open, 2);
    strictEqual(await caller.command<number>("add", { target: "server", args: [3, 4] }), 7);
  },
});
