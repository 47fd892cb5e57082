/**
 * LAN advertisements, version 2: build, sign, seal, open and check them.
 * Sans-IO; the {@linkcode Discovery} class in `discovery.ts` owns the socket
 * and `advert_guard.ts` the per-instance replay state.
 *
 * Datagram layout (`docs/PROTOCOL.md`, "LAN discovery", copies it):
 *
 * ```text
 * offset  size  field
 * 0       4     magic    "PBAD" (0x50 0x42 0x41 0x44)
 * 4       1     version  u8, 2
 * 5       1     kind     u8: 1 announce, 2 query, 3 bye
 * 6       1     N        network name length in UTF-8 bytes, 1..255
 * 7       N     network  UTF-8, in clear so other networks are dropped before decrypting
 * 7+N     rest  token    raw Fernet token (binary, not base64) under the network key
 * ```
 *
 * The token seals `u16 J`, `J` bytes of UTF-8 JSON, the sender's 32-byte
 * Ed25519 instance public key, and its 64-byte signature over
 * `"peerbase/2/advert" 0x00 || JSON`. The JSON is
 * `{"k":kind,"w":network,"n":name,"i":instance,"q":seq,"p":port,"iv":interval,"h":host,"mf":maxFrameSize}`:
 * `k` and `w` repeat the clear header and must equal it; `i` must be the
 * hash of the public key (checked with the signature, by
 * {@linkcode verifyAdvert} or the guard); `q` grows by one with every advert
 * the instance sends; `h`, optional, the address to connect to when the node
 * binds a specific host (see {@linkcode announcedAddress}). Unknown keys are
 * ignored.
 *
 * {@linkcode decodeAdvert} says why it dropped a datagram, so the node can
 * warn about another key, another version or a skewed clock.
 *
 * @module
 */

import { textDecoder, textEncoder } from "./encoding.ts";
import { Fernet } from "./fernet.ts";
import { instanceIdOf } from "./instance_key.ts";

/** Largest advertisement datagram, in bytes; larger ones are ignored before any work. */
export const MAX_ADVERT_SIZE = 1200;

/** Replay window: adverts whose token is older than this are dropped, in milliseconds. */
export const DEFAULT_ADVERT_TTL = 10_000;

/** How far in the future an advert's token may be (a sender's clock ahead), in milliseconds. */
export const MAX_ADVERT_CLOCK_AHEAD = 60_000;

/** The advert version this code speaks (the byte at offset 4). */
export const ADVERT_VERSION = 2;

const MAGIC = textEncoder.encode("PBAD");
const HEADER_SIZE = MAGIC.length + 3;
const INSTANCE_PATTERN = /^[0-9a-f]{16}$/;
const CONTEXT = textEncoder.encode("peerbase/2/advert\0");
const KEY_SIZE = 32;
const SIGNATURE_SIZE = 64;

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
  /** Sender instance: 16 lowercase hex characters, the hash of its instance public key. */
  instance: string;
  /** Sequence number: a positive integer, one more for every advert the instance sends. */
  seq: number;
  /** TCP RPC port, 0 for none. */
  port: number;
  /** Explicit address to connect to, when the node binds a specific host. */
  host?: string;
  /** The sender's advertise interval, in milliseconds. */
  interval: number;
  /** The largest frame the sender accepts, in bytes (omitted: the default). */
  maxFrameSize?: number;
}

/** What signs adverts: an {@linkcode InstanceKey} (its `id` is the advert's instance). */
export interface AdvertSigner {
  /** The instance id. */
  readonly id: string;
  /** The raw 32-byte Ed25519 public key. */
  readonly publicKey: Uint8Array;
  /** Ed25519 signature of `message`. */
  sign(message: Uint8Array<ArrayBuffer>): Promise<Uint8Array>;
}

/** The instance's proof carried by an advert, checked by {@linkcode verifyAdvert}. */
export interface AdvertProof {
  /** The claimed instance public key, 32 bytes. */
  publicKey: Uint8Array<ArrayBuffer>;
  /** The Ed25519 signature, 64 bytes. */
  signature: Uint8Array<ArrayBuffer>;
  /** The signed bytes: the context and the JSON. */
  message: Uint8Array<ArrayBuffer>;
}

/** An advert signed by its instance, ready to be sealed under one or more keys. */
export interface SignedAdvert {
  /** The advert. */
  advert: Advert;
  /** The plaintext the token seals. */
  plaintext: Uint8Array<ArrayBuffer>;
}

/** Encodes and checks the parts of `advert` that go on the wire; throws on bad input. */
function prepare(advert: Advert): { network: Uint8Array; json: Uint8Array } {
  const { kind, network, name, instance, seq, port, host, interval, maxFrameSize } = advert;
  const fail = (what: string, error: typeof TypeError = TypeError) => {
    throw new error(`Cannot encode advertisement: ${what}`);
  };
  if (!Object.hasOwn(KIND_CODES, kind)) fail(`unknown kind '${kind}'`);
  for (const [what, value] of [["network", network], ["name", name]] as const) {
    if (typeof value !== "string" || value === "") fail(`${what} must be a non-empty string`);
  }
  if (typeof instance !== "string" || !INSTANCE_PATTERN.test(instance)) {
    fail("instance must be 16 lowercase hex characters");
  }
  if (!Number.isSafeInteger(seq) || seq <= 0) {
    fail(`seq ${seq} is not a positive integer`, RangeError);
  }
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    fail(`port ${port} is not from 0 to 65535`, RangeError);
  }
  if (!Number.isSafeInteger(interval) || interval <= 0) {
    fail(`interval ${interval} is not a positive integer of milliseconds`, RangeError);
  }
  if (host !== undefined && (typeof host !== "string" || host === "")) {
    fail("host must be a non-empty string");
  }
  if (maxFrameSize !== undefined && (!Number.isSafeInteger(maxFrameSize) || maxFrameSize <= 0)) {
    fail("maxFrameSize must be a positive integer", RangeError);
  }
  const networkBytes = textEncoder.encode(network);
  if (networkBytes.length > 255) {
    fail(`network is ${networkBytes.length} bytes in UTF-8, the limit is 255`, RangeError);
  }
  const sealed: Record<string, string | number> = {
    k: KIND_CODES[kind],
    w: network,
    n: name,
    i: instance,
    q: seq,
    p: port,
    iv: interval,
  };
  if (host !== undefined) sealed.h = host;
  if (maxFrameSize !== undefined) sealed.mf = maxFrameSize;
  const json = textEncoder.encode(JSON.stringify(sealed));
  const plain = 2 + json.length + KEY_SIZE + SIGNATURE_SIZE;
  const size = HEADER_SIZE + networkBytes.length + Fernet.tokenSize(plain);
  if (size > MAX_ADVERT_SIZE) {
    fail(
      `it would be ${size} bytes, the limit is ${MAX_ADVERT_SIZE}; use shorter names`,
      RangeError,
    );
  }
  return { network: networkBytes, json };
}

/**
 * Checks that `advert` can be sent (valid fields, fits in
 * {@linkcode MAX_ADVERT_SIZE}) without signing or encrypting anything.
 * Throws `TypeError` or `RangeError`.
 *
 * @example
 * ```ts
 * import { throws } from "node:assert/strict";
 * import { checkAdvert } from "./advert.ts";
 * const advert = { kind: "announce", network: "office", name: "alice",
 *   instance: "0123456789abcdef", seq: 1, port: 7000, interval: 1000 } as const;
 * checkAdvert(advert);
 * throws(() => checkAdvert({ ...advert, seq: 0 }), RangeError);
 * ```
 */
export function checkAdvert(advert: Advert): void {
  prepare(advert);
}

/**
 * Signs `advert` with its instance key `signer` (whose id must be the
 * advert's instance). Throws `TypeError` or `RangeError` when a field is
 * invalid or the datagram would exceed {@linkcode MAX_ADVERT_SIZE}, before
 * signing.
 */
export async function signAdvert(advert: Advert, signer: AdvertSigner): Promise<SignedAdvert> {
  const { json } = prepare(advert);
  if (signer.id !== advert.instance || signer.publicKey.length !== KEY_SIZE) {
    throw new TypeError("Cannot sign advertisement: the key is not the advert's instance key");
  }
  const message = new Uint8Array(CONTEXT.length + json.length);
  message.set(CONTEXT);
  message.set(json, CONTEXT.length);
  const signature = await signer.sign(message);
  const plaintext = new Uint8Array(2 + json.length + KEY_SIZE + SIGNATURE_SIZE);
  new DataView(plaintext.buffer).setUint16(0, json.length);
  plaintext.set(json, 2);
  plaintext.set(signer.publicKey, 2 + json.length);
  plaintext.set(signature, 2 + json.length + KEY_SIZE);
  return { advert, plaintext };
}

/** Options of {@linkcode sealAdvert} and {@linkcode encodeAdvert}. */
export interface SealAdvertOptions {
  /** Time the token is stamped with, in milliseconds since the epoch. @default {Date.now()} */
  now?: number;
}

/** Seals a signed advert under `fernet` into the datagram to send. */
export async function sealAdvert(
  signed: SignedAdvert,
  fernet: Fernet,
  options: SealAdvertOptions = {},
): Promise<Uint8Array> {
  const network = textEncoder.encode(signed.advert.network);
  const token = await fernet.encryptBytes(
    signed.plaintext,
    options.now === undefined ? {} : { now: options.now },
  );
  const out = new Uint8Array(HEADER_SIZE + network.length + token.length);
  out.set(MAGIC, 0);
  out[4] = ADVERT_VERSION;
  out[5] = KIND_CODES[signed.advert.kind];
  out[6] = network.length;
  out.set(network, HEADER_SIZE);
  out.set(token, HEADER_SIZE + network.length);
  return out;
}

/** Signs `advert` with `signer` and seals it under `fernet`: {@linkcode signAdvert} then {@linkcode sealAdvert}. */
export async function encodeAdvert(
  advert: Advert,
  fernet: Fernet,
  signer: AdvertSigner,
  options: SealAdvertOptions = {},
): Promise<Uint8Array> {
  return sealAdvert(await signAdvert(advert, signer), fernet, options);
}

/** Options of {@linkcode decodeAdvert}. */
export interface DecodeAdvertOptions {
  /** Current time for the token's age check, in milliseconds since the epoch. @default {Date.now()} */
  now?: number;
}

/**
 * Why {@linkcode decodeAdvert} dropped a datagram: `size`, `header` (magic
 * or kind), `network` (another network's), `version` (this network's, in
 * another version), `mac` (this network's, under another key), `age`
 * (authentic, outside the clock allowance), `payload` (malformed inside).
 */
export type AdvertDrop = "size" | "header" | "network" | "version" | "mac" | "age" | "payload";

/** What {@linkcode decodeAdvert} found: an opened advert (not yet verified) or why it was dropped. */
export type DecodedAdvert =
  | { ok: true; advert: Advert; proof: AdvertProof; issued: number }
  | { ok: false; drop: AdvertDrop; version?: number; skew?: number };

const dropped = (drop: AdvertDrop): DecodedAdvert => ({ ok: false, drop });

/**
 * Opens a datagram received for `network`; never throws. Datagrams of
 * other networks and other versions are dropped from the clear header,
 * before decrypting; then the MAC, the token's age (at most
 * {@linkcode DEFAULT_ADVERT_TTL} old, {@linkcode MAX_ADVERT_CLOCK_AHEAD}
 * ahead: `skew` is the token's time minus now, in ms) and the layout are
 * checked. The instance's signature is NOT checked here: see
 * {@linkcode verifyAdvert}.
 */
export async function decodeAdvert(
  datagram: Uint8Array,
  fernet: Fernet,
  network: string,
  options: DecodeAdvertOptions = {},
): Promise<DecodedAdvert> {
  if (datagram.length > MAX_ADVERT_SIZE) return dropped("size");
  if (datagram.length < HEADER_SIZE) return dropped("header");
  for (let i = 0; i < MAGIC.length; i++) {
    if (datagram[i] !== MAGIC[i]) return dropped("header");
  }
  const kindCode = datagram[5]!;
  const kind = KINDS_BY_CODE[kindCode];
  if (kind === undefined) return dropped("header");
  const expected = textEncoder.encode(network);
  const tokenStart = HEADER_SIZE + expected.length;
  if (datagram[6] !== expected.length || tokenStart > datagram.length) return dropped("network");
  for (let i = 0; i < expected.length; i++) {
    if (datagram[HEADER_SIZE + i] !== expected[i]) return dropped("network");
  }
  if (datagram[4] !== ADVERT_VERSION) return { ok: false, drop: "version", version: datagram[4]! };
  const token = datagram.slice(tokenStart);
  if (token.length < 9) return dropped("mac");
  const view = new DataView(token.buffer, 1, 8);
  const issued = (view.getUint32(0) * 2 ** 32 + view.getUint32(4)) * 1000;
  let plain: Uint8Array;
  try {
    // Stamped "now" at its own time, so Fernet checks the MAC and decrypts; the age is checked below.
    plain = await fernet.decryptBytes(token, { now: issued });
  } catch (error) {
    return dropped((error as { reason?: string }).reason === "padding" ? "payload" : "mac");
  }
  const now = options.now ?? Date.now();
  if (issued > now + MAX_ADVERT_CLOCK_AHEAD || issued + DEFAULT_ADVERT_TTL < now) {
    return { ok: false, drop: "age", skew: issued - now };
  }
  const opened = readPlaintext(plain, kindCode, kind, network);
  return opened === null ? dropped("payload") : { ok: true, ...opened, issued };
}

/** Splits and validates the plaintext; null when anything is off. */
function readPlaintext(
  plain: Uint8Array,
  kindCode: number,
  kind: AdvertKind,
  network: string,
): { advert: Advert; proof: AdvertProof } | null {
  if (plain.length < 2) return null;
  const jsonLength = new DataView(plain.buffer, plain.byteOffset, 2).getUint16(0);
  if (plain.length !== 2 + jsonLength + KEY_SIZE + SIGNATURE_SIZE) return null;
  const json = plain.subarray(2, 2 + jsonLength);
  let sealed: unknown;
  try {
    sealed = JSON.parse(textDecoder.decode(json));
  } catch {
    return null;
  }
  const advert = readSealed(sealed, kindCode, kind, network);
  if (advert === null) return null;
  const message = new Uint8Array(CONTEXT.length + jsonLength);
  message.set(CONTEXT);
  message.set(json, CONTEXT.length);
  const keyStart = 2 + jsonLength;
  return {
    advert,
    proof: {
      publicKey: plain.slice(keyStart, keyStart + KEY_SIZE),
      signature: plain.slice(keyStart + KEY_SIZE),
      message,
    },
  };
}

/** Validates the sealed JSON against the clear header; null when anything is off. */
function readSealed(
  sealed: unknown,
  kindCode: number,
  kind: AdvertKind,
  network: string,
): Advert | null {
  if (typeof sealed !== "object" || sealed === null || Array.isArray(sealed)) return null;
  const { k, w, n, i, q, p, iv, h, mf } = sealed as Record<string, unknown>;
  const positive = (v: unknown) => typeof v === "number" && Number.isSafeInteger(v) && v > 0;
  if (k !== kindCode || w !== network) return null;
  if (typeof n !== "string" || n === "") return null;
  if (typeof i !== "string" || !INSTANCE_PATTERN.test(i)) return null;
  if (!positive(q) || !positive(iv)) return null;
  if (typeof p !== "number" || !Number.isInteger(p) || p < 0 || p > 65535) return null;
  if (h !== undefined && (typeof h !== "string" || h === "")) return null;
  if (mf !== undefined && !positive(mf)) return null;
  const advert: Advert = {
    kind,
    network,
    name: n,
    instance: i,
    seq: q as number,
    port: p,
    interval: iv as number,
  };
  if (h !== undefined) advert.host = h;
  if (mf !== undefined) advert.maxFrameSize = mf as number;
  return advert;
}

/**
 * The verification key of `advert`'s instance: imports `proof.publicKey`
 * after checking that its hash is the advert's instance id. Null when it is
 * not (someone else's instance).
 */
export async function advertKey(advert: Advert, proof: AdvertProof): Promise<CryptoKey | null> {
  if (await instanceIdOf(proof.publicKey) !== advert.instance) return null;
  try {
    return await crypto.subtle.importKey("raw", proof.publicKey, "Ed25519", false, ["verify"]);
  } catch {
    return null;
  }
}

/** True when `proof`'s signature verifies under `key`. */
export async function checkAdvertSignature(key: CryptoKey, proof: AdvertProof): Promise<boolean> {
  try {
    return await crypto.subtle.verify("Ed25519", key, proof.signature, proof.message);
  } catch {
    return false;
  }
}

/**
 * True when `advert` was signed by the instance it names: the public key
 * hashes to its instance id and the signature verifies (about 100 µs).
 *
 * @example
 * ```ts
 * import { strictEqual } from "node:assert/strict";
 * import { decodeAdvert, encodeAdvert, verifyAdvert } from "./advert.ts";
 * import { Fernet, generateKey } from "./fernet.ts";
 * import { InstanceKey } from "./instance_key.ts";
 *
 * const fernet = new Fernet(generateKey());
 * const key = await InstanceKey.generate();
 * const advert = { kind: "announce", network: "office", name: "alice",
 *   instance: key.id, seq: 1, port: 7000, interval: 1000 } as const;
 * const opened = await decodeAdvert(await encodeAdvert(advert, fernet, key), fernet, "office");
 * strictEqual(opened.ok && await verifyAdvert(opened.advert, opened.proof), true);
 * ```
 */
export async function verifyAdvert(advert: Advert, proof: AdvertProof): Promise<boolean> {
  const key = await advertKey(advert, proof);
  return key !== null && await checkAdvertSignature(key, proof);
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
