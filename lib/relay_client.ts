/**
 * A node's side of one relay: keeps one registered connection to it,
 * tracks which members of the network are present there, keeps the
 * connection alive, probes it when it falls silent while calls wait on it
 * (a relay whose host vanished without a FIN), and reconnects with
 * exponential backoff and jitter.
 *
 * @module
 */

import type { BufferBudget } from "./buffer_budget.ts";
import { CloseCode, type Frame, FrameType, PROTOCOL_VERSION } from "./frame.ts";
import { Link, type LinkOptions, type WireKey } from "./link.ts";
import {
  decodeChallenge,
  decodeDrain,
  decodeMembers,
  decodeRegistered,
  encodeBeat,
  encodeControl,
  type Leaving,
  type Member as Listed,
} from "./relay_protocol.ts";
import { signRegistration } from "./admission.ts";
import type { Credentials } from "./credentials.ts";
import { fromBase64Url, textDecoder } from "./encoding.ts";
import { parseRelayAddress } from "./address.ts";
import { tlsDialError } from "./tls_dial.ts";
import { delay } from "./delay.ts";
import { type CloseInfo, FramedConnection } from "./connection.ts";
import type { Stream, Transport } from "./transport.ts";
import { NameTakenError, ProtocolVersionError, RelayRefusedError } from "./errors.ts";
import { silenceLimit, type SilenceStep, SilenceWatch } from "./silence_watch.ts";

/** A member as a node knows it: `[name, instance]`. */
export type Member = [name: string, instance: string];

/** Why a relay did not take this node: its close code (null: unreachable) and reason. */
export interface Refusal {
  /** The relay's GOAWAY code (see `CloseCode`), or null when it could not be reached. */
  code: number | null;
  /** The relay's reason, or why it could not be reached. */
  reason: string;
  /**
   * The typed error, when there is one: `NameTakenError`,
   * `ProtocolVersionError` (the relay speaks another version),
   * `RelayTlsError`, or `RelayRefusedError` for other refusals.
   */
  error?: Error;
}

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
 * A relay that dies closes its connections, which is noticed at once; one
 * that vanishes silently while calls wait on the link is found by a probe
 * within about 2 × {@linkcode silenceLimit} (docs/PROTOCOL.md, "Keepalive").
 */
export function keepaliveInterval(tick: number, relayTimeout: number): number {
  return Math.max(tick, Math.floor(relayTimeout / 3));
}

/**
 * Bytes written since the relay was last heard above which an unanswered
 * probe proves nothing: the PING may wait behind them on a slow uplink, or
 * behind the relay's flow control.
 */
const PROBE_BACKLOG = 64 * 1024;

/** Options of {@linkcode RelayClient}. */
export interface RelayClientOptions
  extends Omit<LinkOptions, "relay" | "onControl" | "expected" | "sealWith"> {
  /** The relay, `host:port` or `tls://host:port`. */
  address: string;
  /** What routes name it by. @default address */
  id?: string;
  /** The key this client registers and seals under. */
  sealWith: WireKey;
  /** The node's budget for buffered bytes: what the relay sends counts against it. */
  budget?: BufferBudget;
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
   * How many calls sent on `link` wait for their answers. While some do,
   * a link silent for {@linkcode silenceLimit} ms is probed, and closed
   * when the probe goes unanswered as long (docs/PROTOCOL.md, "Keepalive").
   * @default none: links are watched by keepalive only
   */
  waiting?: (link: Link) => number;
  /** This start's proofs: network identity, instance key, member card. */
  credentials: () => Credentials;
  /**
   * The relay refused the registration, or could not be reached; once per
   * failure streak (a registration starts a new one).
   */
  onRefused?: (client: RelayClient, refusal: Refusal) => void;
  /** The relay announced it is going away within `ms`. */
  onDrain?: (client: RelayClient, ms: number) => void;
  /**
   * Register as a client-only member (`c: 1`): the relay forwards frames
   * addressed to this node but never lists it to other members.
   * @default false
   */
  clientOnly?: boolean;
  /** Delay before reconnection attempt `n`, ms. @default defaultBackoff */
  backoff?: (attempt: number) => number;
  /**
   * A dial failed in a way retrying alone will not fix: so far, a TLS
   * failure (`RelayTlsError`: untrusted certificate, wrong host,
   * no TLS on that port). Called on every failed attempt.
   */
  onDialError?: (client: RelayClient, error: Error) => void;
}

/** A relay link that tells its client when a call (not an answer) goes out on it. */
class RelayLink extends Link {
  onCall: () => void = () => {};

  override send(
    target: string,
    targetInstance: string | undefined,
    record: Uint8Array,
    answer = false,
  ): void {
    super.send(target, targetInstance, record, answer);
    if (!answer) this.onCall();
  }
}

/** One relay as seen by a node. */
export class RelayClient {
  /** The relay's address, `host:port` or `tls://host:port`. */
  readonly address: string;
  /**
   * What routes name this relay by: its address, with `#previous` added
   * for the registration under the previous network key while it is
   * rotated.
   */
  readonly id: string;
  /** True for a relay from the node's `servers`, false for a learned one. */
  readonly maintained: boolean;
  readonly #options: RelayClientOptions;
  readonly #members = new Map<string, string>();
  /** Pseudonym → name, for the members listed here. */
  readonly #names = new Map<string, string>();
  /** Membership changes, applied one after another (cards open asynchronously). */
  #membership: Promise<void> = Promise.resolve();
  #draining = false;
  #clustered = false;
  #refused = false;
  readonly #stop = new AbortController();
  /** Aborted by `retryNow()`: ends the wait before the next attempt. */
  #retry = new AbortController();
  #link: Link | null = null;
  #rtt: number | null = null;
  #beatSentAt = 0;
  #running: Promise<void> | null = null;
  #firstResult: Promise<void>;
  #settleFirst!: (error?: Error) => void;

  /** Creates the client; nothing happens before {@linkcode start}. */
  constructor(options: RelayClientOptions) {
    this.address = options.address;
    this.id = options.id ?? options.address;
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

  /** True when the relay said it is one of a cluster (its REGISTERED had `cluster: 1`). */
  get clustered(): boolean {
    return this.#clustered;
  }

  /** True once the relay announced it is going away: new calls go elsewhere. */
  get draining(): boolean {
    return this.#draining;
  }

  /** The link for new calls: registered and not draining. */
  get usable(): Link | null {
    return this.#draining ? null : this.#link;
  }

  /** The last keepalive round trip, ms; null before the first answer. */
  get rtt(): number | null {
    return this.#rtt;
  }

  /** The key this client registers and seals under. */
  get #key(): WireKey {
    return this.#options.sealWith;
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

  /**
   * Cuts a wait between attempts short: the next connection attempt starts
   * at once (the network came back, a sleeping tab woke). No effect while
   * connected.
   */
  retryNow(): void {
    this.#retry.abort();
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
      if (this.#retry.signal.aborted) this.#retry = new AbortController();
      const wake = AbortSignal.any([this.#stop.signal, this.#retry.signal]);
      await delay((this.#options.backoff ?? defaultBackoff)(attempt++), wake);
    }
    this.#settleFirst();
  }

  /** One connection: connect, register, serve until it drops. */
  async #session(): Promise<{ registered: boolean }> {
    let stream: Stream;
    try {
      const { hostname, port } = parseRelayAddress(this.address);
      stream = await this.#options.transport.dial(
        { hostname, port },
        AbortSignal.any([AbortSignal.timeout(this.#options.connectTimeout), this.#stop.signal]),
      );
    } catch (error) {
      const tls = this.#stop.signal.aborted ? null : tlsDialError(this.address, error);
      if (tls) this.#options.onDialError?.(this, tls);
      if (!this.#stop.signal.aborted) {
        const reason = `cannot connect: ${(tls ?? error as Error).message}`;
        this.#report({ code: null, reason, ...(tls ? { error: tls } : {}) });
        this.#settleFirst(); // start() need not wait: the node goes on retrying in the background.
      }
      return { registered: false };
    }
    let registered = false;
    /** True once relayup was reported for this connection (see onControl). */
    let announced = false;
    let lastHeard = performance.now();
    /** Bytes we had written when the relay was last heard (see #watch). */
    let writtenWhenHeard = 0;
    const { maxFrameSize, budget } = this.#options;
    const connection = new FramedConnection(stream, {
      maxFrameSize,
      ...(budget ? { budget } : {}),
    });
    const link: RelayLink = new RelayLink(connection, {
      ...this.#options,
      keys: [this.#key],
      relay: this.id,
      onBatch: (from, envelope, messages) => {
        lastHeard = performance.now();
        writtenWhenHeard = connection.bytesWritten;
        this.#options.onBatch(from, envelope, messages);
      },
      onHeard: () => {
        lastHeard = performance.now();
        writtenWhenHeard = connection.bytesWritten;
      },
      onControl: (frame) => {
        lastHeard = performance.now();
        writtenWhenHeard = connection.bytesWritten;
        const relayTimeout = this.#onControl(link, frame);
        if (relayTimeout !== null && !registered) {
          registered = true;
          this.#link = link;
          this.#refused = false;
          beats = keepaliveInterval(tick, relayTimeout);
          // Up (and start() settled) once the members present at registration are known: a
          // call right after relayup or start(), "*" included, reaches them.
          void this.#membership.then(() => {
            if (this.#link !== link) return;
            announced = true;
            this.#options.onStatus(this, true, "registered");
            this.#settleFirst();
          });
        }
      },
    });
    // A PING first: a relay of another frame version answers it with GOAWAY 3 at once.
    void connection.write(encodeBeat(FrameType.PING)).catch(() => {});
    const tick = this.#options.keepaliveTick;
    let beats = tick;
    let lastBeat = performance.now();
    const beat = encodeBeat(FrameType.PING);
    // Checked every tick; beats go out every `beats` ms once registered.
    const keepalive = setInterval(() => {
      const now = performance.now();
      if (now - lastHeard > 3 * beats) {
        void link.close(CloseCode.POLICY, "relay silent for 3 keepalive intervals");
      } else if (registered && now - lastBeat >= beats - tick / 2) {
        lastBeat = now;
        this.#beatSentAt = performance.now();
        void link.connection.write(beat).catch(() => {});
      }
    }, tick);
    const stopWatching = this.#watch(link, () => lastHeard, () => writtenWhenHeard);
    const stop = () => void link.close(CloseCode.NORMAL, "node closing");
    this.#stop.signal.addEventListener("abort", stop, { once: true });
    const info = await link.closed;
    clearInterval(keepalive);
    stopWatching();
    this.#stop.signal.removeEventListener("abort", stop);
    this.#link = null;
    this.#draining = false;
    if (registered) this.#options.onLinkClosed(this, link, info.reason);
    this.#membership = this.#membership.then(() => {
      const gone: Member[] = [...this.#members];
      this.#members.clear();
      this.#names.clear();
      if (gone.length > 0) this.#options.onMembers(this, [], gone);
    });
    if (announced) this.#options.onStatus(this, false, info.reason);
    else if (!registered && !this.#stop.signal.aborted) this.#refusedBy(info);
    return { registered };
  }

  /**
   * Watches `link` for silence while calls wait on it (see
   * {@linkcode SilenceWatch}): probes it, and closes it when the probe goes
   * unanswered. `heard` is when the last frame arrived, `writtenWhenHeard`
   * how many bytes we had written by then. Returns what stops the watch.
   */
  #watch(link: RelayLink, heard: () => number, writtenWhenHeard: () => number): () => void {
    const waiting = this.#options.waiting;
    if (!waiting) return () => {};
    const watch = new SilenceWatch();
    const backlog = () => link.connection.bytesWritten - writtenWhenHeard();
    const beat = encodeBeat(FrameType.PING);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const follow = (step: SilenceStep | null, limit: number): void => {
      if (step === null || link.connection.isClosed) return;
      if (step.do === "idle") return;
      if (step.do === "dead" && backlog() > PROBE_BACKLOG) {
        // Our own upload may still be on its way ahead of the probe (a slow uplink, or the
        // relay holding our reads for flow control): no verdict; keepalive still bounds it.
        timer = setTimeout(look, limit);
        return;
      }
      if (step.do === "dead") {
        void link.close(
          CloseCode.POLICY,
          `relay silent: no answer to a probe within ${limit} ms while calls waited`,
        );
        return;
      }
      if (step.do === "probe") {
        // The round trip counts from the moment the PING left, not from behind an upload.
        link.connection.write(beat).then(() => {
          const now = performance.now();
          this.#beatSentAt = now;
          watch.probeWritten(now);
        }, () => {});
      }
      timer = setTimeout(look, step.ms);
    };
    const look = (): void => {
      timer = undefined;
      const now = performance.now();
      // A large frame still arriving is not silence: its last byte counts.
      const stalled = link.connection.stalledMidFrame(now);
      const last = stalled > 0 ? Math.max(heard(), now - stalled) : heard();
      const limit = silenceLimit(this.#rtt);
      follow(watch.check({ now, heard: last, outstanding: waiting(link) > 0, limit }), limit);
    };
    link.onCall = () => {
      const limit = silenceLimit(this.#rtt);
      follow(watch.arm(performance.now(), limit), limit);
    };
    return () => clearTimeout(timer);
  }

  /** The relay closed an unregistered connection: tell the node, settle a waiting start. */
  #refusedBy(info: CloseInfo): void {
    const code = info.remote || info.code !== CloseCode.NORMAL ? info.code : null;
    const error = code === null ? undefined : this.#refusalError(info);
    this.#report({ code, reason: info.reason, ...(error ? { error } : {}) });
    if (info.code === CloseCode.NAME_TAKEN || info.code === CloseCode.NETWORK_REFUSED) {
      this.#settleFirst(error);
    } else if (info.code !== CloseCode.NORMAL) {
      this.#settleFirst(); // start() need not wait: the node goes on with its other relays.
    }
  }

  /** The typed error of a relay's refusal. */
  #refusalError(info: CloseInfo): Error {
    const { name, network } = this.#options.self;
    switch (info.code) {
      case CloseCode.NAME_TAKEN:
        return new NameTakenError(name, network, `refused by relay ${this.address}`);
      case CloseCode.VERSION: {
        // Their GOAWAY's reason says what they speak; our own decoder says what they sent.
        const theirs = info.remote
          ? /speaks version (\d+)/.exec(info.reason)
          : /protocol version (\d+) is not supported/.exec(info.reason);
        return new ProtocolVersionError(theirs ? Number(theirs[1]) : NaN, PROTOCOL_VERSION, {
          cause: new RelayRefusedError(this.address, info.reason),
        });
      }
      default:
        return new RelayRefusedError(this.address, info.reason);
    }
  }

  /** Reports a refusal once per failure streak. */
  #report(refusal: Refusal): void {
    if (this.#refused) return;
    this.#refused = true;
    this.#options.onRefused?.(this, refusal);
  }

  /** Answers the relay's CHALLENGE with a signed REGISTER. */
  async #answer(link: Link, nonce: string): Promise<void> {
    const { identity, instance, card } = this.#options.credentials();
    const body = await signRegistration({
      identity,
      instance,
      name: this.#options.self.name,
      nonce: fromBase64Url(nonce),
      address: this.address, // Canonical already (a WebSocket path included).
      tick: this.#options.keepaliveTick,
      clientOnly: this.#options.clientOnly === true,
      card,
    });
    const pseudonym = identity.pseudonyms.of(this.#options.self.name);
    this.#beatSentAt = performance.now(); // The registration's answer gives the first round trip.
    await link.connection.write(encodeControl(FrameType.REGISTER, identity.id, pseudonym, body));
  }

  /** Handles a control frame; the relay's timeout when it was the registration answer. */
  #onControl(link: Link, frame: Frame): number | null {
    switch (frame.type) {
      case FrameType.CHALLENGE: {
        const { n } = decodeChallenge(frame);
        this.#answer(link, n).catch((error) => {
          void link.close(CloseCode.NORMAL, `cannot register: ${(error as Error).message}`);
        });
        return null;
      }
      case FrameType.REGISTERED: {
        const body = decodeRegistered(frame);
        this.#measured();
        link.limitFrameSize(body.maxFrameSize);
        this.#clustered = body.cluster === 1;
        this.#apply(body.members, []);
        return body.timeout;
      }
      case FrameType.MEMBERS: {
        const body = decodeMembers(frame);
        this.#apply(body.join, body.leave);
        return null;
      }
      case FrameType.DRAIN: {
        const { ms } = decodeDrain(frame);
        this.#draining = true;
        this.#options.onDrain?.(this, ms);
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

  /**
   * Applies a membership change in arrival order. Joins carry sealed cards:
   * an entry counts only when its card opens under the network key and
   * names a node with the listed pseudonym and instance (a relay can hide
   * members, never invent one).
   */
  #apply(join: Listed[], leave: Leaving[]): void {
    this.#membership = this.#membership.then(async () => {
      const left: Member[] = [];
      for (const [pseudonym, instance] of leave) {
        const name = this.#names.get(pseudonym);
        if (name === undefined || this.#members.get(name) !== instance) continue;
        this.#members.delete(name);
        this.#names.delete(pseudonym);
        left.push([name, instance]);
      }
      const joined: Member[] = [];
      for (const entry of join) {
        const name = await this.#openCard(entry);
        if (name === null || name === this.#options.self.name) continue;
        this.#members.set(name, entry[1]);
        this.#names.set(entry[0], name);
        joined.push([name, entry[1]]);
      }
      if (left.length > 0 || joined.length > 0) this.#options.onMembers(this, joined, left);
    }).catch(() => {});
  }

  /** The name a listed member's card proves, or null. */
  async #openCard([pseudonym, instance, card]: Listed): Promise<string | null> {
    try {
      const { fernet, pseudonyms } = this.#key;
      const plain = await fernet.decryptBytes(fromBase64Url(card));
      const { n, i } = JSON.parse(textDecoder.decode(plain));
      return typeof n === "string" && i === instance && pseudonyms.of(n) === pseudonym ? n : null;
    } catch {
      return null;
    }
  }
}
