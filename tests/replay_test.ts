import assert from "node:assert/strict";
import { ReplayCache } from "../lib/replay.ts";

Deno.test("ReplayCache admits a request id once and replays its answer", async () => {
  const cache = new ReplayCache(60_000);
  const first = cache.admit("a:1", 0);
  assert.equal(first.fresh, true);
  const second = cache.admit("a:1", 10);
  assert.equal(second.fresh, false);
  if (first.fresh) first.settle(new Uint8Array([7]));
  if (!second.fresh) assert.deepEqual(await second.answer, new Uint8Array([7]));
});

Deno.test("ReplayCache forgets ids after the window", () => {
  const cache = new ReplayCache(1000);
  cache.admit("a:1", 0);
  assert.equal(cache.admit("a:1", 999).fresh, false);
  assert.equal(cache.admit("b:1", 1000).fresh, true);
  assert.equal(cache.admit("a:1", 1001).fresh, true);
});

Deno.test("ReplayCache drops the oldest answers past its budget but keeps their ids", async () => {
  const cache = new ReplayCache(60_000, 100);
  const one = cache.admit("a:1", 0);
  if (one.fresh) one.settle(new Uint8Array(80));
  const two = cache.admit("a:2", 1);
  if (two.fresh) two.settle(new Uint8Array(80));
  const again = cache.admit("a:1", 2);
  assert.equal(again.fresh, false);
  if (!again.fresh) assert.equal(await again.answer, null);
  const again2 = cache.admit("a:2", 2);
  if (!again2.fresh) assert.equal((await again2.answer)?.length, 80);
});
