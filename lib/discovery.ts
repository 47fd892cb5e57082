/**
 * LAN discovery: nodes of a network find each other by sealed UDP
 * advertisements (built and checked by the sans-IO functions of
 * `advert.ts`); the thin {@linkcode Discovery} class owns the socket and the
 * interval.
 *
 * Multicast, not broadcast: adverts go to the IPv4 group `239.255.80.66`
 * ("PB") on UDP port `41993`, with TTL 1.
 *
 * - `239.255.0.0/16` is the administratively scoped "organization local"
 *   range (RFC 2365): routers do not forward it, and TTL 1 keeps every advert
 *   on the local link.
 * - Only hosts that joined the group get the datagrams (switches with IGMP
 *   snooping filter them); a broadcast interrupts every host on the segment.
 * - Multicast works on the loopback interface with `IP_MULTICAST_LOOP`, so
 *   several nodes on one host, tests and demos (inside a private network
 *   namespace, see `tools/netns.ts`) work the same as a real LAN; loopback
 *   has no broadcast.
 * - `Deno.listenDatagram` can join groups and set the TTL but cannot set
 *   `SO_BROADCAST`.
 *
 * Which interface: a node bound to every address (no `host`) joins and sends
 * on the interface the system routes the group to. A node bound to one IPv4
 * address (`host`) advertises on the interface that owns it: it joins the
 * group there and sends from a second socket bound to that address, which
 * makes the kernel send the datagrams out of that interface (there is no
 * `IP_MULTICAST_IF` in Deno). So a node bound to `127.0.0.1` (or `::1`,
 * `localhost`) advertises on loopback only: other nodes of the machine find
 * it, no advert carrying a loopback address reaches the LAN, and it needs no
 * multicast route. A receiver also drops an announce whose sealed host is a
 * loopback address when the datagram came from another machine
 * ({@linkcode announcedAddress}).
 *
 * Errors at start: {@linkcode NoMulticastError} when the group cannot be
 * joined (no interface carries multicast), {@linkcode PortInUseError} when a
 * socket that does not share it holds the advertiser port.
 *
 * Trust: every advert is signed by the sender's instance key and carries a
 * sequence number; {@linkcode AdvertGuard} drops replays (no new sequence
 * number) before any signature check and adverts signed by anyone but the
 * instance they name. Adverts for this network that fail the key, the
 * version or the clock allowance, and sends that fail after start, are
 * reported through `onWarning`.
 *
 * Behaviour: on start a node sends an announce and a query at once, then an
 * announce every interval; a node that receives a query from another
 * instance announces at once (at most once per 100 ms); on close it sends a
 * bye. Receiving a query never adds its sender to anything: only announces
 * make peers. In `queryOnly` mode (a client-only member) a node sends one
 * query at start and nothing else: no announce, no answer to queries, no
 * bye, so no peer ever lists it.
 *
 * @module
 */

import {
  NodeClosedError,
  NoMulticastError,
  PortInUseError,
  UnsupportedRuntimeError,
} from "./errors.ts";
import type { Fernet } from "./fernet.ts";
import {
  type Advert,
  type AdvertKind,
  type AdvertSigner,
  announcedAddress,
  checkAdvert,
  decodeAdvert,
  type DecodedAdvert,
  isLoopbackHost,
  MAX_ADVERT_SIZE,
  sealAdvert,
  signAdvert,
} from "./advert.ts";
import { AdvertGuard } from "./advert_guard.ts";
import type { WarningInput } from "./warnings.ts";
import {
  checkMulticastGroup,
  DEFAULT_ADVERTISER_PORT,
  DEFAULT_MULTICAST_GROUP,
  isIPv4,
} from "./lan_defaults.ts";

export { DEFAULT_ADVERTISER_PORT, DEFAULT_MULTICAST_GROUP };

/** Default interval between announces, in milliseconds. */
export const DEFAULT_ADVERT_INTERVAL = 1000;

/** Shortest time between two announces sent in answer to queries, in milliseconds. */
const QUERY_REPLY_INTERVAL = 100;

/** Instances remembered as announcing under the current key, while rotating. */
const MAX_ROTATING_PEERS = 4096;

/** Consecutive receive errors tolerated before the receive loop gives up. */
const MAX_RECEIVE_ERRORS = 16;

/** A node of the same network seen on the LAN. */
export interface DiscoveredPeer {
  /** Node name. */
  name: string;
  /** Instance id of that run of the node (16 lowercase hex characters). */
  instance: string;
  /**
   * Address to connect to: the advertised host, else the datagram's source
   * address (a loopback host advertised from another machine is dropped).
   */
  hostname: string;
  /** TCP RPC port, 0 for none. */
  port: number;
  /** The peer's advertise interval, in milliseconds. */
  interval: number;
  /** The largest frame the peer accepts, in bytes, when it said so. */
  maxFrameSize?: number;
  /**
   * True when its adverts open only under the previous network key (a peer
   * not yet rotated to the current key): calls to it seal under that key.
   */
  previousKey?: boolean;
}

/** Options of {@linkcode Discovery}. */
export interface DiscoveryOptions {
  /** This node's name. */
  name: string;
  /** Network name; adverts of other networks are ignored. */
  network: string;
  /**
   * This run's instance key (an `InstanceKey`): it signs every advert, and
   * adverts carrying its id are ignored.
   */
  instanceKey: AdvertSigner;
  /** Seals and opens adverts with the network key. */
  fernet: Fernet;
  /**
   * The previous network key while it is rotated: adverts are sent sealed
   * under both keys and opened under either. @default none
   */
  previousFernet?: Fernet;
  /** Advertised TCP RPC port, 0 for none. */
  rpcPort: number;
  /**
   * Advertised explicit host, when the node binds a non-wildcard address.
   * An IPv4 address (or a loopback name) also picks the interface adverts
   * go out of: the one that owns it, loopback for a loopback host. It must
   * be an address of this machine.
   */
  host?: string;
  /** Advertised largest accepted frame, in bytes. */
  maxFrameSize?: number;
  /** UDP port to advertise on. @default {DEFAULT_ADVERTISER_PORT} */
  port?: number;
  /** IPv4 multicast group to advertise to. @default {DEFAULT_MULTICAST_GROUP} */
  group?: string;
  /** Time between announces (and `onTick` calls), in milliseconds. @default {1000} */
  interval?: number;
  /**
   * Called for every authentic announce from another instance of this
   * network, including other instances that use this node's name.
   */
  onAnnounce: (peer: DiscoveredPeer) => void;
  /** Called for every authentic bye from another instance of this network. */
  onBye: (name: string, instance: string) => void;
  /** Called once per interval (the node expires peers there). */
  onTick?: () => void;
  /**
   * Called when adverts for this network fail the key, the version or the
   * clock allowance, or sends fail after start (the node rate-limits them).
   * @default none
   */
  onWarning?: (warning: WarningInput) => void;
  /**
   * The wall clock adverts are stamped and checked with, in milliseconds
   * since the epoch (tests skew it). @default {Date.now}
   */
  now?: () => number;
  /**
   * Client-only: send a query at start and nothing else (no announce, no
   * answer to queries, no bye), so no peer lists this node; it still hears
   * announces. @default false
   */
  queryOnly?: boolean;
}

/**
 * Sends and receives advertisements for one node: binds the advertiser
 * port on all interfaces (shared with other nodes of the host), joins the
 * multicast group (on the interface of `host` when it names one), announces
 * at once and every interval, answers queries, and says bye on close.
 *
 * Errors thrown by the callbacks are passed to `reportError`; bad datagrams
 * and failed sends (e.g. no route to the group) are ignored.
 */
export class Discovery {
  readonly #options: DiscoveryOptions;
  readonly #port: number;
  readonly #group: string;
  readonly #interval: number;
  /** Joined to the group on the advertiser port; receives, and sends when no interface is set. */
  #conn: Deno.DatagramConn | null = null;
  /** Bound to the interface's address when `host` picks one; sends from there. */
  #sender: Deno.DatagramConn | null = null;
  #timer: ReturnType<typeof setInterval> | undefined;
  #loop: Promise<void> = Promise.resolve();
  #starting: Promise<void> | null = null;
  #closing: Promise<void> | null = null;
  readonly #sends = new Set<Promise<void>>();
  /** While rotating keys: when each instance last announced under the current key. */
  readonly #underCurrent = new Map<string, number>();
  #lastQueryReply = -Infinity;
  #seenAs: string | null = null;
  #deferredReply: ReturnType<typeof setTimeout> | undefined;
  /** Sequence number of the last advert sent. */
  #seq = 0;
  /** Sequence number of the newest own announce seen looping back. */
  #ownSeen = 0;
  readonly #guard = new AdvertGuard();
  readonly #now: () => number;

  /** Checks the options; throws `TypeError` or `RangeError` when one is invalid. */
  constructor(options: DiscoveryOptions) {
    this.#port = options.port ?? DEFAULT_ADVERTISER_PORT;
    this.#group = checkMulticastGroup(
      options.group ?? DEFAULT_MULTICAST_GROUP,
      "group",
      "discovery",
    );
    this.#interval = options.interval ?? DEFAULT_ADVERT_INTERVAL;
    if (!Number.isInteger(this.#port) || this.#port < 1 || this.#port > 65535) {
      throw new RangeError(`Cannot create discovery: port ${this.#port} is not from 1 to 65535`);
    }
    this.#options = options;
    this.#now = options.now ?? Date.now;
    checkAdvert({ ...this.#advert("announce"), seq: 1 });
  }

  /**
   * The source address of this node's own announces as they loop back: the
   * address peers see them come from. Null until the first one is back.
   */
  get seenAs(): string | null {
    return this.#seenAs;
  }

  /**
   * Binds the advertiser port, joins the group, then sends an announce and a
   * query at once and an announce every interval. Throws
   * {@linkcode UnsupportedRuntimeError} when UDP is unavailable (no
   * `--unstable-net`), {@linkcode NoMulticastError} when no interface can
   * join the group, {@linkcode PortInUseError} when a socket that does not
   * share it holds the advertiser port, `RangeError` when `host` is an IPv4
   * address this machine does not have, {@linkcode NodeClosedError} after
   * `close()`. Safe to call twice.
   */
  start(): Promise<void> {
    if (this.#closing !== null) {
      return Promise.reject(new NodeClosedError(this.#options.name, "discovery is closed"));
    }
    this.#starting ??= this.#start();
    return this.#starting;
  }

  /** Sends an announce now (no-op when not started, closing, or `queryOnly`). */
  announce(): Promise<void> {
    return this.#send("announce");
  }

  /**
   * Sends a bye, stops the interval, closes the socket and waits for the
   * receive loop to end. No callback runs once it is called. Safe to call
   * twice.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  /** Same as {@linkcode Discovery.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #start(): Promise<void> {
    if (typeof Deno.listenDatagram !== "function") {
      throw new UnsupportedRuntimeError(
        'LAN discovery needs Deno.listenDatagram: run with --unstable-net or add "unstable": ["net"] to deno.json',
      );
    }
    const iface = advertInterface(this.#options.host);
    const sender = iface === undefined ? null : this.#bindSender(iface);
    let conn: Deno.DatagramConn | null = null;
    try {
      conn = this.#bindAdvertiserPort();
      await this.#join(conn, iface);
      if (sender !== null) await this.#join(sender, iface);
    } catch (error) {
      conn?.close();
      sender?.close();
      throw error;
    }
    this.#conn = conn;
    this.#sender = sender;
    this.#loop = this.#receiveLoop(conn);
    this.#timer = setInterval(() => this.#tick(), this.#interval);
    if (this.#options.queryOnly) await this.#send("query");
    else await Promise.all([this.#send("announce"), this.#send("query")]);
  }

  /** Binds the advertiser port on every address, shared with the other nodes of the host. */
  #bindAdvertiserPort(): Deno.DatagramConn {
    try {
      return Deno.listenDatagram({
        transport: "udp",
        hostname: "0.0.0.0",
        port: this.#port,
        reuseAddress: true,
        loopback: true,
      });
    } catch (cause) {
      if (!(cause instanceof Deno.errors.AddrInUse)) throw cause;
      throw new PortInUseError(
        this.#port,
        "ports[1]",
        "it is the UDP advertiser port, and a socket bound without SO_REUSEADDR holds it and will not share it: stop the program " +
          `that holds it (ss -ulpn 'sport = :${this.#port}' names it), or choose another ports[1] ` +
          "for every node of the network (nodes find each other only on the same one)",
        { cause },
      );
    }
  }

  /**
   * Binds a socket to the interface's address: the kernel sends multicast
   * from a socket bound to an address out of the interface that owns it.
   */
  #bindSender(iface: string): Deno.DatagramConn {
    try {
      return Deno.listenDatagram({ transport: "udp", hostname: iface, port: 0, loopback: true });
    } catch (cause) {
      if (!(cause instanceof Deno.errors.AddrNotAvailable)) throw cause;
      throw new RangeError(
        `Cannot start LAN discovery: host ${iface} is not an address of this machine; bind the node to one of its own addresses`,
        { cause },
      );
    }
  }

  /** Joins the group on `iface` (the system's choice when undefined), TTL 1, looped back. */
  async #join(conn: Deno.DatagramConn, iface: string | undefined): Promise<void> {
    let membership: Deno.MulticastV4Membership;
    try {
      membership = await conn.joinMulticastV4(this.#group, iface ?? "0.0.0.0");
    } catch (cause) {
      // ENODEV: no interface routes the group, or the interface is down.
      if (!/\(os error 19\)|no such device/i.test(String(cause))) throw cause;
      throw new NoMulticastError(this.#group, iface, { cause });
    }
    await membership.setTTL(1);
    await membership.setLoopback(true);
  }

  async #close(): Promise<void> {
    await this.#starting?.catch(() => {});
    clearInterval(this.#timer);
    clearTimeout(this.#deferredReply);
    this.#deferredReply = undefined;
    const conn = this.#conn;
    if (conn === null) return;
    await this.#send("bye");
    await Promise.allSettled(this.#sends);
    this.#conn = null;
    conn.close();
    this.#sender?.close();
    this.#sender = null;
    await this.#loop;
  }

  #tick(): void {
    if (this.#closing !== null) return;
    this.#send("announce");
    this.#call(() => this.#options.onTick?.());
  }

  #advert(kind: AdvertKind): Advert {
    const { network, name, instanceKey, rpcPort, host, maxFrameSize } = this.#options;
    const advert: Advert = {
      kind,
      network,
      name,
      instance: instanceKey.id,
      seq: this.#seq,
      port: rpcPort,
      interval: this.#interval,
    };
    if (host !== undefined) advert.host = host;
    if (maxFrameSize !== undefined) advert.maxFrameSize = maxFrameSize;
    return advert;
  }

  /**
   * Signs one advert (the next sequence number), seals it under each key and
   * sends the copies in order to the group; never rejects. A failed send
   * after start is reported as `multicast-lost`.
   */
  #send(kind: AdvertKind): Promise<void> {
    const conn = this.#sender ?? this.#conn;
    if (conn === null || (this.#closing !== null && kind !== "bye")) return Promise.resolve();
    if (this.#options.queryOnly && kind !== "query") return Promise.resolve();
    const target: Deno.NetAddr = { transport: "udp", hostname: this.#group, port: this.#port };
    const keys = [this.#options.fernet, this.#options.previousFernet];
    this.#seq++;
    const sending = (async () => {
      const signed = await signAdvert(this.#advert(kind), this.#options.instanceKey);
      for (const key of keys) {
        if (key === undefined) continue;
        const datagram = await sealAdvert(signed, key, { now: this.#now() });
        await conn.send(datagram, target);
      }
    })().catch((error) => {
      if (this.#conn === null || this.#closing !== null) return;
      this.#warn({
        code: "multicast-lost",
        message: `cannot send LAN adverts to ${this.#group}: ${
          error?.message ?? error
        }; peers on the LAN no longer see this node (check the network interface and its multicast route, or restart the node)`,
      });
    });
    this.#sends.add(sending);
    sending.finally(() => this.#sends.delete(sending));
    return sending;
  }

  #warn(warning: WarningInput): void {
    const onWarning = this.#options.onWarning;
    if (onWarning) this.#call(() => onWarning(warning));
  }

  async #receiveLoop(conn: Deno.DatagramConn): Promise<void> {
    let errors = 0;
    while (this.#conn === conn) {
      let datagram: Uint8Array;
      let from: Deno.Addr;
      try {
        // One byte more than the limit, so an oversize datagram shows as such.
        [datagram, from] = await conn.receive(new Uint8Array(MAX_ADVERT_SIZE + 1));
        errors = 0;
      } catch {
        if (++errors >= MAX_RECEIVE_ERRORS) return;
        continue;
      }
      await this.#receive(datagram, sourceHost(from));
    }
  }

  /** Opens, checks and dispatches one datagram from `source`. */
  async #receive(datagram: Uint8Array, source: string): Promise<void> {
    const { fernet, previousFernet, network, instanceKey } = this.#options;
    const now = { now: this.#now() };
    let decoded = await decodeAdvert(datagram, fernet, network, now);
    let previousKey = false;
    if (!decoded.ok && decoded.drop === "mac" && previousFernet) {
      decoded = await decodeAdvert(datagram, previousFernet, network, now);
      previousKey = decoded.ok && !this.#seenUnderCurrent(decoded.advert);
    } else if (decoded.ok && previousFernet) {
      if (this.#underCurrent.size >= MAX_ROTATING_PEERS) this.#underCurrent.clear();
      this.#underCurrent.set(decoded.advert.instance, Date.now());
    }
    if (this.#closing !== null) return;
    if (!decoded.ok) return this.#dropped(decoded, source);
    const { advert, proof } = decoded;
    if (advert.instance === instanceKey.id) {
      // Our own announce, looped back: its source is the address peers see.
      if (advert.kind === "announce" && advert.seq > this.#ownSeen) {
        this.#ownSeen = advert.seq;
        this.#seenAs = source;
      }
      return;
    }
    if (advert.kind === "query") return this.#answerQuery();
    if (await this.#guard.admit(advert, proof, source) !== "accept") return;
    if (this.#closing === null) this.#dispatch(advert, source, previousKey);
  }

  /** Warns about a datagram of this network dropped for its key, version or clock. */
  #dropped(decoded: DecodedAdvert & { ok: false }, source: string): void {
    const network = this.#options.network;
    if (decoded.drop === "mac") {
      this.#warn({
        code: "key-mismatch",
        source,
        message:
          `LAN adverts for network '${network}' from ${source} do not verify under this node's key: a node there uses the same network name with another key (or already holds a newer key during a key rotation); give both the same networkKey, or another network name`,
      });
    } else if (decoded.drop === "version") {
      this.#warn({
        code: "advert-version",
        source,
        message:
          `LAN adverts for network '${network}' from ${source} have version ${decoded.version}, this node speaks 2: upgrade the older node so both run one peerbase version`,
      });
    } else if (decoded.drop === "age" && decoded.skew !== undefined) {
      const skew = decoded.skew;
      const ahead = skew > 0 ? "ahead of" : "behind";
      this.#warn({
        code: "clock-skew",
        source,
        skew,
        message: `LAN adverts for network '${network}' from ${source} are stamped ${
          Math.round(Math.abs(skew) / 1000)
        } s ${ahead} this node's clock, outside the allowance (10 s behind, 60 s ahead): synchronise the clocks (NTP), or they are replays`,
      });
    }
  }

  /**
   * True when `advert`'s instance also announced under the current key
   * lately (while rotating, a rotated peer sends under both keys): it is
   * called under the current key, not flipped to the previous one.
   */
  #seenUnderCurrent(advert: Advert): boolean {
    const at = this.#underCurrent.get(advert.instance);
    if (at !== undefined && Date.now() - at <= 3 * advert.interval) return true;
    this.#underCurrent.delete(advert.instance);
    return false;
  }

  #dispatch(advert: Advert, source: string, previousKey: boolean): void {
    switch (advert.kind) {
      case "announce": {
        const hostname = announcedAddress(advert.host, source);
        if (hostname === null) break;
        const peer: DiscoveredPeer = {
          name: advert.name,
          instance: advert.instance,
          hostname,
          port: advert.port,
          interval: advert.interval,
        };
        if (advert.maxFrameSize !== undefined) peer.maxFrameSize = advert.maxFrameSize;
        if (previousKey) peer.previousKey = true;
        this.#call(() => this.#options.onAnnounce(peer));
        break;
      }
      case "query":
        break;
      case "bye":
        this.#call(() => this.#options.onBye(advert.name, advert.instance));
        break;
    }
  }

  /**
   * Announces at once in answer to a query, at most once per
   * QUERY_REPLY_INTERVAL; a query inside that window gets one announce at
   * its end, so a node that starts right after another is not missed.
   */
  #answerQuery(): void {
    const wait = this.#lastQueryReply + QUERY_REPLY_INTERVAL - performance.now();
    if (wait <= 0) {
      this.#lastQueryReply = performance.now();
      this.#send("announce");
      return;
    }
    this.#deferredReply ??= setTimeout(() => {
      this.#deferredReply = undefined;
      if (this.#closing !== null) return;
      this.#lastQueryReply = performance.now();
      this.#send("announce");
    }, wait);
  }

  /** Runs a user callback; what it throws goes to `reportError`, not into the loop. */
  #call(callback: () => void): void {
    try {
      callback();
    } catch (error) {
      reportError(error);
    }
  }
}

/** The datagram's source address; the wildcard (seen on loopback) becomes 127.0.0.1. */
function sourceHost(from: Deno.Addr): string {
  const hostname = "hostname" in from ? from.hostname : "";
  return hostname === "" || hostname === "0.0.0.0" ? "127.0.0.1" : hostname;
}

/**
 * The address of the interface to advertise on for `host`: the host itself
 * when it is an IPv4 address, `127.0.0.1` for any other loopback name;
 * undefined (the system picks) for no host, the wildcard, or a name.
 */
function advertInterface(host: string | undefined): string | undefined {
  if (host === undefined || host === "0.0.0.0") return undefined;
  if (isIPv4(host)) return host;
  return isLoopbackHost(host) ? "127.0.0.1" : undefined;
}
