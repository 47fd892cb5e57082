/**
 * The sending half of a link (docs/PROTOCOL.md, "Batching" and "Chunks:
 * large messages"): small messages leave in batches, one write at a time, so
 * what queues during a write joins the next batch; large messages leave a
 * piece at a time on a second lane, so a small message never waits for a
 * large one. What a waiting message holds counts against the connection's
 * budget until it is written, when `charged`.
 *
 * @module
 */

import { CHUNK_SIZE, CHUNK_THRESHOLD, encodeChunk, PACED_PIECES } from "./chunk.ts";
import type { FramedConnection } from "./connection.ts";
import { CloseCode } from "./frame.ts";
import { batchSize, encodeBatch } from "./message.ts";
import { type Outgoing, type Piece, SendQueue } from "./send_queue.ts";

/**
 * Most messages sealed under one token. Batches of up to 16 keep the crypto
 * cost per message low while letting the peer start on the first batch
 * while the next is sealed: with 64 calls in flight between two processes,
 * 16 gave about 43,000 calls/s against 33,000 for unbounded batches and
 * 27,000 for batches of 4.
 */
const MAX_BATCH = 16;

/** Large messages a link sends at once, a piece of each in turn (docs/PROTOCOL.md, "Chunks"). */
const MAX_LARGE_IN_PROGRESS = 4;

/**
 * A large message asks for acknowledgements, and is paced, when the link
 * has other messages waiting, or wrote some within this many ms, as it is
 * queued (docs/PROTOCOL.md, "Chunks"): pacing is for them. Alone on a link,
 * pieces go unpaced, without the cost of an acknowledgement per piece
 * (sequential direct 1 MiB calls, all paced: p50 15.2-20.7 ms against
 * 13.7-15.3 ms, 3 alternated runs).
 */
const SMALL_TRAFFIC_MS = 100;

/**
 * A paced message whose receiver acknowledges nothing for this long, ms, per
 * paced message in progress to it, goes on unpaced (docs/PROTOCOL.md,
 * "Chunks"): pacing never loses a message, and a receiver that stopped
 * acknowledging costs at most 4 seconds.
 */
const PACE_TIMEOUT = 1000;

/** What the writer needs from its link: envelopes, frame sizes and sealing. */
export interface Sealer {
  /** The encoded envelope of a batch to `to`'s target; with `piece`, of a piece that asks for acknowledgements. */
  envelope(to: Outgoing, piece?: boolean): Uint8Array;
  /** Whether a batch to `to`'s target with `plainSize` bytes of plaintext fits in a frame. */
  fits(to: Outgoing, plainSize: number): boolean;
  /** Seals `plain` as the DATA frame to `to`'s target: at once when the key's engine is synchronous. */
  seal(to: Outgoing, plain: Uint8Array): Uint8Array | Promise<Uint8Array>;
  /** The next message id of this node instance (each large message takes one). */
  nextId(): number;
  /** True when the first message queued is the hello, which pieces must not overtake. */
  hello: boolean;
}

/** The writer of one link. */
export class LinkWriter {
  readonly connection: FramedConnection;
  readonly #sealer: Sealer;
  readonly #queue: SendQueue;
  /** True while `#flush` writes batches. */
  #flushing = false;
  /** True while `#pump` writes pieces. */
  #pumping = false;
  /** Until the hello is written: pieces wait for it. */
  readonly #hello: Promise<void>;
  #helloWritten: () => void = () => {};
  /** Wakes `#pump` while every large message waits for its receiver. */
  #wake: (() => void) | null = null;
  /** When a batch of other messages than acknowledgements was last written (ms). */
  #smallAt = -Infinity;

  /** A writer on `connection`, sealing with `sealer`. */
  constructor(connection: FramedConnection, sealer: Sealer) {
    this.connection = connection;
    this.#sealer = sealer;
    this.#queue = new SendQueue({
      maxBatch: MAX_BATCH,
      chunkSize: CHUNK_SIZE,
      maxActive: MAX_LARGE_IN_PROGRESS,
      batchBase: (first) => batchSize(sealer.envelope(first), [first.record!]),
      fits: (first, plain) => sealer.fits(first, plain),
      pacedPieces: PACED_PIECES,
    });
    this.#hello = sealer.hello
      ? new Promise((resolve) => this.#helloWritten = resolve)
      : Promise.resolve();
    void connection.closed.then(() => this.#wake?.());
  }

  /**
   * `from` acknowledged `n` pieces of large message `id` (docs/PROTOCOL.md,
   * "Chunks"): a paced message waiting for it may go on. See {@linkcode SendQueue.ack}.
   */
  acked(from: string, id: number, n: number): void {
    if (this.#queue.ack(from, id, n, performance.now())) this.#wake?.();
  }

  /** True when nothing is queued or being written. */
  get idle(): boolean {
    return !this.#flushing && !this.#pumping && this.#queue.empty;
  }

  /** Queues `item`: in pieces when its record is above the chunk threshold, else in a batch. */
  enqueue(item: Outgoing): void {
    const record = item.record;
    if (item.charged) this.connection.account?.addQueued(record!.length);
    if (record !== null && record.length > CHUNK_THRESHOLD) {
      const now = performance.now();
      const asks = this.#queue.hasTraffic || now - this.#smallAt <= SMALL_TRAFFIC_MS;
      this.#queue.pushLarge(item, this.#sealer.nextId(), now, asks);
      this.#wake?.();
      if (!this.#pumping) {
        this.#pumping = true;
        void this.#pump();
      }
    } else {
      this.#queue.push(item);
      if (!this.#flushing) {
        this.#flushing = true;
        queueMicrotask(() => this.#flush());
      }
    }
  }

  /**
   * Writes small messages in batches, one write at a time: what queues while a
   * write is in progress joins the next batch ("Batching").
   */
  async #flush(): Promise<void> {
    try {
      for (let batch = this.#queue.takeBatch(); batch; batch = this.#queue.takeBatch()) {
        if (this.connection.isClosed) break;
        const first = batch[0]!;
        const records = first.record === null ? [] : batch.map((item) => item.record!);
        const plain = encodeBatch(this.#sealer.envelope(first), records);
        const frame = this.#sealer.seal(first, plain);
        await this.connection.write(frame instanceof Uint8Array ? frame : await frame);
        if (first.record === null) this.#helloWritten();
        else if (!batch.every((item) => item.ack)) this.#smallAt = performance.now();
        this.#written(batch);
      }
    } catch {
      this.#writeFailed();
    } finally {
      this.#flushing = false;
      this.#helloWritten();
      this.#settle();
    }
  }

  /**
   * Writes large messages a piece at a time ("Chunks: large messages"): one
   * piece is sealed at once, off the event loop (a piece is above the
   * WebCrypto threshold of `fernet.ts`), while the one before it is written;
   * batches go out on `#flush` meanwhile, between pieces. A paced message
   * waits for its receiver's acknowledgements.
   */
  async #pump(): Promise<void> {
    let writing: Promise<void> | null = null;
    try {
      await this.#hello;
      while (!this.connection.isClosed) {
        const piece = this.#queue.takePiece(performance.now());
        if (!piece) {
          if (writing) {
            await writing; // A large message queued meanwhile is taken on the next turn.
            writing = null;
          } else if (this.#queue.hasPiece) await this.#untilAcked();
          else break; // Nothing queued and nothing being written: only now may it stop.
          continue;
        }
        const frame = await this.#sealPiece(piece);
        await writing;
        writing = this.connection.write(frame).then(() => {
          if (piece.last) this.#written([piece.item]);
        });
        writing.catch(() => {}); // Awaited above; a failed seal meanwhile must not leave it unhandled.
      }
    } catch {
      this.#writeFailed();
    } finally {
      this.#pumping = false;
      this.#settle();
    }
  }

  /**
   * Waits until an acknowledgement or a new large message arrives, the
   * connection closes, or a paced message stalls: stalled ones go on unpaced.
   */
  async #untilAcked(): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        const at = this.#queue.stallsAt(PACE_TIMEOUT);
        if (at !== null) timer = setTimeout(resolve, Math.max(0, at - performance.now()) + 1);
      });
    } finally {
      this.#wake = null;
      clearTimeout(timer);
    }
    this.#queue.unpaceStalled(performance.now(), PACE_TIMEOUT);
  }

  /** Seals one piece of a large message as a DATA frame. */
  #sealPiece(piece: Piece): Uint8Array | Promise<Uint8Array> {
    const { item } = piece;
    const envelope = this.#sealer.envelope(item, piece.asks);
    return this.#sealer.seal(
      item,
      encodeChunk(envelope, piece.id, piece.index, piece.last, piece.bytes),
    );
  }

  /** A write failed: the connection is gone; its close reason reaches callers through `closed`. */
  #writeFailed(): void {
    if (!this.connection.isClosed) void this.connection.close(CloseCode.NORMAL, "write failed");
  }

  /** Once the link is closed and both writers stopped, what is left in the queue stops counting. */
  #settle(): void {
    if (this.connection.isClosed && !this.#flushing && !this.#pumping) {
      this.#written(this.#queue.drain());
    }
  }

  /** `items` left the queue (written, or dropped as the link failed): they no longer count. */
  #written(items: Outgoing[]): void {
    const account = this.connection.account;
    if (!account) return;
    let bytes = 0;
    for (const item of items) if (item.charged) bytes += item.record!.length;
    if (bytes > 0) account.addQueued(-bytes);
  }
}
