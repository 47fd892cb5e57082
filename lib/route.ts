/**
 * Route choice, as a pure function: given what is known of a peer (its
 * direct LAN route, the relays where it is registered and whether each is
 * up) and the paths a call already tried, which path the next attempt
 * takes, or the typed error that says there is none.
 *
 * @module
 */

import type { LocalRoute } from "./peers.ts";
import { ConnectionClosedError, NameTakenError, PeerNotFoundError } from "./errors.ts";

/** What a caller knows of one peer when it picks a path. */
export interface PeerPaths {
  /** The peer's name. */
  name: string;
  /** The caller's network (for {@linkcode NameTakenError}). */
  network: string;
  /** Its direct route on the LAN, and whether two live instances claim the name. */
  local: { route: LocalRoute; conflict: boolean } | undefined;
  /** Relays where it is registered, with its instance there and whether the relay is up. */
  relays: ReadonlyArray<{ relay: string; instance: string; up: boolean }>;
  /** True while the peer is in the peer table at all. */
  known: boolean;
}

/** The path of one attempt: `"direct"`, or the relay's `host:port`. */
export type Route =
  | { via: "direct"; instance: string; local: LocalRoute }
  | { via: string; instance: string };

/** The key under which the direct path is recorded in `tried`. */
export const DIRECT = "direct";

/**
 * Picks the path of the next attempt: the direct LAN link first, else the
 * first relay that is up and holds the peer, skipping paths in `tried`.
 *
 * Throws {@linkcode NameTakenError} when the name is contested on the LAN,
 * {@linkcode PeerNotFoundError} when nothing was tried and there is no path
 * (or the peer is unknown), and {@linkcode ConnectionClosedError} when every
 * path was tried.
 *
 * @example The direct path wins; once tried, a relay that is up is next
 * ```ts
 * import { chooseRoute } from "./route.ts";
 * import assert from "node:assert/strict";
 *
 * const local = { instance: "a1", hostname: "10.0.0.2", port: 7001, interval: 1000, lastSeen: 0 };
 * const paths = {
 *   name: "bob",
 *   network: "office",
 *   local: { route: local, conflict: false },
 *   relays: [
 *     { relay: "r1:7000", instance: "a1", up: false },
 *     { relay: "r2:7000", instance: "a1", up: true },
 *   ],
 *   known: true,
 * };
 * assert.equal(chooseRoute(paths, new Set()).via, "direct");
 * assert.equal(chooseRoute(paths, new Set(["direct"])).via, "r2:7000");
 * ```
 */
export function chooseRoute(paths: PeerPaths, tried: ReadonlySet<string>): Route {
  const { local } = paths;
  if (local && !tried.has(DIRECT)) {
    if (local.conflict) {
      throw new NameTakenError(paths.name, paths.network, "calls to it are refused");
    }
    return { via: DIRECT, instance: local.route.instance, local: local.route };
  }
  for (const { relay, instance, up } of paths.relays) {
    if (up && !tried.has(relay)) return { via: relay, instance };
  }
  if (tried.size === 0 || !paths.known) throw new PeerNotFoundError(paths.name);
  throw new ConnectionClosedError(paths.name, "no other path to the peer is left");
}

/** True when `chooseRoute(paths, tried)` would find a path. */
export function hasRoute(paths: PeerPaths, tried: ReadonlySet<string>): boolean {
  try {
    chooseRoute(paths, tried);
    return true;
  } catch {
    return false;
  }
}
