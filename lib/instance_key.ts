/**
 * The instance key: a fresh Ed25519 key pair made at each start of a node.
 * The instance id is the first 8 bytes of SHA-256 of its public half, so a
 * relay can check that a registration comes from the holder of an instance
 * id, and a member that merely knows the id cannot take it over.
 *
 * @module
 */

import { toHex } from "./encoding.ts";

/** The instance id (16 lowercase hex characters) of an instance public key. */
export async function instanceIdOf(publicKey: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", publicKey));
  return toHex(digest.subarray(0, 8));
}

/**
 * One start's key pair and the instance id derived from it.
 *
 * @example
 * ```ts
 * import { InstanceKey, instanceIdOf } from "./instance_key.ts";
 * import assert from "node:assert/strict";
 *
 * const key = await InstanceKey.generate();
 * assert.match(key.id, /^[0-9a-f]{16}$/);
 * assert.equal(await instanceIdOf(key.publicKey), key.id);
 * ```
 */
export class InstanceKey {
  /** The instance id, derived from {@linkcode publicKey}. */
  readonly id: string;
  /** The raw 32-byte Ed25519 public key. */
  readonly publicKey: Uint8Array<ArrayBuffer>;
  readonly #privateKey: CryptoKey;

  private constructor(id: string, publicKey: Uint8Array<ArrayBuffer>, privateKey: CryptoKey) {
    this.id = id;
    this.publicKey = publicKey;
    this.#privateKey = privateKey;
  }

  /** Makes a new key pair; the secret half cannot be exported. */
  static async generate(): Promise<InstanceKey> {
    const pair = await crypto.subtle.generateKey("Ed25519", false, [
      "sign",
      "verify",
    ]) as CryptoKeyPair;
    const publicKey = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
    return new InstanceKey(await instanceIdOf(publicKey), publicKey, pair.privateKey);
  }

  /** Ed25519 signature of `message` by the instance key. */
  async sign(message: Uint8Array<ArrayBuffer>): Promise<Uint8Array> {
    return new Uint8Array(await crypto.subtle.sign("Ed25519", this.#privateKey, message));
  }
}
