/**
 * The relay's aggregate counters, in Prometheus text format and over an
 * optional HTTP endpoint. Counters only: no names, addresses or anything per
 * node, and nothing is ever logged. Pull only: the endpoint reads the counters
 * when scraped.
 *
 * @module
 */

import { formatHostPort, type HostPort } from "./address.ts";

/** Why the relay refused a connection's registration. */
export type RefusalReason =
  | "proof"
  | "version"
  | "network"
  | "full"
  | "address-quota"
  | "network-quota"
  | "name-taken"
  | "rate"
  | "deadline"
  | "unavailable";

/** Every {@linkcode RefusalReason}, in the order metrics list them. */
export const REFUSAL_REASONS: readonly RefusalReason[] = Object.freeze([
  "proof",
  "version",
  "network",
  "full",
  "address-quota",
  "network-quota",
  "name-taken",
  "rate",
  "deadline",
  "unavailable",
]);

/** A relay's aggregate counters: gauges (now) and totals (since start). */
export interface RelayCounters {
  /** Open connections, registered or not (gauge). */
  connections: number;
  /** Registered nodes (gauge). */
  nodes: number;
  /** Networks with at least one registered node (gauge). */
  networks: number;
  /** Bytes held for partial frames and frames queued, every connection together (gauge). */
  buffered: number;
  /** DATA frames written to receivers; a frame to `*` counts once per receiver. */
  framesForwarded: number;
  /** Bytes of those frames. */
  bytesForwarded: number;
  /** Registrations refused, by reason. */
  refusals: Record<RefusalReason, number>;
  /** Times a sender was slowed for going over a rate or its share. */
  throttles: number;
  /** Connections the relay cut: readers too slow, senders flooding. */
  disconnects: { slowReader: number; flood: number; budget: number; stalledFrame: number };
  /** Accepts that failed (out of file descriptors, say) and were retried. */
  acceptFailures: number;
  /**
   * Connections closed the moment they were accepted, for going over
   * `maxConnections` (`total`) or `maxConnectionsPerAddress` (`perAddress`).
   */
  connectionsRefused: { total: number; perAddress: number };
  /**
   * DATA frames from senders on other relays of the cluster dropped here:
   * that sender had its share queued, or the receiver's queue was full (a
   * flood across the cluster is dropped, and its receiver is never cut).
   */
  clusterDropped: number;
  /**
   * Frames a relay of a cluster could not carry between relays: no live
   * relay held the target, the backplane (NATS) was away, or a frame from
   * another relay named no member here.
   */
  clusterUnrouted: number;
}

/**
 * Counters at zero, every refusal reason included.
 *
 * @example
 * ```ts
 * import { newCounters } from "./relay_metrics.ts";
 * import assert from "node:assert/strict";
 * const counters = newCounters();
 * counters.refusals.proof++;
 * assert.equal(counters.refusals.proof, 1);
 * assert.equal(counters.refusals["name-taken"], 0);
 * ```
 */
export function newCounters(): RelayCounters {
  const refusals = {} as Record<RefusalReason, number>;
  for (const reason of REFUSAL_REASONS) refusals[reason] = 0;
  return {
    connections: 0,
    nodes: 0,
    networks: 0,
    buffered: 0,
    framesForwarded: 0,
    bytesForwarded: 0,
    refusals,
    throttles: 0,
    disconnects: { slowReader: 0, flood: 0, budget: 0, stalledFrame: 0 },
    acceptFailures: 0,
    connectionsRefused: { total: 0, perAddress: 0 },
    clusterDropped: 0,
    clusterUnrouted: 0,
  };
}

/**
 * The counters in Prometheus text exposition format 0.0.4: `peerbase_relay_*`
 * gauges and `_total` counters; refusals, disconnects and connections
 * refused over a cap labelled by `reason` (every reason, even at 0).
 *
 * @example
 * ```ts
 * import { formatPrometheus, newCounters } from "./relay_metrics.ts";
 * import assert from "node:assert/strict";
 * const text = formatPrometheus({ ...newCounters(), nodes: 2 });
 * assert.match(text, /^peerbase_relay_nodes 2$/m);
 * assert.match(text, /^peerbase_relay_refusals_total\{reason="proof"\} 0$/m);
 * assert.match(text, /^peerbase_relay_connections_refused_total\{reason="per-address"\} 0$/m);
 * ```
 */
export function formatPrometheus(counters: RelayCounters): string {
  const c = counters;
  const refusals = REFUSAL_REASONS.map((reason): Sample => [reason, c.refusals[reason] ?? 0]);
  return [
    metric("connections", "gauge", "Open connections, registered or not.", c.connections),
    metric("nodes", "gauge", "Registered nodes.", c.nodes),
    metric("networks", "gauge", "Networks with at least one registered node.", c.networks),
    metric("buffered_bytes", "gauge", "Bytes held for partial and queued frames.", c.buffered),
    metric("forwarded_frames", "counter", "DATA frames written to receivers.", c.framesForwarded),
    metric("forwarded_bytes", "counter", "Bytes of DATA frames written.", c.bytesForwarded),
    metric("refusals", "counter", "Registrations refused, by reason.", refusals),
    metric("throttles", "counter", "Times a sender was slowed down.", c.throttles),
    metric("disconnects", "counter", "Connections cut by the relay, by reason.", [
      ["slow-reader", c.disconnects.slowReader],
      ["flood", c.disconnects.flood],
      ["budget", c.disconnects.budget],
      ["stalled-frame", c.disconnects.stalledFrame],
    ]),
    metric("accept_failures", "counter", "Accepts that failed and were retried.", c.acceptFailures),
    metric("connections_refused", "counter", "Connections closed at once, by cap.", [
      ["total", c.connectionsRefused.total],
      ["per-address", c.connectionsRefused.perAddress],
    ]),
    metric(
      "cluster_dropped",
      "counter",
      "Frames from other relays of the cluster dropped: sender share or receiver queue full.",
      c.clusterDropped,
    ),
    metric(
      "cluster_unrouted",
      "counter",
      "Frames not carried between relays: no live relay held the target, NATS was away, or a frame from another relay named no member here.",
      c.clusterUnrouted,
    ),
  ].join("");
}

/** A value labelled with a `reason`. */
type Sample = [reason: string, value: number];

/** One metric's lines (a counter's name ends in `_total`): one value, or values by reason. */
function metric(
  suffix: string,
  type: "gauge" | "counter",
  help: string,
  values: number | Sample[],
): string {
  const name = `peerbase_relay_${suffix}${type === "counter" ? "_total" : ""}`;
  let text = `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n`;
  if (typeof values === "number") return `${text}${name} ${formatValue(values)}\n`;
  for (const [reason, value] of values) {
    text += `${name}{reason="${reason}"} ${formatValue(value)}\n`;
  }
  return text;
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (!Number.isFinite(value)) return value > 0 ? "+Inf" : "-Inf";
  return String(value);
}

/** A running metrics endpoint, from {@linkcode serveMetrics}. */
export interface MetricsServer {
  /** The address it listens on (port 0 resolved). */
  readonly addr: HostPort;
  /** Stops listening and finishes requests in progress. Safe to call twice. */
  close(): Promise<void>;
  /** Same as {@linkcode MetricsServer.close} (for `await using`). */
  [Symbol.asyncDispose](): Promise<void>;
}

/** Content type of the Prometheus text format. */
const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/**
 * Serves `GET /metrics` on `address` with the counters `read()` returns when
 * scraped; anything else is a 404. Logs nothing, errors included. Throws when
 * the address cannot be listened on (the port is taken, say).
 *
 * @example Scrape a relay's counters
 * ```ts
 * import { newCounters, serveMetrics } from "./relay_metrics.ts";
 * import assert from "node:assert/strict";
 * await using server = serveMetrics({ hostname: "127.0.0.1", port: 0 }, newCounters);
 * const response = await fetch(`http://127.0.0.1:${server.addr.port}/metrics`);
 * assert.match(await response.text(), /^peerbase_relay_connections 0$/m);
 * ```
 */
export function serveMetrics(address: HostPort, read: () => RelayCounters): MetricsServer {
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({
      hostname: address.hostname,
      port: address.port,
      onListen: () => {},
      onError: () => new Response(null, { status: 500 }),
    }, (request) => respond(request, read));
  } catch (cause) {
    const why = cause instanceof Deno.errors.AddrInUse
      ? "the port is already in use"
      : String(cause);
    throw new Error(`Cannot serve metrics on ${formatHostPort(address)}: ${why}`, { cause });
  }
  let closing: Promise<void> | undefined;
  const close = () => closing ??= server.shutdown();
  return {
    addr: { hostname: server.addr.hostname, port: server.addr.port },
    close,
    [Symbol.asyncDispose]: close,
  };
}

function respond(request: Request, read: () => RelayCounters): Response {
  if (request.method !== "GET" || new URL(request.url).pathname !== "/metrics") {
    return new Response("Not found\n", { status: 404, headers: { "content-type": "text/plain" } });
  }
  return new Response(formatPrometheus(read()), { headers: { "content-type": CONTENT_TYPE } });
}
