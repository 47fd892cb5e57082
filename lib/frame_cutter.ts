/**
 * Finds where frames end in a byte stream, without gathering them: a
 * WebSocket link sends each frame as one message (see `docs/PROTOCOL.md`,
 * "Links: TCP, TLS or WebSocket") and checks that each message it receives
 * holds one. Sans-IO: it only counts.
 *
 * @module
 */

import { LENGTH_SIZE } from "./frame.ts";

/**
 * Follows the frames of a byte stream by their length fields.
 *
 * @example
 * ```ts
 * import { FrameCutter } from "./frame_cutter.ts";
 * import assert from "node:assert/strict";
 *
 * // Two frames: 2 bytes of body, then 1 byte; the second split across calls.
 * const cutter = new FrameCutter();
 * const bytes = new Uint8Array([0, 0, 0, 2, 7, 7, 0, 0, 0, 1, 9]);
 * assert.equal(cutter.next(bytes, 0, 8), 6); // The first frame ends at 6.
 * assert.equal(cutter.atBoundary, true);
 * assert.equal(cutter.next(bytes, 6, 8), -1); // The second is still open.
 * assert.equal(cutter.next(bytes, 8, 11), 11);
 * ```
 */
export class FrameCutter {
  /** Bytes of the length field read so far (0 between frames). */
  #lengthBytes = 0;
  #length = 0;
  /** Bytes of the current frame's body still to come. */
  #remaining = 0;

  /** True when the bytes seen so far end exactly at a frame's end. */
  get atBoundary(): boolean {
    return this.#lengthBytes === 0 && this.#remaining === 0;
  }

  /**
   * Consumes `bytes[start, end)` up to the end of the frame in progress:
   * returns the index just past that frame's last byte, or -1 when the
   * frame goes on beyond `end` (then all of it was consumed).
   */
  next(bytes: Uint8Array, start: number, end: number): number {
    let at = start;
    while (this.#lengthBytes < LENGTH_SIZE || this.#remaining > 0) {
      if (at >= end) return -1;
      if (this.#lengthBytes < LENGTH_SIZE) {
        this.#length = this.#length * 256 + bytes[at++]!;
        if (++this.#lengthBytes === LENGTH_SIZE) this.#remaining = this.#length;
      } else {
        const take = Math.min(this.#remaining, end - at);
        this.#remaining -= take;
        at += take;
      }
    }
    this.#lengthBytes = 0;
    this.#length = 0;
    return at;
  }
}
