/**
 * What a few byte strings decoded to lately, found again by the bytes
 * themselves. Every frame on a link repeats the same header names, and
 * every batch the same envelope: a receiver compares a few dozen bytes
 * instead of decoding them again (and allocating what they decode to).
 *
 * @module
 */

/**
 * A small memo from exact bytes to what they decoded to. Direct-mapped: the
 * bytes' hash picks the one entry they may be in, so a lookup reads the
 * bytes at most twice (hash, then compare) whatever the memo holds, and a
 * new value replaces the entry of its hash. It keeps copies of at most
 * `maxBytes` bytes each (longer ones are not remembered), so it holds
 * `size × maxBytes` bytes at most, whatever arrives. The values are shared
 * by every lookup: keep them immutable (strings, deeply frozen objects).
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
  readonly #values: (T | undefined)[];
  readonly #maxBytes: number;

  /** A memo of at most `size` entries of at most `maxBytes` bytes each. */
  constructor(size: number, maxBytes: number) {
    this.#keys = new Array(size);
    this.#values = new Array(size);
    this.#maxBytes = maxBytes;
  }

  /** The value remembered for exactly these bytes, if any. */
  get(bytes: Uint8Array): T | undefined {
    if (bytes.length > this.#maxBytes) return undefined;
    const slot = this.#slot(bytes);
    const key = this.#keys[slot];
    if (key === undefined || key.length !== bytes.length) return undefined;
    for (let i = 0; i < key.length; i++) if (key[i] !== bytes[i]) return undefined;
    return this.#values[slot];
  }

  /** Remembers `value` for a copy of `bytes` (unless they are longer than the memo keeps). */
  set(bytes: Uint8Array, value: T): void {
    if (bytes.length > this.#maxBytes) return;
    const slot = this.#slot(bytes);
    this.#keys[slot] = bytes.slice();
    this.#values[slot] = value;
  }

  /**
   * The entry `bytes` belong in: FNV-1a of the bytes from a per-process
   * random start, modulo the size, so a sender cannot aim at the entry that
   * holds another link's bytes.
   */
  #slot(bytes: Uint8Array): number {
    let hash = SEED;
    for (let i = 0; i < bytes.length; i++) hash = Math.imul(hash ^ bytes[i]!, 0x01000193);
    return (hash >>> 0) % this.#keys.length;
  }
}
