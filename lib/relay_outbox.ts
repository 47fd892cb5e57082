/**
 * What a relay has queued for one connection: control frames (MEMBERS,
 * PONG, DRAIN) in a lane of their own that goes ahead of the DATA queued
 * for it, so a busy link never delays a keepalive or a membership change.
 * One writer drains both lanes; each DATA frame remembers its sender, so
 * the relay can charge queued bytes to whoever caused them.
 *
 * @module
 */

import type { FramedConnection } from "./connection.ts";

interface Item<S> {
  bytes: Uint8Array;
  from: S | null;
}

/** The outgoing queue of one relay connection. */
export class Outbox<S> {
  readonly #connection: FramedConnection;
  readonly #written: (bytes: number, from: S | null) => void;
  #control: Item<S>[] = [];
  #data: Item<S>[] = [];
  #pumping = false;
  #queued = 0;
  #lastProgress = 0;

  /** Writes to `connection`; `written` hears each frame handed to the system. */
  constructor(connection: FramedConnection, written: (bytes: number, from: S | null) => void) {
    this.#connection = connection;
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

  /** Queues a control frame ahead of every queued DATA frame. */
  control(bytes: Uint8Array): void {
    this.#push(this.#control, { bytes, from: null });
  }

  /** Queues a DATA frame from `from`. */
  data(bytes: Uint8Array, from: S): void {
    this.#push(this.#data, { bytes, from });
  }

  #push(lane: Item<S>[], item: Item<S>): void {
    if (this.#connection.isClosed) return;
    if (this.#queued === 0) this.#lastProgress = performance.now();
    this.#queued += item.bytes.length;
    lane.push(item);
    if (!this.#pumping) void this.#pump();
  }

  async #pump(): Promise<void> {
    this.#pumping = true;
    try {
      while (!this.#connection.isClosed) {
        const item = this.#control.shift() ?? this.#data.shift();
        if (!item) break;
        await this.#connection.write(item.bytes);
        this.#queued -= item.bytes.length;
        this.#lastProgress = performance.now();
        this.#written(item.bytes.length, item.from);
      }
    } catch {
      // The connection failed; its close handler forgets what was queued.
    } finally {
      this.#pumping = false;
    }
  }

  /** Drops everything queued (the connection closed). */
  clear(): void {
    this.#control = [];
    this.#data = [];
    this.#queued = 0;
  }
}
