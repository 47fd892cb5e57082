/**
 * At most once: a request that arrives twice (a retry through another
 * path, or a replayed token) runs once, and the repeat gets the first
 * answer.
 *
 * Request ids are a caller instance plus a counter that only grows, so the
 * ids seen from one instance are kept as a sliding window of bits, as IPsec
 * does against replays: the highest counter seen and one bit for each of the
 * {@linkcode REPLAY_WINDOW_IDS} counters below it. A counter below the window
 * is treated as already seen. Memory per caller is fixed (8 KiB), whatever
 * the call rate; a caller silent for the replay window is forgotten (its
 * tokens have expired by then).
 *
 * Answers are kept for repeats within a memory budget, oldest dropped first;
 * a repeat whose answer was dropped is told so instead of being run again.
 *
 * @module
 */

/** Counters below the highest seen that are still told apart, per caller instance. */
export const REPLAY_WINDOW_IDS = 65_536;

/** Default memory budget for remembered answers, bookkeeping included: 32 MiB. */
export const DEFAULT_REPLAY_BUDGET: number = 32 * 1024 * 1024;

/** Bytes counted per remembered answer on top of its record (key, entry, map slot). */
const ENTRY_OVERHEAD = 160;

interface Caller {
  highest: number;
  bits: Uint8Array;
  lastSeen: number;
}

interface Answer {
  key: string;
  record: Uint8Array | null;
  settled: boolean;
  /** Repeats waiting for the first run's answer (created only when one arrives). */
  waiters: Array<(record: Uint8Array | null) => void> | null;
  size: number;
}

/** What {@linkcode ReplayCache.admit} decided. */
export type Admission =
  | { fresh: true; settle: (record: Uint8Array | null) => void }
  | { fresh: false; answer: Promise<Uint8Array | null> };

const FORGOTTEN: Admission = { fresh: false, answer: Promise.resolve(null) };

/** Seen request ids and their answers, bounded in time and memory. */
export class ReplayCache {
  readonly #window: number;
  readonly #budget: number;
  readonly #callers = new Map<string, Caller>();
  readonly #answers = new Map<string, Answer>();
  #bytes = 0;
  #lastSweep = 0;

  /** Forgets callers silent for `window` ms; keeps answers within `budget` bytes. */
  constructor(window: number, budget: number = DEFAULT_REPLAY_BUDGET) {
    this.#window = window;
    this.#budget = budget;
  }

  /** Number of answers remembered (or pending). */
  get size(): number {
    return this.#answers.size;
  }

  /**
   * Admits request `id` of caller `instance`. The first time it returns
   * `fresh: true` and a `settle` to call with the encoded answer. A repeat
   * gets the (possibly pending) answer, or `null` when it was dropped.
   */
  admit(instance: string, id: number, now: number = Date.now()): Admission {
    this.#sweep(now);
    let caller = this.#callers.get(instance);
    if (!caller) {
      caller = { highest: 0, bits: new Uint8Array(REPLAY_WINDOW_IDS / 8), lastSeen: now };
      this.#callers.set(instance, caller);
    }
    caller.lastSeen = now;
    const key = `${instance}:${id}`;
    if (!markFresh(caller, id)) return this.#repeat(key);
    const answer: Answer = { key, record: null, settled: false, waiters: null, size: 0 };
    this.#answers.set(key, answer);
    this.#bytes += ENTRY_OVERHEAD;
    return { fresh: true, settle: (record) => this.#settle(answer, record) };
  }

  #repeat(key: string): Admission {
    const known = this.#answers.get(key);
    if (!known) return FORGOTTEN;
    if (known.settled) return { fresh: false, answer: Promise.resolve(known.record) };
    return {
      fresh: false,
      answer: new Promise((resolve) => (known.waiters ??= []).push(resolve)),
    };
  }

  #settle(answer: Answer, record: Uint8Array | null): void {
    if (answer.settled) return;
    answer.settled = true;
    const waiters = answer.waiters;
    answer.waiters = null;
    if (this.#answers.get(answer.key) === answer && record) {
      answer.record = record;
      answer.size = record.length;
      this.#bytes += record.length;
    }
    for (const wake of waiters ?? []) wake(record);
    this.#enforceBudget();
  }

  /** Drops the oldest settled answers until the budget holds (Map order is insertion order). */
  #enforceBudget(): void {
    if (this.#bytes <= this.#budget) return;
    for (const [key, answer] of this.#answers) {
      if (this.#bytes <= this.#budget) break;
      if (!answer.settled) continue;
      this.#answers.delete(key);
      this.#bytes -= ENTRY_OVERHEAD + answer.size;
    }
  }

  /** At most once per second: forget callers silent for the window, and their answers. */
  #sweep(now: number): void {
    if (now - this.#lastSweep < 1000) return;
    this.#lastSweep = now;
    let forgot = false;
    for (const [instance, caller] of this.#callers) {
      if (now - caller.lastSeen <= this.#window) continue;
      this.#callers.delete(instance);
      forgot = true;
    }
    if (!forgot) return;
    for (const [key, answer] of this.#answers) {
      if (!answer.settled) continue;
      const instance = key.slice(0, key.indexOf(":"));
      if (this.#callers.has(instance)) continue;
      this.#answers.delete(key);
      this.#bytes -= ENTRY_OVERHEAD + answer.size;
    }
  }

  /** Forgets everything (the node is closing). Pending repeats settle as forgotten. */
  clear(): void {
    for (const answer of this.#answers.values()) this.#settle(answer, null);
    this.#answers.clear();
    this.#callers.clear();
    this.#bytes = 0;
  }
}

/**
 * Records counter `id` in `caller`'s window. False when it was seen before,
 * or lies below the window (then it cannot be told apart: refused as seen).
 */
function markFresh(caller: Caller, id: number): boolean {
  if (id > caller.highest) {
    const shift = id - caller.highest;
    if (shift >= REPLAY_WINDOW_IDS) caller.bits.fill(0);
    else for (let n = caller.highest + 1; n < id; n++) clearBit(caller.bits, n);
    caller.highest = id;
    setBit(caller.bits, id);
    return true;
  }
  if (caller.highest - id >= REPLAY_WINDOW_IDS) return false;
  if (getBit(caller.bits, id)) return false;
  setBit(caller.bits, id);
  return true;
}

function setBit(bits: Uint8Array, n: number): void {
  const i = n % REPLAY_WINDOW_IDS;
  bits[i >>> 3]! |= 1 << (i & 7);
}

function clearBit(bits: Uint8Array, n: number): void {
  const i = n % REPLAY_WINDOW_IDS;
  bits[i >>> 3]! &= ~(1 << (i & 7));
}

function getBit(bits: Uint8Array, n: number): boolean {
  const i = n % REPLAY_WINDOW_IDS;
  return (bits[i >>> 3]! & (1 << (i & 7))) !== 0;
}
