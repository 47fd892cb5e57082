/**
 * LAN advertisements: build, seal, open and validate them. Sans-IO; the
 * {@linkcode Discovery} class in `discovery.ts` owns the socket.
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
 * address is used; see {@linkcode announcedAddress}). Unknown keys are
 * ignored.
 *
 * A receiver drops, silently, a datagram that is larger than
 * {@linkcode MAX_ADVERT_SIZE} (checked before any work), shorter than the
 * header, with another magic, version or kind, for another network, whose
 * token does not verify under the key or is older than
 * {@linkcode DEFAULT_ADVERT_TTL} (replay window), whose JSON is malformed, or
 * whose sealed kind or network differs from the clear one. It also ignores
 * its own instance, and an announce whose `h` is a loopback address but whose
 * datagram came from another machine: that node is bound to loopback and
 * cannot be called from here.
 *
 * @module
 */

import { textDecoder, textEncoder } from "./encoding.ts";
import { Fernet } from "./fernet.ts";

/** Largest advertisement datagram, in bytes; larger ones are ignored before any work. */
export const MAX_ADVERT_SIZE = 1200;

/** Replay window: adverts whose token is older than this are dropped, in milliseconds. */
export const DEFAULT_ADVERT_TTL = 10_000;

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

/**
 * Whether `host` names the loopback interface: `127.0.0.0/8` (also as
 * `::ffff:127.x.y.z`), `::1` or `localhost`. Such an address is only
 * callable from the same machine.
 *
 * @example
 * ```ts
 * import { strictEqual } from "node:assert/strict";
 * import { isLoopbackHost } from "./advert.ts";
 * strictEqual(isLoopbackHost("127.0.0.1"), true);
 * strictEqual(isLoopbackHost("192.168.1.20"), false);
 * ```
 */
export function isLoopbackHost(host: string): boolean {
  const name = host.toLowerCase().replace(/^\[(.*)\]$/, "$1");
  if (name === "localhost" || name.endsWith(".localhost") || name === "::1") return true;
  return /^(::ffff:)?127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(name);
}

/**
 * The address to call the node of an announce at, given the datagram's
 * source address: the sealed `host` when there is one, else the source. Null
 * when the sealed host is a loopback address but the datagram did not come
 * from a loopback address: the sender is bound to loopback on another
 * machine, and calling that address here would reach this machine instead.
 *
 * @example
 * ```ts
 * import { strictEqual } from "node:assert/strict";
 * import { announcedAddress } from "./advert.ts";
 * strictEqual(announcedAddress(undefined, "192.168.1.20"), "192.168.1.20");
 * strictEqual(announcedAddress("127.0.0.1", "127.0.0.1"), "127.0.0.1");
 * strictEqual(announcedAddress("127.0.0.1", "192.168.1.20"), null);
 * ```
 */
export function announcedAddress(host: string | undefined, source: string): string | null {
  if (host === undefined) return source;
  if (isLoopbackHost(host) && !isLoopbackHost(source)) return null;
  return host;
}
