/**
 * The relay's aggregate counters: their Prometheus text, and the HTTP
 * endpoint that serves it (real sockets on 127.0.0.1, port 0).
 */

import assert from "node:assert/strict";
import {
  formatPrometheus,
  type MetricsServer,
  newCounters,
  REFUSAL_REASONS,
  type RelayCounters,
  serveMetrics,
} from "../lib/relay_metrics.ts";

const LOCAL = { hostname: "127.0.0.1", port: 0 };
/** Hard limit on any one request or subprocess, ms. */
const HANG = 20_000;

/** Fetches `path` from `server`, giving up after {@linkcode HANG}. */
function get(server: MetricsServer, path = "/metrics", method = "GET"): Promise<Response> {
  const url = `http://127.0.0.1:${server.addr.port}${path}`;
  return fetch(url, { method, signal: AbortSignal.timeout(HANG) });
}

function sample(): RelayCounters {
  const counters = newCounters();
  Object.assign(counters, {
    connections: 12,
    nodes: 10,
    networks: 3,
    framesForwarded: 123_456,
    bytesForwarded: 98_765_432,
    throttles: 7,
  });
  counters.refusals.proof = 4;
  counters.refusals["address-quota"] = 2;
  counters.disconnects.slowReader = 1;
  counters.disconnects.flood = 5;
  counters.acceptFailures = 3;
  counters.connectionsRefused.total = 2;
  counters.connectionsRefused.perAddress = 6;
  counters.clusterDropped = 7;
  counters.clusterUnrouted = 8;
  return counters;
}

const SAMPLE_TEXT = `# HELP peerbase_relay_connections Open connections, registered or not.
# TYPE peerbase_relay_connections gauge
peerbase_relay_connections 12
# HELP peerbase_relay_nodes Registered nodes.
# TYPE peerbase_relay_nodes gauge
peerbase_relay_nodes 10
# HELP peerbase_relay_networks Networks with at least one registered node.
# TYPE peerbase_relay_networks gauge
peerbase_relay_networks 3
# HELP peerbase_relay_buffered_bytes Bytes held for partial and queued frames.
# TYPE peerbase_relay_buffered_bytes gauge
peerbase_relay_buffered_bytes 0
# HELP peerbase_relay_forwarded_frames_total DATA frames written to receivers.
# TYPE peerbase_relay_forwarded_frames_total counter
peerbase_relay_forwarded_frames_total 123456
# HELP peerbase_relay_forwarded_bytes_total Bytes of DATA frames written.
# TYPE peerbase_relay_forwarded_bytes_total counter
peerbase_relay_forwarded_bytes_total 98765432
# HELP peerbase_relay_refusals_total Registrations refused, by reason.
# TYPE peerbase_relay_refusals_total counter
peerbase_relay_refusals_total{reason="proof"} 4
peerbase_relay_refusals_total{reason="version"} 0
peerbase_relay_refusals_total{reason="network"} 0
peerbase_relay_refusals_total{reason="full"} 0
peerbase_relay_refusals_total{reason="address-quota"} 2
peerbase_relay_refusals_total{reason="network-quota"} 0
peerbase_relay_refusals_total{reason="name-taken"} 0
peerbase_relay_refusals_total{reason="rate"} 0
peerbase_relay_refusals_total{reason="deadline"} 0
peerbase_relay_refusals_total{reason="unavailable"} 0
# HELP peerbase_relay_throttles_total Times a sender was slowed down.
# TYPE peerbase_relay_throttles_total counter
peerbase_relay_throttles_total 7
# HELP peerbase_relay_disconnects_total Connections cut by the relay, by reason.
# TYPE peerbase_relay_disconnects_total counter
peerbase_relay_disconnects_total{reason="slow-reader"} 1
peerbase_relay_disconnects_total{reason="flood"} 5
peerbase_relay_disconnects_total{reason="budget"} 0
peerbase_relay_disconnects_total{reason="stalled-frame"} 0
# HELP peerbase_relay_accept_failures_total Accepts that failed and were retried.
# TYPE peerbase_relay_accept_failures_total counter
peerbase_relay_accept_failures_total 3
# HELP peerbase_relay_connections_refused_total Connections closed at once, by cap.
# TYPE peerbase_relay_connections_refused_total counter
peerbase_relay_connections_refused_total{reason="total"} 2
peerbase_relay_connections_refused_total{reason="per-address"} 6
# HELP peerbase_relay_cluster_dropped_total Frames from other relays of the cluster dropped: sender share or receiver queue full.
# TYPE peerbase_relay_cluster_dropped_total counter
peerbase_relay_cluster_dropped_total 7
# HELP peerbase_relay_cluster_unrouted_total Frames not carried between relays: no live relay held the target, NATS was away, or a frame from another relay named no member here.
# TYPE peerbase_relay_cluster_unrouted_total counter
peerbase_relay_cluster_unrouted_total 8
`;

// Counters and their text

Deno.test("newCounters() starts every counter at zero, every refusal reason included", () => {
  const counters = newCounters();
  assert.deepEqual(counters, {
    connections: 0,
    nodes: 0,
    networks: 0,
    buffered: 0,
    framesForwarded: 0,
    bytesForwarded: 0,
    refusals: Object.fromEntries(REFUSAL_REASONS.map((reason) => [reason, 0])),
    throttles: 0,
    disconnects: { slowReader: 0, flood: 0, budget: 0, stalledFrame: 0 },
    acceptFailures: 0,
    connectionsRefused: { total: 0, perAddress: 0 },
    clusterDropped: 0,
    clusterUnrouted: 0,
  });
  assert.equal(Object.keys(counters.refusals).length, 10);
});

Deno.test("newCounters() returns fresh counters each time", () => {
  const first = newCounters();
  first.refusals.rate++;
  first.disconnects.flood++;
  first.connectionsRefused.total++;
  assert.equal(newCounters().refusals.rate, 0);
  assert.equal(newCounters().connectionsRefused.total, 0);
  assert.equal(newCounters().disconnects.flood, 0);
});

Deno.test("formatPrometheus() writes the exposition format 0.0.4, gauges and _total counters", () => {
  assert.equal(formatPrometheus(sample()), SAMPLE_TEXT);
});

Deno.test("formatPrometheus() lists every refusal reason, even at 0", () => {
  const text = formatPrometheus(newCounters());
  for (const reason of REFUSAL_REASONS) {
    assert.match(
      text,
      new RegExp(`^peerbase_relay_refusals_total\\{reason="${reason}"\\} 0$`, "m"),
    );
  }
});

Deno.test("formatPrometheus() names a HELP and a TYPE line before every metric's samples", () => {
  const lines = formatPrometheus(sample()).trimEnd().split("\n");
  let declared = "";
  for (const line of lines) {
    const help = /^# HELP (\S+) \S/.exec(line);
    const type = /^# TYPE (\S+) (gauge|counter)$/.exec(line);
    if (help) declared = help[1]!;
    else if (type) assert.equal(type[1], declared);
    else assert.match(line, new RegExp(`^${declared}(\\{reason="[a-z-]+"\\})? \\d+$`));
  }
});

Deno.test("formatPrometheus() writes non-finite values as Prometheus spells them", () => {
  const text = formatPrometheus({ ...newCounters(), nodes: NaN, throttles: Infinity });
  assert.match(text, /^peerbase_relay_nodes NaN$/m);
  assert.match(text, /^peerbase_relay_throttles_total \+Inf$/m);
});

// The endpoint

Deno.test("serveMetrics() answers GET /metrics with 200 and the counters as text/plain; version=0.0.4", async () => {
  await using server = serveMetrics(LOCAL, sample);
  const response = await get(server);
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4\b/);
  assert.equal(await response.text(), SAMPLE_TEXT);
});

Deno.test("serveMetrics() reads the counters at each scrape", async () => {
  const counters = newCounters();
  await using server = serveMetrics(LOCAL, () => counters);
  assert.match(await (await get(server)).text(), /^peerbase_relay_nodes 0$/m);
  counters.nodes = 5;
  assert.match(await (await get(server)).text(), /^peerbase_relay_nodes 5$/m);
});

Deno.test("serveMetrics() answers 404 to any other path or method", async () => {
  await using server = serveMetrics(LOCAL, newCounters);
  const requests: [method: string, path: string][] = [
    ["GET", "/"],
    ["GET", "/metrics/x"],
    ["GET", "/stats"],
    ["POST", "/metrics"],
  ];
  for (const [method, path] of requests) {
    const response = await get(server, path, method);
    await response.body?.cancel();
    assert.equal(response.status, 404, `${method} ${path}`);
  }
});

Deno.test("serveMetrics() answers 500 when reading the counters throws", async () => {
  await using server = serveMetrics(LOCAL, () => {
    throw new Error("broken");
  });
  const response = await get(server);
  await response.body?.cancel();
  assert.equal(response.status, 500);
});

Deno.test("serveMetrics() listens on the address given, port 0 resolved", async () => {
  await using server = serveMetrics(LOCAL, newCounters);
  assert.equal(server.addr.hostname, "127.0.0.1");
  assert.ok(server.addr.port > 0);
});

Deno.test("serveMetrics() throws naming the address when its port is taken", async () => {
  await using first = serveMetrics(LOCAL, newCounters);
  const taken = { hostname: "127.0.0.1", port: first.addr.port };
  assert.throws(
    () => serveMetrics(taken, newCounters),
    new RegExp(
      `^Error: Cannot serve metrics on 127\\.0\\.0\\.1:${taken.port}: the port is already in use$`,
    ),
  );
});

Deno.test("MetricsServer.close() stops listening and is safe to call twice", async () => {
  const server = serveMetrics(LOCAL, newCounters);
  await server.close();
  await server.close();
  await assert.rejects(() => get(server), TypeError);
});

Deno.test("serveMetrics() writes nothing to stdout or stderr, even when reading the counters throws", async () => {
  const script = `
    import { newCounters, serveMetrics } from ${
    JSON.stringify(import.meta.resolve("../lib/relay_metrics.ts"))
  };
    const local = { hostname: "127.0.0.1", port: 0 };
    await using good = serveMetrics(local, newCounters);
    await using bad = serveMetrics(local, () => { throw new Error("counters broke"); });
    for (const [server, path] of [[good, "/metrics"], [good, "/other"], [bad, "/metrics"]]) {
      const response = await fetch("http://127.0.0.1:" + server.addr.port + path);
      await response.body?.cancel();
    }
  `;
  const { success, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["eval", script], // not --quiet: it would hide Deno.serve's own "Listening on" line
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(HANG),
  }).output();
  const text = new TextDecoder();
  assert.equal(text.decode(stderr), "");
  assert.equal(text.decode(stdout), "");
  assert.ok(success);
});
