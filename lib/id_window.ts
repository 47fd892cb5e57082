/**
 * The request counters seen from one caller instance, as a sliding window
 * of bits (as IPsec does against replays): the highest counter seen and one
 * bit for each of the {@linkcode REPLAY_WINDOW_IDS} counters below it. A
 * counter below the window cannot be told apart and counts as seen. The
 * bits start small and double as the counters grow, up to 8 KiB.
 *
 * @module
 */

/**
 * Counters below the highest seen that are still told apart, per caller instance.
 *
 * @example
 * ```ts
 * import { REPLAY_WINDOW_IDS } from "./id_window.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(REPLAY_WINDOW_IDS / 8, 8192); // at most 8 KiB of bits per caller
 * ```
 */
export const REPLAY_WINDOW_IDS = 65_536;

/** Bytes of a new window; it doubles as its counters grow. */
const FIRST_BYTES = 8;

/**
 * One caller's seen counters.
 *
 * @example
 * ```ts
 * import { IdWindow, REPLAY_WINDOW_IDS } from "./id_window.ts";
 * import assert from "node:assert/strict";
 *
 * const window = new IdWindow();
 * assert.ok(window.mark(3) >= 0); // fresh
 * assert.equal(window.mark(3), -1); // seen
 * assert.ok(window.mark(REPLAY_WINDOW_IDS + 10) > 0); // fresh; the bits grew to the full window
 * assert.equal(window.mark(5), -1); // below the window: counted as seen
 * assert.equal(window.bytes, REPLAY_WINDOW_IDS / 8);
 * ```
 */
export class IdWindow {
  #highest = 0;
  /** A ring of bits: counter n is bit n mod (8 × length); below the full size it never wraps. */
  #bits = new Uint8Array(FIRST_BYTES);

  /** Bytes the bits take now. */
  get bytes(): number {
    return this.#bits.length;
  }

  /**
   * Records counter `id` (≥ 1). Returns -1 when it was seen before or lies
   * below the window; else the bytes the bits grew by (mostly 0).
   */
  mark(id: number): number {
    if (id > this.#highest) {
      const grown = this.#grow(id);
      clearRange(this.#bits, this.#highest + 1, id);
      this.#highest = id;
      setBit(this.#bits, id);
      return grown;
    }
    if (this.#highest - id >= REPLAY_WINDOW_IDS || getBit(this.#bits, id)) return -1;
    setBit(this.#bits, id);
    return 0;
  }

  /**
   * Grows the bits so counter `id` fits without wrapping (up to the full
   * window, which wraps). Below the full size counter n is bit n, so the old
   * bits keep their places. Returns the bytes added.
   */
  #grow(id: number): number {
    const full = REPLAY_WINDOW_IDS / 8;
    let size = this.#bits.length;
    if (size === full || id < size * 8) return 0;
    while (size < full && id >= size * 8) size *= 2;
    const bits = new Uint8Array(size);
    bits.set(this.#bits);
    const added = size - this.#bits.length;
    this.#bits = bits;
    return added;
  }
}

/** Clears the bits of counters `from` (included) to `to` (excluded), a byte at a time where it can. */
function clearRange(bits: Uint8Array, from: number, to: number): void {
  const size = bits.length * 8;
  if (to - from >= size) {
    bits.fill(0);
    return;
  }
  for (let n = from; n < to;) {
    const i = n % size;
    if ((i & 7) === 0 && to - n >= 8) {
      const bytes = Math.min((to - n) >>> 3, (size - i) >>> 3);
      bits.fill(0, i >>> 3, (i >>> 3) + bytes);
      n += bytes * 8;
    } else {
      bits[i >>> 3]! &= ~(1 << (i & 7));
      n++;
    }
  }
}

function setBit(bits: Uint8Array, n: number): void {
  const i = n % (bits.length * 8);
  bits[i >>> 3]! |= 1 << (i & 7);
}

function getBit(bits: Uint8Array, n: number): boolean {
  const i = n % (bits.length * 8);
  return (bits[i >>> 3]! & (1 << (i & 7))) !== 0;
}
