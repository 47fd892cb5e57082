/**
 * A relay's gate, before and at registration: how many unproven
 * connections and proof checks each source gets, whether a REGISTER's proof
 * holds (docs/PROTOCOL.md, "Registration"), and the registration quotas
 * per source address and per network. It holds public keys and counts,
 * never a secret.
 *
 * @module
 */

import type { Frame } from "./frame.ts";
import type { RegisterBody } from "./relay_protocol.ts";
import { importNetworkId, verifyRegistration } from "./admission.ts";
import { isBase64UrlOf } from "./encoding.ts";
import { AddressQuota, KeyedBuckets, TokenBucket } from "./relay_limits.ts";
import { namesRelay, type RelayPlace, type ResolvedRelayOptions } from "./relay_options.ts";

/** Network ids kept imported as public keys. */
const NETWORK_KEY_CACHE = 4096;
/** Admission proofs verified per second by the whole relay (about 65 % of a core). */
const GLOBAL_VERIFY_RATE = 10_000;

/** The outcome of checking a REGISTER's proof. */
export type Verdict =
  /** The proof holds: the instance id it proves. */
  | { instance: string }
  /** The proof does not hold (the same answer whatever failed). */
  | { refused: "proof" }
  /** A key holder's proof, made for another relay address than this relay's. */
  | { refused: "address"; address: string };

/** The limits and checks a relay applies before it admits a node. */
export class RelayAdmission {
  readonly #networkKeys = new Map<string, CryptoKey>();
  readonly #unproven: AddressQuota<string>;
  readonly #perAddress: AddressQuota<string>;
  readonly #perNetwork: AddressQuota<string>;
  readonly #verifications: KeyedBuckets<string>;
  readonly #allVerifications: TokenBucket;

  /** Applies the limits of `options`. */
  constructor(options: ResolvedRelayOptions) {
    this.#unproven = new AddressQuota(options.maxUnproven);
    this.#perAddress = new AddressQuota(options.maxPerAddress);
    this.#perNetwork = new AddressQuota(options.maxPerNetwork);
    this.#verifications = new KeyedBuckets(options.verifyRate, options.verifyBurst);
    this.#allVerifications = new TokenBucket(GLOBAL_VERIFY_RATE, GLOBAL_VERIFY_RATE, 0);
  }

  /** Takes one of `source`'s unproven slots; false when it holds them all. */
  openUnproven(source: string): boolean {
    return this.#unproven.tryAcquire(source);
  }

  /** Gives back an unproven slot of `source` (it registered or closed). */
  closeUnproven(source: string): void {
    this.#unproven.release(source);
  }

  /** Takes a proof check for `source`; false when it (or the relay) is over its rate. */
  mayVerify(source: string): boolean {
    const now = performance.now();
    return this.#verifications.take(source, 1, now) === 0 &&
      this.#allVerifications.take(1, now) === 0;
  }

  /**
   * Checks a REGISTER's proof for `relay`'s `nonce`. The signatures are
   * checked first, so only a key holder learns that its proof named
   * another address (and what to configure).
   */
  async verify(
    nonce: Uint8Array,
    frame: Frame,
    body: RegisterBody,
    relay: RelayPlace,
  ): Promise<Verdict> {
    if (!isBase64UrlOf(frame.sender, 16)) return { refused: "proof" };
    const networkKey = await this.#networkKey(frame.network);
    if (!networkKey) return { refused: "proof" };
    const instance = await verifyRegistration(body, {
      nonce,
      networkId: frame.network,
      networkKey,
      pseudonym: frame.sender,
    });
    if (instance === null) return { refused: "proof" };
    if (!namesRelay(body.a, relay)) return { refused: "address", address: body.a };
    return { instance };
  }

  /**
   * Takes a registration slot of `source` and of `networkId`; the quota
   * that is full, if one is (and then takes nothing).
   */
  takeSlots(source: string, networkId: string): "address-quota" | "network-quota" | null {
    if (!this.#perAddress.tryAcquire(source)) return "address-quota";
    if (!this.#perNetwork.tryAcquire(networkId)) {
      this.#perAddress.release(source);
      return "network-quota";
    }
    return null;
  }

  /** Gives back the slots {@linkcode takeSlots} took. */
  releaseSlots(source: string, networkId: string): void {
    this.#perAddress.release(source);
    this.#perNetwork.release(networkId);
  }

  /** A network id imported as a public key (cached), or null when it is not one. */
  async #networkKey(id: string): Promise<CryptoKey | null> {
    const cached = this.#networkKeys.get(id);
    if (cached) return cached;
    const key = await importNetworkId(id);
    if (key) {
      if (this.#networkKeys.size >= NETWORK_KEY_CACHE) this.#networkKeys.clear();
      this.#networkKeys.set(id, key);
    }
    return key;
  }
}
