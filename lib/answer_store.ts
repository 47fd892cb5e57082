/**
 * Settled answers kept for repeats (docs/PROTOCOL.md, "At most once"),
 * without a JavaScript object per answer: the bytes are copied into shared
 * chunks, and each answer's key, age and place sit in typed-array columns
 * (a ring, oldest first) found through an open-addressing hash table. A
 * serving node under load settles tens of thousands of answers a second;
 * kept as one `Uint8Array` and a few objects each, every answer cost about
 * 1.1 KiB of process memory against the ~300 bytes its budget counted, and
 * kept the garbage collector busy promoting them.
 *
 * The budget counts what is allocated: whole chunks, every column slot
 * (used or not) and answers too large for a chunk. Chunks are only ever
 * appended to and are freed whole once their last answer is dropped;
 * answers leave oldest first, each visited once. Empty, the store holds
 * nothing, so a node's memory returns once its answers expire.
 *
 * Chunks and large answers of a page or more are resizable `ArrayBuffer`s:
 * V8 maps pages for each such buffer instead of taking them from `malloc`,
 * and resizing one to 0 gives its pages back at once, so a dropped chunk's
 * memory returns to the system without waiting for a garbage collection (an
 * idle node runs none) and without staying in `malloc`'s free lists between
 * small long-lived allocations (measured: 32 MiB of dropped 64 KiB `malloc`
 * chunks left RSS where it was, even after GC; resized to 0, RSS fell by
 * 32 MiB at once).
 *
 * @module
 */

/**
 * Bytes of chunk memory at most (64 KiB) that answers are copied into;
 * smaller for budgets under 1 MiB (a sixteenth of the budget, at least 256).
 *
 * @example
 * ```ts
 * import { ANSWER_CHUNK_BYTES } from "./answer_store.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(ANSWER_CHUNK_BYTES, 65_536);
 * ```
 */
export const ANSWER_CHUNK_BYTES = 64 * 1024;

/**
 * Bytes one slot of the columns costs: caller, id, settle time and chunk
 * (8 bytes each), offset and length (4 each), two hash table entries (4 each).
 *
 * @example
 * ```ts
 * import { ANSWER_SLOT_BYTES } from "./answer_store.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(ANSWER_SLOT_BYTES, 48);
 * ```
 */
export const ANSWER_SLOT_BYTES: number = 4 * 8 + 2 * 4 + 2 * 4;

/** Bytes counted for an answer kept on its own, on top of its pages (its array and map entry). */
const LARGE_OVERHEAD = 256;
/** Granularity of the pages a resizable buffer is given. */
const PAGE = 4096;
/** Slots of the smallest columns. */
const MIN_SLOTS = 8;
/** `offset` of an answer kept on its own. */
const LARGE = 0xffff_ffff;

/**
 * Answers by caller serial and request id, oldest out first, within a
 * budget in bytes.
 *
 * @example
 * ```ts
 * import { AnswerStore } from "./answer_store.ts";
 * import assert from "node:assert/strict";
 *
 * const store = new AnswerStore(1 << 20);
 * assert.ok(store.put(1, 7, new Uint8Array([1, 2, 3]), 120_000)); // kept until 120 s
 * assert.deepEqual(store.get(1, 7), new Uint8Array([1, 2, 3]));
 * assert.equal(store.get(2, 7), undefined); // another caller's request 7
 * store.trim(120_001); // past its time: dropped, and the memory with it
 * assert.equal(store.get(1, 7), undefined);
 * assert.equal(store.bytes, 0);
 * ```
 */
export class AnswerStore {
  readonly #budget: number;
  readonly #chunkSize: number;
  #slots = 0;
  #serial = new Float64Array(0);
  #id = new Float64Array(0);
  /** Until when each answer is kept, ms. */
  #until = new Float64Array(0);
  /** Number of the chunk an answer is in (for one kept on its own: the last chunk then). */
  #chunk = new Float64Array(0);
  #offset = new Uint32Array(0);
  #length = new Uint32Array(0);
  /** Open addressing, linear probing: slot + 1, or 0 for empty. Twice the slots. */
  #table = new Int32Array(0);
  /** Slot of the oldest answer. */
  #head = 0;
  #count = 0;
  /** Chunks in order; `#chunks[0]` is number `#firstChunk`. */
  #chunks: Uint8Array[] = [];
  #firstChunk = 0;
  /** Bytes used in the last chunk. */
  #used = 0;
  /** Answers too large for a chunk, by `serial:id`. */
  readonly #large = new Map<string, Uint8Array>();
  #largeBytes = 0;
  /**
   * The pages of an answer kept on its own that a {@linkcode put} just
   * dropped to make room, kept only when they can hold the new answer, for
   * it to reuse: fresh pages are paid for as they are first touched (about
   * 10 µs each on a virtual machine whose host takes back freed pages),
   * reused ones are not. Used or freed before `put` returns (even when it
   * throws): never counted, and never outliving the call.
   */
  #spare: ArrayBuffer | null = null;
  #visited = 0;

  /** A store that allocates at most `budget` bytes. */
  constructor(budget: number) {
    this.#budget = budget;
    this.#chunkSize = Math.min(ANSWER_CHUNK_BYTES, Math.max(256, Math.floor(budget / 16)));
  }

  /** Answers kept. */
  get size(): number {
    return this.#count;
  }

  /** Bytes allocated: chunks, column slots and answers kept on their own. */
  get bytes(): number {
    return this.#chunks.length * this.#chunkSize + this.#slots * ANSWER_SLOT_BYTES +
      this.#largeBytes;
  }

  /** Answers dropped so far (each visited once, when dropped). */
  get visited(): number {
    return this.#visited;
  }

  /**
   * Keeps a copy of `record`, the answer to request `id` of caller
   * `serial`, until `until` (ms), dropping the oldest answers until it
   * fits within `limit` bytes (at most the budget). False when it cannot
   * fit even alone. Each caller's id is put once (a repeat is never fresh).
   */
  put(
    serial: number,
    id: number,
    record: Uint8Array,
    until: number,
    limit = this.#budget,
  ): boolean {
    try {
      return this.#put(serial, id, record, until, limit);
    } finally {
      this.#freeSpare();
    }
  }

  #put(serial: number, id: number, record: Uint8Array, until: number, limit: number): boolean {
    const budget = Math.min(limit, this.#budget);
    const small = record.length <= this.#chunkSize / 4;
    const alone = (small ? this.#chunkSize : largeBytes(record.length)) +
      MIN_SLOTS * ANSWER_SLOT_BYTES;
    if (alone > budget) return false;
    for (;;) {
      const newChunk = small &&
        (this.#chunks.length === 0 || this.#used + record.length > this.#chunkSize);
      const slots = this.#count === this.#slots
        ? Math.max(MIN_SLOTS, this.#slots * 2)
        : this.#slots;
      const need = (newChunk ? this.#chunkSize : 0) + (slots - this.#slots) * ANSWER_SLOT_BYTES +
        (small ? 0 : largeBytes(record.length));
      if (this.bytes + need <= budget) break;
      if (this.#count === 0) return false;
      this.#dropOldest(small ? 0 : record.length);
    }
    // Memory is taken before the new answer's slot: should that fail, no slot lacks its answer.
    const copy = small ? null : this.#reuse(record.length) ?? allocate(record.length);
    if (this.#count === this.#slots) this.#resize(Math.max(MIN_SLOTS, this.#slots * 2));
    if (small && (this.#chunks.length === 0 || this.#used + record.length > this.#chunkSize)) {
      this.#chunks.push(allocate(this.#chunkSize));
      this.#used = 0;
    }
    const slot = (this.#head + this.#count) & (this.#slots - 1);
    this.#count++;
    this.#serial[slot] = serial;
    this.#id[slot] = id;
    this.#until[slot] = until;
    this.#length[slot] = record.length;
    if (copy === null) {
      this.#chunks.at(-1)!.set(record, this.#used);
      this.#offset[slot] = this.#used;
      this.#used += record.length;
    } else {
      copy.set(record);
      this.#large.set(`${serial}:${id}`, copy);
      this.#largeBytes += largeBytes(record.length);
      this.#offset[slot] = LARGE;
    }
    this.#chunk[slot] = this.#firstChunk + this.#chunks.length - 1;
    this.#insert(slot);
    return true;
  }

  /** A copy of the answer to request `id` of caller `serial`, if kept. */
  get(serial: number, id: number): Uint8Array | undefined {
    const mask = this.#table.length - 1;
    if (mask < 0) return undefined;
    for (let i = hash(serial, id) & mask;; i = (i + 1) & mask) {
      const entry = this.#table[i]!;
      if (entry === 0) return undefined;
      const slot = entry - 1;
      if (this.#serial[slot] !== serial || this.#id[slot] !== id) continue;
      const offset = this.#offset[slot]!;
      if (offset === LARGE) return this.#large.get(`${serial}:${id}`)?.slice();
      const chunk = this.#chunks[this.#chunk[slot]! - this.#firstChunk]!;
      return chunk.slice(offset, offset + this.#length[slot]!);
    }
  }

  /**
   * Drops the oldest answers while more than `limit` bytes are allocated
   * or the oldest is kept until before `now`. An answer kept for less time
   * than an older one waits for it (the budget bounds both).
   */
  trim(now: number, limit = this.#budget): void {
    while (this.#count > 0 && (this.bytes > limit || now > this.#until[this.#head]!)) {
      this.#dropOldest();
    }
    if (this.#count === 0) this.#release();
    else if (this.#slots > MIN_SLOTS && this.#count <= this.#slots / 4) {
      this.#resize(this.#slots / 2);
    }
  }

  /** Drops every answer and frees the memory. */
  clear(): void {
    this.#count = 0;
    this.#release();
  }

  /**
   * Drops the oldest answer. Its own pages, if it has them, are kept as the
   * spare when they can hold `spareFor` bytes (an answer being put) and no
   * spare is kept yet; freed otherwise.
   */
  #dropOldest(spareFor = 0): void {
    const slot = this.#head;
    this.#remove(slot);
    if (this.#offset[slot] === LARGE) {
      const key = `${this.#serial[slot]}:${this.#id[slot]}`;
      const large = this.#large.get(key)!;
      this.#largeBytes -= largeBytes(large.length);
      this.#large.delete(key);
      const buffer = large.buffer as ArrayBuffer;
      if (
        !this.#spare && spareFor >= PAGE && buffer.resizable && buffer.maxByteLength >= spareFor
      ) {
        this.#spare = buffer;
      } else {
        free(large);
      }
    }
    this.#head = (this.#head + 1) & (this.#slots - 1);
    this.#count--;
    this.#visited++;
    if (this.#count === 0) {
      this.#release();
      return;
    }
    // Chunks before the oldest answer's hold nothing any more.
    const keep = this.#chunk[this.#head]! - this.#firstChunk;
    if (keep > 0) {
      for (const chunk of this.#chunks.splice(0, keep)) free(chunk);
      this.#firstChunk += keep;
    }
  }

  /**
   * `length` bytes on the spare's pages, to be overwritten whole (they still
   * hold the dropped answer), or null when none is kept (one is kept only
   * when it can hold `length` bytes). Resized straight to `length`: through
   * 0 its pages would be given back and touched afresh (measured on the
   * bench machine: 3.2 ms against 52 µs to copy 1 MiB).
   */
  #reuse(length: number): Uint8Array | null {
    const spare = this.#spare;
    if (!spare) return null;
    this.#spare = null;
    spare.resize(length);
    return new Uint8Array(spare);
  }

  /** Gives the spare's pages back. */
  #freeSpare(): void {
    this.#spare?.resize(0);
    this.#spare = null;
  }

  /** Frees chunks and columns (no answer is left). */
  #release(): void {
    if (this.#slots === 0 && this.#chunks.length === 0) return;
    this.#firstChunk += this.#chunks.length;
    for (const chunk of this.#chunks) free(chunk);
    this.#chunks = [];
    this.#used = 0;
    for (const large of this.#large.values()) free(large);
    this.#large.clear();
    this.#largeBytes = 0;
    this.#head = 0;
    this.#resize(0);
  }

  /** Moves the answers, oldest first, into columns of `slots` slots (a power of two, or 0). */
  #resize(slots: number): void {
    const old = {
      serial: this.#serial,
      id: this.#id,
      until: this.#until,
      chunk: this.#chunk,
      offset: this.#offset,
      length: this.#length,
    };
    const mask = this.#slots - 1;
    // All columns share one buffer, freed at once when replaced.
    const buffer = allocate(slots * ANSWER_SLOT_BYTES).buffer as ArrayBuffer;
    const column = (index: number) => index * 8 * slots;
    this.#serial = new Float64Array(buffer, column(0), slots);
    this.#id = new Float64Array(buffer, column(1), slots);
    this.#until = new Float64Array(buffer, column(2), slots);
    this.#chunk = new Float64Array(buffer, column(3), slots);
    this.#offset = new Uint32Array(buffer, column(4), slots);
    this.#length = new Uint32Array(buffer, column(4) + 4 * slots, slots);
    this.#table = new Int32Array(buffer, column(5), slots * 2);
    for (let i = 0; i < this.#count; i++) {
      const from = (this.#head + i) & mask;
      this.#serial[i] = old.serial[from]!;
      this.#id[i] = old.id[from]!;
      this.#until[i] = old.until[from]!;
      this.#chunk[i] = old.chunk[from]!;
      this.#offset[i] = old.offset[from]!;
      this.#length[i] = old.length[from]!;
    }
    free(old.serial);
    this.#slots = slots;
    this.#head = 0;
    for (let i = 0; i < this.#count; i++) this.#insert(i);
  }

  #insert(slot: number): void {
    const mask = this.#table.length - 1;
    let i = hash(this.#serial[slot]!, this.#id[slot]!) & mask;
    while (this.#table[i] !== 0) i = (i + 1) & mask;
    this.#table[i] = slot + 1;
  }

  /** Removes `slot` from the hash table, shifting later entries of its run back. */
  #remove(slot: number): void {
    const table = this.#table;
    const mask = table.length - 1;
    let i = hash(this.#serial[slot]!, this.#id[slot]!) & mask;
    while (table[i] !== slot + 1) i = (i + 1) & mask;
    for (let j = (i + 1) & mask; table[j] !== 0; j = (j + 1) & mask) {
      const other = table[j]! - 1;
      const home = hash(this.#serial[other]!, this.#id[other]!) & mask;
      // The entry at j stays when its home lies cyclically in (i, j].
      if (i <= j ? i < home && home <= j : i < home || home <= j) continue;
      table[i] = table[j]!;
      i = j;
    }
    table[i] = 0;
  }
}

/**
 * `size` zeroed bytes: from pages of their own (a resizable buffer) from a
 * page up, so freeing them returns the memory; from `malloc` below.
 */
function allocate(size: number): Uint8Array {
  if (size < PAGE) return new Uint8Array(size);
  // Room to grow up to the next power of two reserves address space only, no memory: the pages
  // can then hold a later answer a little longer (answers of one call vary by a few bytes).
  const room = 2 ** Math.ceil(Math.log2(size));
  return new Uint8Array(new ArrayBuffer(size, { maxByteLength: room }));
}

/** Gives the pages of `bytes` back now, if it has its own (nothing may use it after). */
function free(bytes: ArrayBufferView): void {
  const buffer = bytes.buffer as ArrayBuffer;
  if (buffer.resizable) buffer.resize(0);
}

/** Bytes counted for an answer of `length` bytes kept on its own. */
function largeBytes(length: number): number {
  return (length < PAGE ? length : Math.ceil(length / PAGE) * PAGE) + LARGE_OVERHEAD;
}

/** Mixes a caller serial and a request id (integers below 2^53) into 32 bits. */
function hash(serial: number, id: number): number {
  let h = Math.imul((id >>> 0) ^ Math.imul((id / 0x1_0000_0000) >>> 0, 0x27d4_eb2d), 0x9e37_79b1);
  h ^= Math.imul((serial >>> 0) ^ ((serial / 0x1_0000_0000) >>> 0), 0x85eb_ca77);
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb_352d);
  h ^= h >>> 15;
  return h >>> 0;
}
