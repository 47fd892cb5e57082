/**
 * The caller's routing: which path a call to a peer takes (the direct LAN
 * link first, else a relay where the peer is present), the pool of direct
 * links, and the one retry through another path when a path fails mid-call.
 *
 * @module
 */

import { Link, type LinkOptions, type LocalIdentity, type WireKey } from "./link.ts";
import type { Envelope, Message } from "./message.ts";
import { chooseRoute, DIRECT, hasRoute, type PeerPaths, type Route } from "./route.ts";
import type { RouteDecision, StatsRecorder } from "./stats.ts";
import { CloseCode } from "./frame.ts";
import { encodeRecord } from "./message.ts";
import type { LocalRoute, PeerTable } from "./peers.ts";
import { isRetriable, type PendingCalls } from "./calls.ts";
import type { RelayPool } from "./relay_pool.ts";
import { formatHostPort, type HostPort } from "./address.ts";
import { FramedConnection, MAX_UNTRUSTED_FRAME, TRUST_DEADLINE } from "./connection.ts";
import type { BufferBudget } from "./buffer_budget.ts";
import { HelloGuard } from "./hello_guard.ts";
import { Deadlines } from "./deadlines.ts";
import { MAX_CLOCK_SKEW_MS } from "./fernet.ts";
import { acceptLoop, type Listener, type Stream, type Transport } from "./transport.ts";
import type { ConnectionGate } from "./connection_gate.ts";
import {
  CommandTimeoutError,
  ConnectionClosedError,
  NameTakenError,
  NodeClosedError,
  PeerNotFoundError,
} from "./errors.ts";

/** Least wait before a request through a relay of a cluster is sent once more, ms. */
export const CLUSTER_RESEND = 1000;

/**
 * How long a request through a relay of a cluster waits for its answer
 * before it is sent once more: {@linkcode CLUSTER_RESEND}, or four round
 * trips to the relay when longer (`rtt` null: none measured yet).
 *
 * @example
 * ```ts
 * import { clusterResendDelay } from "./router.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(clusterResendDelay(null), 1000);
 * assert.equal(clusterResendDelay(400), 1600);
 * ```
 */
export function clusterResendDelay(rtt: number | null): number {
  return Math.max(CLUSTER_RESEND, 4 * (rtt ?? 0));
}

/** How a route decision reads in a `debug` event. */
function describe(route: Route): string {
  return route.via === DIRECT
    ? `direct to ${formatHostPort((route as { local: LocalRoute }).local)}`
    : `through relay ${route.via}`;
}

/** How long a liveness probe waits for its pong, ms. */
const PROBE_TIMEOUT = 1000;

/** How often direct links are looked at for stalled frames, ms. */
const SWEEP_INTERVAL = 1000;

/** A direct link whose partial frame gets no byte for this long is cut, ms. */
export const STALLED_FRAME_TIMEOUT = 10_000;

/** Where a link's traffic goes: authentic batches and the news that it closed. */
export interface Inbox {
  /** An authentic batch arrived on `link`. */
  deliver(link: Link, envelope: Envelope, messages: Message[]): void;
  /** A direct link closed, after its pending calls were failed. */
  linkClosed(link: Link): void;
}

/** Options of {@linkcode Router}. */
export interface RouterOptions
  extends Pick<LinkOptions, "keys" | "maxFrameSize" | "replayWindow" | "nextId" | "warn"> {
  self: LocalIdentity;
  /** Time allowed to open a connection to a peer, ms. */
  connectTimeout: number;
  /** Opens and accepts direct connections. */
  transport: Transport;
  /** The node's budget for buffered bytes, shared by all its connections. */
  budget: BufferBudget;
  /** Caps on accepted connections, and their counts. */
  gate: ConnectionGate;
  peers: PeerTable;
  relays: RelayPool;
  pending: PendingCalls;
  inbox: Inbox;
  stats: StatsRecorder;
  /** Next request id of this node instance. */
  nextRequestId: () => number;
  /** Aborts when the node starts closing: no new connections, no retries. */
  closing: AbortSignal;
  /** Receives every route decision, when the node reports them. */
  debug?: (decision: RouteDecision) => void;
}

interface Pooled {
  instance: string;
  link: Promise<Link>;
  ready?: Link;
}

/** Routes calls and owns the node's direct links and their listener. */
export class Router {
  readonly #options: RouterOptions;
  readonly #links = new Set<Link>();
  readonly #outbound = new Map<string, Pooled>();
  readonly #stopAccepting = new AbortController();
  #listener: Listener | null = null;
  #accepting: Promise<void> | null = null;
  #sweeper: ReturnType<typeof setInterval> | undefined;
  /** Every call's timeout, on one timer. */
  readonly #deadlines = new Deadlines();
  #lastSweep = 0;
  /** Hellos that made an accepted link trusted, kept while their tokens could be replayed. */
  readonly #hellos: HelloGuard;

  /** Creates a router with no links. */
  constructor(options: RouterOptions) {
    this.#options = options;
    this.#hellos = new HelloGuard(options.replayWindow + MAX_CLOCK_SKEW_MS);
  }

  /** The address direct calls are accepted on, once listening. */
  get address(): HostPort | null {
    return this.#listener?.address ?? null;
  }

  /**
   * Accepts direct links on `address` until {@linkcode close}.
   * Rejects with the transport's error when the address cannot be bound.
   */
  async listen(address: HostPort): Promise<HostPort> {
    const listener = await this.#options.transport.listen(address, { gate: this.#options.gate });
    this.#listener = listener;
    this.#accepting = acceptLoop(
      listener,
      (stream) => this.#options.closing.aborted ? stream.close() : void this.adopt(stream),
      this.#stopAccepting.signal,
      this.#options.gate,
    );
    this.#lastSweep = performance.now();
    this.#sweeper = setInterval(() => this.#sweep(), SWEEP_INTERVAL);
    return listener.address;
  }

  /**
   * Cuts direct links whose peer declared a frame and stopped sending it.
   * A late sweep (the event loop was blocked) judges nothing: the bytes may
   * be waiting in the kernel for a read that has not run yet.
   */
  #sweep(): void {
    const now = performance.now();
    const late = now - this.#lastSweep > 2 * SWEEP_INTERVAL;
    this.#lastSweep = now;
    if (late) return;
    for (const link of this.#links) {
      if (link.connection.stalledMidFrame(now) > STALLED_FRAME_TIMEOUT) {
        void link.close(CloseCode.POLICY, "stalled in the middle of a frame");
      }
    }
  }

  /** Closes the pooled link to `name`'s instance `instance` (it left). */
  forget(name: string, instance: string): void {
    const pooled = this.#outbound.get(name);
    if (pooled && pooled.instance === instance) {
      this.#outbound.delete(name);
      void pooled.link.then((link) => link.close(CloseCode.NORMAL, "peer left"), () => {});
    }
  }

  /** Stops accepting, then closes every direct link. */
  async close(): Promise<void> {
    clearInterval(this.#sweeper);
    this.#deadlines.close();
    this.#stopAccepting.abort();
    this.#listener?.close();
    await this.#accepting;
    await Promise.all([...this.#links].map((link) => link.close(CloseCode.NORMAL, "node closing")));
  }

  /**
   * Calls one target: directly when it is on the LAN, else through a relay
   * where it is present. When the path fails (the dial included), the same
   * request (same id, so the target runs it at most once) is sent once more
   * through another path, within the same timeout. `timeout` may be
   * `Infinity`: no timer is armed.
   */
  async call(
    name: string,
    path: string,
    id: number,
    record: Uint8Array,
    timeout: number,
    signal: AbortSignal | undefined,
  ): Promise<unknown> {
    let gaveUp: unknown = null;
    let current: { fail: (error: unknown) => void } | null = null;
    const giveUp = (error: unknown) => {
      gaveUp ??= error;
      current?.fail(error);
    };
    const cancelTimeout = Number.isFinite(timeout)
      ? this.#deadlines.add(timeout, () => giveUp(new CommandTimeoutError(name, path, timeout)))
      : undefined;
    const onAbort = () => giveUp(signal!.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    const tried = new Set<string>();
    let previous: string | null = null;
    let link: Link | null = null;
    let stopResend: (() => void) | undefined;
    try {
      for (let attempt = 0;; attempt++) {
        const route = this.#choose(name, path, id, attempt, tried);
        tried.add(route.via);
        const slot = this.#options.pending.add(name, id, path, null);
        current = slot;
        try {
          link = this.#relayLink(name, route) ?? this.#pooledLink(name) ??
            await this.#dialUntilGivenUp(name, slot.answer);
          slot.bind(link);
          link.send(name, route.instance, record);
          this.#options.stats.sent(route.via, previous);
          stopResend = this.#resendThroughCluster(name, route, link, record);
          return await slot.answer;
        } catch (error) {
          if (gaveUp || attempt > 0 || !this.#retriable(error, name, tried)) throw error;
          previous = route.via;
        } finally {
          stopResend?.();
          slot.forget();
          current = null;
        }
      }
    } catch (error) {
      if (gaveUp && link && !link.connection.isClosed) {
        try {
          link.send(name, undefined, encodeRecord({ k: "x", id }));
        } catch {
          // Best effort: the link may be gone.
        }
      }
      throw error;
    } finally {
      cancelTimeout?.();
      signal?.removeEventListener("abort", onAbort);
    }
  }

  /**
   * Through a relay of a cluster, frames can be lost between relays (one
   * that dies, a NATS server lost): a request still unanswered after
   * {@linkcode clusterResendDelay} is sent once more on the same link, same
   * id (docs/PROTOCOL.md, "Paths and retries"). Returns what stops it.
   */
  #resendThroughCluster(
    name: string,
    route: Route,
    link: Link,
    record: Uint8Array,
  ): (() => void) | undefined {
    const relay = route.via === DIRECT ? undefined : this.#options.relays.get(route.via);
    if (!relay?.clustered) return undefined;
    return this.#deadlines.add(clusterResendDelay(relay.rtt), () => {
      try {
        if (!link.connection.isClosed) link.send(name, route.instance, record);
      } catch {
        // The link is going: the call fails over or times out as without the resend.
      }
    });
  }

  /** The route of attempt `attempt`, reported to the debug hook either way. */
  #choose(name: string, path: string, id: number, attempt: number, tried: Set<string>): Route {
    const debug = this.#options.debug;
    try {
      const route = chooseRoute(this.#paths(name), tried);
      debug?.({ peer: name, path, id, attempt, route: route.via, reason: describe(route) });
      return route;
    } catch (error) {
      debug?.({ peer: name, path, id, attempt, route: null, reason: (error as Error).message });
      throw error;
    }
  }

  /**
   * What is known of `name`'s paths, for {@linkcode chooseRoute}. Its relays
   * are looked up only if asked for: a call on the LAN never needs them.
   */
  #paths(name: string): PeerPaths {
    const { peers, relays, self } = this.#options;
    return {
      name,
      network: self.network,
      local: peers.route(name),
      get relays() {
        return peers.relaysOf(name).map(({ relay, instance }) => ({
          relay,
          instance,
          up: relays.get(relay)?.usable != null,
        }));
      },
      known: peers.has(name),
    };
  }

  /** True when a failed attempt may go again on another path. */
  #retriable(error: unknown, name: string, tried: Set<string>): boolean {
    return !this.#options.closing.aborted && isRetriable(error) &&
      hasRoute(this.#paths(name), tried);
  }

  /** The registered link of the relay `route` goes through; null for the direct path. */
  #relayLink(name: string, route: Route): Link | null {
    if (route.via === DIRECT) return null;
    const link = this.#options.relays.get(route.via)?.link;
    if (!link) throw new ConnectionClosedError(name, `relay ${route.via} went down`);
    return link;
  }

  /**
   * Dials `name`, or rejects the moment the call gives up (its pending slot
   * fails on timeout, abort or close), so a hanging connect never outlives
   * the call; a dial that completes later stays pooled for the next call.
   */
  #dialUntilGivenUp(name: string, answer: Promise<unknown>): Promise<Link> {
    const dialing = this.#linkTo(name);
    dialing.catch(() => {}); // Its failure is the race's, or nobody's once the call gave up.
    const gaveUp = answer.then(() => {
      throw new ConnectionClosedError(name, "answered before the request was sent");
    });
    return Promise.race([dialing, gaveUp]);
  }

  /** The open direct link to `name`'s current instance, when there is one. */
  #pooledLink(name: string): Link | undefined {
    const pooled = this.#outbound.get(name);
    const route = this.#options.peers.route(name);
    if (!pooled?.ready || !route || pooled.instance !== route.route.instance) return undefined;
    return pooled.ready.connection.isClosed ? undefined : pooled.ready;
  }

  async #linkTo(name: string): Promise<Link> {
    const found = this.#options.peers.route(name);
    if (!found) throw new PeerNotFoundError(name);
    if (found.conflict) {
      throw new NameTakenError(name, this.#options.self.network, "calls to it are refused");
    }
    const { route } = found;
    let pooled = this.#outbound.get(name);
    if (pooled && pooled.instance !== route.instance) {
      void pooled.link.then((link) => link.close(CloseCode.NORMAL, "peer restarted"), () => {});
      pooled = undefined;
    }
    if (!pooled) {
      const entry: Pooled = {
        instance: route.instance,
        link: this.#dial(name, route),
      };
      this.#outbound.set(name, entry);
      entry.link.then((link) => entry.ready = link, () => {
        if (this.#outbound.get(name) === entry) this.#outbound.delete(name);
      });
      pooled = entry;
    }
    return await pooled.link;
  }

  async #dial(name: string, route: LocalRoute): Promise<Link> {
    const address = formatHostPort(route);
    let stream: Stream;
    try {
      stream = await this.#options.transport.dial(
        route,
        AbortSignal.timeout(this.#options.connectTimeout),
      );
    } catch (cause) {
      throw new ConnectionClosedError(
        name,
        `cannot connect to ${address}: ${(cause as Error).message}`,
        {
          cause,
        },
      );
    }
    if (this.#options.closing.aborted) {
      stream.close();
      throw new NodeClosedError(this.#options.self.name);
    }
    const keys = this.#options.keys;
    const sealWith = route.previousKey && keys[1] ? keys[1] : keys[0]!;
    const link = this.adopt(stream, { name, instance: route.instance }, sealWith);
    if (route.maxFrameSize) link.limitFrameSize(route.maxFrameSize);
    return link;
  }

  /** Wraps a stream in a direct link of this node and tracks it. */
  adopt(
    stream: Stream,
    expected?: { name: string; instance: string },
    sealWith?: WireKey,
  ): Link {
    const { maxFrameSize, budget } = this.#options;
    // An accepted connection reads small frames only, until its hello proves it holds the key.
    const connection = new FramedConnection(
      stream,
      expected
        ? { maxFrameSize, budget }
        : { maxFrameSize: MAX_UNTRUSTED_FRAME, untrusted: true, budget },
    );
    const link = new Link(connection, {
      keys: this.#options.keys,
      ...(sealWith ? { sealWith } : {}),
      self: this.#options.self,
      maxFrameSize: this.#options.maxFrameSize,
      replayWindow: this.#options.replayWindow,
      ...(expected
        ? { expected, hello: true }
        : { proveWithin: TRUST_DEADLINE, hellos: this.#hellos }),
      nextId: this.#options.nextId,
      ...(this.#options.warn ? { warn: this.#options.warn } : {}),
      onBatch: (from, envelope, messages) => this.#options.inbox.deliver(from, envelope, messages),
    });
    this.#links.add(link);
    void link.closed.then((info) => {
      this.#links.delete(link);
      const name = expected?.name;
      if (name && this.#outbound.get(name)?.instance === expected.instance) {
        void this.#outbound.get(name)!.link.then((l) => {
          if (l === link) this.#outbound.delete(name);
        }, () => {});
      }
      this.#options.pending.failLink(link, (peer) => new ConnectionClosedError(peer, info.reason));
      this.#options.inbox.linkClosed(link);
    });
    return link;
  }

  /** True when `route`'s instance still answers a ping on its address. */
  async probe(name: string, route: LocalRoute): Promise<boolean> {
    if (this.#options.closing.aborted) return false;
    let link: Link;
    try {
      link = await this.#dial(name, route);
    } catch {
      return false;
    }
    const id = this.#options.nextRequestId();
    const { answer, forget } = this.#options.pending.add(name, id, "ping", link);
    const timer = setTimeout(
      () => void link.close(CloseCode.NORMAL, "probe timed out"),
      PROBE_TIMEOUT,
    );
    try {
      link.send(name, route.instance, encodeRecord({ k: "ping", id }));
      return await answer === true;
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
      forget();
      await link.close(CloseCode.NORMAL, "probe done");
    }
  }
}
