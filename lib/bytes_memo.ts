/**
 * What a few byte strings decoded to lately, found again by the bytes
 * themselves. Every frame on a link repeats the same header names, and
 * every batch the same envelope: a receiver compares a few dozen bytes
 * instead of decoding them again (and allocating what they decode to).
 *
 * @module
 */

/**
 * A small memo from exact bytes to what they decoded to, replacing its
 * entries in turn. It keeps copies of at most `maxBytes` bytes each (longer
 * ones are not remembered), so it holds `size × maxBytes` bytes at most,
 * whatever arrives. The values are shared by every lookup: keep them
 * immutable (strings, frozen objects).
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
 * memo.set(new Uint8Array([1]), "a");
 * memo.set(new Uint8Array([2]), "b"); // replaces the oldest, "hi"
 * assert.equal(memo.get(new Uint8Array([104, 105])), undefined);
 * ```
 */
export class BytesMemo<T> {
  readonly #keys: Uint8Array[] = [];
  readonly #values: T[] = [];
  readonly #size: number;
  readonly #maxBytes: number;
  /** The entry the next new value replaces. */
  #next = 0;

  /** A memo of at most `size` entries of at most `maxBytes` bytes each. */
  constructor(size: number, maxBytes: number) {
    this.#size = size;
    this.#maxBytes = maxBytes;
  }

  /** The value remembered for exactly these bytes, if any. */
  get(bytes: Uint8Array): T | undefined {
    const keys = this.#keys;
    next: for (let k = 0; k < keys.length; k++) {
      const key = keys[k]!;
      if (key.length !== bytes.length) continue;
      for (let i = 0; i < key.length; i++) if (key[i] !== bytes[i]) continue next;
      return this.#values[k];
    }
    return undefined;
  }

  /** Remembers `value` for a copy of `bytes` (unless they are longer than the memo keeps). */
  set(bytes: Uint8Array, value: T): void {
    if (bytes.length > this.#maxBytes) return;
    this.#keys[this.#next] = bytes.slice();
    this.#values[this.#next] = value;
    this.#next = (this.#next + 1) % this.#size;
  }
}
