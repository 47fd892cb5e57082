/**
 * A relay's per-sender flow control (docs/PROTOCOL.md, "Blame the sender"):
 * every frame a connection sends takes a token from its frame bucket (and a
 * `*` frame one from its fan-out bucket), and every byte it queues for a
 * receiver counts against its share towards that receiver. A sender over a
 * rate, over its share, or with the most queued for a receiver whose whole
 * queue is full is slowed: the relay reads it no further until its tokens
 * are back or what it queued drains, so TCP pushes back on the sender
 * alone. One that stays over its rate for a silence timeout is cut. The
 * relay keeps the sockets; this keeps the buckets, the shares and the holds.
 *
 * @module
 */

import { delay } from "./delay.ts";
import { SenderShares, TokenBucket } from "./relay_limits.ts";
import type { RelayCounters } from "./relay_metrics.ts";
import type { ResolvedRelayOptions } from "./relay_options.ts";

/**
 * Shortest break, ms, that ends a sender's flood: it must go this long (or
 * two token intervals, when longer) without a frame finding its bucket
 * empty. Tokens are back right after every hold, so a take that succeeds
 * then says nothing.
 */
const MIN_FLOOD_BREAK = 10;

/** The relay options flow control applies. */
export type FlowOptions = Pick<
  ResolvedRelayOptions,
  | "senderFrameRate"
  | "senderFrameBurst"
  | "fanoutRate"
  | "fanoutBurst"
  | "senderShare"
  | "maxBuffered"
  | "timeout"
>;

/** What flow control reads and touches of a relay connection. */
export interface FlowClient {
  /** Its flow state, from {@linkcode FlowControl.open}. */
  readonly flow: SenderFlow;
  /** Its connection: only whether it is closed is read. */
  readonly connection: { readonly isClosed: boolean };
  /** What is queued for it: only the bytes not yet written are read. */
  readonly outbox: { readonly queued: number };
  /** When it was last heard from (`Date.now()`); set again when a hold on it ends. */
  lastSeen: number;
}

/**
 * One connection's flow state: its buckets and holds as a sender, and the
 * senders it holds back as a receiver. {@linkcode FlowControl} changes it;
 * the relay reads it, and aborts it when it cuts or forgets the connection.
 */
export class SenderFlow {
  /** Frames it may send. */
  readonly frames: TokenBucket;
  /** `*` frames it may send: made full at its first one (most members never send one). */
  fanout: TokenBucket | null = null;
  /** Since when it has been over its frame rate without a break, ms (0: it is not). */
  floodingSince = 0;
  /** When a frame of it last found its bucket empty (`performance.now()`). */
  overRateAt = 0;
  /** Resolves the wait of a sender slowed for its share. */
  resume: (() => void) | null = null;
  /** True while the relay itself holds its reads (slowed): its silence is not its own. */
  held = false;
  // The sets and the controller below are made when first needed: most members never wait.
  #overShare: Set<SenderFlow> | null = null;
  #holding: Set<SenderFlow> | null = null;
  /** Aborts its waits when it closes; `closed` stands for it until a wait needs a signal. */
  #gone: AbortController | null = null;
  #closed = false;

  /** Starts with a full `frames` bucket and no holds. */
  constructor(frames: TokenBucket) {
    this.frames = frames;
  }

  /** Receivers it has too much queued for: it is not read until this empties. */
  get overShare(): Set<SenderFlow> {
    return this.#overShare ??= new Set();
  }

  /** As a receiver: the senders held back until what is queued for it drains. */
  get holding(): Set<SenderFlow> {
    return this.#holding ??= new Set();
  }

  /** True while it has too much queued for some receiver: its next frame waits. */
  get overShared(): boolean {
    return (this.#overShare?.size ?? 0) > 0;
  }

  /** True while it holds back some sender. */
  get holds(): boolean {
    return (this.#holding?.size ?? 0) > 0;
  }

  /** Aborted once its connection is cut or closed. */
  get signal(): AbortSignal {
    if (!this.#gone) {
      this.#gone = new AbortController();
      if (this.#closed) this.#gone.abort();
    }
    return this.#gone.signal;
  }

  /** Ends every wait that holds its reads (its connection is cut or closed). */
  abort(): void {
    this.#closed = true;
    this.#gone?.abort();
  }
}

/**
 * The flow control of one relay: the per-sender shares of every receiver's
 * queue and the throttle and flood counters. `onFlood` hears of a sender
 * that stayed over its rate for a silence timeout; the relay cuts it.
 */
export class FlowControl<C extends FlowClient> {
  readonly #options: FlowOptions;
  readonly #counters: RelayCounters;
  readonly #onFlood: (client: C) => void;
  readonly #shares: SenderShares<SenderFlow>;

  /** Applies `options` and bumps `counters.throttles` and `counters.disconnects.flood`. */
  constructor(options: FlowOptions, counters: RelayCounters, onFlood: (client: C) => void) {
    this.#options = options;
    this.#counters = counters;
    this.#onFlood = onFlood;
    this.#shares = new SenderShares(options.senderShare);
  }

  /** The flow state of a new connection: full buckets, no holds. */
  open(): SenderFlow {
    const o = this.#options;
    const now = performance.now();
    return new SenderFlow(new TokenBucket(o.senderFrameRate, o.senderFrameBurst, now));
  }

  /**
   * Takes the tokens of a frame `client` sent (`fanout`: one to `*`); the
   * wait before they are there, ms. 0: go on, and it is not flooding.
   */
  take(client: C, fanout: boolean): number {
    const flow = client.flow;
    const wait = this.#charge(flow, fanout);
    // A flood ends only after a break: right after a hold, tokens are back for any sender.
    if (wait === 0 && flow.floodingSince !== 0) {
      const recovery = Math.max(MIN_FLOOD_BREAK, 2000 / this.#options.senderFrameRate);
      if (performance.now() - flow.overRateAt > recovery) flow.floodingSince = 0;
    }
    return wait;
  }

  /**
   * Charges a WebSocket ping of `client` as a frame: the wait, ms, before
   * it is answered and the connection read on (0: now). A ping over the
   * rate holds the connection's reads as a frame over the rate does; ask
   * again with `retry` once the wait is over (a retry never ends the flood).
   * A connection that stays over its rate for a silence timeout goes to
   * `onFlood`; the answer is then -1, as it is for a closed connection.
   */
  ping(client: C, retry = false): number {
    if (client.connection.isClosed) return -1;
    const wait = retry ? this.#charge(client.flow, false) : this.take(client, false);
    if (wait === 0) return 0;
    return this.#overRate(client) ? wait : -1;
  }

  /**
   * Notes that `client` is over its rate: the first time starts its flood
   * (a throttle), and past a silence timeout it goes to `onFlood`. False
   * when it was cut.
   */
  #overRate(client: C): boolean {
    const flow = client.flow;
    const now = performance.now();
    flow.overRateAt = now;
    if (flow.floodingSince === 0) {
      flow.floodingSince = now;
      this.#counters.throttles++;
    } else if (now - flow.floodingSince > this.#options.timeout) {
      this.#counters.disconnects.flood++;
      this.#onFlood(client);
      return false;
    }
    return true;
  }

  /** Takes a frame's tokens; the wait before they are there, ms (0: go on). */
  #charge(flow: SenderFlow, fanout: boolean): number {
    const now = performance.now();
    const wait = flow.frames.take(1, now);
    if (wait > 0 || !fanout) return wait;
    const o = this.#options;
    flow.fanout ??= new TokenBucket(o.fanoutRate, o.fanoutBurst, now);
    return flow.fanout.take(1, now); // A wait here keeps the frame token spent: it was read.
  }

  /**
   * Slows a sender over its rate (`wait` ms from {@linkcode take}): its
   * connection is not read until its tokens are back, then `go` handles the
   * frame unless the connection closed meanwhile. One that stays over its
   * rate for a silence timeout goes to `onFlood` instead.
   */
  async slowThen(
    client: C,
    wait: number,
    fanout: boolean,
    go: () => void | Promise<void>,
  ): Promise<void> {
    if (!this.#overRate(client)) return;
    const flow = client.flow;
    flow.held = true;
    await delay(wait, flow.signal);
    while (!client.connection.isClosed) {
      const again = this.#charge(flow, fanout);
      if (again === 0) break;
      await delay(again, flow.signal);
    }
    this.#unhold(client);
    if (client.connection.isClosed) return;
    await go();
  }

  /**
   * Holds a sender's reads for `ms`: another relay of the cluster dropped
   * its frames because their receiver's queue was full.
   */
  async holdFor(client: C, ms: number): Promise<void> {
    this.#counters.throttles++;
    client.flow.held = true;
    await delay(ms, client.flow.signal);
    this.#unhold(client);
  }

  /** Holds a sender's reads until what it queued for each receiver drains below its share. */
  untilWithinShare(client: C): Promise<void> {
    const flow = client.flow;
    this.#counters.throttles++;
    flow.held = true;
    return new Promise<void>((resolve) => {
      const gone = () => flow.resume?.();
      flow.resume = () => {
        flow.resume = null;
        flow.signal.removeEventListener("abort", gone);
        this.#unhold(client);
        resolve();
      };
      if (flow.signal.aborted) flow.resume();
      else flow.signal.addEventListener("abort", gone, { once: true });
    });
  }

  /** The relay reads `client` again: its silence counts from now. */
  #unhold(client: C): void {
    client.flow.held = false;
    client.lastSeen = Date.now();
  }

  /**
   * Charges `bytes` just queued for `to` to `from`: a sender over its share
   * towards `to` (or filling `to`'s whole buffer) is slowed after this
   * frame, never `to`.
   */
  queued(to: C, from: C, bytes: number): void {
    const within = this.#shares.add(to.flow, from.flow, bytes);
    if (!within) this.#hold(from.flow, to.flow);
    else if (to.outbox.queued > this.#options.maxBuffered) {
      // The receiver's buffer is full: slow whoever queued most for it, not whoever came last.
      const top = this.#shares.largest(to.flow);
      if (top) this.#hold(top, to.flow);
    }
  }

  /** `from` is read no further (from its next frame on) until what it queued for `to` drains. */
  #hold(from: SenderFlow, to: SenderFlow): void {
    from.overShare.add(to);
    to.holding.add(from);
  }

  /**
   * A frame reached `to`'s socket: each sender held back for `to` goes on
   * once its bytes towards `to` and `to`'s whole queue are below half their
   * limits.
   */
  written(to: C, bytes: number, from: C | null): void {
    const flow = to.flow;
    if (from) this.#shares.done(flow, from.flow, bytes);
    if (!flow.holds || to.outbox.queued > this.#options.maxBuffered / 2) return;
    for (const sender of flow.holding) {
      if (this.#shares.queuedBy(flow, sender) > this.#shares.share / 2) continue;
      flow.holding.delete(sender);
      this.#release(sender, flow);
    }
  }

  /** `to` no longer holds `from` back. */
  #release(from: SenderFlow, to: SenderFlow): void {
    if (from.overShare.delete(to) && !from.overShared) from.resume?.();
  }

  /**
   * Forgets a closed connection: the senders it held back go on, it holds
   * no receiver's queue any more, and its shares are dropped. Abort its
   * flow ({@linkcode SenderFlow.abort}) first.
   */
  forget(client: C): void {
    const flow = client.flow;
    if (flow.holds) {
      for (const sender of flow.holding) this.#release(sender, flow);
      flow.holding.clear();
    }
    if (flow.overShared) { for (const receiver of flow.overShare) receiver.holding.delete(flow); }
    this.#shares.forget(flow);
  }
}
