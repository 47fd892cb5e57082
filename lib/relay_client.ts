/**
 * A node's side of one relay: keeps one registered connection to it,
 * tracks which members of the network are present there, keeps the
 * connection alive, and reconnects with exponential backoff and jitter.
 *
 * @module
 */

import { CloseCode, type Frame, FrameType } from "./frame.ts";
import { Link, type LinkOptions } from "./link.ts";
import {
  decodeMembers,
  decodeRegistered,
  encodeBeat,
  encodeControl,
  type Member,
  RELAY_PROTOCOL_VERSION,
} from "./relay_protocol.ts";
import { parseHostPort } from "./address.ts";
import { delay } from "./delay.ts";
import { FramedConnection } from "./connection.ts";
import type { Stream, Transport } from "./transport.ts";
import { NameTakenError, RelayRefusedError } from "./errors.ts";

/** Default time `start()` waits for a relay's answer to the registration, ms. */
export const DEFAULT_REGISTER_WAIT = 2000;

/**
 * Default reconnection delay for attempt `n` (0-based), ms: exponential from
 * 100 ms to at most 5 s, with full jitter over its upper half.
 */
export function defaultBackoff(attempt: number): number {
  const ceiling = Math.min(5000, 100 * 2 ** Math.min(attempt, 16));
  return ceiling / 2 + Math.random() * ceiling / 2;
}

/**
 * How often a node beats (PING) on a relay link: every keepalive `tick`, but
 * no more often than a third of the relay's silence `timeout` (so a relay
 * keeping nodes for 10 s gets a beat every 3.3 s, not every second). The
 * relay answers each beat; three silent intervals mean the relay is gone.
 * A relay that dies closes its connections, which is noticed at once.
 */
export function keepaliveInterval(tick: number, relayTimeout: number): number {
  return Math.max(tick, Math.floor(relayTimeout / 3));
}

/** Options of {@linkcode RelayClient}. */
export interface RelayClientOptions extends Omit<LinkOptions, "relay" | "onControl" | "expected"> {
  /** The relay, `host:port`. */
  address: string;
  /** Maintained relays are retried forever; learned ones are dropped when they fail. */
  maintained: boolean;
  /** Keepalive tick, ms: a PING each tick; 3 silent ticks mean the relay is gone. */
  keepaliveTick: number;
  /** Time allowed to open the connection, ms. */
  connectTimeout: number;
  /** Opens the connection to the relay. */
  transport: Transport;
  /** Members that joined or left at this relay (all of them leave when it goes down). */
  onMembers: (client: RelayClient, join: Member[], leave: Member[]) => void;
  /** The relay came up (registered) or went down. */
  onStatus: (client: RelayClient, up: boolean, reason: string) => void;
  /** A registered link to the relay closed: what was sent on it will not be answered. */
  onLinkClosed: (client: RelayClient, link: Link, reason: string) => void;
  /** A learned relay failed and gave up. */
  onGiveUp: (client: RelayClient) => void;
  /**
   * Register as a client-only member (`c: 1`): the relay forwards frames
   * addressed to this node but never lists it to other members.
   * @default false
   */
  clientOnly?: boolean;
  /** Delay before reconnection attempt `n`, ms. @default defaultBackoff */
  backoff?: (attempt: number) => number;
}

/** One relay as seen by a node. */
export class RelayClient {
  /** The relay's `host:port`. */
  readonly address: string;
  /** True for a relay from the node's `servers`, false for a learned one. */
  readonly maintained: boolean;
  readonly #options: RelayClientOptions;
  readonly #members = new Map<string, string>();
  readonly #stop = new AbortController();
  #link: Link | null = null;
  #rtt: number | null = null;
  #beatSentAt = 0;
  #running: Promise<void> | null = null;
  #firstResult: Promise<void>;
  #settleFirst!: (error?: Error) => void;

  /** Creates the client; nothing happens before {@linkcode start}. */
  constructor(options: RelayClientOptions) {
    this.address = options.address;
    this.maintained = options.maintained;
    this.#options = options;
    this.#firstResult = new Promise<void>((resolve, reject) => {
      this.#settleFirst = (error) => error ? reject(error) : resolve();
    });
    this.#firstResult.catch(() => {});
  }

  /** The registered link, or null while the relay is down. */
  get link(): Link | null {
    return this.#link;
  }

  /** The last keepalive round trip, ms; null before the first answer. */
  get rtt(): number | null {
    return this.#rtt;
  }

  /** Members present at this relay: name → instance. */
  get members(): ReadonlyMap<string, string> {
    return this.#members;
  }

  /**
   * Starts connecting (and reconnecting) in the background. Resolves once
   * the first registration is answered or `wait` ms have passed; rejects
   * with {@linkcode NameTakenError} when the relay refuses the name.
   */
  start(wait: number = DEFAULT_REGISTER_WAIT): Promise<void> {
    this.#running ??= this.#run();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const waited = new Promise<void>((resolve) => timer = setTimeout(resolve, wait));
    return Promise.race([this.#firstResult, waited]).finally(() => clearTimeout(timer));
  }

  /** Stops for good and closes the connection. Safe to call twice. */
  async close(): Promise<void> {
    this.#stop.abort();
    await this.#link?.close(CloseCode.NORMAL, "node closing");
    await this.#running;
  }

  async #run(): Promise<void> {
    let attempt = 0;
    while (!this.#stop.signal.aborted) {
      const outcome = await this.#session();
      if (outcome.registered) attempt = 0;
      if (this.#stop.signal.aborted) break;
      if (!this.maintained) {
        this.#options.onGiveUp(this);
        break;
      }
      await delay((this.#options.backoff ?? defaultBackoff)(attempt++), this.#stop.signal);
    }
    this.#settleFirst();
  }

  /** One connection: connect, register, serve until it drops. */
  async #session(): Promise<{ registered: boolean }> {
    let stream: Stream;
    try {
      stream = await this.#options.transport.dial(
        parseHostPort(this.address),
        AbortSignal.any([AbortSignal.timeout(this.#options.connectTimeout), this.#stop.signal]),
      );
    } catch {
      return { registered: false };
    }
    let registered = false;
    let lastHeard = Date.now();
    const connection = new FramedConnection(stream, { maxFrameSize: this.#options.maxFrameSize });
    const link: Link = new Link(connection, {
      ...this.#options,
      relay: this.address,
      onBatch: (from, envelope, messages) => {
        lastHeard = Date.now();
        this.#options.onBatch(from, envelope, messages);
      },
      onControl: (frame) => {
        lastHeard = Date.now();
        const relayTimeout = this.#onControl(link, frame);
        if (relayTimeout !== null && !registered) {
          registered = true;
          this.#link = link;
          beats = keepaliveInterval(tick, relayTimeout);
          this.#options.onStatus(this, true, "registered");
          this.#settleFirst();
        }
      },
    });
    const { name, instance, network } = this.#options.self;
    const tick = this.#options.keepaliveTick;
    let beats = tick;
    let lastBeat = Date.now();
    this.#beatSentAt = performance.now(); // The registration's answer gives the first round trip.
    void link.connection.write(
      encodeControl(FrameType.REGISTER, network, name, {
        v: RELAY_PROTOCOL_VERSION,
        i: instance,
        tick,
        ...(this.#options.clientOnly ? { c: 1 } : {}),
      }),
    ).catch(() => {});
    const beat = encodeBeat(FrameType.PING);
    // Checked every tick; beats go out every `beats` ms once registered.
    const keepalive = setInterval(() => {
      const now = Date.now();
      if (now - lastHeard > 3 * beats) {
        void link.close(CloseCode.POLICY, "relay silent for 3 keepalive intervals");
      } else if (registered && now - lastBeat >= beats - tick / 2) {
        lastBeat = now;
        this.#beatSentAt = performance.now();
        void link.connection.write(beat).catch(() => {});
      }
    }, tick);
    const stop = () => void link.close(CloseCode.NORMAL, "node closing");
    this.#stop.signal.addEventListener("abort", stop, { once: true });
    const info = await link.closed;
    clearInterval(keepalive);
    this.#stop.signal.removeEventListener("abort", stop);
    this.#link = null;
    if (registered) this.#options.onLinkClosed(this, link, info.reason);
    const gone: Member[] = [...this.#members];
    this.#members.clear();
    if (gone.length > 0) this.#options.onMembers(this, [], gone);
    if (registered) this.#options.onStatus(this, false, info.reason);
    else if (info.code === CloseCode.NAME_TAKEN) {
      this.#settleFirst(new NameTakenError(name, network, `refused by relay ${this.address}`));
    } else if (info.code === CloseCode.NETWORK_REFUSED) {
      this.#settleFirst(new RelayRefusedError(this.address, info.reason));
    }
    return { registered };
  }

  /** Handles a control frame; the relay's timeout when it was the registration answer. */
  #onControl(link: Link, frame: Frame): number | null {
    switch (frame.type) {
      case FrameType.REGISTERED: {
        const body = decodeRegistered(frame);
        this.#measured();
        link.limitFrameSize(body.maxFrameSize);
        this.#apply(body.members, []);
        return body.timeout;
      }
      case FrameType.MEMBERS: {
        const body = decodeMembers(frame);
        this.#apply(body.join, body.leave);
        return null;
      }
      case FrameType.PING:
        void link.connection.write(encodeBeat(FrameType.PONG)).catch(() => {});
        return null;
      case FrameType.PONG:
        this.#measured();
        return null;
      default:
        void link.close(CloseCode.MALFORMED, `unexpected frame type ${frame.type} from a relay`);
        return null;
    }
  }

  /** An answer to the last beat (or registration) came: record the round trip. */
  #measured(): void {
    if (this.#beatSentAt > 0) this.#rtt = performance.now() - this.#beatSentAt;
    this.#beatSentAt = 0;
  }

  #apply(join: Member[], leave: Member[]): void {
    const self = this.#options.self.name;
    const left = leave.filter(([name, instance]) => this.#members.get(name) === instance);
    for (const [name] of left) this.#members.delete(name);
    const joined = join.filter(([name]) => name !== self);
    for (const [name, instance] of joined) this.#members.set(name, instance);
    if (left.length > 0 || joined.length > 0) this.#options.onMembers(this, joined, left);
  }
}
