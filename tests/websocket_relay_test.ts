/**
 * WebSocket relay links (`ws://`, `wss://`): a relay's `wsPort`, nodes that
 * list WebSocket relays in `servers`, and calls between nodes on WebSocket
 * and TCP links of the same relay. Hostile WebSocket input is in
 * `websocket_hostile_test.ts`.
 */

import { deepStrictEqual, match, ok, strictEqual, throws } from "node:assert/strict";
import { Node, NodeEvent, type RelayRefusal, RelayTlsError } from "../mod.ts";
import { Relay, TlsTransport } from "../relay/mod.ts";
import { formatRelayAddress, parseRelayAddress, type RelayAddress } from "../lib/address.ts";
import { deadline, HANG_TIMEOUT, testNetwork, waitFor } from "./_fixtures.ts";
import { RelayClient, type RelayClientOptions } from "../lib/relay_client.ts";
import { reachesVia, remoteOptions, spawnRelay } from "./_relay_fixtures.ts";
import { CertificateFactory } from "./_tls_fixtures.ts";

const LOOPBACK = { hostname: "127.0.0.1", port: 0 };

const commands = {
  math: { add: (_node: Node, args: unknown) => (args as number[]).reduce((a, b) => a + b, 0) },
};

/** An in-process relay with a WebSocket port; its TCP and WebSocket addresses. */
async function startWsRelay(transport?: TlsTransport) {
  const relay = new Relay({ ...LOOPBACK, wsPort: 0, ...(transport ? { transport } : {}) });
  await relay.start();
  const tls = transport !== undefined;
  return {
    relay,
    tcp: `${tls ? "tls://" : ""}127.0.0.1:${relay.addr.port}`,
    ws: `${tls ? "wss" : "ws"}://127.0.0.1:${relay.wsAddr!.port}/peerbase`,
    [Symbol.asyncDispose]: () => relay.close(),
  };
}

/** Waits until `a` (on relay address `viaA`) and `b` (on `viaB`) know each other. */
async function meetAcross(a: Node, viaA: string, b: Node, viaB: string): Promise<void> {
  await waitFor(
    () => reachesVia(a, b.name, viaA) && reachesVia(b, a.name, viaB),
    `${a.name} and ${b.name} to meet`,
  );
}

Deno.test("parseRelayAddress() reads ws:// and wss:// URLs with a path; formatRelayAddress() writes them canonically", () => {
  const cases: Array<[string, RelayAddress, string]> = [
    [
      "ws://relay.example:80",
      { hostname: "relay.example", port: 80, tls: false, path: "/" },
      "ws://relay.example:80",
    ],
    [
      "ws://127.0.0.1:7001/",
      { hostname: "127.0.0.1", port: 7001, tls: false, path: "/" },
      "ws://127.0.0.1:7001",
    ],
    [
      "WSS://[::1]:443/a/b",
      { hostname: "::1", port: 443, tls: true, path: "/a/b" },
      "wss://[::1]:443/a/b",
    ],
  ];
  for (const [text, parsed, canonical] of cases) {
    deepStrictEqual(parseRelayAddress(text), parsed);
    strictEqual(formatRelayAddress(parsed), canonical);
  }
  for (
    const bad of [
      "ws://relay.example",
      "ws://relay:80?x=1",
      "relay:80/path",
      "tls://relay:80/x",
      "ws://relay:80/é",
    ]
  ) {
    throws(() => parseRelayAddress(bad), /ws:\/\/host:port\/path/, bad);
  }
});

Deno.test("a node on a ws:// link and a node on a TCP link of the same relay call each other", async () => {
  await using r = await startWsRelay();
  const net = testNetwork("ws");
  await using web = new Node(remoteOptions(net, "web", r.ws, { commands }));
  await using tcp = new Node(remoteOptions(net, "tcp", r.tcp, { commands }));
  await deadline(Promise.all([web.start(), tcp.start()]), "both nodes to start");
  await meetAcross(web, r.ws, tcp, r.tcp);
  strictEqual(await web.command<number>("math.add", { target: "tcp", args: [2, 3] }), 5);
  strictEqual(await tcp.command<number>("math.add", { target: "web", args: [4, 5] }), 9);
  const big = new Array(50_000).fill(1);
  strictEqual(await tcp.command<number>("math.add", { target: "web", args: big }), 50_000);
  strictEqual(await web.command<number>("math.add", { target: "tcp", args: big }), 50_000);
});

Deno.test("a node on a wss:// link trusts the relay's certificate through caCerts", async () => {
  await using certificates = await CertificateFactory.create();
  const ca = await certificates.ca();
  const server = await certificates.server(ca);
  await using r = await startWsRelay(new TlsTransport({ cert: server.cert, key: server.key }));
  const net = testNetwork("wss");
  const caCerts = [ca.cert];
  await using web = new Node(remoteOptions(net, "web", r.ws, { commands, caCerts }));
  await using tcp = new Node(remoteOptions(net, "tcp", r.tcp, { commands, caCerts }));
  await deadline(Promise.all([web.start(), tcp.start()]), "both nodes to start");
  await meetAcross(web, r.ws, tcp, r.tcp);
  strictEqual(await web.command<number>("math.add", { target: "tcp", args: [2, 3] }), 5);
  strictEqual(await tcp.command<number>("math.add", { target: "web", args: [1, 1] }), 2);
});

Deno.test("the relay command line's --ws-port serves ws:// links and prints their address", async () => {
  await using relay = await spawnRelay({ args: ["--ws-port", "0"] });
  const line = /serving WebSocket links on (ws:\/\/127\.0\.0\.1:\d+)$/m;
  await waitFor(() => line.test(relay.process.stderr), "the WebSocket line");
  const ws = line.exec(relay.process.stderr)![1]!;
  const net = testNetwork("wscli");
  await using web = new Node(remoteOptions(net, "web", ws, { commands }));
  await using tcp = new Node(remoteOptions(net, "tcp", relay.address, { commands }));
  await deadline(Promise.all([web.start(), tcp.start()]), "both nodes to start");
  await meetAcross(web, ws, tcp, relay.address);
  strictEqual(await tcp.command<number>("math.add", { target: "web", args: [20, 22] }), 42);
});

Deno.test("a node on a ws:// link registers again by itself after its relay restarts on the same ports", async () => {
  const first = new Relay({ ...LOOPBACK, wsPort: 0 });
  await first.start();
  const { port } = first.addr;
  const wsPort = first.wsAddr!.port;
  const ws = `ws://127.0.0.1:${wsPort}`;
  const net = testNetwork("wsback");
  await using web = new Node(remoteOptions(net, "web", ws, { commands }));
  await using tcp = new Node(remoteOptions(net, "tcp", `127.0.0.1:${port}`, { commands }));
  await deadline(Promise.all([web.start(), tcp.start()]), "both nodes to start");
  await first.close();
  await waitFor(() => web.relays.every((relay) => !relay.up), "the ws:// link to drop");
  await using second = new Relay({ hostname: "127.0.0.1", port, wsPort });
  await second.start();
  await meetAcross(web, ws, tcp, `127.0.0.1:${port}`);
  strictEqual(await web.command<number>("math.add", { target: "tcp", args: [1, 2] }), 3);
});

Deno.test("a relay learned from a peer's sealed report keeps its ws:// scheme and path and is dialled over WebSocket", async () => {
  await using plain = await startWsRelay();
  await using web = await startWsRelay();
  const net = testNetwork("wslearn");
  // alice knows both relays (the second by its WebSocket address); bob learns it from alice.
  await using alice = new Node(remoteOptions(net, "alice", [plain.tcp, web.ws], { commands }));
  await using bob = new Node(remoteOptions(net, "bob", plain.tcp, { commands }));
  await deadline(Promise.all([alice.start(), bob.start()]), "both nodes to start");
  await waitFor(
    () => bob.relays.some((r) => r.address === web.ws && r.up && !r.maintained),
    "bob to learn and register at the WebSocket relay",
  );
  strictEqual(web.relay.stats.nodes, 2);
});

Deno.test("retryNow() ends a relay client's wait between attempts at once (what a page's online and visibilitychange events do)", async () => {
  let dials = 0;
  const transport = {
    dial: () => {
      dials++;
      return Promise.reject(new Error("connection refused"));
    },
    listen: () => Promise.reject(new Error("not used")),
  };
  const options: Partial<RelayClientOptions> = {
    address: "ws://127.0.0.1:9/",
    maintained: true,
    connectTimeout: HANG_TIMEOUT,
    transport,
    backoff: () => 60_000, // Without retryNow(), the second attempt would come a minute later.
    onRefused: () => {},
    onStatus: () => {},
  };
  const client = new RelayClient(options as RelayClientOptions);
  await client.start(0);
  try {
    await waitFor(() => dials === 1, "the first attempt");
    client.retryNow();
    await waitFor(() => dials === 2, "the second attempt, at once");
  } finally {
    await client.close();
  }
});

Deno.test("a wss:// relay whose certificate the node does not trust is reported as a RelayTlsError naming caCerts", async () => {
  await using certificates = await CertificateFactory.create();
  const ca = await certificates.ca();
  const server = await certificates.server(ca);
  await using r = await startWsRelay(new TlsTransport({ cert: server.cert, key: server.key }));
  const net = testNetwork("wssbad");
  await using stranger = new Node(remoteOptions(net, "stranger", r.ws, { commands }));
  const refused = new Promise<RelayRefusal>((resolve) =>
    stranger.addEventListener(NodeEvent.RELAY_REFUSED, (event) => resolve(event.detail), {
      once: true,
    })
  );
  await stranger.start();
  const refusal = await deadline(refused, "the relayrefused event");
  strictEqual(refusal.relay, r.ws);
  ok(refusal.error instanceof RelayTlsError, String(refusal.error));
  match(refusal.error.message, /over TLS: invalid peer certificate \(UnknownIssuer\).*caCerts/);
});
