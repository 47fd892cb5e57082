/**
 * Remembered answers: a request that arrives twice within the replay window
 * (a retry through another path, or a replayed token) gets the first
 * answer again and runs at most once.
 *
 * Ids are kept for the whole window. Answer bytes are kept within a memory
 * budget; past it the oldest answers are dropped (their ids stay), and a
 * duplicate of such a request is told its answer was forgotten rather than
 * being run again.
 *
 * @module
 */

/** Default memory budget for remembered answers: 64 MiB. */
export const DEFAULT_REPLAY_BUDGET: number = 64 * 1024 * 1024;

interface Entry {
  key: string;
  expires: number;
  record: Uint8Array | null;
  /** False while the first run is still going. */
  settled: boolean;
  /** Duplicates waiting for the first run's answer (created only when one arrives). */
  waiters: Array<(record: Uint8Array | null) => void> | null;
}

/** What {@linkcode ReplayCache.admit} decided. */
export type Admission =
  | { fresh: true; settle: (record: Uint8Array | null) => void }
  | { fresh: false; answer: Promise<Uint8Array | null> };

/** A time- and memory-bounded map from request ids to their encoded answers. */
export class ReplayCache {
  readonly #window: number;
  readonly #budget: number;
  readonly #entries = new Map<string, Entry>();
  #order: Entry[] = [];
  #head = 0;
  #trim = 0;
  #bytes = 0;

  /** Remembers ids for `window` ms and answers within `budget` bytes. */
  constructor(window: number, budget: number = DEFAULT_REPLAY_BUDGET) {
    this.#window = window;
    this.#budget = budget;
  }

  /** Number of remembered request ids. */
  get size(): number {
    return this.#entries.size;
  }

  /**
   * Admits request `key`. The first time it returns `fresh: true` and a
   * `settle` to call with the encoded answer (null: none to remember). Later
   * it returns the (possibly pending) answer: `null` when forgotten.
   */
  admit(key: string, now: number = Date.now()): Admission {
    this.#expire(now);
    const known = this.#entries.get(key);
    if (known) {
      if (known.settled) return { fresh: false, answer: Promise.resolve(known.record) };
      return {
        fresh: false,
        answer: new Promise((resolve) => (known.waiters ??= []).push(resolve)),
      };
    }
    const entry: Entry = {
      key,
      expires: now + this.#window,
      record: null,
      settled: false,
      waiters: null,
    };
    this.#entries.set(key, entry);
    this.#order.push(entry);
    return { fresh: true, settle: (record) => this.#settle(entry, record) };
  }

  #settle(entry: Entry, record: Uint8Array | null): void {
    if (entry.settled) return;
    entry.settled = true;
    if (record && this.#entries.get(entry.key) === entry) {
      entry.record = record;
      this.#bytes += record.length;
      this.#enforceBudget();
    }
    const waiters = entry.waiters;
    entry.waiters = null;
    for (const wake of waiters ?? []) wake(entry.record);
  }

  #expire(now: number): void {
    while (this.#head < this.#order.length && this.#order[this.#head]!.expires <= now) {
      const entry = this.#order[this.#head++]!;
      this.#entries.delete(entry.key);
      if (entry.record) this.#bytes -= entry.record.length;
      entry.record = null;
    }
    this.#trim = Math.max(this.#trim, this.#head);
    if (this.#head > 1024 && this.#head * 2 > this.#order.length) {
      this.#order = this.#order.slice(this.#head);
      this.#trim -= this.#head;
      this.#head = 0;
    }
  }

  #enforceBudget(): void {
    while (this.#bytes > this.#budget && this.#trim < this.#order.length) {
      const entry = this.#order[this.#trim++]!;
      if (entry.record) {
        this.#bytes -= entry.record.length;
        entry.record = null;
      }
    }
  }

  /** Forgets everything (the node is closing). Pending answers settle as forgotten. */
  clear(): void {
    for (const entry of this.#entries.values()) this.#settle(entry, null);
    this.#entries.clear();
    this.#order = [];
    this.#head = this.#trim = this.#bytes = 0;
  }
}
