/**
 * The relays a node keeps: the maintained ones from its `servers` option
 * (retried forever) and the ones learned from peers' reports (dropped when
 * they fail), within `maxRemotes`. The pool keeps the peer table in step
 * with each relay's members, fails the calls a lost relay carried, and
 * tells newcomers about the other relays it knows.
 *
 * @module
 */

import { type Member, type Refusal, RelayClient, type RelayClientOptions } from "./relay_client.ts";
import { canDial, formatRelayAddress, parseRelayAddress, type RelayAddress } from "./address.ts";
import { TlsDialer } from "./tls_dial.ts";
import { MAX_UNREAD_BYTES, WebSocketDialer } from "./websocket_dialer.ts";
import type { Transport } from "./transport.ts";
import type { PeerTable } from "./peers.ts";
import type { PendingCalls } from "./calls.ts";
import { encodeRecord } from "./message.ts";
import { ConnectionClosedError } from "./errors.ts";
import type { WireKey } from "./link.ts";
import type { Credentials } from "./credentials.ts";
import { CloseCode } from "./frame.ts";

/** Most relay addresses sent in one report to a newcomer. */
const MAX_REPORTED = 64;
/** How often a draining relay's link is checked for calls still waiting, ms. */
const DRAIN_POLL = 20;
/** A draining relay's link closes at the latest this long before the relay's grace ends, ms. */
const DRAIN_MARGIN = 250;

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

/** Who hears that a relay came up, went down or refused this node. */
export interface RelayStatusSink {
  /** The relay at `relay` is now registered (`up`) or lost, and why. */
  relayStatus(relay: string, up: boolean, reason: string): void;
  /** The relay at `relay` refused this node, or could not be reached. */
  relayRefused(relay: string, refusal: Refusal): void;
}

/** Options of {@linkcode RelayPool}. */
export interface RelayPoolOptions {
  /** Options shared by every relay client. */
  client: Omit<
    RelayClientOptions,
    | "address"
    | "maintained"
    | "onGiveUp"
    | "onMembers"
    | "onStatus"
    | "onLinkClosed"
    | "onRefused"
    | "onDrain"
    | "id"
    | "sealWith"
    | "credentials"
    | "waiting"
  >;
  /** The proofs of this start under key `keys[index]`. */
  credentials: (index: number) => Credentials;
  /** Most relays at once, maintained and learned. */
  maxRemotes: number;
  /** The node's peer table, kept in step with each relay's members. */
  peers: PeerTable;
  /** The node's calls in flight, failed when the path they took is lost. */
  pending: PendingCalls;
  /** Hears relay status changes. */
  status: RelayStatusSink;
  /** Requests that arrived on `link` and are still being served (answers still owed on it). */
  answering: (link: object) => number;
  /**
   * Extra trusted roots (PEM) for `tls://` relays, besides the default ones.
   * @default []
   */
  caCerts?: string[];
}

/** The set of relays a node is connected to or trying to reach. */
export class RelayPool {
  readonly #options: RelayPoolOptions;
  readonly #clients = new Map<string, RelayClient>();
  readonly #drains = new Set<ReturnType<typeof setInterval>>();
  /** Addresses up as `relayup` means it: registered, the members listed then applied. */
  readonly #announced = new Set<string>();
  #tls: Transport | null = null;
  #closed = false;

  /** Creates an empty pool. */
  constructor(options: RelayPoolOptions) {
    this.#options = options;
  }

  /** Every relay, sorted by address (under the current key). */
  list(): RelayInfo[] {
    return [...this.#clients.values()]
      .filter((c) => c.id === c.address)
      .map((c) => ({ address: c.address, up: c.link !== null, maintained: c.maintained }))
      .sort((a, b) => a.address < b.address ? -1 : a.address > b.address ? 1 : 0);
  }

  /**
   * The relays up as `relayup` means it (their members known), sorted by
   * address: a relay is `up` in {@linkcode list} a moment earlier, once registered.
   */
  announced(): RelayInfo[] {
    return this.list().filter((relay) => relay.up && this.#announced.has(relay.address));
  }

  /** The client routes name `id` (see {@linkcode RelayClient.id}), if any. */
  get(id: string): RelayClient | undefined {
    return this.#clients.get(id);
  }

  /** Addresses of every relay in the pool. */
  addresses(): string[] {
    return [...new Set([...this.#clients.values()].map((c) => c.address))];
  }

  /**
   * Starts the maintained relays and waits (about 2 s at most) for their
   * first answers. Rejects with `NameTakenError` if one refuses the name.
   */
  async startMaintained(servers: string[]): Promise<void> {
    const clients = servers.flatMap((address) => this.#add(address, true));
    await Promise.all(clients.map((client) => client.start()));
  }

  /**
   * Connects to relays reported by a peer that the pool does not know yet,
   * while there is room under `maxRemotes`. Malformed addresses are ignored.
   */
  learn(addresses: string[]): void {
    for (const text of addresses) {
      if (this.#closed || this.addresses().length >= this.#options.maxRemotes) return;
      let address: string;
      try {
        const parsed = parseRelayAddress(text);
        if (!canDial(parsed)) continue; // A TCP relay, learned by a browser.
        address = formatRelayAddress(parsed);
      } catch {
        continue;
      }
      if (this.#clients.has(address)) continue;
      for (const client of this.#add(address, false)) void client.start();
    }
  }

  /** Adds the clients of `address`: one per network key (two while a key is rotated). */
  #add(address: string, maintained: boolean): RelayClient[] {
    if (this.#closed) return [];
    return this.#options.client.keys.map((key, index) =>
      this.#addClient(address, maintained, key, index)
    );
  }

  /** How `address` is dialled: TCP (the node's transport), TLS or WebSocket. */
  #transport(address: RelayAddress): Transport {
    const { caCerts } = this.#options;
    const roots = caCerts && caCerts.length > 0 ? { caCerts } : {};
    if (address.path !== undefined) {
      // A browser's WebSocket holds whole messages: one frame, and a few frames unread at most.
      const { maxFrameSize } = this.#options.client;
      return new WebSocketDialer({
        tls: address.tls,
        path: address.path,
        ...roots,
        maxMessage: maxFrameSize,
        maxUnread: Math.max(MAX_UNREAD_BYTES, 4 * maxFrameSize),
      });
    }
    // tls:// relays share one TLS dialler (the certificate is checked against the dialled host).
    return address.tls ? this.#tls ??= new TlsDialer(roots) : this.#options.client.transport;
  }

  #addClient(address: string, maintained: boolean, key: WireKey, index: number): RelayClient {
    const { pending, status, credentials } = this.#options;
    const current = index === 0;
    const transport = this.#transport(parseRelayAddress(address));
    const client = new RelayClient({
      ...this.#options.client,
      transport,
      address,
      id: current ? address : `${address}#previous`,
      sealWith: key,
      credentials: () => credentials(index),
      maintained,
      // Calls waiting on a link get it probed when it falls silent (a vanished relay).
      waiting: (link) => pending.countOn(link),
      onGiveUp: (gone) => {
        if (this.#clients.get(gone.id) === gone) this.#clients.delete(gone.id);
      },
      onMembers: (from, join, leave) => this.#members(from, join, leave),
      onLinkClosed: (from, link, reason) =>
        pending.failLink(
          link,
          (peer) => new ConnectionClosedError(peer, `relay ${from.address} closed: ${reason}`),
        ),
      onStatus: (from, up, reason) => {
        if (!current) return;
        if (up) this.#announced.add(from.address);
        else this.#announced.delete(from.address);
        status.relayStatus(from.address, up, reason);
      },
      onRefused: (from, refusal) => {
        const under = current ? "" : " (registering under the previous network key)";
        status.relayRefused(from.address, { ...refusal, reason: `${refusal.reason}${under}` });
      },
      onDrain: (from, ms) => this.#drain(from, ms),
    });
    this.#clients.set(client.id, client);
    return client;
  }

  /** Members joined or left at `client`'s relay: update peers, fail calls, report relays. */
  #members(client: RelayClient, join: Member[], leave: Member[]): void {
    const { peers, pending } = this.#options;
    const relay = client.id;
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
   * alter them, so it cannot make nodes dial arbitrary hosts). A relay of a
   * cluster is listed too: members of the cluster's other relays appear
   * through it without knowing it.
   */
  #report(client: RelayClient, members: Member[]): void {
    const others = this.addresses().filter((a) => a !== client.address || client.clustered);
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

  /**
   * The relay of `client` is going away within `ms`: it is no longer chosen
   * for new calls (see {@linkcode RelayClient.usable}); its link closes once
   * no call waits for an answer on it, no request that came on it is still
   * being served, and its queue is written; or shortly before the relay's
   * grace ends. A maintained relay is then retried as after any loss.
   */
  #drain(client: RelayClient, ms: number): void {
    const link = client.link;
    if (!link) return;
    const { pending, answering } = this.#options;
    const deadline = Date.now() + Math.max(0, ms - DRAIN_MARGIN);
    const check = setInterval(() => {
      if (link.connection.isClosed) this.#stopDrain(check);
      else if (
        (pending.countOn(link) === 0 && answering(link) === 0 && link.idle) ||
        Date.now() >= deadline
      ) {
        this.#stopDrain(check);
        void link.close(CloseCode.NORMAL, "relay draining");
      }
    }, DRAIN_POLL);
    this.#drains.add(check);
  }

  #stopDrain(check: ReturnType<typeof setInterval>): void {
    clearInterval(check);
    this.#drains.delete(check);
  }

  /** Last round trip to each registered relay, ms (null before the first). */
  roundTrips(): Record<string, number | null> {
    const out: Record<string, number | null> = {};
    for (const client of this.#clients.values()) if (client.link) out[client.id] = client.rtt;
    return out;
  }

  /** Every relay not connected now tries again at once (see `RelayClient.retryNow`). */
  retryNow(): void {
    for (const client of this.#clients.values()) client.retryNow();
  }

  /** Closes every relay connection. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const check of this.#drains) clearInterval(check);
    this.#drains.clear();
    await Promise.all([...this.#clients.values()].map((client) => client.close()));
    this.#clients.clear();
    this.#announced.clear();
  }
}
