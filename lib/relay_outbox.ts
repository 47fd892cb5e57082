/**
 * What a relay has queued for one connection: control frames (MEMBERS,
 * PONG, DRAIN) in a lane of their own that goes ahead of the DATA queued
 * for it, so a busy link never delays a keepalive or a membership change by
 * more than the frame being written; DATA in one lane per sender, served in
 * turn, so a frame from a quiet sender waits behind at most one frame of
 * each other sender, never behind a flood. Each DATA frame remembers its
 * sender, so the relay can charge queued bytes to whoever caused them.
 * Large frames are written in chunks, and progress counts per chunk, so a
 * receiver that reads slowly but steadily is never taken for a stalled one.
 *
 * @module
 */

import type { FramedConnection } from "./connection.ts";

/** Bytes written at a time; progress is recorded after each (a 64 KiB call is one write). */
const CHUNK = 256 * 1024;

interface Item<S> {
  bytes: Uint8Array;
  from: S | null;
  /** Control frames with a key are queued once at a time (a PONG, say). */
  key?: string;
}

/** The outgoing queue of one relay connection. */
export class Outbox<S, O = S> {
  readonly #connection: FramedConnection;
  readonly #owner: O;
  readonly #written: (owner: O, bytes: number, from: S | null) => void;
  /** Control frames (made when first needed, as is `#data`: most connections stay quiet). */
  #control: Item<S>[] | null = null;
  /** DATA per sender; the first sender in the map is served next. */
  #data: Map<S, Item<S>[]> | null = null;
  #pumping = false;
  #queued = 0;
  #lastProgress = 0;
  /** The DATA frame being written, until it is. */
  #current: Item<S> | null = null;

  /**
   * Writes to `connection`, the connection of `owner`; `written` hears each
   * frame handed to the system (one function may serve every outbox).
   */
  constructor(
    connection: FramedConnection,
    owner: O,
    written: (owner: O, bytes: number, from: S | null) => void,
  ) {
    this.#connection = connection;
    this.#owner = owner;
    this.#written = written;
  }

  /** Bytes queued and not yet written. */
  get queued(): number {
    return this.#queued;
  }

  /** How long bytes have waited without any being written, ms (0 when empty). */
  stalledFor(now: number): number {
    return this.#queued > 0 ? now - this.#lastProgress : 0;
  }

  /**
   * Queues a control frame ahead of every queued DATA frame. With a `key`,
   * nothing is queued while a frame of that key still waits (a member
   * sending PINGs faster than it reads gets one PONG, not a growing pile).
   */
  control(bytes: Uint8Array, key?: string): void {
    if (key !== undefined && this.#control?.some((item) => item.key === key)) return;
    this.#push({ bytes, from: null, ...(key === undefined ? {} : { key }) });
  }

  /** Queues a DATA frame from `from`. */
  data(bytes: Uint8Array, from: S): void {
    this.#push({ bytes, from });
  }

  #push(item: Item<S>): void {
    if (this.#connection.isClosed) return;
    if (this.#queued === 0) this.#lastProgress = performance.now();
    this.#queued += item.bytes.length;
    // Nothing queued or being written: this frame goes at once, without a queue made for it.
    if (!this.#pumping) {
      this.#pumping = true;
      this.#write(item, 0);
      return;
    }
    if (item.from === null) (this.#control ??= []).push(item);
    else {
      const data = this.#data ??= new Map();
      const lane = data.get(item.from);
      if (lane) lane.push(item);
      else data.set(item.from, [item]);
    }
  }

  /** The next frame: control first, then the next sender's oldest DATA frame, in turn. */
  #next(): Item<S> | undefined {
    const control = this.#control?.shift();
    if (control) return control;
    if (this.#control) this.#control = null; // Empty: let it go while the connection is quiet.
    const data = this.#data;
    if (!data) return undefined;
    for (const [from, lane] of data) {
      const item = lane.shift()!;
      data.delete(from);
      if (lane.length > 0) data.set(from, lane); // To the back of the turn.
      return item;
    }
    this.#data = null;
    return undefined;
  }

  /**
   * Writes `item` from byte `at` on, one chunk at a time, then what is
   * queued, until nothing is; `#pumping` stays true until then. Each write
   * continues from its settlement: no async function and no loop frame
   * lives per connection between writes.
   */
  #write(item: Item<S>, at: number): void {
    if (at === 0) this.#current = item; // Before the check: a frame not written is refunded by clear().
    if (this.#connection.isClosed) {
      this.#pumping = false;
      return;
    }
    const { bytes } = item;
    const end = Math.min(bytes.length, at + CHUNK);
    const chunk = at === 0 && end === bytes.length ? bytes : bytes.subarray(at, end);
    this.#connection.write(chunk).then(() => this.#wrote(item, end), this.#failed);
  }

  /** `item` is written up to `end`: its next chunk, or the next frame. */
  #wrote(item: Item<S>, end: number): void {
    this.#lastProgress = performance.now();
    if (end < item.bytes.length) return this.#write(item, end);
    if (this.#current !== item) { // Cleared meanwhile: already refunded.
      this.#pumping = false;
      return;
    }
    this.#current = null;
    this.#queued = Math.max(0, this.#queued - item.bytes.length);
    try {
      this.#written(this.#owner, item.bytes.length, item.from);
    } catch {
      return this.#failed(); // As a failed write.
    }
    const next = this.#next();
    if (next) this.#write(next, 0);
    else this.#pumping = false;
  }

  /**
   * A write failed (or `written` threw): nothing more is written on this
   * connection. `#pumping` stays true, so what comes later queues behind the
   * frame that failed, and `clear()` refunds them all once the connection
   * closes: its read loop sees the failure, or the relay's sweep cuts a
   * receiver whose queued bytes stop moving. (Writing on would drop the
   * failed frame from `#current` unrefunded.)
   */
  readonly #failed = (): void => {};

  /** Drops everything queued (the connection closed); `dropped` hears each DATA frame never written. */
  clear(dropped?: (bytes: number, from: S) => void): void {
    const unwritten = [
      ...(this.#current ? [this.#current] : []),
      ...[...(this.#data?.values() ?? [])].flat(),
    ];
    this.#current = null;
    for (const item of unwritten) if (item.from !== null) dropped?.(item.bytes.length, item.from);
    this.#control = null;
    this.#data = null;
    this.#queued = 0;
  }
}
