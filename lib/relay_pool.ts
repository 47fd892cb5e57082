/**
 * The relays a node keeps: the maintained ones from its `servers` option
 * (retried forever) and the ones learned from peers' reports (dropped when
 * they fail), within `maxRemotes`.
 *
 * @module
 */

import { RelayClient, type RelayClientOptions } from "./relay_client.ts";
import { formatHostPort, parseHostPort } from "./address.ts";

/** A relay as `node.relays` lists it. */
export interface RelayInfo {
  /** The relay's `host:port`. */
  address: string;
  /** True while registered with it. */
  up: boolean;
  /** True for a relay from `servers` (retried forever), false for a learned one. */
  maintained: boolean;
}

/** Options of {@linkcode RelayPool}. */
export interface RelayPoolOptions {
  /** Options shared by every relay client. */
  client: Omit<RelayClientOptions, "address" | "maintained" | "onGiveUp">;
  /** Most relays at once, maintained and learned. */
  maxRemotes: number;
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
    const client = new RelayClient({
      ...this.#options.client,
      address,
      maintained,
      onGiveUp: (gone) => {
        if (this.#clients.get(gone.address) === gone) this.#clients.delete(gone.address);
      },
    });
    this.#clients.set(address, client);
    return client;
  }

  /** Closes every relay connection. */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all([...this.#clients.values()].map((client) => client.close()));
    this.#clients.clear();
  }
}
