/**
 * The relay's sans-IO limits: token buckets, per-address buckets, quotas and
 * per-sender shares. Pure: no permissions, time passed in.
 */

import assert from "node:assert/strict";
import { DEFAULT_MAX_FRAME_SIZE } from "../lib/frame.ts";
import {
  AddressQuota,
  DEFAULT_SENDER_FRAME_BURST,
  DEFAULT_SENDER_FRAME_RATE,
  DEFAULT_SENDER_SHARE,
  DEFAULT_VERIFY_BURST,
  DEFAULT_VERIFY_RATE,
  KeyedBuckets,
  SenderShares,
  TokenBucket,
} from "../lib/relay_limits.ts";

// TokenBucket

Deno.test("TokenBucket starts full: burst tokens pass at once", () => {
  const bucket = new TokenBucket(1, 5, 0);
  for (let i = 0; i < 5; i++) assert.equal(bucket.take(1, 0), 0);
  assert.ok(bucket.take(1, 0) > 0);
});

Deno.test("TokenBucket.take() returns the ms until the tokens are available and takes none", () => {
  const bucket = new TokenBucket(10, 4, 0);
  assert.equal(bucket.take(4, 0), 0);
  assert.equal(bucket.take(2, 0), 200);
  assert.equal(bucket.take(2, 0), 200, "the refused take consumed nothing");
  assert.equal(bucket.available(0), 0);
});

Deno.test("TokenBucket.take() succeeds once the returned wait has passed", () => {
  const bucket = new TokenBucket(3, 1, 0); // a token every 333.3 ms: the wait is rounded up
  assert.equal(bucket.take(1, 0), 0);
  let now = 0;
  for (let i = 0; i < 100; i++) {
    now += bucket.take(1, now);
    assert.equal(bucket.take(1, now), 0, `take ${i} at ${now} ms`);
  }
});

Deno.test("TokenBucket refills at its rate, never above burst", () => {
  const bucket = new TokenBucket(100, 10, 0);
  assert.equal(bucket.take(10, 0), 0);
  assert.equal(bucket.available(50), 5);
  assert.equal(bucket.available(60_000), 10);
});

Deno.test("TokenBucket.available() counts fractions of a token", () => {
  const bucket = new TokenBucket(1, 1, 0);
  bucket.take(1, 0);
  assert.equal(bucket.available(250), 0.25);
});

Deno.test("TokenBucket ignores a clock that steps back", () => {
  const bucket = new TokenBucket(1000, 10, 1000);
  assert.equal(bucket.take(10, 1000), 0);
  assert.equal(bucket.available(0), 0, "no tokens from going back");
  assert.equal(bucket.available(1005), 5, "refills from the latest time seen");
});

Deno.test("TokenBucket.take() throws a RangeError for more tokens than burst, or fewer than 0", () => {
  const bucket = new TokenBucket(10, 2, 0);
  assert.throws(() => bucket.take(3, 0), RangeError);
  assert.throws(() => bucket.take(-1, 0), RangeError);
  assert.throws(() => bucket.take(NaN, 0), RangeError);
});

Deno.test("new TokenBucket() throws a RangeError for a rate of 0 or a burst below 1", () => {
  assert.throws(() => new TokenBucket(0, 1, 0), RangeError);
  assert.throws(() => new TokenBucket(Infinity, 1, 0), RangeError);
  assert.throws(() => new TokenBucket(1, 0.5, 0), RangeError);
  assert.throws(() => new TokenBucket(1, 1, NaN), RangeError);
});

Deno.test("default sender frame rate never slows a sender of 5,000 frames/s", () => {
  const bucket = new TokenBucket(DEFAULT_SENDER_FRAME_RATE, DEFAULT_SENDER_FRAME_BURST, 0);
  for (let now = 0; now < 60_000; now += 1) assert.equal(bucket.take(5, now), 0);
});

Deno.test("default sender frame rate slows a flood to its rate after the burst", () => {
  const bucket = new TokenBucket(DEFAULT_SENDER_FRAME_RATE, DEFAULT_SENDER_FRAME_BURST, 0);
  let sent = 0;
  while (bucket.take(1, 0) === 0) sent++;
  assert.equal(sent, DEFAULT_SENDER_FRAME_BURST);
  assert.equal(bucket.available(1000), DEFAULT_SENDER_FRAME_RATE);
});

// KeyedBuckets

Deno.test("KeyedBuckets keeps one bucket per key", () => {
  const buckets = new KeyedBuckets<string>(1, 1, 10);
  assert.equal(buckets.take("a", 1, 0), 0);
  assert.equal(buckets.take("a", 1, 0), 1000);
  assert.equal(buckets.take("b", 1, 0), 0);
  assert.equal(buckets.size, 2);
});

Deno.test("KeyedBuckets forgets the least recently used key beyond maxKeys", () => {
  const buckets = new KeyedBuckets<string>(1, 1, 2);
  buckets.take("a", 1, 0);
  buckets.take("b", 1, 0);
  buckets.take("c", 1, 0);
  assert.equal(buckets.size, 2);
  assert.equal(buckets.take("a", 1, 0), 0, "a was forgotten: a full bucket again");
});

Deno.test("KeyedBuckets keeps a key it has just used over an older one", () => {
  const buckets = new KeyedBuckets<string>(1, 1, 2);
  buckets.take("a", 1, 0);
  buckets.take("b", 1, 0);
  buckets.take("a", 1, 0); // a is now the most recently used
  buckets.take("c", 1, 0); // forgets b
  assert.equal(buckets.take("a", 1, 0), 1000, "a was kept, still empty");
  assert.equal(buckets.size, 2);
});

Deno.test("default verify rate admits 1,000 proofs from one address at once, then 200/s", () => {
  const verify = new KeyedBuckets<string>(DEFAULT_VERIFY_RATE, DEFAULT_VERIFY_BURST);
  for (let i = 0; i < 1000; i++) assert.equal(verify.take("192.0.2.1", 1, 0), 0);
  assert.equal(verify.take("192.0.2.1", 1, 0), 5);
  assert.equal(verify.take("192.0.2.2", 1, 0), 0, "another address is not slowed");
});

Deno.test("new KeyedBuckets() throws a RangeError for maxKeys below 1 or a bad rate", () => {
  assert.throws(() => new KeyedBuckets(1, 1, 0), RangeError);
  assert.throws(() => new KeyedBuckets(-1, 1, 10), RangeError);
});

// AddressQuota

Deno.test("AddressQuota admits up to max holders per key", () => {
  const quota = new AddressQuota<string>(3);
  for (let i = 0; i < 3; i++) assert.equal(quota.tryAcquire("192.0.2.1"), true);
  assert.equal(quota.tryAcquire("192.0.2.1"), false);
  assert.equal(quota.count("192.0.2.1"), 3);
});

Deno.test("AddressQuota counts each key apart", () => {
  const quota = new AddressQuota<string>(1);
  assert.equal(quota.tryAcquire("192.0.2.1"), true);
  assert.equal(quota.tryAcquire("192.0.2.2"), true);
  assert.equal(quota.size, 2);
});

Deno.test("AddressQuota.release() frees a slot, and deletes a key at zero", () => {
  const quota = new AddressQuota<string>(2);
  quota.tryAcquire("k");
  quota.tryAcquire("k");
  quota.release("k");
  assert.equal(quota.tryAcquire("k"), true);
  quota.release("k");
  quota.release("k");
  assert.equal(quota.size, 0);
  assert.equal(quota.count("k"), 0);
});

Deno.test("AddressQuota.release() of a key without holders changes nothing", () => {
  const quota = new AddressQuota<string>(1);
  quota.release("k");
  assert.equal(quota.size, 0);
  assert.equal(quota.tryAcquire("k"), true);
  assert.equal(quota.tryAcquire("k"), false);
});

Deno.test("new AddressQuota() throws a RangeError for a max below 1", () => {
  assert.throws(() => new AddressQuota(0), RangeError);
});

// SenderShares

const bob = { name: "bob" };
const carol = { name: "carol" };
const mallory = { name: "mallory" };

Deno.test("SenderShares.add() returns false once a sender is over its share, and still records", () => {
  const shares = new SenderShares<object>(1000);
  assert.equal(shares.add(bob, mallory, 1000), true, "exactly the share is within it");
  assert.equal(shares.add(bob, mallory, 1), false);
  assert.equal(shares.queuedBy(bob, mallory), 1001);
});

Deno.test("SenderShares accounts each sender apart: a flooder leaves others within their share", () => {
  const shares = new SenderShares<object>(1000);
  assert.equal(shares.add(bob, mallory, 5000), false);
  assert.equal(shares.add(bob, carol, 900), true);
  assert.equal(shares.queued(bob), 5900);
});

Deno.test("SenderShares accounts each receiver apart for one sender", () => {
  const shares = new SenderShares<object>(1000);
  assert.equal(shares.add(bob, mallory, 900), true);
  assert.equal(shares.add(carol, mallory, 900), true);
  assert.equal(shares.queuedBy(carol, mallory), 900);
});

Deno.test("SenderShares.done() returns true once the sender is back within its share", () => {
  const shares = new SenderShares<object>(1000);
  shares.add(bob, mallory, 800);
  shares.add(bob, mallory, 800);
  shares.add(bob, mallory, 800);
  assert.equal(shares.done(bob, mallory, 800), false, "1600 still queued");
  assert.equal(shares.done(bob, mallory, 800), true, "800 queued");
});

Deno.test("SenderShares deletes a pair once its bytes are all written", () => {
  const shares = new SenderShares<object>(1000);
  shares.add(bob, mallory, 10);
  shares.add(carol, mallory, 10);
  shares.done(bob, mallory, 10);
  assert.equal(shares.pairs, 1);
  shares.done(carol, mallory, 10);
  assert.equal(shares.pairs, 0);
  assert.equal(shares.queued(carol), 0);
});

Deno.test("SenderShares.add() of zero bytes records no pair", () => {
  const shares = new SenderShares<object>(1000);
  assert.equal(shares.add(bob, mallory, 0), true);
  assert.equal(shares.pairs, 0);
});

Deno.test("SenderShares.forget() drops a client's entries as receiver and as sender", () => {
  const shares = new SenderShares<object>(1000);
  shares.add(bob, mallory, 10); // bob receives
  shares.add(carol, bob, 20); // bob sends
  shares.add(carol, mallory, 30);
  shares.forget(bob);
  assert.equal(shares.queued(bob), 0);
  assert.equal(shares.queuedBy(carol, bob), 0);
  assert.equal(shares.queued(carol), 30, "carol keeps mallory's bytes only");
  assert.equal(shares.pairs, 1);
});

Deno.test("SenderShares.done() ignores writes of a forgotten client", () => {
  const shares = new SenderShares<object>(1000);
  shares.add(carol, bob, 20);
  shares.add(carol, mallory, 30);
  shares.forget(bob);
  assert.equal(shares.done(carol, bob, 20), true);
  assert.equal(shares.queued(carol), 30);
});

Deno.test("SenderShares.done() never counts below zero", () => {
  const shares = new SenderShares<object>(1000);
  shares.add(bob, mallory, 10);
  shares.add(bob, carol, 10);
  assert.equal(shares.done(bob, mallory, 50), true);
  assert.equal(shares.queued(bob), 10);
});

Deno.test("SenderShares.add() throws a RangeError for negative bytes", () => {
  const shares = new SenderShares<object>(1000);
  assert.throws(() => shares.add(bob, mallory, -1), RangeError);
});

Deno.test("default sender share lets one largest frame and 1 MiB queue without slowing", () => {
  const shares = new SenderShares<object>();
  assert.equal(shares.share, DEFAULT_SENDER_SHARE);
  assert.equal(shares.add(bob, mallory, DEFAULT_MAX_FRAME_SIZE), true);
  for (let i = 0; i < 1024; i++) assert.equal(shares.add(bob, mallory, 1024), true);
  assert.equal(shares.add(bob, mallory, 1), false);
});
