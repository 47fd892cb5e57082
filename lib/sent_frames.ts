/**
 * The frames a clustered relay sent on the backplane in the last moment,
 * kept until NATS would have said that nobody got them. Each frame is
 * published with its own reply subject; when no relay subscribes to its
 * subject any more (its relay died, or is reconnecting to another NATS
 * server), NATS answers that reply at once with status 503 (no
 * responders), and the frame, which then reached no one, can be sent to
 * another relay of its target without ever arriving twice.
 *
 * @module
 */

/** How long a sent frame is kept for a 503, ms (NATS answers within a round trip). */
export const RESEND_WINDOW = 1000;
/** Most bytes of sent frames kept; past it, the oldest lose their second chance. */
export const MAX_RESEND_BYTES = 8 * 1024 * 1024;

/** A frame sent to a relay. */
export interface SentFrame {
  /** The relay it was sent to. */
  readonly relay: string;
  /** What was sent: a frame for one member (`r`), or a fan-out body (`f`). */
  readonly kind: "r" | "f";
  /** How many times it was sent before, and came back unheard. */
  readonly resent: number;
  /** The frame. */
  readonly bytes: Uint8Array;
  /** When it was sent (performance.now()). */
  readonly at: number;
}

/**
 * Sent frames by sequence number, oldest first, bounded in age and bytes.
 *
 * @example A frame nobody got is taken back once
 * ```ts
 * import { SentFrames } from "./sent_frames.ts";
 * import assert from "node:assert/strict";
 *
 * const sent = new SentFrames();
 * const seq = sent.add("relay-a", "r", new Uint8Array(3), 0);
 * assert.equal(sent.take(seq)?.relay, "relay-a");
 * assert.equal(sent.take(seq), undefined);
 * ```
 */
export class SentFrames {
  readonly #frames = new Map<number, SentFrame>();
  readonly #window: number;
  readonly #maxBytes: number;
  #next = 1;
  #bytes = 0;

  /** Keeps frames for `window` ms and at most `maxBytes` bytes of them. */
  constructor(window: number = RESEND_WINDOW, maxBytes: number = MAX_RESEND_BYTES) {
    this.#window = window;
    this.#maxBytes = maxBytes;
  }

  /** Frames kept now. */
  get size(): number {
    return this.#frames.size;
  }

  /** Keeps what was sent to `relay` at `now`; returns its sequence number. */
  add(relay: string, kind: "r" | "f", bytes: Uint8Array, now: number, resent = 0): number {
    for (const [seq, frame] of this.#frames) {
      if (frame.at > now - this.#window && this.#bytes + bytes.length <= this.#maxBytes) break;
      this.#drop(seq, frame);
    }
    const seq = this.#next++;
    this.#frames.set(seq, { relay, kind, bytes, at: now, resent });
    this.#bytes += bytes.length;
    return seq;
  }

  /** The frame of `seq`, removed; undefined when it is gone (too old, or taken). */
  take(seq: number): SentFrame | undefined {
    const frame = this.#frames.get(seq);
    if (frame) this.#drop(seq, frame);
    return frame;
  }

  #drop(seq: number, frame: SentFrame): void {
    this.#frames.delete(seq);
    this.#bytes -= frame.bytes.length;
  }
}
