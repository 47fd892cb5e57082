/**
 * What a few byte strings decoded to lately, found again by the bytes
 * themselves. Every frame on a link repeats the same header names, and
 * every batch the same envelope: a receiver compares a few dozen bytes
 * instead of decoding them again (and allocating what they decode to).
 *
 * @module
 */

/**
 * A small memo from exact bytes to what they decoded to. Two-way: the
 * bytes' 32-bit hash picks an entry and its neighbour, the only two they
 * may be in, and an entry's bytes are compared only when its stored hash is
 * the same, so a lookup reads the bytes about twice (hash, then compare)
 * whatever the memo holds. A new value goes to its hash's own entry, and
 * what was there moves to the neighbour: two hot byte strings of the same
 * hash both stay (with one entry per hash, a process whose random hash
 * start put two of a link's header names on one entry decoded both on
 * every frame, up to 4.8 KB more allocated per relayed call). It keeps copies of
 * at most `maxBytes` bytes each (longer ones are not remembered), so it
 * holds `size × maxBytes` bytes at most, whatever arrives. The values are
 * shared by every lookup: keep them immutable (strings, deeply frozen
 * objects).
 *
 * @example Bytes seen before give back the same value
 * ```ts
 * import assert from "node:assert/strict";
 * import { BytesMemo } from "./bytes_memo.ts";
 *
 * const memo = new BytesMemo<string>(2, 16);
 * memo.set(new Uint8Array([104, 105]), "hi");
 * assert.equal(memo.get(new Uint8Array([104, 105])), "hi");
 * assert.equal(memo.get(new Uint8Array([104, 106])), undefined);
 * assert.equal(memo.get(new Uint8Array(17)), undefined); // never kept: longer than 16
 * ```
 */
/** The hash's start, random per process. */
const SEED = crypto.getRandomValues(new Uint32Array(1))[0]! ^ 0x811c9dc5;

export class BytesMemo<T> {
  readonly #keys: (Uint8Array | undefined)[];
  readonly #hashes: Uint32Array;
  readonly #values: (T | undefined)[];
  readonly #maxBytes: number;

  /** A memo of at most `size` entries of at most `maxBytes` bytes each. */
  constructor(size: number, maxBytes: number) {
    this.#keys = new Array(size);
    this.#hashes = new Uint32Array(size);
    this.#values = new Array(size);
    this.#maxBytes = maxBytes;
  }

  /**
   * The value remembered for exactly the bytes of `bytes` from `from` to
   * `to` (all of it by default), if any. A range spares the caller a view
   * made for the lookup alone.
   */
  get(bytes: Uint8Array, from = 0, to: number = bytes.length): T | undefined {
    if (to - from > this.#maxBytes) return undefined;
    const hash = this.#hash(bytes, from, to);
    const slot = hash % this.#keys.length;
    if (this.#holds(slot, hash, bytes, from, to)) return this.#values[slot];
    const next = (slot + 1) % this.#keys.length;
    return this.#holds(next, hash, bytes, from, to) ? this.#values[next] : undefined;
  }

  /** Remembers `value` for a copy of `bytes` (unless they are longer than the memo keeps). */
  set(bytes: Uint8Array, value: T): void {
    if (bytes.length > this.#maxBytes) return;
    const hash = this.#hash(bytes, 0, bytes.length);
    const slot = hash % this.#keys.length;
    const next = (slot + 1) % this.#keys.length;
    if (this.#keys[slot] !== undefined && this.#hashes[slot] !== hash) {
      this.#keys[next] = this.#keys[slot];
      this.#hashes[next] = this.#hashes[slot]!;
      this.#values[next] = this.#values[slot];
    }
    this.#keys[slot] = bytes.slice();
    this.#hashes[slot] = hash;
    this.#values[slot] = value;
  }

  /** Whether entry `slot` holds exactly `bytes` from `from` to `to`, whose hash is `hash`. */
  #holds(slot: number, hash: number, bytes: Uint8Array, from: number, to: number): boolean {
    const key = this.#keys[slot];
    if (key === undefined || this.#hashes[slot] !== hash || key.length !== to - from) {
      return false;
    }
    for (let i = 0; i < key.length; i++) if (key[i] !== bytes[from + i]) return false;
    return true;
  }

  /**
   * FNV-1a of the bytes from `from` to `to`, from a per-process random
   * start, so a sender cannot aim at the entries that hold another link's
   * bytes.
   */
  #hash(bytes: Uint8Array, from: number, to: number): number {
    let hash = SEED;
    for (let i = from; i < to; i++) hash = Math.imul(hash ^ bytes[i]!, 0x01000193);
    return hash >>> 0;
  }
}
