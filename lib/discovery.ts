/**
 * LAN discovery: nodes of a network find each other by sealed UDP
 * advertisements. Plain functions build, seal, open and validate
 * advertisements (sans-IO); the thin {@linkcode Discovery} class owns the
 * socket and the interval.
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
 * Datagram layout (`docs/PROTOCOL.md` copies it):
 *
 * ```text
 * offset  size  field
 * 0       4     magic    "PBAD" (0x50 0x42 0x41 0x44)
 * 4       1     version  u8, 1
 * 5       1     kind     u8: 1 announce, 2 query, 3 bye
 * 6       1     N        network name length in UTF-8 bytes, 1..255
 * 7       N     network  UTF-8, in clear so other networks are dropped before decrypting
 * 7+N     rest  token    raw Fernet token (binary, not base64) under the network key
 * ```
 *
 * The token seals UTF-8 JSON
 * `{"k":kind,"w":network,"n":name,"i":instance,"p":port,"iv":interval,"h":host,"mf":maxFrameSize}`:
 * `k` is the kind code (1, 2 or 3) and `w` the network, both repeated from the
 * clear header and checked equal to it, so nothing in clear can be altered;
 * `n` the node name; `i` the sender instance, 16 lowercase hex characters;
 * `p` the TCP RPC port (0 for none); `iv` the sender's advertise interval in
 * milliseconds (a positive integer); `h`, optional, the address to connect to
 * when the node binds a specific host (otherwise the datagram's source
 * address is used). Unknown keys are ignored.
 *
 * A receiver drops, silently, a datagram that is larger than
 * {@linkcode MAX_ADVERT_SIZE} (checked before any work), shorter than the
 * header, with another magic, version or kind, for another network, whose
 * token does not verify under the key or is older than
 * {@linkcode DEFAULT_ADVERT_TTL} (replay window), whose JSON is malformed, or
 * whose sealed kind or network differs from the clear one. It also ignores
 * its own instance.
 *
 * Behaviour: on start a node sends an announce and a query at once, then an
 * announce every interval; a node that receives a query from another
 * instance announces at once (at most once per 100 ms); on close it sends a
 * bye.
 *
 * @module
 */

import { NodeClosedError, UnsupportedRuntimeError } from "./errors.ts";
import { textDecoder, textEncoder } from "./encoding.ts";
import { Fernet } from "./fernet.ts";

/**
 * UDP port that nodes advertise on, by default.
 *
 * @example
 * ```ts
 * import { DEFAULT_ADVERTISER_PORT } from "@peerbase/peerbase";
 * console.assert(DEFAULT_ADVERTISER_PORT === 41993);
 * ```
 */
export const DEFAULT_ADVERTISER_PORT = 41993;

/**
 * IPv4 multicast group that nodes advertise to, by default
 * (administratively scoped, never routed; sent with TTL 1).
 *
 * @example
 * ```ts
 * import { DEFAULT_MULTICAST_GROUP } from "@peerbase/peerbase";
 * console.assert(DEFAULT_MULTICAST_GROUP === "239.255.80.66");
 * ```
 */
export const DEFAULT_MULTICAST_GROUP = "239.255.80.66";

/** Largest advertisement datagram, in bytes; larger ones are ignored before any work. */
export const MAX_ADVERT_SIZE = 1200;

/** Replay window: adverts whose token is older than this are dropped, in milliseconds. */
export const DEFAULT_ADVERT_TTL = 10_000;

/** Default interval between announces, in milliseconds. */
export const DEFAULT_ADVERT_INTERVAL = 1000;

/** Shortest time between two announces sent in answer to queries, in milliseconds. */
const QUERY_REPLY_INTERVAL = 100;

/** Consecutive receive errors tolerated before the receive loop gives up. */
const MAX_RECEIVE_ERRORS = 16;

const MAGIC = textEncoder.encode("PBAD");
const VERSION = 1;
const HEADER_SIZE = MAGIC.length + 3;
const INSTANCE_PATTERN = /^[0-9a-f]{16}$/;

/** What an advertisement says: `announce` (I am here), `query` (who is here?), `bye` (I leave). */
export type AdvertKind = "announce" | "query" | "bye";

const KIND_CODES: Readonly<Record<AdvertKind, number>> = { announce: 1, query: 2, bye: 3 };
const KINDS_BY_CODE: readonly (AdvertKind | undefined)[] = [
  undefined,
  "announce",
  "query",
  "bye",
];

/** One advertisement, as sent by a node. */
export interface Advert {
  /** What the advert says. */
  kind: AdvertKind;
  /** Network name (1 to 255 bytes of UTF-8); sent in clear and sealed. */
  network: string;
  /** Node name. */
  name: string;
  /** Sender instance: 16 lowercase hex characters, new for every node start. */
  instance: string;
  /** TCP RPC port, 0 for none. */
  port: number;
  /** Explicit address to connect to, when the node binds a specific host. */
  host?: string;
  /** The sender's advertise interval, in milliseconds. */
  interval: number;
  /** The largest frame the sender accepts, in bytes (omitted: the default). */
  maxFrameSize?: number;
}

/** Encodes and checks the parts of `advert` that go on the wire; throws on bad input. */
function prepare(advert: Advert): { network: Uint8Array; json: Uint8Array } {
  const { kind, network, name, instance, port, host, interval, maxFrameSize } = advert;
  if (!Object.hasOwn(KIND_CODES, kind)) {
    throw new TypeError(`Cannot encode advertisement: unknown kind '${kind}'`);
  }
  for (const [what, value] of [["network", network], ["name", name]] as const) {
    if (typeof value !== "string" || value === "") {
      throw new TypeError(`Cannot encode advertisement: ${what} must be a non-empty string`);
    }
  }
  if (typeof instance !== "string" || !INSTANCE_PATTERN.test(instance)) {
    throw new TypeError(
      "Cannot encode advertisement: instance must be 16 lowercase hex characters",
    );
  }
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RangeError(`Cannot encode advertisement: port ${port} is not from 0 to 65535`);
  }
  if (!Number.isSafeInteger(interval) || interval <= 0) {
    throw new RangeError(
      `Cannot encode advertisement: interval ${interval} is not a positive integer of milliseconds`,
    );
  }
  if (host !== undefined && (typeof host !== "string" || host === "")) {
    throw new TypeError("Cannot encode advertisement: host must be a non-empty string");
  }
  if (maxFrameSize !== undefined && (!Number.isSafeInteger(maxFrameSize) || maxFrameSize <= 0)) {
    throw new RangeError("Cannot encode advertisement: maxFrameSize must be a positive integer");
  }
  const networkBytes = textEncoder.encode(network);
  if (networkBytes.length > 255) {
    throw new RangeError(
      `Cannot encode advertisement: network is ${networkBytes.length} bytes in UTF-8, the limit is 255`,
    );
  }
  const sealed: Record<string, string | number> = {
    k: KIND_CODES[kind],
    w: network,
    n: name,
    i: instance,
    p: port,
    iv: interval,
  };
  if (host !== undefined) sealed.h = host;
  if (maxFrameSize !== undefined) sealed.mf = maxFrameSize;
  const json = textEncoder.encode(JSON.stringify(sealed));
  const size = HEADER_SIZE + networkBytes.length + Fernet.tokenSize(json.length);
  if (size > MAX_ADVERT_SIZE) {
    throw new RangeError(
      `Cannot encode advertisement: it would be ${size} bytes, the limit is ${MAX_ADVERT_SIZE}; use shorter names`,
    );
  }
  return { network: networkBytes, json };
}

/**
 * Checks that `advert` can be sent (valid fields, fits in
 * {@linkcode MAX_ADVERT_SIZE}) without encrypting anything. Throws
 * `TypeError` or `RangeError`.
 */
export function checkAdvert(advert: Advert): void {
  prepare(advert);
}

/**
 * Builds and seals the datagram for `advert`. Throws `TypeError` or
 * `RangeError` when a field is invalid or the datagram would exceed
 * {@linkcode MAX_ADVERT_SIZE}, before encrypting.
 */
export async function encodeAdvert(advert: Advert, fernet: Fernet): Promise<Uint8Array> {
  const { network, json } = prepare(advert);
  const token = await fernet.encryptBytes(json);
  const out = new Uint8Array(HEADER_SIZE + network.length + token.length);
  out.set(MAGIC, 0);
  out[4] = VERSION;
  out[5] = KIND_CODES[advert.kind];
  out[6] = network.length;
  out.set(network, HEADER_SIZE);
  out.set(token, HEADER_SIZE + network.length);
  return out;
}

/** Options of {@linkcode decodeAdvert}. */
export interface DecodeAdvertOptions {
  /** Current time for the token's age check, in milliseconds since the epoch. @default {Date.now()} */
  now?: number;
}

/**
 * Opens a datagram received for `network`. Returns `null`, never throws, for
 * anything that is not an authentic, fresh advert of that network (see the
 * module documentation for the list); datagrams of other networks are dropped
 * from the clear header, before decrypting.
 */
export async function decodeAdvert(
  datagram: Uint8Array,
  fernet: Fernet,
  network: string,
  options: DecodeAdvertOptions = {},
): Promise<Advert | null> {
  if (datagram.length > MAX_ADVERT_SIZE || datagram.length < HEADER_SIZE) return null;
  for (let i = 0; i < MAGIC.length; i++) {
    if (datagram[i] !== MAGIC[i]) return null;
  }
  if (datagram[4] !== VERSION) return null;
  const kindCode = datagram[5]!;
  const kind = KINDS_BY_CODE[kindCode];
  if (kind === undefined) return null;
  const expected = textEncoder.encode(network);
  if (datagram[6] !== expected.length) return null;
  const tokenStart = HEADER_SIZE + expected.length;
  if (tokenStart > datagram.length) return null;
  for (let i = 0; i < expected.length; i++) {
    if (datagram[HEADER_SIZE + i] !== expected[i]) return null;
  }
  let sealed: unknown;
  try {
    const ttlOptions = options.now === undefined
      ? { ttl: DEFAULT_ADVERT_TTL }
      : { ttl: DEFAULT_ADVERT_TTL, now: options.now };
    const plain = await fernet.decryptBytes(datagram.slice(tokenStart), ttlOptions);
    sealed = JSON.parse(textDecoder.decode(plain));
  } catch {
    return null;
  }
  return readSealed(sealed, kindCode, kind, network);
}

/** Validates the sealed JSON against the clear header; null when anything is off. */
function readSealed(
  sealed: unknown,
  kindCode: number,
  kind: AdvertKind,
  network: string,
): Advert | null {
  if (typeof sealed !== "object" || sealed === null || Array.isArray(sealed)) return null;
  const { k, w, n, i, p, iv, h, mf } = sealed as Record<string, unknown>;
  if (k !== kindCode || w !== network) return null;
  if (typeof n !== "string" || n === "") return null;
  if (typeof i !== "string" || !INSTANCE_PATTERN.test(i)) return null;
  if (typeof p !== "number" || !Number.isInteger(p) || p < 0 || p > 65535) return null;
  if (typeof iv !== "number" || !Number.isSafeInteger(iv) || iv <= 0) return null;
  if (h !== undefined && (typeof h !== "string" || h === "")) return null;
  if (mf !== undefined && (typeof mf !== "number" || !Number.isSafeInteger(mf) || mf <= 0)) {
    return null;
  }
  const advert: Advert = { kind, network, name: n, instance: i, port: p, interval: iv };
  if (h !== undefined) advert.host = h;
  if (mf !== undefined) advert.maxFrameSize = mf;
  return advert;
}

/** A node of the same network seen on the LAN. */
export interface DiscoveredPeer {
  /** Node name. */
  name: string;
  /** Instance id of that run of the node (16 lowercase hex characters). */
  instance: string;
  /** Address to connect to: the advertised host, else the datagram's source address. */
  hostname: string;
  /** TCP RPC port, 0 for none. */
  port: number;
  /** The peer's advertise interval, in milliseconds. */
  interval: number;
  /** The largest frame the peer accepts, in bytes, when it said so. */
  maxFrameSize?: number;
}

/** Options of {@linkcode Discovery}. */
export interface DiscoveryOptions {
  /** This node's name. */
  name: string;
  /** Network name; adverts of other networks are ignored. */
  network: string;
  /** This run's instance id, 16 lowercase hex characters; adverts carrying it are ignored. */
  instance: string;
  /** Seals and opens adverts with the network key. */
  fernet: Fernet;
  /** Advertised TCP RPC port, 0 for none. */
  rpcPort: number;
  /** Advertised explicit host, when the node binds a non-wildcard address. */
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
}

/**
 * Sends and receives advertisements for one node: binds the advertiser
 * port on all interfaces (shared with other nodes of the host), joins the
 * multicast group, announces at once and every interval, answers queries,
 * and says bye on close.
 *
 * Errors thrown by the callbacks are passed to `reportError`; bad datagrams
 * and failed sends (e.g. no route to the group) are ignored.
 */
export class Discovery {
  readonly #options: DiscoveryOptions;
  readonly #port: number;
  readonly #group: string;
  readonly #interval: number;
  #conn: Deno.DatagramConn | null = null;
  #timer: ReturnType<typeof setInterval> | undefined;
  #loop: Promise<void> = Promise.resolve();
  #starting: Promise<void> | null = null;
  #closing: Promise<void> | null = null;
  readonly #sends = new Set<Promise<void>>();
  #lastQueryReply = -Infinity;
  #deferredReply: ReturnType<typeof setTimeout> | undefined;

  /** Checks the options; throws `TypeError` or `RangeError` when one is invalid. */
  constructor(options: DiscoveryOptions) {
    this.#port = options.port ?? DEFAULT_ADVERTISER_PORT;
    this.#group = options.group ?? DEFAULT_MULTICAST_GROUP;
    this.#interval = options.interval ?? DEFAULT_ADVERT_INTERVAL;
    if (!Number.isInteger(this.#port) || this.#port < 1 || this.#port > 65535) {
      throw new RangeError(`Cannot create discovery: port ${this.#port} is not from 1 to 65535`);
    }
    if (!isMulticastV4(this.#group)) {
      throw new TypeError(
        `Cannot create discovery: group '${this.#group}' is not an IPv4 multicast address`,
      );
    }
    this.#options = options;
    prepare(this.#advert("announce"));
  }

  /**
   * Binds the advertiser port, joins the group, then sends an announce and a
   * query at once and an announce every interval. Throws
   * {@linkcode UnsupportedRuntimeError} when UDP is unavailable (no
   * `--unstable-net`), {@linkcode NodeClosedError} after `close()`. Safe to
   * call twice.
   */
  start(): Promise<void> {
    if (this.#closing !== null) {
      return Promise.reject(new NodeClosedError(this.#options.name, "discovery is closed"));
    }
    this.#starting ??= this.#start();
    return this.#starting;
  }

  /** Sends an announce now (no-op when not started or closing). */
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
    const conn = Deno.listenDatagram({
      transport: "udp",
      hostname: "0.0.0.0",
      port: this.#port,
      reuseAddress: true,
      loopback: true,
    });
    try {
      const membership = await conn.joinMulticastV4(this.#group, "0.0.0.0");
      await membership.setTTL(1);
      await membership.setLoopback(true);
    } catch (error) {
      conn.close();
      throw error;
    }
    this.#conn = conn;
    this.#loop = this.#receiveLoop(conn);
    this.#timer = setInterval(() => this.#tick(), this.#interval);
    await Promise.all([this.#send("announce"), this.#send("query")]);
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
    await this.#loop;
  }

  #tick(): void {
    if (this.#closing !== null) return;
    this.#send("announce");
    this.#call(() => this.#options.onTick?.());
  }

  #advert(kind: AdvertKind): Advert {
    const { network, name, instance, rpcPort, host, maxFrameSize } = this.#options;
    const advert: Advert = {
      kind,
      network,
      name,
      instance,
      port: rpcPort,
      interval: this.#interval,
    };
    if (host !== undefined) advert.host = host;
    if (maxFrameSize !== undefined) advert.maxFrameSize = maxFrameSize;
    return advert;
  }

  /** Seals and sends one advert to the group; never rejects. */
  #send(kind: AdvertKind): Promise<void> {
    const conn = this.#conn;
    if (conn === null || (this.#closing !== null && kind !== "bye")) return Promise.resolve();
    const target: Deno.NetAddr = { transport: "udp", hostname: this.#group, port: this.#port };
    const sending = encodeAdvert(this.#advert(kind), this.#options.fernet)
      .then((datagram) => conn.send(datagram, target))
      .then(() => {}, () => {});
    this.#sends.add(sending);
    sending.finally(() => this.#sends.delete(sending));
    return sending;
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
      const advert = await decodeAdvert(datagram, this.#options.fernet, this.#options.network);
      if (advert === null || this.#closing !== null) continue;
      if (advert.instance === this.#options.instance) continue;
      this.#dispatch(advert, from);
    }
  }

  #dispatch(advert: Advert, from: Deno.Addr): void {
    switch (advert.kind) {
      case "announce": {
        const peer: DiscoveredPeer = {
          name: advert.name,
          instance: advert.instance,
          hostname: advert.host ?? sourceHost(from),
          port: advert.port,
          interval: advert.interval,
        };
        if (advert.maxFrameSize !== undefined) peer.maxFrameSize = advert.maxFrameSize;
        this.#call(() => this.#options.onAnnounce(peer));
        break;
      }
      case "query": {
        this.#answerQuery();
        break;
      }
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

function isMulticastV4(address: string): boolean {
  const parts = address.split(".");
  if (parts.length !== 4) return false;
  if (!parts.every((part) => /^\d{1,3}$/.test(part) && Number(part) <= 255)) return false;
  const first = Number(parts[0]);
  return first >= 224 && first <= 239;
}
