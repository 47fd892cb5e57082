/**
 * Sans-IO limits of the relay: token buckets for rates, per-sender shares of the bytes queued
 * towards each receiver (a flood slows its sender, never its receiver), and quotas per source
 * address or network. Nothing here reads a clock or a socket: `now` is monotonic milliseconds.
 *
 * @module
 */

import { DEFAULT_MAX_FRAME_SIZE } from "./frame.ts";
import { describeValue } from "./validate.ts";

/** Frames/s per connection, control included: 4 × the fastest honest sender measured (~5,000/s). */
export const DEFAULT_SENDER_FRAME_RATE = 20_000;
/** Frames one connection may send at once above its rate: two seconds' worth. */
export const DEFAULT_SENDER_FRAME_BURST = 40_000;
/** Frames to `*` per second per connection: each is one write per member; nodes send none. */
export const DEFAULT_FANOUT_RATE = 100;
/** Frames to `*` one connection may send at once above its rate: two seconds' worth. */
export const DEFAULT_FANOUT_BURST = 200;
/**
 * Bytes one sender may have queued towards one receiver: a largest frame, so one frame never
 * slows an idle sender, + 1 MiB for small calls pipelined behind it (64 in flight: < 100 KiB).
 */
export const DEFAULT_SENDER_SHARE: number = DEFAULT_MAX_FRAME_SIZE + 1024 * 1024;
/** Registrations per source address: a big NAT or a test host fits, one host can't fill a relay. */
export const DEFAULT_MAX_PER_ADDRESS = 1024;
/** Registrations per network: one network takes at most a tenth of a default relay. */
export const DEFAULT_MAX_PER_NETWORK = 10_000;
/** Proofs verified per second per source address: 200 × 65 µs = 1.3% of a core per address. */
export const DEFAULT_VERIFY_RATE = 200;
/** Proofs verified at once above the rate: 1,000 nodes behind one NAT re-registering together. */
export const DEFAULT_VERIFY_BURST = 1000;
/** Unproven connections open at once per source address: 4 × the 64 a bench opens at once. */
export const DEFAULT_MAX_UNPROVEN = 256;
/** Addresses whose verify buckets are kept (~2 MiB); one forgotten gets a full bucket again. */
export const DEFAULT_MAX_TRACKED_ADDRESSES = 10_000;

/**
 * A token bucket, full at first: `ratePerSecond` tokens a second, up to `burst`.
 *
 * @example Two frames pass at once, the third waits
 * ```ts
 * import { TokenBucket } from "./relay_limits.ts";
 * import assert from "node:assert/strict";
 * const bucket = new TokenBucket(10, 2, 0); // 10 tokens/s, burst 2
 * assert.equal(bucket.take(1, 0), 0);
 * assert.equal(bucket.take(1, 0), 0);
 * assert.equal(bucket.take(1, 0), 100); // come back in 100 ms
 * assert.equal(bucket.take(1, 100), 0);
 * ```
 */
export class TokenBucket {
  readonly #rate: number;
  readonly #burst: number;
  #tokens: number;
  #at: number;

  /** Throws a `RangeError` unless `ratePerSecond > 0` and `burst >= 1`. */
  constructor(ratePerSecond: number, burst: number, now: number) {
    this.#rate = checkAtLeast(ratePerSecond, "rate", Number.MIN_VALUE);
    this.#tokens = this.#burst = checkAtLeast(burst, "burst", 1);
    this.#at = checkAtLeast(now, "now", -Number.MAX_VALUE);
  }

  /** Tokens available at `now` (fractional between refills). */
  available(now: number): number {
    // A clock that steps back (or NaN) adds nothing and takes nothing away.
    if (now > this.#at) {
      this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#at) * this.#rate) / 1000);
      this.#at = now;
    }
    return this.#tokens;
  }

  /**
   * Takes `n` tokens and returns 0 if they are available at `now`; else takes none and returns
   * the ms (at least 1) until they will be. Throws a `RangeError` unless `0 <= n <= burst`.
   */
  take(n: number, now: number): number {
    if (!(n >= 0 && n <= this.#burst)) {
      throw new RangeError(`Cannot take ${n} tokens: the bucket holds at most ${this.#burst}`);
    }
    const tokens = this.available(now);
    if (tokens + 1e-9 >= n) { // tolerates float rounding
      this.#tokens = Math.max(0, tokens - n);
      return 0;
    }
    return Math.max(1, Math.ceil(((n - tokens) * 1000) / this.#rate));
  }
}

/**
 * One token bucket per key (source address, say) for at most `maxKeys` keys: one more forgets
 * the least recently used key, whose next `take` then starts from a full bucket. A caller facing
 * more addresses than that should also hold one {@linkcode TokenBucket} for all of them.
 *
 * @example 2 verifications per second per address, burst 1
 * ```ts
 * import { KeyedBuckets } from "./relay_limits.ts";
 * import assert from "node:assert/strict";
 * const verify = new KeyedBuckets<string>(2, 1, 100);
 * assert.equal(verify.take("192.0.2.1", 1, 0), 0);
 * assert.equal(verify.take("192.0.2.1", 1, 0), 500);
 * assert.equal(verify.take("192.0.2.2", 1, 0), 0); // another address
 * ```
 */
export class KeyedBuckets<K> {
  /** Most keys kept. */
  readonly maxKeys: number;
  readonly #make: (now: number) => TokenBucket;
  /** In order of last use, oldest first. */
  readonly #buckets = new Map<K, TokenBucket>();

  /** Throws a `RangeError` as {@linkcode TokenBucket} does, or unless `maxKeys >= 1`. */
  constructor(ratePerSecond: number, burst: number, maxKeys = DEFAULT_MAX_TRACKED_ADDRESSES) {
    new TokenBucket(ratePerSecond, burst, 0); // checks both
    this.#make = (now) => new TokenBucket(ratePerSecond, burst, now);
    this.maxKeys = checkAtLeast(maxKeys, "maxKeys", 1);
  }

  /** Keys kept now. */
  get size(): number {
    return this.#buckets.size;
  }

  /** {@linkcode TokenBucket.take} on the bucket of `key`. */
  take(key: K, n: number, now: number): number {
    const bucket = this.#buckets.get(key) ?? this.#make(now);
    this.#buckets.delete(key); // to set it again last: the most recently used
    const oldest = this.#buckets.keys().next();
    if (this.#buckets.size >= this.maxKeys && !oldest.done) this.#buckets.delete(oldest.value);
    this.#buckets.set(key, bucket);
    return bucket.take(n, now);
  }
}

/**
 * Counts holders per key (registrations per source address, or per network), at most `max`
 * per key. Keys at zero are deleted.
 *
 * @example
 * ```ts
 * import { AddressQuota } from "./relay_limits.ts";
 * import assert from "node:assert/strict";
 * const quota = new AddressQuota<string>(1);
 * assert.equal(quota.tryAcquire("192.0.2.1"), true);
 * assert.equal(quota.tryAcquire("192.0.2.1"), false);
 * quota.release("192.0.2.1");
 * assert.equal(quota.size, 0);
 * ```
 */
export class AddressQuota<K> {
  /** Most holders per key. */
  readonly max: number;
  readonly #counts = new Map<K, number>();

  /** Throws a `RangeError` unless `max` is at least 1. */
  constructor(max: number) {
    this.max = checkAtLeast(max, "max", 1);
  }

  /** Keys with at least one holder. */
  get size(): number {
    return this.#counts.size;
  }

  /** Holders of `key` now. */
  count(key: K): number {
    return this.#counts.get(key) ?? 0;
  }

  /** Counts one more holder of `key` and returns true, or returns false at `max`. */
  tryAcquire(key: K): boolean {
    const count = this.count(key);
    if (count >= this.max) return false;
    this.#counts.set(key, count + 1);
    return true;
  }

  /** Counts one holder of `key` less; a key without holders is left alone. */
  release(key: K): void {
    const count = this.count(key);
    if (count > 1) this.#counts.set(key, count - 1);
    else this.#counts.delete(key);
  }
}

/**
 * Bytes queued at the relay towards each receiver, per sender, so that the relay slows a sender
 * that floods a receiver instead of cutting the receiver. One entry per (receiver, sender) pair
 * with bytes queued, and one per receiver and per sender that has had any, until `forget`. Keys
 * are compared by identity (connections, say); a key passed to `forget` must not be used again.
 *
 * @example A sender over its share is told so, and back within it once written
 * ```ts
 * import { SenderShares } from "./relay_limits.ts";
 * import assert from "node:assert/strict";
 * const bob = {}, mallory = {};
 * const shares = new SenderShares<object>(1000);
 * assert.equal(shares.add(bob, mallory, 800), true);
 * assert.equal(shares.add(bob, mallory, 800), false); // 1600 > 1000: slow mallory
 * assert.equal(shares.done(bob, mallory, 800), true); // 800 left: within the share
 * assert.equal(shares.queued(bob), 800);
 * ```
 */
export class SenderShares<R, S = R> {
  /** Bytes one sender may have queued towards one receiver. */
  readonly share: number;
  /** Per receiver: the bytes of all senders, and of each. */
  readonly #receivers = new Map<R, { total: number; bySender: Map<S, number> }>();
  /** Per sender: the receivers it has bytes queued towards. */
  readonly #senders = new Map<S, Set<R>>();

  /** `share` defaults to {@linkcode DEFAULT_SENDER_SHARE}; throws a `RangeError` below 1. */
  constructor(share: number = DEFAULT_SENDER_SHARE) {
    this.share = checkAtLeast(share, "share", 1);
  }

  /** (receiver, sender) pairs with bytes queued. */
  get pairs(): number {
    let pairs = 0;
    for (const receivers of this.#senders.values()) pairs += receivers.size;
    return pairs;
  }

  /** Records `bytes` queued by `sender` towards `receiver`; false: now over its share, slow it. */
  add(receiver: R, sender: S, bytes: number): boolean {
    checkAtLeast(bytes, "bytes", 0);
    if (bytes === 0) return this.queuedBy(receiver, sender) <= this.share;
    let queue = this.#receivers.get(receiver);
    if (!queue) this.#receivers.set(receiver, queue = { total: 0, bySender: new Map() });
    const mine = (queue.bySender.get(sender) ?? 0) + bytes;
    queue.bySender.set(sender, mine);
    queue.total += bytes;
    let receivers = this.#senders.get(sender);
    if (!receivers) this.#senders.set(sender, receivers = new Set());
    receivers.add(receiver);
    return mine <= this.share;
  }

  /**
   * Records `bytes` from `sender` written to `receiver`; true: within its share towards it now (a
   * sender slowed for it may resume). Bytes beyond those added (after `forget`, say) are ignored.
   */
  done(receiver: R, sender: S, bytes: number): boolean {
    const queue = this.#receivers.get(receiver);
    const mine = queue?.bySender.get(sender) ?? 0;
    if (mine <= bytes) {
      if (mine > 0) this.#drop(receiver, sender);
      return true;
    }
    queue!.total -= bytes;
    queue!.bySender.set(sender, mine - bytes);
    return mine - bytes <= this.share;
  }

  /** Bytes queued towards `receiver`, all senders together. */
  queued(receiver: R): number {
    return this.#receivers.get(receiver)?.total ?? 0;
  }

  /** The sender with the most bytes queued towards `receiver`, if any. */
  largest(receiver: R): S | undefined {
    let top: S | undefined;
    let most = 0;
    for (const [sender, bytes] of this.#receivers.get(receiver)?.bySender ?? []) {
      if (bytes > most) [top, most] = [sender, bytes];
    }
    return top;
  }

  /** Bytes queued by `sender` towards `receiver`. */
  queuedBy(receiver: R, sender: S): number {
    return this.#receivers.get(receiver)?.bySender.get(sender) ?? 0;
  }

  /** Drops every entry where `key` is the receiver or the sender (its connection closed). */
  forget(key: R | S): void {
    const queue = this.#receivers.get(key as R);
    for (const sender of [...(queue?.bySender.keys() ?? [])]) this.#drop(key as R, sender);
    for (const receiver of [...(this.#senders.get(key as S) ?? [])]) this.#drop(receiver, key as S);
    this.#receivers.delete(key as R);
    this.#senders.delete(key as S);
  }

  /**
   * Deletes a pair and its bytes from the receiver's total. The receiver's
   * and the sender's own entries stay until `forget`: a relayed call adds
   * and drops a pair per frame, and remaking them each time was a third of
   * what a relay allocated per call.
   */
  #drop(receiver: R, sender: S): void {
    const queue = this.#receivers.get(receiver)!;
    queue.total -= queue.bySender.get(sender)!;
    queue.bySender.delete(sender);
    this.#senders.get(sender)!.delete(receiver);
  }
}

/** Returns `value` if it is a finite number from `min` up; else throws a `RangeError`. */
function checkAtLeast(value: number, what: string, min: number): number {
  if (typeof value === "number" && value >= min && Number.isFinite(value)) return value;
  const bound = min === Number.MIN_VALUE ? "positive" : `at least ${min}`;
  const got = describeValue(value);
  throw new RangeError(
    `Cannot use relay limit: ${what} must be a finite number ${bound}, got ${got}`,
  );
}
