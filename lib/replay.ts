/**
 * At most once: a request that arrives twice (a retry through another
 * path, or a replayed token) runs once, and the repeat gets the first
 * answer (docs/PROTOCOL.md, "At most once").
 *
 * Request ids are a caller instance plus a counter that only grows, so the
 * ids seen from one instance are kept as a sliding window of bits
 * (`lib/id_window.ts`). A caller's state is kept until it has been
 * silent for the token window plus the 60 s a token may come from the future,
 * so no accepted token outlives the state that rejects it again, whatever
 * the clocks. All callers' state fits a budget, oldest out first; after such
 * an early eviction, requests of unknown callers made before the evicted
 * caller's tokens could have expired are refused.
 *
 * Per caller, the cache also measures how far the local clock is ahead of
 * the caller's (the smallest `receipt − sent` over the last 30 to 60 s), so
 * a caller's deadline can be judged on the local clock. A `sent` no token
 * could carry (over 60 s ahead, or over the retention behind) is ignored,
 * so one forged request cannot poison a caller's offset.
 *
 * Answers are kept for repeats within a memory budget, until their caller
 * stops waiting and at most for the same retention, oldest dropped first,
 * each visited once when dropped; a repeat whose answer was dropped is told
 * so instead of being run again. Settled answers live in an
 * {@linkcode AnswerStore} (bytes in shared chunks, keys in typed arrays: no
 * object per answer), whose budget counts what it allocates; only answers
 * still pending (bounded by the responder's in-flight caps) are objects.
 *
 * @module
 */

import { AnswerStore } from "./answer_store.ts";
import { IdWindow, REPLAY_WINDOW_IDS } from "./id_window.ts";

export { REPLAY_WINDOW_IDS };

/**
 * Default memory budget for remembered answers, bookkeeping included: 16 MiB
 * of what is really allocated (about 75,000 answers of a 100-byte value;
 * the 32 MiB counted before held about 110,000 but took ~120 MiB).
 *
 * @example
 * ```ts
 * import { DEFAULT_REPLAY_BUDGET } from "./replay.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(DEFAULT_REPLAY_BUDGET, 16 * 1024 * 1024);
 * ```
 */
export const DEFAULT_REPLAY_BUDGET: number = 16 * 1024 * 1024;

/**
 * Default memory budget for the ids of all callers, bookkeeping included:
 * 16 MiB (about 2000 callers with full windows, far more with small ones).
 *
 * @example
 * ```ts
 * import { DEFAULT_REPLAY_CALLER_BUDGET } from "./replay.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(DEFAULT_REPLAY_CALLER_BUDGET, 16 * 1024 * 1024);
 * ```
 */
export const DEFAULT_REPLAY_CALLER_BUDGET: number = 16 * 1024 * 1024;

/**
 * How far in the future a token's timestamp may be (Fernet's check), ms:
 * a token stays acceptable for its TTL plus this on the receiver's clock.
 *
 * @example
 * ```ts
 * import { TOKEN_FUTURE_SKEW } from "./replay.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(TOKEN_FUTURE_SKEW, 60_000);
 * ```
 */
export const TOKEN_FUTURE_SKEW = 60_000;

/** Length of each of the two windows the clock offset is the minimum over, ms. */
const OFFSET_WINDOW = 30_000;
/** Bytes counted per pending answer (its object, key and map entry). */
const PENDING_BYTES = 160;
/**
 * Bytes counted per caller on top of its bits: its key, objects, map slot and
 * the bits' buffer header (measured: 473 bytes of heap, plus the buffer's
 * native bookkeeping).
 */
const CALLER_OVERHEAD = 640;

interface Caller {
  /** Names this caller's answers in the store; never reused (a forgotten caller's are unreachable). */
  serial: number;
  ids: IdWindow;
  lastSeen: number;
  /** When it was last moved to the end of the map (the map is ordered by it). */
  touched: number;
  /** Requests sent (`t`) before this are refused: set when created while an eviction matters. */
  minSent: number;
  /** Smallest `receipt − sent` in the current and previous offset windows. */
  offsetNow: number;
  offsetBefore: number;
  offsetSince: number;
}

/** An answer not settled yet. */
interface Pending {
  settled: boolean;
  /** Repeats waiting for the first run's answer (created only when one arrives). */
  waiters: Array<(record: Uint8Array | null) => void> | null;
}

/**
 * What {@linkcode ReplayCache.admit} decided. A fresh request comes with a
 * `settle` to call with its encoded answer (at `now`, and `until` the
 * caller's deadline on the local clock, after which no repeat can reach a
 * caller still waiting, so the answer is dropped then; ms since the epoch),
 * and the caller's clock offset (local minus caller, ms; null before any
 * measurement, and for a request without a plausible `sent`: it has no
 * deadline).
 *
 * @example
 * ```ts
 * import { type Admission, ReplayCache } from "./replay.ts";
 * import assert from "node:assert/strict";
 *
 * const admission: Admission = new ReplayCache(60_000).admit("00000000000000aa", 1, {
 *   now: 5000,
 *   sent: 45_000, // the caller's clock is 40 s ahead
 * });
 * assert.ok(admission.fresh);
 * assert.equal(admission.offset, -40_000);
 * ```
 */
export type Admission =
  | {
    fresh: true;
    settle: (record: Uint8Array | null, now?: number, until?: number) => void;
    offset: number | null;
  }
  | { fresh: false; answer: Promise<Uint8Array | null> };

/**
 * Options of {@linkcode ReplayCache}. Sizes in bytes.
 *
 * @example
 * ```ts
 * import { ReplayCache, type ReplayCacheOptions } from "./replay.ts";
 * import assert from "node:assert/strict";
 *
 * const options: ReplayCacheOptions = { answerBudget: 1 << 20, callerBudget: 1 << 20 };
 * assert.equal(new ReplayCache(60_000, options).size, 0);
 * ```
 */
export interface ReplayCacheOptions {
  /** Memory for remembered answers. @default DEFAULT_REPLAY_BUDGET (16 MiB) */
  answerBudget?: number;
  /** Memory for the ids of all callers. @default DEFAULT_REPLAY_CALLER_BUDGET (16 MiB) */
  callerBudget?: number;
}

/**
 * When a request is admitted: `now` on the local clock, and `sent`, the
 * caller's clock when it made the request (its sealed `t`), if known. Ms
 * since the epoch.
 *
 * @example
 * ```ts
 * import { type AdmitOptions, ReplayCache } from "./replay.ts";
 * import assert from "node:assert/strict";
 *
 * const when: AdmitOptions = { now: 1000, sent: 990 };
 * assert.equal(new ReplayCache(60_000).admit("00000000000000aa", 1, when).fresh, true);
 * ```
 */
export interface AdmitOptions {
  /** Local time. @default Date.now() */
  now?: number;
  /**
   * The caller's clock when it made the request, if sealed. Ignored (as if
   * absent) when more than 60 s ahead of `now` or more than the replay
   * window + 60 s behind it.
   */
  sent?: number | undefined;
}

/**
 * What the cache holds now, and how much eviction work it has done.
 *
 * @example
 * ```ts
 * import { ReplayCache, type ReplayStats } from "./replay.ts";
 * import assert from "node:assert/strict";
 *
 * const stats: ReplayStats = new ReplayCache(60_000).stats;
 * assert.equal(stats.callers, 0);
 * ```
 */
export interface ReplayStats {
  /** Caller instances tracked. */
  callers: number;
  /** Bytes counted for their ids. */
  callerBytes: number;
  /** Answers remembered or pending. */
  answers: number;
  /** Bytes counted for them. */
  answerBytes: number;
  /** Answers visited by eviction so far (each at most once). */
  answersVisited: number;
  /** Callers forgotten early to stay within the caller budget. */
  callersEvicted: number;
}

const FORGOTTEN: Admission = { fresh: false, answer: Promise.resolve(null) };

/**
 * Seen request ids and their answers, bounded in time and memory.
 *
 * @example A repeat gets the first answer; a request never runs twice
 * ```ts
 * import { ReplayCache } from "./replay.ts";
 * import assert from "node:assert/strict";
 *
 * const cache = new ReplayCache(60_000);
 * const first = cache.admit("00000000000000aa", 7, { now: 0 });
 * assert.ok(first.fresh);
 * first.settle(new Uint8Array([1]), 0);
 * // 100 s later (a token from a caller 45 s ahead is still valid): still a repeat.
 * const again = cache.admit("00000000000000aa", 7, { now: 100_000 });
 * assert.ok(!again.fresh);
 * assert.deepEqual(await again.answer, new Uint8Array([1]));
 * ```
 */
export class ReplayCache {
  readonly #retention: number;
  readonly #answerBudget: number;
  readonly #callerBudget: number;
  readonly #callers = new Map<string, Caller>();
  /** Answers not settled yet, by `serial:id`. */
  readonly #pending = new Map<string, Pending>();
  readonly #store: AnswerStore;
  #nextSerial = 1;
  #callerBytes = 0;
  #evicted = 0;
  #lastSweep = -Infinity;
  /** After an early eviction: unknown callers' requests sent before this are refused... */
  #horizon = -Infinity;
  /** ...until this local time, when every token the evicted callers sent has expired. */
  #horizonUntil = -Infinity;

  /**
   * Keeps state for tokens accepted up to `window` ms after their timestamp
   * (the replay window), within the budgets of `options`.
   */
  constructor(window: number, options: ReplayCacheOptions = {}) {
    this.#retention = window + TOKEN_FUTURE_SKEW;
    this.#answerBudget = options.answerBudget ?? DEFAULT_REPLAY_BUDGET;
    this.#callerBudget = options.callerBudget ?? DEFAULT_REPLAY_CALLER_BUDGET;
    this.#store = new AnswerStore(this.#answerBudget);
  }

  /** Number of answers remembered (or pending). */
  get size(): number {
    return this.#pending.size + this.#store.size;
  }

  /** What the cache holds, and the eviction work done so far. */
  get stats(): ReplayStats {
    return {
      callers: this.#callers.size,
      callerBytes: this.#callerBytes,
      answers: this.#pending.size + this.#store.size,
      answerBytes: this.#pending.size * PENDING_BYTES + this.#store.bytes,
      answersVisited: this.#store.visited,
      callersEvicted: this.#evicted,
    };
  }

  /**
   * Admits request `id` (an integer ≥ 1, else a `RangeError`) of caller
   * `instance`. The first time it returns `fresh: true`, a `settle` to call
   * with the encoded answer, and the caller's measured clock offset. A
   * repeat gets the (possibly pending) answer, or `null` when it was
   * dropped or cannot be told from a request that ran.
   */
  admit(instance: string, id: number, options: AdmitOptions = {}): Admission {
    if (!Number.isSafeInteger(id) || id < 1) {
      throw new RangeError(`Cannot admit request ${id}: a request id is an integer from 1`);
    }
    const { now = Date.now() } = options;
    const sent = this.#plausible(now, options.sent);
    this.sweep(now);
    // After an early eviction, an unknown caller's request sent too early may be a
    // replay: refused without making state for it, so refusals cost no memory.
    const known = this.#callers.has(instance);
    if (!known && now <= this.#horizonUntil && !(sent !== undefined && sent >= this.#horizon)) {
      return FORGOTTEN;
    }
    const caller = this.#caller(instance, now);
    if (sent !== undefined) sample(caller, now, sent);
    if (caller.minSent !== -Infinity && (sent === undefined || sent < caller.minSent)) {
      return FORGOTTEN;
    }
    const grown = caller.ids.mark(id);
    if (grown < 0) return this.#repeat(caller.serial, id);
    this.#callerBytes += grown;
    const { serial } = caller;
    const key = `${serial}:${id}`;
    const pending: Pending = { settled: false, waiters: null };
    this.#pending.set(key, pending);
    if (grown > 0) this.#enforceCallerBudget(caller);
    const offset = Math.min(caller.offsetNow, caller.offsetBefore);
    return {
      fresh: true,
      settle: (record, at = Date.now(), until = Infinity) =>
        this.#settle(serial, id, pending, record, at, until),
      offset: sent !== undefined && Number.isFinite(offset) ? offset : null,
    };
  }

  /**
   * `sent`, or undefined when no token could carry it: more than
   * {@linkcode TOKEN_FUTURE_SKEW} ahead of `now`, or more than the
   * retention (replay window + 60 s) behind. Such a request is judged as if
   * it had no `t`: it is no offset sample (one forged `t` would poison the
   * caller's offset) and has no deadline.
   */
  #plausible(now: number, sent: number | undefined): number | undefined {
    if (sent === undefined) return undefined;
    return sent - now <= TOKEN_FUTURE_SKEW && now - sent <= this.#retention ? sent : undefined;
  }

  /** The state of `instance`, made (and the budget enforced) when new, moved to the end when due. */
  #caller(instance: string, now: number): Caller {
    let caller = this.#callers.get(instance);
    if (caller) {
      caller.lastSeen = Math.max(caller.lastSeen, now);
      if (now - caller.touched >= 1000) {
        this.#callers.delete(instance);
        this.#callers.set(instance, caller);
        caller.touched = now;
      }
      return caller;
    }
    caller = {
      serial: this.#nextSerial++,
      ids: new IdWindow(),
      lastSeen: now,
      touched: now,
      minSent: now <= this.#horizonUntil ? this.#horizon : -Infinity,
      offsetNow: Infinity,
      offsetBefore: Infinity,
      offsetSince: now,
    };
    this.#callers.set(instance, caller);
    this.#callerBytes += CALLER_OVERHEAD + caller.ids.bytes;
    this.#enforceCallerBudget(caller);
    return caller;
  }

  /**
   * Forgets the callers touched longest ago (never `keep`) until the budget
   * holds. Their tokens may still be valid, so unknown callers' requests
   * sent before those tokens could have expired are refused from now on.
   */
  #enforceCallerBudget(keep: Caller): void {
    for (const [instance, caller] of this.#callers) {
      if (this.#callerBytes <= this.#callerBudget) break;
      if (caller === keep) continue;
      this.#callers.delete(instance);
      this.#callerBytes -= CALLER_OVERHEAD + caller.ids.bytes;
      this.#evicted++;
      this.#horizon = Math.max(this.#horizon, caller.lastSeen + TOKEN_FUTURE_SKEW + 1000);
      this.#horizonUntil = Math.max(this.#horizonUntil, caller.lastSeen + this.#retention);
    }
  }

  #repeat(serial: number, id: number): Admission {
    const pending = this.#pending.get(`${serial}:${id}`);
    if (pending) {
      return {
        fresh: false,
        answer: new Promise((resolve) => (pending.waiters ??= []).push(resolve)),
      };
    }
    const record = this.#store.get(serial, id);
    return record ? { fresh: false, answer: Promise.resolve(record) } : FORGOTTEN;
  }

  #settle(
    serial: number,
    id: number,
    pending: Pending,
    record: Uint8Array | null,
    now: number,
    until: number,
  ): void {
    if (pending.settled) return;
    pending.settled = true;
    this.#pending.delete(`${serial}:${id}`);
    const waiters = pending.waiters;
    pending.waiters = null;
    // An answer no waiting caller can get, or that cannot fit, is not kept: a
    // repeat is told it was forgotten.
    const keep = Math.min(now + this.#retention, until);
    if (record && keep > now) this.#store.put(serial, id, record, keep, this.#storeLimit());
    for (const wake of waiters ?? []) wake(record);
    this.#store.trim(now, this.#storeLimit());
  }

  /** What the store may take of the answer budget: the pending answers count too. */
  #storeLimit(): number {
    return this.#answerBudget - this.#pending.size * PENDING_BYTES;
  }

  /** True when the cache holds nothing: no caller, no answer. */
  get idle(): boolean {
    return this.#callers.size === 0 && this.#pending.size === 0 && this.#store.size === 0;
  }

  /**
   * At most once per second: forgets callers silent for the retention (the
   * map is ordered by `touched`, so this stops at the first recent one),
   * and answers older than it. Admitting a request sweeps too; a node sweeps
   * on a timer while the cache holds anything, so memory returns when the
   * requests stop.
   */
  sweep(now: number = Date.now()): void {
    if (now - this.#lastSweep < 1000) return;
    this.#lastSweep = now;
    for (const [instance, caller] of this.#callers) {
      if (now - caller.touched <= this.#retention) break;
      this.#callers.delete(instance);
      if (now - caller.lastSeen <= this.#retention) {
        caller.touched = caller.lastSeen;
        this.#callers.set(instance, caller);
        continue;
      }
      this.#callerBytes -= CALLER_OVERHEAD + caller.ids.bytes;
    }
    this.#store.trim(now, this.#storeLimit());
  }

  /** Forgets everything (the node is closing). Pending repeats settle as forgotten. */
  clear(): void {
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const answer of pending) {
      answer.settled = true;
      for (const wake of answer.waiters ?? []) wake(null);
      answer.waiters = null;
    }
    this.#store.clear();
    this.#callers.clear();
    this.#callerBytes = 0;
  }
}

/** Adds the offset sample `now − sent` to the caller's two-window minimum. */
function sample(caller: Caller, now: number, sent: number): void {
  const offset = now - sent;
  const age = now - caller.offsetSince;
  if (age < OFFSET_WINDOW) {
    caller.offsetNow = Math.min(caller.offsetNow, offset);
    return;
  }
  caller.offsetBefore = age < 2 * OFFSET_WINDOW ? caller.offsetNow : Infinity;
  caller.offsetNow = offset;
  caller.offsetSince = now;
}
