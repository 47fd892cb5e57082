import assert from "node:assert/strict";
import { REPLAY_WINDOW_IDS, ReplayCache } from "../lib/replay.ts";

const A = "00000000000000aa";

Deno.test("ReplayCache admits a request id once and replays its answer", async () => {
  const cache = new ReplayCache(60_000);
  const first = cache.admit(A, 1, 0);
  assert.equal(first.fresh, true);
  const second = cache.admit(A, 1, 10);
  assert.equal(second.fresh, false);
  if (first.fresh) first.settle(new Uint8Array([7]));
  if (!second.fresh) assert.deepEqual(await second.answer, new Uint8Array([7]));
  const third = cache.admit(A, 1, 20);
  if (!third.fresh) assert.deepEqual(await third.answer, new Uint8Array([7]));
});

Deno.test("ReplayCache tells callers apart and accepts ids out of order", () => {
  const cache = new ReplayCache(60_000);
  assert.equal(cache.admit(A, 5, 0).fresh, true);
  assert.equal(cache.admit(A, 3, 0).fresh, true);
  assert.equal(cache.admit(A, 4, 0).fresh, true);
  assert.equal(cache.admit(A, 3, 0).fresh, false);
  assert.equal(cache.admit("00000000000000bb", 3, 0).fresh, true);
});

Deno.test("ReplayCache refuses an id that fell below its window as already seen", async () => {
  const cache = new ReplayCache(60_000);
  assert.equal(cache.admit(A, REPLAY_WINDOW_IDS + 10, 0).fresh, true);
  const old = cache.admit(A, 5, 0);
  assert.equal(old.fresh, false);
  if (!old.fresh) assert.equal(await old.answer, null);
});

Deno.test("ReplayCache forgets a caller silent for the window", () => {
  const cache = new ReplayCache(1000);
  cache.admit(A, 1, 0);
  assert.equal(cache.admit(A, 1, 999).fresh, false);
  assert.equal(cache.admit(A, 1, 1900).fresh, false, "seen at 999, so not silent yet");
  assert.equal(cache.admit(A, 1, 4000).fresh, true, "silent since 1900: forgotten");
});

Deno.test("ReplayCache drops the oldest answers past its budget but keeps their ids", async () => {
  const cache = new ReplayCache(60_000, 700);
  const one = cache.admit(A, 1, 0);
  if (one.fresh) one.settle(new Uint8Array(300));
  const two = cache.admit(A, 2, 1);
  if (two.fresh) two.settle(new Uint8Array(300));
  const again = cache.admit(A, 1, 2);
  assert.equal(again.fresh, false);
  if (!again.fresh) assert.equal(await again.answer, null);
  const again2 = cache.admit(A, 2, 2);
  if (!again2.fresh) assert.equal((await again2.answer)?.length, 300);
});

Deno.test("ReplayCache memory per caller stays fixed however many calls it serves", () => {
  const cache = new ReplayCache(60_000, 64 * 1024);
  for (let id = 1; id <= 200_000; id++) {
    const admission = cache.admit(A, id, 0);
    if (admission.fresh) admission.settle(new Uint8Array(100));
  }
  assert.ok(cache.size < 300, `remembered ${cache.size} answers`);
});
