/**
 * The relays a node keeps: the maintained ones from its `servers` option
 * (retried forever) and the ones learned from peers' reports (dropped when
 * they fail), within `maxRemotes`. The pool keeps the peer table in step
 * with each relay's members, fails the calls a lost relay carried, and
 * tells newcomers about the other relays it knows.
 *
 * @module
 */

import { RelayClient, type RelayClientOptions } from "./relay_client.ts";
import { formatHostPort, parseHostPort } from "./address.ts";
import type { PeerTable } from "./peers.ts";
import type { PendingCalls } from "./calls.ts";
import type { Member } from "./relay_protocol.ts";
import { encodeRecord } from "./message.ts";
import { ConnectionClosedError } from "./errors.ts";

/** Most relay addresses sent in one report to a newcomer. */
const MAX_REPORTED = 64;

/**
 * A relay as `node.relays` lists it (see {@linkcode Node.relays} for a
 * node started against a relay).
 *
 * @example
 * ```ts
 * import type { RelayInfo } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 *
 * const relays: RelayInfo[] = [{ address: "relay.example:7000", up: false, maintained: true }];
 * const down = relays.filter((relay) => !relay.up).map((relay) => relay.address);
 * assert.deepEqual(down, ["relay.example:7000"]);
 * ```
 */
export interface RelayInfo {
  /** The relay's `host:port`. */
  address: string;
  /** True while registered with it. */
  up: boolean;
  /** True for a relay from `servers` (retried forever), false for a learned one. */
  maintained: boolean;
}

/** Who hears that a relay came up or went down. */
export interface RelayStatusSink {
  /** The relay at `relay` is now registered (`up`) or lost, and why. */
  relayStatus(relay: string, up: boolean, reason: string): void;
}

/** Options of {@linkcode RelayPool}. */
export interface RelayPoolOptions {
  /** Options shared by every relay client. */
  client: Omit<
    RelayClientOptions,
    "address" | "maintained" | "onGiveUp" | "onMembers" | "onStatus" | "onLinkClosed"
  >;
  /** Most relays at once, maintained and learned. */
  maxRemotes: number;
  /** The node's peer table, kept in step with each relay's members. */
  peers: PeerTable;
  /** The node's calls in flight, failed when the path they took is lost. */
  pending: PendingCalls;
  /** Hears relay status changes. */
  status: RelayStatusSink;
}

/** The set of relays a node is connected to or trying to reach. */
export class RelayPool {
  readonly #options: RelayPoolOptions;
  readonly #clients = new Map<string, RelayClient>();
  #closed = false;

  /** Creates an empty pool. */
  constructor(options: RelayPoolOptions) {
    this.#options = options;
  }

  /** Every relay, sorted by address. */
  list(): RelayInfo[] {
    return [...this.#clients.values()]
      .map((c) => ({ address: c.address, up: c.link !== null, maintained: c.maintained }))
      .sort((a, b) => a.address < b.address ? -1 : a.address > b.address ? 1 : 0);
  }

  /** The client for `address`, if any. */
  get(address: string): RelayClient | undefined {
    return this.#clients.get(address);
  }

  /** Addresses of every relay in the pool. */
  addresses(): string[] {
    return [...this.#clients.keys()];
  }

  /**
   * Starts the maintained relays and waits (about 2 s at most) for their
   * first answers. Rejects with `NameTakenError` if one refuses the name.
   */
  async startMaintained(servers: string[]): Promise<void> {
    const clients = servers.map((address) => this.#add(address, true)!);
    await Promise.all(clients.map((client) => client.start()));
  }

  /**
   * Connects to relays reported by a peer that the pool does not know yet,
   * while there is room under `maxRemotes`. Malformed addresses are ignored.
   */
  learn(addresses: string[]): void {
    for (const text of addresses) {
      if (this.#closed || this.#clients.size >= this.#options.maxRemotes) return;
      let address: string;
      try {
        address = formatHostPort(parseHostPort(text));
      } catch {
        continue;
      }
      if (this.#clients.has(address)) continue;
      void this.#add(address, false)?.start();
    }
  }

  #add(address: string, maintained: boolean): RelayClient | null {
    if (this.#closed) return null;
    const { pending, status } = this.#options;
    const client = new RelayClient({
      ...this.#options.client,
      address,
      maintained,
      onGiveUp: (gone) => {
        if (this.#clients.get(gone.address) === gone) this.#clients.delete(gone.address);
      },
      onMembers: (from, join, leave) => this.#members(from, join, leave),
      onLinkClosed: (from, link, reason) =>
        pending.failLink(
          link,
          (peer) => new ConnectionClosedError(peer, `relay ${from.address} closed: ${reason}`),
        ),
      onStatus: (from, up, reason) => status.relayStatus(from.address, up, reason),
    });
    this.#clients.set(address, client);
    return client;
  }

  /** Members joined or left at `client`'s relay: update peers, fail calls, report relays. */
  #members(client: RelayClient, join: Member[], leave: Member[]): void {
    const { peers, pending } = this.#options;
    const relay = client.address;
    const link = client.link;
    for (const [name, instance] of leave) {
      peers.relayLeave(name, instance, relay);
      if (link) {
        pending.failPeer(
          name,
          link,
          () => new ConnectionClosedError(name, `it left relay ${relay}`),
        );
      }
    }
    for (const [name, instance] of join) peers.relayJoin(name, instance, relay);
    this.#report(client, join);
  }

  /**
   * Tells members that just appeared at `client`'s relay about the other
   * relays this node knows, inside sealed messages (a relay cannot forge or
   * alter them, so it cannot make nodes dial arbitrary hosts).
   */
  #report(client: RelayClient, members: Member[]): void {
    const others = this.addresses().filter((a) => a !== client.address);
    const link = client.link;
    if (others.length === 0 || !link || members.length === 0) return;
    const record = encodeRecord({ k: "relays", id: 0, l: others.slice(0, MAX_REPORTED) });
    for (const [name, instance] of members) {
      try {
        link.send(name, instance, record);
      } catch {
        return; // The relay link is gone; its members are gone with it.
      }
    }
  }

  /** Last round trip to each registered relay, ms (null before the first). */
  roundTrips(): Record<string, number | null> {
    const out: Record<string, number | null> = {};
    for (const client of this.#clients.values()) if (client.link) out[client.address] = client.rtt;
    return out;
  }

  /** Closes every relay connection. */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all([...this.#clients.values()].map((client) => client.close()));
    this.#clients.clear();
  }
}
