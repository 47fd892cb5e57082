/**
 * The events a Node dispatches, with their detail types.
 *
 * @module
 */

import type { ConflictInfo, PeerInfo } from "./peers.ts";

/** Event names a {@linkcode Node} dispatches; each is a `CustomEvent`. */
export const NodeEvent = {
  /** A peer appeared; `detail` is its {@linkcode PeerInfo}. */
  PEER_JOIN: "peerjoin",
  /** A peer left or fell silent; `detail` is its last {@linkcode PeerInfo}. */
  PEER_LEAVE: "peerleave",
  /** Two live instances claim one name; `detail` is a {@linkcode ConflictInfo}. */
  CONFLICT: "conflict",
  /** Registered with a relay; `detail` is a {@linkcode RelayStatus}. */
  RELAY_UP: "relayup",
  /** Lost a relay (it will be retried if maintained); `detail` is a {@linkcode RelayStatus}. */
  RELAY_DOWN: "relaydown",
} as const;

/** Detail of `relayup` and `relaydown` events. */
export interface RelayStatus {
  /** The relay's `host:port`. */
  relay: string;
  /** Why its state changed. */
  reason: string;
}

/** Types of the events a {@linkcode Node} dispatches. */
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
}
