/**
 * What a link writes next (docs/PROTOCOL.md, "Batching" and "Chunks: large
 * messages"). Sans-IO: small messages wait in order and leave in batches;
 * large ones leave a piece at a time, a few in turn. The link takes batches
 * and pieces on two lanes, so a 100 B call never waits for a 16 MiB one.
 *
 * @module
 */

/** A message waiting on a link to be sealed. */
export interface Outgoing {
  target: string;
  targetInstance: string | undefined;
  /** Null for the hello: a batch with no message. */
  record: Uint8Array | null;
  /** Counted against the node's budget until written. */
  charged: boolean;
  /** An acknowledgement of pieces (docs/PROTOCOL.md, "Chunks"): not traffic that pieces are paced for. */
  ack?: boolean;
}

/** One piece of a large message, ready to seal. */
export interface Piece {
  item: Outgoing;
  /** The chunked message's id. */
  id: number;
  index: number;
  last: boolean;
  bytes: Uint8Array;
  /** True when its message asks its receiver to acknowledge pieces. */
  asks: boolean;
}

/** How a {@linkcode SendQueue} cuts batches and pieces. */
export interface SendQueueOptions {
  /** Most messages in one batch. */
  maxBatch: number;
  /** Bytes of a record per piece. */
  chunkSize: number;
  /** Most large messages in progress at once; the rest wait in order. */
  maxActive: number;
  /** Plaintext size of a batch holding only `first`. */
  batchBase: (first: Outgoing) => number;
  /** Whether a batch to `first`'s target of `plainSize` bytes of plaintext fits in a frame. */
  fits: (first: Outgoing, plainSize: number) => boolean;
  /** Most pieces of a paced message taken and not acknowledged. @default {Infinity} */
  pacedPieces?: number;
}

/** Most targets a queue remembers as acknowledging; past it, it forgets them all and learns again. */
const MAX_ACKING = 1024;

/** Messages that asked and whose pieces were all taken, remembered for their late acknowledgements. */
const MAX_FINISHED = 16;

interface Large {
  item: Outgoing;
  id: number;
  /** Pieces taken. */
  next: number;
  /** True when its pieces ask for acknowledgements. */
  asks: boolean;
  /** Pieces the receiver acknowledged. */
  acked: number;
  /** True once its target acknowledges: at most `pacedPieces` unacknowledged pieces. */
  paced: boolean;
  /** When a piece of it was last taken or acknowledged (ms, as given). */
  heard: number;
}

/**
 * The queue of one link's writer.
 *
 * @example Small messages leave in batches; large ones a piece at a time, in turn
 * ```ts
 * import assert from "node:assert/strict";
 * import { SendQueue } from "./send_queue.ts";
 *
 * const queue = new SendQueue({
 *   maxBatch: 16,
 *   chunkSize: 4,
 *   maxActive: 4,
 *   batchBase: (first) => first.record!.length,
 *   fits: () => true,
 * });
 * const message = (bytes: number) => ({
 *   target: "bob",
 *   targetInstance: undefined,
 *   record: new Uint8Array(bytes),
 *   charged: false,
 * });
 * queue.pushLarge(message(6), 7);
 * queue.push(message(1));
 * queue.push(message(1));
 * assert.equal(queue.takeBatch()?.length, 2);
 * const pieces = [queue.takePiece(), queue.takePiece()];
 * assert.deepEqual(pieces.map((p) => [p?.index, p?.last]), [[0, false], [1, true]]);
 * assert.equal(queue.takePiece(), null);
 * assert.ok(queue.empty);
 * ```
 */
export class SendQueue {
  readonly #options: SendQueueOptions;
  #small: Outgoing[] = [];
  #active: Large[] = [];
  #waiting: Large[] = [];
  /** Targets that acknowledged a message: their next ones are paced from the first piece. */
  readonly #acking = new Set<string>();
  /** The last messages on the link that asked and left whole: id, target, pieces. */
  readonly #finished = new Map<number, { target: string; pieces: number }>();

  /** An empty queue cutting batches and pieces by `options`. */
  constructor(options: SendQueueOptions) {
    this.#options = options;
  }

  /** True when nothing waits. */
  get empty(): boolean {
    return this.#small.length === 0 && this.#active.length === 0;
  }

  /** Queues a message that leaves in a batch. */
  push(item: Outgoing): void {
    this.#small.push(item);
  }

  /**
   * Queues a message that leaves in pieces, under chunked-message id `id`, at
   * time `now` (ms); with `asks`, its pieces ask for acknowledgements, and it
   * is paced once they come (from the first piece if its target acknowledged before).
   */
  pushLarge(item: Outgoing, id: number, now = 0, asks = false): void {
    const paced = asks && this.#acking.has(item.target);
    const large = { item, id, next: 0, asks, acked: 0, paced, heard: now };
    if (this.#active.length < this.#options.maxActive) this.#active.push(large);
    else this.#waiting.push(large);
  }

  /**
   * `from` acknowledged `n` pieces of message `id` at time `now` (ms): the
   * message is paced from now on, and `from`'s later ones that ask are paced
   * from their first piece (also after a late acknowledgement, of one of the
   * last 16 messages on the link that asked, whose pieces were all taken).
   * Returns true when it counted for a message in progress (to `from`, that
   * asked, and no more pieces than were taken); anything else is ignored.
   */
  ack(from: string, id: number, n: number, now = 0): boolean {
    const large = this.#active.find((x) => x.id === id);
    if (!large) {
      const finished = this.#finished.get(id);
      if (finished?.target === from && n < finished.pieces) this.#learn(from);
      return false;
    }
    if (!large.asks || large.item.target !== from || n > large.next || n <= large.acked) {
      return false;
    }
    large.acked = n;
    large.paced = true;
    large.heard = now;
    this.#learn(from);
    return true;
  }

  /**
   * Paced messages that have waited for their receiver past their stall time
   * (see {@linkcode stallsAt}) at time `now` go on unpaced, as do the
   * messages to the same target still waiting their turn that were paced
   * before any acknowledgement, and their targets are no longer taken to
   * acknowledge (a receiver that stopped, or an older one). Returns how many
   * in progress went on unpaced.
   */
  unpaceStalled(now: number, timeout: number): number {
    let count = 0;
    for (const x of this.#active) {
      if (!this.#blocked(x) || now <= this.#stallAt(x, timeout)) continue;
      x.paced = false;
      this.#acking.delete(x.item.target);
      for (const w of this.#waiting) if (w.item.target === x.item.target) w.paced = false;
      count++;
    }
    return count;
  }

  /**
   * When the first paced message that waits for its receiver stalls (ms, as
   * given), or null: `timeout` ms after a piece of it was last taken or
   * acknowledged, times the paced messages in progress to its target (a
   * receiver acknowledges them in turn).
   */
  stallsAt(timeout: number): number | null {
    let at: number | null = null;
    for (const x of this.#active) {
      if (!this.#blocked(x)) continue;
      const stall = this.#stallAt(x, timeout);
      if (at === null || stall < at) at = stall;
    }
    return at;
  }

  #stallAt(large: Large, timeout: number): number {
    let paced = 0;
    for (const x of this.#active) if (x.paced && x.item.target === large.item.target) paced++;
    return large.heard + timeout * paced;
  }

  /** True when a message other than an acknowledgement (or the hello) waits to leave in a batch. */
  get hasTraffic(): boolean {
    return this.#small.some((x) => x.record !== null && !x.ack);
  }

  /** True when a small message waits. */
  get hasBatch(): boolean {
    return this.#small.length > 0;
  }

  /** True when a large message has pieces left (perhaps all waiting for their receivers). */
  get hasPiece(): boolean {
    return this.#active.length > 0;
  }

  /** Takes the next batch: the longest run of small messages for one target that fits a frame. */
  takeBatch(): Outgoing[] | null {
    return this.#small.length > 0 ? this.#takeBatch() : null;
  }

  /**
   * Takes the next piece at time `now` (ms); large messages take turns, a
   * piece each. While every message in progress waits for its receiver, the
   * first waiting message whose target has fewer than `maxActive` in
   * progress starts: slow receivers hold up only their own messages. Null
   * when none is left, or all wait.
   */
  takePiece(now = 0): Piece | null {
    let at = this.#active.findIndex((x) => !this.#blocked(x));
    if (at < 0) at = this.#startWaiting();
    return at < 0 ? null : this.#takePiece(at, now);
  }

  /** Empties the queue, returning every message not taken yet (the link failed). */
  drain(): Outgoing[] {
    const left = [...this.#small, ...this.#active, ...this.#waiting].map((x) =>
      "item" in x ? x.item : x
    );
    this.#small = [];
    this.#active = [];
    this.#waiting = [];
    return left;
  }

  /** True when `large` is paced and as many of its pieces as allowed are unacknowledged. */
  #blocked(large: Large): boolean {
    return large.paced && large.next - large.acked >= (this.#options.pacedPieces ?? Infinity);
  }

  /** Starts the first waiting message that may start beside blocked ones; its index, or -1. */
  #startWaiting(): number {
    const { maxActive } = this.#options;
    const at = this.#waiting.findIndex((w) =>
      this.#active.filter((x) => x.item.target === w.item.target).length < maxActive
    );
    if (at < 0) return -1;
    this.#active.push(this.#waiting.splice(at, 1)[0]!);
    return this.#active.length - 1;
  }

  /** Remembers that `from` acknowledges. */
  #learn(from: string): void {
    if (this.#acking.size >= MAX_ACKING) this.#acking.clear();
    this.#acking.add(from);
  }

  #takePiece(at: number, now: number): Piece {
    const large = this.#active.splice(at, 1)[0]!;
    large.heard = now;
    const record = large.item.record!;
    const start = large.next * this.#options.chunkSize;
    const end = Math.min(start + this.#options.chunkSize, record.length);
    const last = end === record.length;
    const index = large.next++;
    if (!last) this.#active.push(large);
    else {
      if (large.asks) this.#finish(large);
      if (this.#waiting.length > 0 && this.#active.length < this.#options.maxActive) {
        this.#active.push(this.#waiting.shift()!);
      }
    }
    const bytes = record.subarray(start, end);
    return { item: large.item, id: large.id, index, last, bytes, asks: large.asks };
  }

  /** Remembers a message that asked and left whole, for its late acknowledgements. */
  #finish(large: Large): void {
    this.#finished.set(large.id, { target: large.item.target, pieces: large.next });
    if (this.#finished.size > MAX_FINISHED) {
      this.#finished.delete(this.#finished.keys().next().value!);
    }
  }

  #takeBatch(): Outgoing[] {
    const first = this.#small[0]!;
    if (first.record === null) return this.#small.splice(0, 1); // The hello goes alone.
    let plain = this.#options.batchBase(first);
    let count = 1;
    while (count < this.#small.length && count < this.#options.maxBatch) {
      const next = this.#small[count]!;
      if (next.target !== first.target || next.targetInstance !== first.targetInstance) break;
      if (next.record === null) break;
      plain += 4 + next.record.length;
      if (!this.#options.fits(first, plain)) break;
      count++;
    }
    return this.#small.splice(0, count);
  }
}
