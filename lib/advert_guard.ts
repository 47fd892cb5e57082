/**
 * Which authentic adverts change state: per instance, the highest sequence
 * number accepted and the public key it proved, so that a replayed advert
 * is dropped before any signature check and only the holder of an instance
 * key can announce (or say bye) under its id. Signature checks are bounded
 * per source address and in all. Sans-IO apart from WebCrypto.
 *
 * @module
 */

import {
  type Advert,
  advertKey,
  type AdvertProof,
  checkAdvertSignature,
  DEFAULT_ADVERT_TTL,
  MAX_ADVERT_CLOCK_AHEAD,
} from "./advert.ts";

/**
 * How long an instance's state is kept after its last accepted advert, in
 * milliseconds: the longest a token of it can still pass the age check.
 */
export const ADVERT_MEMORY: number = DEFAULT_ADVERT_TTL + MAX_ADVERT_CLOCK_AHEAD;

/** Instances remembered at most; the least recently heard is forgotten first. */
export const MAX_REMEMBERED_INSTANCES = 4096;

/** Signature checks per second for one source address (the burst is twice this). */
export const DEFAULT_VERIFY_RATE_PER_SOURCE = 200;

/** Signature checks per second in all (also the burst). */
export const DEFAULT_VERIFY_RATE = 2000;

/** Source addresses whose budgets are tracked at most; the rest share one. */
const MAX_SOURCES = 1024;

/**
 * What {@linkcode AdvertGuard.admit} decided: `accept`, or why not:
 * `replay` (sequence number not new), `gone` (the instance said bye),
 * `forged` (key or signature wrong), `limited` (over the check budget).
 */
export type Admission = "accept" | "replay" | "gone" | "forged" | "limited";

interface Known {
  seq: number;
  publicKey: Uint8Array;
  key: CryptoKey;
  heard: number;
  gone: boolean;
}

/** A token bucket; `take` is false when empty. */
class Bucket {
  #tokens: number;
  #at: number;
  constructor(readonly rate: number, readonly burst: number, now: number) {
    this.#tokens = burst;
    this.#at = now;
  }
  take(now: number): boolean {
    this.#tokens = Math.min(this.burst, this.#tokens + (now - this.#at) * this.rate / 1000);
    this.#at = now;
    if (this.#tokens < 1) return false;
    this.#tokens--;
    return true;
  }
}

/** Options of {@linkcode AdvertGuard}. */
export interface AdvertGuardOptions {
  /** Signature checks per second per source address. @default {DEFAULT_VERIFY_RATE_PER_SOURCE} */
  ratePerSource?: number;
  /** Signature checks per second in all. @default {DEFAULT_VERIFY_RATE} */
  rate?: number;
}

/**
 * Admits announces and byes: drops replays and adverts of gone instances
 * without any crypto, then checks the instance's signature within budget,
 * and remembers what it accepted.
 *
 * @example A replay is dropped before its signature is checked
 * ```ts
 * import { strictEqual } from "node:assert/strict";
 * import { AdvertGuard } from "./advert_guard.ts";
 * import { decodeAdvert, encodeAdvert } from "./advert.ts";
 * import { Fernet, generateKey } from "./fernet.ts";
 * import { InstanceKey } from "./instance_key.ts";
 *
 * const fernet = new Fernet(generateKey());
 * const key = await InstanceKey.generate();
 * const advert = { kind: "announce", network: "office", name: "bob",
 *   instance: key.id, seq: 1, port: 7000, interval: 1000 } as const;
 * const opened = await decodeAdvert(await encodeAdvert(advert, fernet, key), fernet, "office");
 * if (!opened.ok) throw new Error("not opened");
 * const guard = new AdvertGuard();
 * strictEqual(await guard.admit(opened.advert, opened.proof, "10.0.0.2"), "accept");
 * strictEqual(await guard.admit(opened.advert, opened.proof, "10.0.0.66"), "replay");
 * ```
 */
export class AdvertGuard {
  readonly #known = new Map<string, Known>();
  readonly #sources = new Map<string, Bucket>();
  readonly #ratePerSource: number;
  readonly #rate: number;
  #all: Bucket | undefined;

  /** Creates an empty guard. */
  constructor(options: AdvertGuardOptions = {}) {
    this.#ratePerSource = options.ratePerSource ?? DEFAULT_VERIFY_RATE_PER_SOURCE;
    this.#rate = options.rate ?? DEFAULT_VERIFY_RATE;
  }

  /** Number of instances remembered now. */
  get size(): number {
    return this.#known.size;
  }

  /**
   * Decides on an authentic, fresh announce or bye that came from
   * `source`; on `accept` remembers its sequence number (and key). `now`
   * is the local clock in ms, used for the memory and the budgets.
   */
  async admit(
    advert: Advert,
    proof: AdvertProof,
    source: string,
    now: number = performance.now(),
  ): Promise<Admission> {
    const early = this.#precheck(advert, proof, now);
    if (early !== null) return early;
    if (!this.#budget(source, now)) return "limited";
    const known = this.#known.get(advert.instance);
    const key = known?.key ?? await advertKey(advert, proof);
    if (key === null || !await checkAdvertSignature(key, proof)) return "forged";
    // Another advert of the instance may have been admitted while this one was checked.
    const again = this.#precheck(advert, proof, now);
    if (again !== null) return again;
    this.#known.delete(advert.instance);
    this.#known.set(advert.instance, {
      seq: advert.seq,
      publicKey: proof.publicKey,
      key,
      heard: now,
      gone: advert.kind === "bye",
    });
    this.#evict(now);
    return "accept";
  }

  /** The cheap checks; null when the signature must decide. */
  #precheck(advert: Advert, proof: AdvertProof, now: number): Admission | null {
    const known = this.#known.get(advert.instance);
    if (known === undefined) return null;
    if (now - known.heard > ADVERT_MEMORY) {
      this.#known.delete(advert.instance);
      return null;
    }
    if (known.gone) return "gone";
    if (advert.seq <= known.seq) return "replay";
    return sameBytes(known.publicKey, proof.publicKey) ? null : "forged";
  }

  /** Takes one check from `source`'s budget and the total; false when either is empty. */
  #budget(source: string, now: number): boolean {
    let bucket = this.#sources.get(source);
    if (bucket === undefined) {
      if (this.#sources.size >= MAX_SOURCES) {
        const oldest = this.#sources.keys().next().value!;
        this.#sources.delete(oldest);
      }
      bucket = new Bucket(this.#ratePerSource, 2 * this.#ratePerSource, now);
      this.#sources.set(source, bucket);
    }
    this.#all ??= new Bucket(this.#rate, this.#rate, now);
    return bucket.take(now) && this.#all.take(now);
  }

  /** Forgets instances beyond the limit or silent for longer than {@linkcode ADVERT_MEMORY}. */
  #evict(now: number): void {
    for (const [instance, known] of this.#known) {
      const stale = now - known.heard > ADVERT_MEMORY;
      if (!stale && this.#known.size <= MAX_REMEMBERED_INSTANCES) break;
      this.#known.delete(instance);
    }
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
