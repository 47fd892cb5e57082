/**
 * What relays know a network and its nodes by, derived from the network key
 * so that relays never need the key (docs/PROTOCOL.md, "Network identity
 * and pseudonyms"):
 *
 * - the network id: the public half of an Ed25519 key pair seeded by
 *   HKDF-SHA256(key, "peerbase/2/identity", network name); nodes sign
 *   admission proofs with the secret half, relays verify them with the id;
 * - pseudonyms: HMAC-SHA256 of a node name under a second HKDF output, so
 *   relays route on opaque identifiers and only key holders map them back.
 *
 * @module
 */

import { HmacSha256 } from "./hmac_sha256.ts";
import { fromBase64Url, textEncoder, toBase64UrlBare } from "./encoding.ts";

/** HKDF label of the network's Ed25519 seed. */
const IDENTITY_LABEL = "peerbase/2/identity";
/** HKDF label of the pseudonym key. */
const PSEUDONYM_LABEL = "peerbase/2/pseudonym";
/** PKCS#8 prefix of an Ed25519 private key (RFC 8410); the 32-byte seed follows. */
const PKCS8_ED25519 = Uint8Array.fromHex("302e020100300506032b657004220420");
/** Bytes of a pseudonym before encoding (22 base64url characters). */
const PSEUDONYM_BYTES = 16;
/** Pseudonyms remembered per network (names a node talks to). */
const PSEUDONYM_CACHE = 4096;

/** HMAC-SHA256 of `data` under `key` (at most 64 bytes). */
function hmac(key: Uint8Array, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(32);
  new HmacSha256(key).sign(data, out);
  return out;
}

/**
 * HKDF-SHA256 (RFC 5869) with a zero salt, for outputs of at most 32 bytes:
 * `info` is the ASCII `label`, a 0x00 byte, then the UTF-8 `context`.
 */
export function hkdf32(ikm: Uint8Array, label: string, context: string): Uint8Array {
  const prk = hmac(new Uint8Array(32), ikm);
  const info = textEncoder.encode(`${label}\0${context}`);
  const block = new Uint8Array(info.length + 1);
  block.set(info);
  block[info.length] = 1;
  return hmac(prk, block);
}

/** The 32 bytes of a network key given as base64url text. */
function keyBytes(key: string): Uint8Array {
  const bytes = fromBase64Url(key);
  if (bytes.length !== 32) throw new TypeError("Cannot use network key: it must be 32 bytes");
  return bytes;
}

/**
 * Maps node names to the pseudonyms of one network, synchronously, with a
 * bounded cache.
 *
 * @example
 * ```ts
 * import { Pseudonyms } from "./network_identity.ts";
 * import assert from "node:assert/strict";
 *
 * const key = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";
 * const office = Pseudonyms.fromKey(key, "office");
 * assert.equal(office.of("alice").length, 22);
 * assert.equal(office.of("alice"), Pseudonyms.fromKey(key, "office").of("alice"));
 * assert.notEqual(office.of("alice"), Pseudonyms.fromKey(key, "lab").of("alice"));
 * ```
 */
export class Pseudonyms {
  readonly #key: Uint8Array;
  readonly #cache = new Map<string, string>();

  /** Uses `secret`, the 32-byte pseudonym key. */
  constructor(secret: Uint8Array) {
    this.#key = secret;
  }

  /** The pseudonyms of `network` under the network key `key` (base64url). */
  static fromKey(key: string, network: string): Pseudonyms {
    return new Pseudonyms(hkdf32(keyBytes(key), PSEUDONYM_LABEL, network));
  }

  /** The pseudonym of `name` ("*" stays "*": it addresses every member). */
  of(name: string): string {
    if (name === "*") return name;
    let pseudonym = this.#cache.get(name);
    if (pseudonym === undefined) {
      const mac = hmac(this.#key, textEncoder.encode(name)).subarray(0, PSEUDONYM_BYTES);
      pseudonym = toBase64UrlBare(mac);
      if (this.#cache.size >= PSEUDONYM_CACHE) this.#cache.clear();
      this.#cache.set(name, pseudonym);
    }
    return pseudonym;
  }
}

/**
 * A network as its members present it to relays: its id, its pseudonyms,
 * and the signing key that proves membership.
 *
 * @example
 * ```ts
 * import { NetworkIdentity } from "./network_identity.ts";
 * import assert from "node:assert/strict";
 *
 * const key = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";
 * const office = await NetworkIdentity.derive(key, "office");
 * assert.equal(office.id.length, 43);
 * assert.equal(office.id, (await NetworkIdentity.derive(key, "office")).id);
 * assert.notEqual(office.id, (await NetworkIdentity.derive(key, "lab")).id);
 * ```
 */
export class NetworkIdentity {
  /** The network's name (never sent to relays). */
  readonly network: string;
  /** The network id: the Ed25519 public key, unpadded base64url. */
  readonly id: string;
  /** Node name → pseudonym. */
  readonly pseudonyms: Pseudonyms;
  readonly #signingKey: CryptoKey;

  private constructor(network: string, id: string, pseudonyms: Pseudonyms, signingKey: CryptoKey) {
    this.network = network;
    this.id = id;
    this.pseudonyms = pseudonyms;
    this.#signingKey = signingKey;
  }

  /** Derives the identity of `network` under `key` (base64url network key). */
  static async derive(key: string, network: string): Promise<NetworkIdentity> {
    const bytes = keyBytes(key);
    const seed = hkdf32(bytes, IDENTITY_LABEL, network);
    const pkcs8 = new Uint8Array(PKCS8_ED25519.length + 32);
    pkcs8.set(PKCS8_ED25519);
    pkcs8.set(seed, PKCS8_ED25519.length);
    const signingKey = await crypto.subtle.importKey("pkcs8", pkcs8, "Ed25519", true, ["sign"]);
    const { x } = await crypto.subtle.exportKey("jwk", signingKey);
    const pseudonyms = new Pseudonyms(hkdf32(bytes, PSEUDONYM_LABEL, network));
    return new NetworkIdentity(network, x!, pseudonyms, signingKey);
  }

  /** Ed25519 signature of `message` by the network's signing key. */
  async sign(message: Uint8Array<ArrayBuffer>): Promise<Uint8Array> {
    return new Uint8Array(await crypto.subtle.sign("Ed25519", this.#signingKey, message));
  }
}

/**
 * The network id of `network` under `key`, as `peerbase keygen` prints it
 * beside the name (`NAME:ID`) for a relay's `--network`.
 *
 * @example
 * ```ts
 * import { generateKey, networkId } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 *
 * const key = generateKey();
 * const id = await networkId(key, "office");
 * assert.match(id, /^[A-Za-z0-9_-]{43}$/); // a relay's --network office:<id>
 * assert.notEqual(id, await networkId(generateKey(), "office"));
 * ```
 */
export async function networkId(key: string, network: string): Promise<string> {
  return (await NetworkIdentity.derive(key, network)).id;
}
