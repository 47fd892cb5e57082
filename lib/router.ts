/**
 * The caller's routing: which path a call to a peer takes (the direct LAN
 * link first, else a relay where the peer is present), the pool of direct
 * links, and the one retry through another path when a path fails mid-call.
 *
 * @module
 */

import { Link, type LinkOptions, type LocalIdentity } from "./link.ts";
import { CloseCode } from "./frame.ts";
import { encodeRecord } from "./message.ts";
import type { LocalRoute, PeerTable } from "./peers.ts";
import { isRetriable, type PendingCalls } from "./calls.ts";
import type { RelayPool } from "./relay_pool.ts";
import { formatHostPort } from "./address.ts";
import {
  CommandTimeoutError,
  ConnectionClosedError,
  NameTakenError,
  NodeClosedError,
  PeerNotFoundError,
} from "./errors.ts";

/** How long a liveness probe waits for its pong, ms. */
const PROBE_TIMEOUT = 1000;

/** Options of {@linkcode Router}. */
export interface RouterOptions
  extends Pick<LinkOptions, "fernet" | "maxFrameSize" | "replayWindow" | "nextId" | "onBatch"> {
  self: LocalIdentity;
  /** Time allowed to open a TCP connection, ms. */
  connectTimeout: number;
  peers: PeerTable;
  relays: RelayPool;
  pending: PendingCalls;
  /** Next request id of this node instance. */
  nextRequestId: () => number;
  /** False once the node is closing: no new connections. */
  isOpen: () => boolean;
  /** A direct link closed (after its pending calls were failed). */
  onClosed: (link: Link) => void;
}

interface Pooled {
  instance: string;
  link: Promise<Link>;
  ready?: Link;
}

/** Routes calls and owns the node's direct links. */
export class Router {
  readonly #options: RouterOptions;
  readonly #links = new Set<Link>();
  readonly #outbound = new Map<string, Pooled>();

  /** Creates a router with no links. */
  constructor(options: RouterOptions) {
    this.#options = options;
  }

  /** Closes the pooled link to `name`'s instance `instance` (it left). */
  forget(name: string, instance: string): void {
    const pooled = this.#outbound.get(name);
    if (pooled && pooled.instance === instance) {
      this.#outbound.delete(name);
      void pooled.link.then((link) => link.close(CloseCode.NORMAL, "peer left"), () => {});
    }
  }

  /** Closes every direct link. */
  async closeAll(): Promise<void> {
    await Promise.all([...this.#links].map((link) => link.close(CloseCode.NORMAL, "node closing")));
  }

  /**
   * Calls one target: directly when it is on the LAN, else through a relay
   * where it is present. When the path fails mid-call, the same request (same
   * id, so the target runs it at most once) is sent once more through another
   * path, within the same timeout.
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
    const timer = setTimeout(() => giveUp(new CommandTimeoutError(name, path, timeout)), timeout);
    const onAbort = () => giveUp(signal!.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    const tried = new Set<string>();
    let link: Link | null = null;
    try {
      for (let attempt = 0;; attempt++) {
        const route = this.#pickRoute(name, tried, attempt === 0);
        tried.add(route.key);
        link = route.link ?? this.#pooledLink(name) ?? await this.#dialRaced(name, () => gaveUp);
        const slot = this.#options.pending.add(name, id, path, link);
        current = slot;
        try {
          if (gaveUp) throw gaveUp;
          link.send(name, route.instance ?? link.peer?.instance, record);
          return await slot.answer;
        } catch (error) {
          if (gaveUp || attempt > 0 || !isRetriable(error) || !this.#hasRouteBesides(name, tried)) {
            throw error;
          }
        } finally {
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
      clearTimeout(timer);
      if (onAbort) signal?.removeEventListener("abort", onAbort);
    }
  }

  /** Dials `name`, giving up early when `gaveUp()` turns truthy (checked every 50 ms). */
  async #dialRaced(name: string, gaveUp: () => unknown): Promise<Link> {
    const dialing = this.#linkTo(name);
    let poll: ReturnType<typeof setInterval> | undefined;
    const stop = new Promise<never>((_, reject) => {
      poll = setInterval(() => {
        const reason = gaveUp();
        if (reason) reject(reason);
      }, 50);
    });
    try {
      return await Promise.race([dialing, stop]);
    } finally {
      clearInterval(poll);
      stop.catch(() => {});
      dialing.catch(() => {});
    }
  }

  /** The open direct link to `name`'s current instance, when there is one. */
  #pooledLink(name: string): Link | undefined {
    const pooled = this.#outbound.get(name);
    const route = this.#options.peers.route(name);
    if (!pooled?.ready || !route || pooled.instance !== route.route.instance) return undefined;
    return pooled.ready.connection.isClosed ? undefined : pooled.ready;
  }

  /**
   * The path a call to `name` takes: the direct LAN link first, else a relay
   * where it is registered, skipping paths already tried. Throws when there
   * is none ({@linkcode PeerNotFoundError}, or {@linkcode NameTakenError}
   * for a contested name).
   */
  #pickRoute(
    name: string,
    tried: Set<string>,
    first: boolean,
  ): { key: string; link: Link | null; instance?: string } {
    const local = this.#options.peers.route(name);
    if (local && !tried.has("direct")) {
      if (local.conflict) {
        throw new NameTakenError(name, this.#options.self.network, "calls to it are refused");
      }
      return { key: "direct", link: null, instance: local.route.instance };
    }
    for (const { relay, instance } of this.#options.peers.relaysOf(name)) {
      const link = this.#options.relays.get(relay)?.link;
      if (link && !tried.has(relay)) return { key: relay, link, instance };
    }
    if (first || !this.#options.peers.get(name)) throw new PeerNotFoundError(name);
    throw new ConnectionClosedError(name, "no other path to the peer is left");
  }

  #hasRouteBesides(name: string, tried: Set<string>): boolean {
    try {
      this.#pickRoute(name, tried, false);
      return true;
    } catch {
      return false;
    }
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
    let conn: Deno.TcpConn;
    try {
      conn = await Deno.connect({
        hostname: route.hostname,
        port: route.port,
        signal: AbortSignal.timeout(this.#options.connectTimeout),
      });
    } catch (cause) {
      throw new ConnectionClosedError(
        name,
        `cannot connect to ${address}: ${(cause as Error).message}`,
        {
          cause,
        },
      );
    }
    if (!this.#options.isOpen()) {
      conn.close();
      throw new NodeClosedError(this.#options.self.name);
    }
    conn.setNoDelay(true);
    const link = this.adopt(conn, { name, instance: route.instance });
    if (route.maxFrameSize) link.limitFrameSize(route.maxFrameSize);
    return link;
  }

  /** Wraps a connection in a direct link of this node and tracks it. */
  adopt(conn: Deno.Conn, expected?: { name: string; instance: string }): Link {
    const link = new Link(conn, {
      fernet: this.#options.fernet,
      self: this.#options.self,
      maxFrameSize: this.#options.maxFrameSize,
      replayWindow: this.#options.replayWindow,
      ...(expected ? { expected } : {}),
      nextId: this.#options.nextId,
      onBatch: this.#options.onBatch,
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
      this.#options.onClosed(link);
    });
    return link;
  }

  /** True when `route`'s instance still answers a ping on its address. */
  async probe(name: string, route: LocalRoute): Promise<boolean> {
    if (!this.#options.isOpen()) return false;
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
