/**
 * The peer table: who is in the network, by which routes, and whether a
 * name is contested by two live instances.
 *
 * @module
 */

import { formatHostPort } from "./address.ts";

/**
 * A peer as applications see it (`node.peers`, `__peers__`, events).
 *
 * @example A peer learnt from its LAN advert
 * ```ts
 * import type { PeerInfo } from "@peerbase/peerbase";
 * import { PeerTable } from "./peers.ts";
 * import assert from "node:assert/strict";
 *
 * const joined: PeerInfo[] = [];
 * const table = new PeerTable({
 *   onJoin: (peer) => joined.push(peer),
 *   onLeave: () => {},
 *   onConflict: () => {},
 *   probe: () => Promise.resolve(false),
 * });
 * table.seen("bob", { instance: "b1", hostname: "10.0.0.2", port: 7001, interval: 1000, lastSeen: Date.now() });
 * assert.deepEqual(joined, [{
 *   name: "bob", instance: "b1", local: true, address: "10.0.0.2:7001", relays: [], conflict: false,
 * }]);
 * ```
 */
export interface PeerInfo {
  /** The peer's node name. */
  name: string;
  /** Its instance id (random per start). */
  instance: string;
  /** True when it is reachable directly on the LAN. */
  local: boolean;
  /** Its direct `host:port` when local, else null. */
  address: string | null;
  /** Relays (`host:port`) through which it is reachable. */
  relays: string[];
  /** True while two live instances claim this name; calls to it are refused. */
  conflict: boolean;
}

/**
 * Detail of a `conflict` event: one name, several live instances.
 *
 * @example Two live instances advertise one name
 * ```ts
 * import type { ConflictInfo } from "@peerbase/peerbase";
 * import { PeerTable } from "./peers.ts";
 * import assert from "node:assert/strict";
 *
 * const conflicts: ConflictInfo[] = [];
 * const table = new PeerTable({
 *   onJoin: () => {},
 *   onLeave: () => {},
 *   onConflict: (conflict) => conflicts.push(conflict),
 *   probe: () => Promise.resolve(true), // the first instance still answers
 * });
 * const now = Date.now();
 * table.seen("bob", { instance: "b1", hostname: "10.0.0.2", port: 7001, interval: 1000, lastSeen: now });
 * table.seen("bob", { instance: "b2", hostname: "10.0.0.3", port: 7001, interval: 1000, lastSeen: now });
 * await new Promise((resolve) => setTimeout(resolve, 0));
 * assert.deepEqual(conflicts, [{ name: "bob", instances: ["b1", "b2"] }]);
 * assert.equal(table.get("bob")?.conflict, true);
 * ```
 */
export interface ConflictInfo {
  /** The contested name. */
  name: string;
  /** The instances that claim it. */
  instances: string[];
}

/** A direct route to one instance, learnt from its adverts. */
export interface LocalRoute {
  instance: string;
  hostname: string;
  port: number;
  /** The peer's advert interval in ms. */
  interval: number;
  /** When its last advert arrived (ms since epoch). */
  lastSeen: number;
  /** The largest frame it accepts, in bytes, when it said so. */
  maxFrameSize?: number;
  /** Its adverts open only under the previous network key: calls seal under that key. */
  previousKey?: boolean;
}

interface Entry {
  name: string;
  /** The instance direct calls go to. */
  current: string;
  routes: Map<string, LocalRoute>;
  /** Relays (`host:port`) where the peer is registered, with its instance there. */
  relays: Map<string, string>;
  conflict: boolean;
  probing: boolean;
  /** Instances whose new address is being probed (or was lately): when the next probe may start. */
  moves: Map<string, number>;
}

/** Callbacks of {@linkcode PeerTable}. */
export interface PeerTableEvents {
  onJoin: (peer: PeerInfo) => void;
  onLeave: (peer: PeerInfo) => void;
  onConflict: (conflict: ConflictInfo) => void;
  /** Resolves true when `route`'s instance still answers on its address. */
  probe: (name: string, route: LocalRoute) => Promise<boolean>;
}

/** Misses tolerated before a silent peer is dropped, in advert intervals. */
export const MISSED_ADVERTS = 3;

/** Tracks peers and their routes. */
export class PeerTable {
  readonly #entries = new Map<string, Entry>();
  readonly #events: PeerTableEvents;

  /** Creates an empty table reporting through `events`. */
  constructor(events: PeerTableEvents) {
    this.#events = events;
  }

  /** A snapshot of every peer, sorted by name. */
  list(): PeerInfo[] {
    return [...this.#entries.values()].map((e) => this.#info(e)).sort((a, b) =>
      a.name < b.name ? -1 : a.name > b.name ? 1 : 0
    );
  }

  /** The peer called `name`, if known. */
  get(name: string): PeerInfo | undefined {
    const entry = this.#entries.get(name);
    return entry && this.#info(entry);
  }

  /** True when `name` is in the table (no snapshot is made). */
  has(name: string): boolean {
    return this.#entries.has(name);
  }

  /** The direct route calls to `name` take, if it is local and uncontested. */
  route(name: string): { route: LocalRoute; conflict: boolean } | undefined {
    const entry = this.#entries.get(name);
    const route = entry?.routes.get(entry.current);
    return entry && route ? { route, conflict: entry.conflict } : undefined;
  }

  /**
   * Records an authentic, new advert from `name`'s instance
   * `route.instance`. An instance already known at another address or port
   * stays where it was (the advert still counts as a sign of life) until a
   * probe of the new one succeeds: a copy of its advert sent from elsewhere
   * cannot move it.
   */
  seen(name: string, route: LocalRoute): void {
    const entry = this.#entries.get(name);
    const known = entry?.routes.get(route.instance);
    if (entry && known && (known.hostname !== route.hostname || known.port !== route.port)) {
      known.lastSeen = Math.max(known.lastSeen, route.lastSeen);
      void this.#move(entry, route);
      return;
    }
    if (!entry) {
      this.#create(name, route.instance).routes.set(route.instance, route);
      this.#events.onJoin(this.#info(this.#entries.get(name)!));
      return;
    }
    if (entry.routes.size === 0) {
      entry.current = route.instance;
      entry.routes.set(route.instance, route);
      return;
    }
    const isNew = !entry.routes.has(route.instance);
    entry.routes.set(route.instance, route);
    if (isNew && !entry.conflict) void this.#settle(entry, route.instance);
  }

  /** Decides between a restart (old instance gone) and a conflict (both live). */
  async #settle(entry: Entry, newcomer: string): Promise<void> {
    if (entry.probing) return;
    entry.probing = true;
    const old = entry.routes.get(entry.current);
    const alive = old ? await this.#events.probe(entry.name, old).catch(() => false) : false;
    entry.probing = false;
    if (this.#entries.get(entry.name) !== entry || !entry.routes.has(newcomer)) return;
    if (alive && old && entry.routes.has(old.instance)) {
      entry.conflict = true;
      this.#events.onConflict({ name: entry.name, instances: [...entry.routes.keys()] });
      return;
    }
    const before = this.#info(entry);
    if (old) entry.routes.delete(old.instance);
    entry.current = newcomer;
    this.#events.onLeave(before);
    this.#events.onJoin(this.#info(entry));
  }

  /** Moves `route.instance` to `route`'s address once a probe there is answered. */
  async #move(entry: Entry, route: LocalRoute): Promise<void> {
    const now = Date.now();
    if ((entry.moves.get(route.instance) ?? -Infinity) > now) return;
    entry.moves.set(route.instance, Infinity);
    const answered = await this.#events.probe(entry.name, route).catch(() => false);
    // One probe per advert interval at most, and none while one runs.
    entry.moves.set(route.instance, Date.now() + route.interval);
    const known = entry.routes.get(route.instance);
    if (!answered || !known || this.#entries.get(entry.name) !== entry) return;
    entry.routes.set(route.instance, {
      ...route,
      lastSeen: Math.max(known.lastSeen, route.lastSeen),
    });
    entry.moves.delete(route.instance);
  }

  /** Records that `name` (instance `instance`) is registered at `relay`. */
  relayJoin(name: string, instance: string, relay: string): void {
    const entry = this.#entries.get(name);
    if (entry) {
      entry.relays.set(relay, instance);
      return;
    }
    this.#create(name, instance).relays.set(relay, instance);
    this.#events.onJoin(this.#info(this.#entries.get(name)!));
  }

  /** Records that `name` (instance `instance`) left `relay`, or the relay is gone. */
  relayLeave(name: string, instance: string, relay: string): void {
    const entry = this.#entries.get(name);
    if (!entry || entry.relays.get(relay) !== instance) return;
    const before = this.#info(entry);
    entry.relays.delete(relay);
    if (entry.routes.size === 0 && entry.relays.size === 0) {
      this.#entries.delete(name);
      this.#events.onLeave(before);
    }
  }

  /** The relays where `name` is registered, with its instance at each. */
  relaysOf(name: string): Array<{ relay: string; instance: string }> {
    const entry = this.#entries.get(name);
    if (!entry) return [];
    // Relays under the current key first: a call seals under the previous key only when needed.
    return [...entry.relays]
      .map(([relay, instance]) => ({ relay, instance }))
      .sort((a, b) =>
        Number(a.relay.endsWith("#previous")) - Number(b.relay.endsWith("#previous"))
      );
  }

  #create(name: string, instance: string): Entry {
    const entry: Entry = {
      name,
      current: instance,
      routes: new Map(),
      relays: new Map(),
      conflict: false,
      probing: false,
      moves: new Map(),
    };
    this.#entries.set(name, entry);
    return entry;
  }

  /** Removes `name`'s instance `instance` (it said bye, or fell silent). */
  drop(name: string, instance: string): void {
    const entry = this.#entries.get(name);
    if (!entry || !entry.routes.has(instance)) return;
    const before = this.#info(entry);
    entry.routes.delete(instance);
    entry.moves.delete(instance);
    const next = entry.routes.keys().next();
    if (next.done) {
      if (entry.relays.size === 0) {
        this.#entries.delete(name);
        this.#events.onLeave(before);
      }
      return;
    }
    if (entry.routes.size === 1) entry.conflict = false;
    if (entry.current === instance) {
      entry.current = next.value;
      this.#events.onLeave(before);
      this.#events.onJoin(this.#info(entry));
    }
  }

  /** Drops every route silent for more than {@linkcode MISSED_ADVERTS} of its intervals. */
  expire(now: number = Date.now()): void {
    for (const entry of [...this.#entries.values()]) {
      for (const route of [...entry.routes.values()]) {
        if (now - route.lastSeen > (MISSED_ADVERTS + 0.5) * route.interval) {
          this.drop(entry.name, route.instance);
        }
      }
    }
  }

  /** Forgets everything without events (the node is closing). */
  clear(): void {
    this.#entries.clear();
  }

  #info(entry: Entry): PeerInfo {
    const route = entry.routes.get(entry.current);
    return {
      name: entry.name,
      instance: route ? entry.current : entry.relays.values().next().value ?? entry.current,
      local: route !== undefined,
      address: route ? formatHostPort(route) : null,
      // A relay reached under the previous key of a rotation is still that relay.
      relays: [...new Set([...entry.relays.keys()].map((id) => id.replace(/#previous$/, "")))]
        .sort(),
      conflict: entry.conflict,
    };
  }
}
