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
}

/** One piece of a large message, ready to seal. */
export interface Piece {
  item: Outgoing;
  /** The chunked message's id. */
  id: number;
  index: number;
  last: boolean;
  bytes: Uint8Array;
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
}

interface Large {
  item: Outgoing;
  id: number;
  next: number;
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

  /** Queues a message that leaves in pieces, under chunked-message id `id`. */
  pushLarge(item: Outgoing, id: number): void {
    const large = { item, id, next: 0 };
    if (this.#active.length < this.#options.maxActive) this.#active.push(large);
    else this.#waiting.push(large);
  }

  /** True when a small message waits. */
  get hasBatch(): boolean {
    return this.#small.length > 0;
  }

  /** True when a large message has pieces left. */
  get hasPiece(): boolean {
    return this.#active.length > 0;
  }

  /** Takes the next batch: the longest run of small messages for one target that fits a frame. */
  takeBatch(): Outgoing[] | null {
    return this.#small.length > 0 ? this.#takeBatch() : null;
  }

  /** Takes the next piece; large messages take turns, a piece each. */
  takePiece(): Piece | null {
    return this.#active.length > 0 ? this.#takePiece() : null;
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

  #takePiece(): Piece {
    const large = this.#active.shift()!;
    const record = large.item.record!;
    const start = large.next * this.#options.chunkSize;
    const end = Math.min(start + this.#options.chunkSize, record.length);
    const last = end === record.length;
    const index = large.next++;
    if (!last) this.#active.push(large);
    else if (this.#waiting.length > 0) this.#active.push(this.#waiting.shift()!);
    const bytes = record.subarray(start, end);
    return { item: large.item, id: large.id, index, last, bytes };
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
