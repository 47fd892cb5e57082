/**
 * The events a Node dispatches, with their detail types.
 *
 * @module
 */

import type { ConflictInfo, PeerInfo } from "./peers.ts";
import type { RouteDecision } from "./stats.ts";
import type { NodeWarning } from "./warnings.ts";

/**
 * Event names a {@linkcode Node} dispatches; each is a `CustomEvent`.
 *
 * @example
 * ```ts
 * import { NodeEvent } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 *
 * assert.equal(NodeEvent.PEER_JOIN, "peerjoin");
 * assert.equal(NodeEvent.DEBUG, "debug");
 * ```
 */
export const NodeEvent = {
  /** A peer appeared; `detail` is its {@linkcode PeerInfo}. */
  PEER_JOIN: "peerjoin",
  /** A peer left or fell silent; `detail` is its last {@linkcode PeerInfo}. */
  PEER_LEAVE: "peerleave",
  /** Two live instances claim one name; `detail` is a {@linkcode ConflictInfo}. */
  CONFLICT: "conflict",
  /**
   * Registered with a relay, and the members it listed are known (a call
   * right away, `"*"` included, reaches them); `detail` is a
   * {@linkcode RelayStatus}.
   */
  RELAY_UP: "relayup",
  /** Lost a relay (it will be retried if maintained); `detail` is a {@linkcode RelayStatus}. */
  RELAY_DOWN: "relaydown",
  /**
   * A relay refused this node (proof, network, quota, full, name) or could
   * not be reached; the node goes on with its other relays. `detail` is a
   * {@linkcode RelayRefusal}.
   */
  RELAY_REFUSED: "relayrefused",
  /**
   * A route decision of a call (only with the `debug` option); `detail` is
   * a {@linkcode RouteDecision}.
   */
  DEBUG: "debug",
  /**
   * Something that would otherwise fail silently (another key on this
   * network name, a skewed clock, a lost multicast interface), at most
   * once a minute per code; `detail` is a {@linkcode NodeWarning}.
   */
  WARNING: "warning",
} as const;

/**
 * Detail of `relayup` and `relaydown` events.
 *
 * @example
 * ```ts
 * import type { RelayStatus } from "@peerbase/peerbase";
 * import { NodeEventTarget } from "./events.ts";
 * import assert from "node:assert/strict";
 *
 * const node = new NodeEventTarget(); // a Node is one
 * const down: RelayStatus[] = [];
 * node.addEventListener("relaydown", (e) => down.push(e.detail));
 * const detail: RelayStatus = { relay: "relay.example:7000", reason: "connection closed" };
 * node.dispatchEvent(new CustomEvent("relaydown", { detail }));
 * assert.deepEqual(down, [detail]);
 * ```
 */
export interface RelayStatus {
  /** The relay's `host:port`. */
  relay: string;
  /** Why its state changed. */
  reason: string;
}

/**
 * Detail of `relayrefused` events: which relay did not take the node, and
 * why. `code` is the relay's close code (see `CloseCode`: 4 proof
 * rejected, 7 name taken, 8 network not served, 9 full, 10 quota), or
 * null when the relay could not be reached at all (connection refused,
 * timed out, TLS failure).
 *
 * @example
 * ```ts
 * import type { RelayRefusal } from "@peerbase/peerbase";
 * import { NodeEventTarget } from "./events.ts";
 * import assert from "node:assert/strict";
 *
 * const node = new NodeEventTarget(); // a Node is one
 * const refused: string[] = [];
 * node.addEventListener("relayrefused", (e) => refused.push(`${e.detail.relay}: ${e.detail.reason}`));
 * const detail: RelayRefusal = { relay: "relay.example:7000", code: 9, reason: "this relay is full" };
 * node.dispatchEvent(new CustomEvent("relayrefused", { detail }));
 * assert.deepEqual(refused, ["relay.example:7000: this relay is full"]);
 * ```
 */
export interface RelayRefusal {
  /** The relay's address, as in `servers`. */
  relay: string;
  /** The relay's close code, or null when it could not be reached. */
  code: number | null;
  /** The relay's reason, or why it could not be reached. */
  reason: string;
  /**
   * The typed error when there is one: `NameTakenError`,
   * `ProtocolVersionError` (the relay speaks another protocol version),
   * `RelayTlsError`, or `RelayRefusedError` for other refusals.
   */
  error?: Error;
}

/**
 * Types of the events a {@linkcode Node} dispatches.
 *
 * @example
 * ```ts
 * import type { NodeEventMap } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 *
 * const onJoin = (e: NodeEventMap["peerjoin"]) => e.detail.name;
 * const event = new CustomEvent("peerjoin", {
 *   detail: { name: "bob", instance: "b1", local: true, address: "10.0.0.2:7001", relays: [], conflict: false },
 * });
 * assert.equal(onJoin(event), "bob");
 * ```
 */
export interface NodeEventMap {
  /** A peer appeared. */
  peerjoin: CustomEvent<PeerInfo>;
  /** A peer left or fell silent. */
  peerleave: CustomEvent<PeerInfo>;
  /** A name is contested by two live instances. */
  conflict: CustomEvent<ConflictInfo>;
  /** Registered with a relay. */
  relayup: CustomEvent<RelayStatus>;
  /** Lost a relay. */
  relaydown: CustomEvent<RelayStatus>;
  /** A relay refused this node or could not be reached. */
  relayrefused: CustomEvent<RelayRefusal>;
  /** A route decision of a call (only with the `debug` option). */
  debug: CustomEvent<RouteDecision>;
  /** Something looks wrong (another key, a skewed clock, a lost interface). */
  warning: CustomEvent<NodeWarning>;
}

/**
 * An `EventTarget` whose listeners are typed by {@linkcode NodeEventMap}.
 *
 * @example
 * ```ts
 * import { NodeEventTarget } from "./events.ts";
 * import assert from "node:assert/strict";
 *
 * const node = new NodeEventTarget(); // a Node is one
 * const names: string[] = [];
 * node.addEventListener("peerleave", (e) => names.push(e.detail.name)); // e.detail: PeerInfo
 * node.dispatchEvent(new CustomEvent("peerleave", { detail: { name: "bob" } }));
 * assert.deepEqual(names, ["bob"]);
 * ```
 */
export interface NodeEventTarget extends EventTarget {
  /** Listens for a node event. */
  addEventListener<K extends keyof NodeEventMap>(
    type: K,
    listener: (event: NodeEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  /** Listens for any event. */
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  /** Stops listening for a node event. */
  removeEventListener<K extends keyof NodeEventMap>(
    type: K,
    listener: (event: NodeEventMap[K]) => void,
    options?: boolean | EventListenerOptions,
  ): void;
  /** Stops listening for any event. */
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void;
}

/** `EventTarget`, typed for the node's events (the base class of `Node`). */
export const NodeEventTarget: new () => NodeEventTarget = EventTarget;
