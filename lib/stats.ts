/**
 * A node's counters (`node.stats`) and its opt-in route decisions (the
 * `debug` event): enough to see why a call went where it went.
 *
 * @module
 */

import type { ConnectionCounts } from "./connection_gate.ts";

/**
 * Calls sent and served on one path.
 *
 * @example
 * ```ts
 * import type { RouteCounts } from "@peerbase/peerbase";
 * import { StatsRecorder } from "./stats.ts";
 * import assert from "node:assert/strict";
 *
 * const stats = new StatsRecorder();
 * stats.served("relay.example:7000");
 * const counts: RouteCounts | undefined = stats.snapshot({}).routes["relay.example:7000"];
 * assert.deepEqual(counts, { sent: 0, served: 1 });
 * ```
 */
export interface RouteCounts {
  /** Requests sent on this path (a retry counts again, on its own path). */
  sent: number;
  /** Requests served that arrived on this path. */
  served: number;
}

/**
 * A snapshot of a node's counters, from `node.stats`.
 *
 * @example A direct call that failed, retried through a relay
 * ```ts
 * import type { NodeStats } from "@peerbase/peerbase";
 * import { StatsRecorder } from "./stats.ts";
 * import assert from "node:assert/strict";
 *
 * const recorder = new StatsRecorder();
 * recorder.sent("direct", null);
 * recorder.sent("relay.example:7000", "direct");
 * const stats: NodeStats = recorder.snapshot({ "relay.example:7000": 12 });
 * assert.equal(stats.sent, 2);
 * assert.equal(stats.retries, 1);
 * assert.equal(stats.failovers, 0); // a failover leaves one relay for another
 * assert.deepEqual(stats.routes.direct, { sent: 1, served: 0 });
 * assert.equal(stats.relayRtt["relay.example:7000"], 12);
 * ```
 */
export interface NodeStats {
  /** Requests sent, every path together. */
  sent: number;
  /** Requests served (handlers run or answers replayed), every path together. */
  served: number;
  /** Calls sent again through another path after their first path failed. */
  retries: number;
  /** Retries that left a relay for another relay. */
  failovers: number;
  /** Per path: `"direct"` for LAN links, else the relay's `host:port`. */
  routes: Record<string, RouteCounts>;
  /** Last keepalive round trip to each registered relay, ms (null before the first). */
  relayRtt: Record<string, number | null>;
  /**
   * Direct connections accepted: open now, accepts that failed and were
   * retried, and connections closed at once for going over
   * `maxInboundConnections` or `maxInboundConnectionsPerAddress`.
   */
  connections: ConnectionCounts;
}

/**
 * Detail of a `debug` event: one route decision of a call (only with the
 * node's `debug` option).
 *
 * @example
 * ```ts
 * import type { RouteDecision } from "@peerbase/peerbase";
 * import { NodeEventTarget } from "./events.ts";
 * import assert from "node:assert/strict";
 *
 * const node = new NodeEventTarget(); // a Node is one
 * const seen: string[] = [];
 * node.addEventListener("debug", (e) => seen.push(`${e.detail.peer} via ${e.detail.route}`));
 * const detail: RouteDecision = {
 *   peer: "calc", path: "math.add", id: 1, attempt: 0, route: "direct", reason: "direct: on the LAN",
 * };
 * node.dispatchEvent(new CustomEvent("debug", { detail }));
 * assert.deepEqual(seen, ["calc via direct"]);
 * ```
 */
export interface RouteDecision {
  /** The target peer. */
  peer: string;
  /** The command path called. */
  path: string;
  /** The request id (the same on every attempt of one call). */
  id: number;
  /** 0 for the first attempt, 1 for the retry. */
  attempt: number;
  /** The path taken: `"direct"` or a relay's `host:port`; null when there was none. */
  route: string | null;
  /** Why: the path chosen, or the error that ended the call's attempts. */
  reason: string;
}

/**
 * The counters behind {@linkcode NodeStats}.
 *
 * @example Relay to relay is a failover
 * ```ts
 * import { StatsRecorder } from "./stats.ts";
 * import assert from "node:assert/strict";
 *
 * const recorder = new StatsRecorder();
 * recorder.sent("r1:7000", null);
 * recorder.sent("r2:7000", "r1:7000");
 * assert.equal(recorder.snapshot({}).failovers, 1);
 * ```
 */
export class StatsRecorder {
  #sent = 0;
  #served = 0;
  #retries = 0;
  #failovers = 0;
  readonly #routes = new Map<string, RouteCounts>();

  /** A request went out on `route`; `previous` is the path of the failed attempt, if any. */
  sent(route: string, previous: string | null): void {
    this.#sent++;
    this.#counts(route).sent++;
    if (previous === null) return;
    this.#retries++;
    if (previous !== "direct" && route !== "direct") this.#failovers++;
  }

  /** A request arrived on `route` (`"direct"` or a relay) and is being served. */
  served(route: string): void {
    this.#served++;
    this.#counts(route).served++;
  }

  /** A snapshot, with the relays' round trips from `relayRtt` and the accepted `connections`. */
  snapshot(
    relayRtt: Record<string, number | null>,
    connections: ConnectionCounts = {
      open: 0,
      acceptFailures: 0,
      refused: { total: 0, perAddress: 0 },
    },
  ): NodeStats {
    const routes: Record<string, RouteCounts> = {};
    for (const [route, counts] of this.#routes) routes[route] = { ...counts };
    return {
      sent: this.#sent,
      served: this.#served,
      retries: this.#retries,
      failovers: this.#failovers,
      routes,
      relayRtt,
      connections,
    };
  }

  #counts(route: string): RouteCounts {
    let counts = this.#routes.get(route);
    if (!counts) {
      counts = { sent: 0, served: 0 };
      this.#routes.set(route, counts);
    }
    return counts;
  }
}
