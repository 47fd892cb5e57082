/**
 * A node's presence on its LAN: the direct-call listener (through the
 * router) plus sealed multicast discovery, whose adverts feed the peer
 * table, and the detection of another live instance under this node's own
 * name.
 *
 * @module
 */

import { type DiscoveredPeer, Discovery } from "./discovery.ts";
import type { Fernet } from "./fernet.ts";
import type { LocalIdentity } from "./link.ts";
import type { ConflictInfo, PeerTable } from "./peers.ts";
import type { Router } from "./router.ts";
import { formatHostPort, type HostPort } from "./address.ts";
import { PortInUseError, UnsupportedRuntimeError } from "./errors.ts";
import type { AdvertSigner } from "./advert.ts";
import type { WarningInput } from "./warnings.ts";

/** Bind addresses that mean "every interface". */
const WILDCARDS = new Set(["0.0.0.0", "::", ""]);

/** Options of {@linkcode Lan}. */
export interface LanOptions {
  self: LocalIdentity;
  fernet: Fernet;
  /** The previous network key while it is rotated. */
  previousFernet?: Fernet;
  router: Router;
  peers: PeerTable;
  /** Address the direct-call listener binds. */
  hostname: string;
  /** TCP port of the listener (0: any free port, which is advertised). */
  localPort: number;
  /** Shared UDP advertiser port. */
  advertiserPort: number;
  multicastGroup: string;
  advertiseInterval: number;
  maxFrameSize: number;
  /** Another live instance claims this node's name. */
  onConflict: (conflict: ConflictInfo) => void;
  /** This start's instance key, which signs the adverts (made at start, so read then). */
  instanceKey: () => AdvertSigner;
  /** Receives what discovery sees going wrong (another key, a skewed clock, a lost interface). */
  warn?: (warning: WarningInput) => void;
  /**
   * Client-only: no listener (calls are dialled out and answered on that
   * connection), discovery only queries; `address` stays null.
   * @default false
   */
  clientOnly?: boolean;
}

/** Listens for direct calls and takes part in LAN discovery. */
export class Lan {
  readonly #options: LanOptions;
  readonly #selfConflicts = new Set<string>();
  #discovery: Discovery | null = null;
  #bound: HostPort | null = null;

  /** Creates the presence; nothing happens before {@linkcode start}. */
  constructor(options: LanOptions) {
    this.#options = options;
  }

  /** The `host:port` peers are told to call, once started. */
  get address(): string | null {
    if (!this.#bound) return null;
    const { hostname } = this.#options;
    const host = WILDCARDS.has(hostname)
      ? this.#discovery?.seenAs ?? primaryAddress() ?? "127.0.0.1"
      : hostname;
    return formatHostPort({ hostname: host, port: this.#bound.port });
  }

  /** Binds the listener (unless client-only), then starts discovery. Throws a typed error that names the cause. */
  async start(): Promise<void> {
    if (typeof Deno.listenDatagram !== "function") {
      throw new UnsupportedRuntimeError(
        'LAN discovery needs UDP: run deno with --unstable-net (or "unstable": ["net"] in deno.json), or pass useLocal: false with servers',
      );
    }
    const o = this.#options;
    if (!o.clientOnly) await this.#listen();
    this.#discovery = new Discovery({
      name: o.self.name,
      network: o.self.network,
      instanceKey: o.instanceKey(),
      fernet: o.fernet,
      ...(o.previousFernet ? { previousFernet: o.previousFernet } : {}),
      rpcPort: this.#bound?.port ?? 0,
      ...(WILDCARDS.has(o.hostname) ? {} : { host: o.hostname }),
      maxFrameSize: o.maxFrameSize,
      port: o.advertiserPort,
      group: o.multicastGroup,
      interval: o.advertiseInterval,
      queryOnly: o.clientOnly === true,
      onAnnounce: (peer) => this.#announced(peer),
      onBye: (name, instance) => o.peers.drop(name, instance),
      onTick: () => o.peers.expire(),
      ...(o.warn ? { onWarning: o.warn } : {}),
    });
    await this.#discovery.start();
  }

  /** Binds the direct-call listener; throws a typed error naming the cause. */
  async #listen(): Promise<void> {
    const o = this.#options;
    try {
      this.#bound = await o.router.listen({ hostname: o.hostname, port: o.localPort });
    } catch (cause) {
      if (cause instanceof Deno.errors.AddrInUse) {
        const remedy = "it is the TCP port for direct calls: choose another, or 0 for any free one";
        throw new PortInUseError(o.localPort, "ports[0]", remedy, {
          cause,
        });
      }
      const detail = `node '${o.self.name}' cannot listen on ${o.hostname}:${o.localPort}: ${
        (cause as Error).message
      }; set hostname to an address of this machine, or "0.0.0.0"`;
      throw new UnsupportedRuntimeError(detail, { cause });
    }
  }

  /** Says bye and stops discovery (the router closes the listener). */
  async close(): Promise<void> {
    await this.#discovery?.close();
  }

  #announced(peer: DiscoveredPeer): void {
    const o = this.#options;
    if (peer.name === o.self.name) {
      if (this.#selfConflicts.has(peer.instance)) return;
      this.#selfConflicts.add(peer.instance);
      o.onConflict({ name: o.self.name, instances: [o.self.instance, peer.instance] });
      void this.#discovery?.announce();
      return;
    }
    o.peers.seen(peer.name, {
      instance: peer.instance,
      hostname: peer.hostname,
      port: peer.port,
      interval: peer.interval,
      lastSeen: Date.now(),
      ...(peer.maxFrameSize ? { maxFrameSize: peer.maxFrameSize } : {}),
      ...(peer.previousKey ? { previousKey: true } : {}),
    });
  }
}

/**
 * The first non-loopback IPv4 address of this host: a guess at what peers
 * see, until this node's own first announce has looped back. Null when
 * there is none or the `sys` permission is missing.
 */
function primaryAddress(): string | null {
  try {
    // Never prompt: without the permission, the guess is simply not made.
    const query = { name: "sys", kind: "networkInterfaces" } as const;
    if (Deno.permissions.querySync(query).state !== "granted") return null;
    const found = Deno.networkInterfaces().find((i) =>
      i.family === "IPv4" && !i.address.startsWith("127.")
    );
    return found?.address ?? null;
  } catch {
    return null;
  }
}
