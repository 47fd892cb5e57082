import assert from "node:assert/strict";
import { AnswerStore } from "../lib/answer_store.ts";
import {
  DEFAULT_REPLAY_BUDGET,
  DEFAULT_REPLAY_CALLER_BUDGET,
  REPLAY_WINDOW_IDS,
  ReplayCache,
  TOKEN_FUTURE_SKEW,
} from "../lib/replay.ts";

const A = "00000000000000aa";
const B = "00000000000000bb";

Deno.test("ReplayCache admits a request id once and replays its answer", async () => {
  const cache = new ReplayCache(60_000);
  const first = cache.admit(A, 1, { now: 0 });
  assert.equal(first.fresh, true);
  const second = cache.admit(A, 1, { now: 10 });
  assert.equal(second.fresh, false);
  if (first.fresh) first.settle(new Uint8Array([7]), 10);
  if (!second.fresh) assert.deepEqual(await second.answer, new Uint8Array([7]));
  const third = cache.admit(A, 1, { now: 20 });
  if (!third.fresh) assert.deepEqual(await third.answer, new Uint8Array([7]));
});

Deno.test("ReplayCache tells callers apart and accepts ids out of order", () => {
  const cache = new ReplayCache(60_000);
  assert.equal(cache.admit(A, 5, { now: 0 }).fresh, true);
  assert.equal(cache.admit(A, 3, { now: 0 }).fresh, true);
  assert.equal(cache.admit(A, 4, { now: 0 }).fresh, true);
  assert.equal(cache.admit(A, 3, { now: 0 }).fresh, false);
  assert.equal(cache.admit(B, 3, { now: 0 }).fresh, true);
});

Deno.test("ReplayCache tells ids apart as its window grows from a few bits to the full window", () => {
  const cache = new ReplayCache(60_000);
  const seen = [1, 2, 63, 64, 65, 1000, 70_000, 70_001, 100_000];
  for (const id of seen) assert.equal(cache.admit(A, id, { now: 0 }).fresh, true, `first ${id}`);
  for (const id of [70_000, 70_001, 100_000]) {
    assert.equal(cache.admit(A, id, { now: 0 }).fresh, false, `again ${id}`);
  }
  assert.equal(cache.admit(A, 99_999, { now: 0 }).fresh, true, "inside the window, never seen");
  assert.equal(cache.admit(A, 1000, { now: 0 }).fresh, false, "below the window: refused");
});

Deno.test("ReplayCache refuses an id that fell below its window as already seen", async () => {
  const cache = new ReplayCache(60_000);
  assert.equal(cache.admit(A, REPLAY_WINDOW_IDS + 10, { now: 0 }).fresh, true);
  const old = cache.admit(A, 5, { now: 0 });
  assert.equal(old.fresh, false);
  if (!old.fresh) assert.equal(await old.answer, null);
});

Deno.test("ReplayCache refuses request ids below 1 with a RangeError", () => {
  const cache = new ReplayCache(60_000);
  for (const id of [0, -1, -65_536, 1.5, Number.NaN, 2 ** 53]) {
    assert.throws(() => cache.admit(A, id, { now: 0 }), RangeError, String(id));
  }
  assert.equal(cache.stats.callers, 0);
});

Deno.test("ReplayCache keeps a caller for the replay window plus the 60 s a token may come from the future", () => {
  // A token from a caller 45 s ahead is valid on this clock until 45 + 60 = 105 s after it arrives.
  const cache = new ReplayCache(60_000);
  assert.equal(cache.admit(A, 1, { now: 0 }).fresh, true);
  assert.equal(cache.admit(A, 1, { now: 62_000 }).fresh, false, "replayed 62 s later");
  assert.equal(cache.admit(A, 1, { now: 62_000 + 60_000 + TOKEN_FUTURE_SKEW }).fresh, false);
  const silentSince = 62_000 + 60_000 + TOKEN_FUTURE_SKEW;
  assert.equal(
    cache.admit(A, 1, { now: silentSince + 60_000 + TOKEN_FUTURE_SKEW + 1 }).fresh,
    true,
    "silent for longer than any token lives: forgotten",
  );
});

Deno.test("ReplayCache drops the oldest answers past its budget but keeps their ids", async () => {
  // Room for one 300-byte answer (kept on its own, plus the smallest columns), not for two.
  const cache = new ReplayCache(60_000, { answerBudget: 1200 });
  const one = cache.admit(A, 1, { now: 0 });
  if (one.fresh) one.settle(new Uint8Array(300), 0);
  const two = cache.admit(A, 2, { now: 1 });
  if (two.fresh) two.settle(new Uint8Array(300), 1);
  const again = cache.admit(A, 1, { now: 2 });
  assert.equal(again.fresh, false);
  if (!again.fresh) assert.equal(await again.answer, null);
  const again2 = cache.admit(A, 2, { now: 2 });
  if (!again2.fresh) assert.equal((await again2.answer)?.length, 300);
});

Deno.test("ReplayCache drops answers older than it keeps callers, and still refuses their ids", () => {
  const cache = new ReplayCache(1000);
  const one = cache.admit(A, 1, { now: 0 });
  if (one.fresh) one.settle(new Uint8Array(10), 0);
  cache.admit(B, 1, { now: 1000 + TOKEN_FUTURE_SKEW + 1 });
  assert.equal(cache.stats.answers, 1, "only B's pending request is left");
});

Deno.test("ReplayCache memory per caller stays fixed however many calls it serves", () => {
  const cache = new ReplayCache(60_000, { answerBudget: 64 * 1024 });
  for (let id = 1; id <= 200_000; id++) {
    const admission = cache.admit(A, id, { now: 0 });
    if (admission.fresh) admission.settle(new Uint8Array(100), 0);
  }
  assert.ok(cache.stats.answerBytes <= 64 * 1024, `${cache.stats.answerBytes} bytes of answers`);
  assert.ok(cache.size <= (64 * 1024) / 100, `remembered ${cache.size} answers`);
  assert.ok(cache.stats.callerBytes <= REPLAY_WINDOW_IDS / 8 + 1024, `${cache.stats.callerBytes}`);
});

Deno.test("ReplayCache visits each answer once when it drops answers, however many are pending", () => {
  const count = 50_000;
  const cache = new ReplayCache(60_000, { answerBudget: 1024 });
  const settles: Array<(record: Uint8Array | null, now?: number) => void> = [];
  for (let id = 1; id <= count; id++) {
    const admission = cache.admit(A, id, { now: 0 });
    if (admission.fresh) settles.push(admission.settle);
  }
  // Settled newest first: every settle is over budget while older answers are still pending.
  for (let i = settles.length - 1; i >= 0; i--) settles[i]!(new Uint8Array(8), 0);
  const { answersVisited, answerBytes, answers } = cache.stats;
  assert.ok(answersVisited <= count, `visited ${answersVisited} answers for ${count} settles`);
  assert.ok(answerBytes <= 1024, `${answerBytes} bytes kept`);
  assert.ok(answers < 10, `${answers} answers kept`);
});

Deno.test("ReplayCache keeps 30,000 invented caller instances within its memory budget", () => {
  const before = Deno.memoryUsage();
  const cache = new ReplayCache(60_000);
  for (let i = 0; i < 30_000; i++) {
    // A counter past the window: each invented caller would take a full 8 KiB window.
    const instance = i.toString(16).padStart(16, "0");
    const admission = cache.admit(instance, REPLAY_WINDOW_IDS + i, { now: i });
    if (admission.fresh) admission.settle(new Uint8Array(16), i);
  }
  const after = Deno.memoryUsage();
  const { callers, callerBytes, callersEvicted } = cache.stats;
  assert.ok(callerBytes <= DEFAULT_REPLAY_CALLER_BUDGET, `${callerBytes} bytes of ids`);
  const fullWindows = DEFAULT_REPLAY_CALLER_BUDGET / (REPLAY_WINDOW_IDS / 8);
  assert.ok(callers <= fullWindows, `${callers} callers`);
  assert.ok(callersEvicted > 0, "the oldest were evicted to make room");
  const grown = (after.heapUsed + after.external - before.heapUsed - before.external) / 2 ** 20;
  // Unbounded, these callers held 240 MiB of windows alone; the budget is 16 MiB, garbage aside.
  assert.ok(grown < 120, `the process grew by ${grown.toFixed(1)} MiB`);
});

Deno.test("ReplayCache refuses unknown callers' requests that could predate an early eviction", () => {
  // Room for one full caller and one small one (640 bytes counted per caller, plus its bits).
  const window = REPLAY_WINDOW_IDS / 8 + 640 + 648;
  const cache = new ReplayCache(60_000, { callerBudget: window });
  assert.equal(cache.admit(A, REPLAY_WINDOW_IDS, { now: 1000, sent: 1000 }).fresh, true);
  // B's first request pushes A out while A's token may still be valid.
  assert.equal(cache.admit(B, REPLAY_WINDOW_IDS, { now: 2000, sent: 2000 }).fresh, true);
  assert.equal(cache.stats.callersEvicted, 1);
  const replayed = cache.admit(A, REPLAY_WINDOW_IDS, { now: 3000, sent: 1000 });
  assert.equal(replayed.fresh, false, "a replay of the evicted caller's request does not run");
  assert.equal(cache.admit(A, 1, { now: 3000 }).fresh, false, "no `t`: cannot tell, refused");
  const later = 1000 + TOKEN_FUTURE_SKEW + 1000;
  assert.equal(cache.admit(A, 9, { now: 3000, sent: later }).fresh, true, "made after: runs");
});

Deno.test("ReplayCache measures a caller's clock offset as the smallest receipt minus sent time", () => {
  const cache = new ReplayCache(60_000);
  const ahead = 45_000; // the caller's clock is 45 s ahead of ours
  const first = cache.admit(A, 1, { now: 10_000, sent: 10_000 + ahead - 3 });
  assert.ok(first.fresh);
  assert.equal(first.offset, -ahead + 3);
  const held = cache.admit(A, 2, { now: 30_000, sent: 15_000 + ahead });
  assert.ok(held.fresh);
  assert.equal(held.offset, -ahead + 3, "a request held 15 s on the way does not move it");
  const none = cache.admit(B, 1, { now: 0 });
  assert.ok(none.fresh);
  assert.equal(none.offset, null);
});

Deno.test("ReplayCache follows a caller clock stepped back within two offset windows", () => {
  const cache = new ReplayCache(60_000);
  cache.admit(A, 1, { now: 0, sent: 0 });
  let offset: number | null = null;
  for (let i = 1; i <= 7; i++) {
    const at = i * 10_000;
    const admission = cache.admit(A, 1 + i, { now: at, sent: at - 5000 }); // stepped back 5 s
    if (admission.fresh) offset = admission.offset;
  }
  assert.equal(offset, 5000);
});

Deno.test("ReplayCache ignores a `t` too far ahead or behind, so no request poisons a caller's clock offset", () => {
  const window = 60_000;
  const cache = new ReplayCache(window);
  const now = 1_000_000_000_000;
  const honest = cache.admit(A, 1, { now, sent: now - 20 });
  assert.ok(honest.fresh);
  assert.equal(honest.offset, 20);
  // Another key holder forges requests of caller A with absurd timestamps.
  for (
    const [id, sent] of [
      [2, now + 1e12],
      [3, now + TOKEN_FUTURE_SKEW + 1],
      [4, now - window - TOKEN_FUTURE_SKEW - 1],
      [5, now - 1e12],
    ] as const
  ) {
    const forged = cache.admit(A, id, { now, sent });
    assert.ok(forged.fresh, `request ${id} runs once, as a request without \`t\``);
    assert.equal(forged.offset, null, `request ${id} (t = now ${sent - now} ms) has no deadline`);
  }
  const after = cache.admit(A, 6, { now: now + 10, sent: now - 5 });
  assert.ok(after.fresh);
  assert.equal(after.offset, 15, "the caller's offset comes from plausible samples only");
  const edge = cache.admit(A, 7, { now, sent: now + TOKEN_FUTURE_SKEW });
  assert.ok(edge.fresh);
  assert.equal(edge.offset, -TOKEN_FUTURE_SKEW, "60 s ahead is still a sample");
});

Deno.test("ReplayCache holds 70,000 answers of 140 bytes within its default budget", () => {
  const cache = new ReplayCache(60_000);
  const record = new Uint8Array(140);
  for (let id = 1; id <= 200_000; id++) {
    const admission = cache.admit(A, id, { now: 0 });
    if (admission.fresh) admission.settle(record, 0);
  }
  const { answers, answerBytes } = cache.stats;
  assert.ok(answerBytes <= DEFAULT_REPLAY_BUDGET, `${answerBytes} bytes counted`);
  // 140 bytes each, plus 48 for its slot and the columns' unused half at worst.
  assert.ok(answers >= 70_000, `${answers} answers kept`);
});

Deno.test("ReplayCache's counted bytes cover what its answers really take, measured after GC", async () => {
  const url = new URL("../lib/replay.ts", import.meta.url).href;
  const script = `
    const { ReplayCache } = await import(${JSON.stringify(url)});
    const measure = () => { gc(); gc(); const m = Deno.memoryUsage(); return m.heapUsed + m.external; };
    const before = measure();
    const cache = new ReplayCache(60_000, { answerBudget: 64 * 1024 * 1024 });
    for (let id = 1; id <= 100_000; id++) {
      const admission = cache.admit("00000000000000aa", id, { now: 0 });
      admission.settle(new Uint8Array(140), 0);
    }
    console.log(JSON.stringify({ real: measure() - before, counted: cache.stats.answerBytes }));
  `;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--v8-flags=--expose-gc", script],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(output.success, new TextDecoder().decode(output.stderr));
  const { real, counted } = JSON.parse(new TextDecoder().decode(output.stdout));
  // Before, each answer was an array and four objects: about 550 bytes against 300 counted.
  assert.ok(real <= counted * 1.1 + 512 * 1024, `${real} bytes taken, ${counted} counted`);
});

Deno.test("ReplayCache drops an answer once its caller stops waiting, and still refuses its id", async () => {
  const cache = new ReplayCache(60_000);
  const first = cache.admit(A, 1, { now: 0, sent: 0 });
  assert.ok(first.fresh);
  first.settle(new Uint8Array([1]), 10, 5000); // the caller waits until 5 s
  const before = cache.admit(A, 1, { now: 5000 });
  assert.ok(!before.fresh);
  assert.deepEqual(await before.answer, new Uint8Array([1]));
  const after = cache.admit(A, 1, { now: 6001 }); // the next sweep dropped it
  assert.ok(!after.fresh, "never run again");
  assert.equal(await after.answer, null);
  assert.equal(cache.stats.answerBytes, 0);
});

Deno.test("ReplayCache forgets every caller and answer on a sweep after the retention", () => {
  const cache = new ReplayCache(1000);
  for (let id = 1; id <= 100; id++) {
    const admission = cache.admit(A, id, { now: 0 });
    if (admission.fresh) admission.settle(new Uint8Array(10), 0);
  }
  assert.equal(cache.idle, false);
  cache.sweep(1000 + TOKEN_FUTURE_SKEW);
  assert.equal(cache.idle, false, "not before the retention is over");
  cache.sweep(1000 + TOKEN_FUTURE_SKEW + 1000); // sweeps run at most once a second
  assert.equal(cache.idle, true);
  assert.equal(cache.stats.answerBytes, 0);
  assert.equal(cache.stats.callerBytes, 0);
});

Deno.test("AnswerStore keeps exactly its newest answers, each found by caller and id", () => {
  // A seeded mix of sizes (some kept on their own) under a small budget, checked against a model:
  // after every step the store holds the answers put last, oldest out first.
  let seed = 7;
  const random = () => (seed = (Math.imul(seed, 1_103_515_245) + 12_345) >>> 0) / 2 ** 32;
  const store = new AnswerStore(256 * 1024);
  const put: { serial: number; id: number; record: Uint8Array }[] = [];
  let maxSize = 0;
  for (let step = 0; step < 20_000; step++) {
    const serial = 1 + Math.floor(random() * 5);
    const id = 2 ** 40 + step; // ids past 32 bits hash and compare whole
    const length = random() < 0.02
      ? 20_000 + Math.floor(random() * 20_000)
      : Math.floor(random() * 300);
    const record = new Uint8Array(length).fill(step & 255);
    if (store.put(serial, id, record, step + 400)) put.push({ serial, id, record });
    if (step % 1000 === 999) store.trim(step); // ages out, and the columns shrink
    assert.ok(store.bytes <= 256 * 1024, `${store.bytes} bytes at step ${step}`);
    maxSize = Math.max(maxSize, store.size);
  }
  const kept = put.length - store.size;
  for (const [i, { serial, id, record }] of put.entries()) {
    const found = store.get(serial, id);
    if (i < kept) assert.equal(found, undefined, `answer ${i} was dropped`);
    else assert.deepEqual(found, record, `answer ${i}`);
    assert.equal(store.get(serial + 10, id), undefined);
  }
  assert.ok(maxSize > 500, `at most ${maxSize} answers at once`);
  store.trim(Infinity);
  assert.equal(store.bytes, 0, "empty, it holds no memory");
  assert.equal(store.visited, put.length, "each answer visited once, when dropped");
});

Deno.test("AnswerStore refuses an answer larger than its budget and keeps the others", () => {
  const store = new AnswerStore(64 * 1024);
  assert.ok(store.put(1, 1, new Uint8Array(100), 0));
  assert.equal(store.put(1, 2, new Uint8Array(64 * 1024), 0), false);
  assert.equal(store.get(1, 2), undefined);
  assert.equal(store.get(1, 1)?.length, 100, "nothing was dropped for it");
});

/**
 * Runs `body` while every resizable `ArrayBuffer` made is tracked: how many
 * were made, and the most bytes all of them held at once.
 */
function trackPages<T>(body: (pages: { made: number; live: () => number; peak: number }) => T): T {
  const Original = globalThis.ArrayBuffer;
  const resize = Original.prototype.resize;
  const buffers = new Set<ArrayBuffer>();
  const pages = {
    made: 0,
    peak: 0,
    live: () => [...buffers].reduce((sum, buffer) => sum + buffer.byteLength, 0),
  };
  const note = () => pages.peak = Math.max(pages.peak, pages.live());
  class Tracked extends Original {
    constructor(length: number, options?: { maxByteLength?: number }) {
      super(length, options);
      if (options?.maxByteLength !== undefined) {
        pages.made++;
        buffers.add(this);
        note();
      }
    }
  }
  Original.prototype.resize = function (this: ArrayBuffer, length: number) {
    resize.call(this, length);
    note();
  };
  globalThis.ArrayBuffer = Tracked as ArrayBufferConstructor;
  try {
    return body(pages);
  } finally {
    globalThis.ArrayBuffer = Original;
    Original.prototype.resize = resize;
  }
}

Deno.test("AnswerStore puts an answer a few bytes longer than the one it drops on that one's pages", () => {
  trackPages((pages) => {
    const store = new AnswerStore(2 * 1024 * 1024 + 64 * 1024);
    for (let i = 0; i < 10; i++) {
      const record = new Uint8Array(1_000_000 + i).fill(i);
      assert.ok(store.put(1, i, record, 1_000));
      assert.deepEqual(store.get(1, i), record);
    }
    assert.equal(pages.made, 2, "pages for the first two answers only");
    assert.ok(pages.live() <= store.bytes);
  });
});

Deno.test("AnswerStore puts a large answer on the pages of the one it drops, and every answer keeps its own bytes", () => {
  trackPages((pages) => {
    // Room for two answers of 1 MiB: each put drops the oldest. Its pages serve the new answer
    // when they can hold it: shorter, or longer again up to what they were made for.
    const budget = 2 * 1024 * 1024 + 64 * 1024;
    const store = new AnswerStore(budget);
    const steps = [
      { size: 1 << 20, made: 1 }, // a
      { size: 1 << 20, made: 1 }, // b
      { size: 300_000, made: 0 }, // c, on a's pages
      { size: 1 << 20, made: 0 }, // d, on b's
      { size: 1 << 20, made: 0 }, // e, on c's (a's), grown back to 1 MiB
      { size: (1 << 20) + 8192, made: 1 }, // f: d's pages are too few, freed before f's are taken
    ];
    const records = steps.map(({ size }, i) =>
      new Uint8Array(size).map((_, j) => (i * 31 + j) & 255)
    );
    for (const [i, record] of records.entries()) {
      const made = pages.made;
      assert.ok(store.put(1, i, record, 1_000), `answer ${i} is kept`);
      assert.equal(pages.made - made, steps[i]!.made, `buffers made for answer ${i}`);
      assert.ok(pages.live() <= store.bytes, `no pages beyond the ${store.bytes} counted`);
      assert.ok(pages.peak <= budget, `at most the budget at once: ${pages.peak}`);
      for (const [j, older] of records.slice(0, i + 1).entries()) {
        const found = store.get(1, j);
        if (j >= i - 1) assert.ok(found, `answer ${j} is found after answer ${i}`);
        // Compared by hand: a failing deepEqual of megabytes takes minutes to describe.
        if (found) {
          assert.equal(found.length, older.length, `answer ${j}'s length after answer ${i}`);
          assert.equal(found.findIndex((byte, k) => byte !== older[k]), -1, `answer ${j}'s bytes`);
        }
      }
    }
    store.trim(Infinity);
    assert.equal(store.bytes, 0);
    assert.equal(pages.live(), 0, "every page given back");
  });
});
