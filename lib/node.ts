/**
 * The Node: a named member of an encrypted network that serves commands and
 * calls other members' commands. This file wires the parts together (the
 * caller, router, relay pool, LAN presence, responder and inbox) and keeps
 * the node's lifecycle.
 *
 * @module
 */

import { BufferBudget } from "./buffer_budget.ts";
import { CommandRegistry, type CommandTree, type Handler } from "./commands.ts";
import { type PeerInfo, PeerTable } from "./peers.ts";
import { NodeEvent, NodeEventTarget } from "./events.ts";
import { PendingCalls } from "./calls.ts";
import { Router } from "./router.ts";
import { type RelayInfo, RelayPool } from "./relay_pool.ts";
import { Responder } from "./responder.ts";
import { Semaphore } from "./semaphore.ts";
import { NodeInbox } from "./inbox.ts";
import type { Lan } from "./lan.ts";
import { tieToPage } from "./page_ties.ts";
import { registerBuiltins } from "./builtins.ts";
import {
  Caller,
  type CommandOptions,
  type CommandResult,
  DEFAULT_LIST_TIMEOUT,
  type ManyResult,
  type SingleResult,
  waitForPeers,
  type WaitOptions,
} from "./caller.ts";
import { type NodeStats, StatsRecorder } from "./stats.ts";
import { type NodeOptions, resolveOptions } from "./options.ts";
import { tcpTransport } from "./tcp_transport.ts";
import { NodeClosedError, NodeNotStartedError, PeerNotFoundError } from "./errors.ts";
import { Lifecycle } from "./lifecycle.ts";
import { ConnectionGate } from "./connection_gate.ts";
import { Keyring } from "./keyring.ts";
import type { LocalIdentity } from "./link.ts";
import { Warnings } from "./warnings.ts";
import { waitForRelay } from "./wait_for_relay.ts";

/**
 * A member of a peerbase network.
 *
 * @example Two nodes on one machine call each other
 * ```ts
 * import { generateKey, Node } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 *
 * const key = generateKey();
 * const network = `doc-${crypto.randomUUID().slice(0, 8)}`;
 * await using alice = new Node({
 *   name: "alice", network, networkKey: key, hostname: "127.0.0.1",
 *   commands: { math: { add: (_node, args) => (args as number[]).reduce((a, b) => a + b, 0) } },
 * });
 * await using bob = new Node({ name: "bob", network, networkKey: key, hostname: "127.0.0.1" });
 * await alice.start();
 * await bob.start();
 * await bob.waitForPeer("alice"); // discovery takes a moment
 * assert.equal(await bob.command<number>("math.add", { target: "alice", args: [1, 2] }), 3);
 * ```
 */
export class Node extends NodeEventTarget {
  /** This node's name. */
  readonly name: string;
  /** Its network's name. */
  readonly network: string;

  readonly #servers: string[];
  readonly #self: LocalIdentity;
  readonly #keyring: Keyring;
  readonly #registry = new CommandRegistry<Node>();
  readonly #pending = new PendingCalls();
  readonly #stats = new StatsRecorder();
  readonly #gate: ConnectionGate;
  readonly #life: Lifecycle;
  readonly #peers: PeerTable;
  readonly #responder: Responder<Node>;
  readonly #relays: RelayPool;
  readonly #router: Router;
  /** The LAN side, made at start when `useLocal` is on. */
  #lan: Lan | null = null;
  readonly #makeLan: (() => Promise<Lan>) | null;
  /** Stops listening to the page's events (in a browser; see `page_ties.ts`). */
  #untie: () => void = () => {};
  readonly #caller: Caller;
  #requestId = 0;
  #frameId = 0;
  readonly #warnings = new Warnings((warning) => this.#emit(NodeEvent.WARNING, warning));
  readonly #explain = (error: unknown): never => {
    throw this.#warnings.explain(this.#whenNoRelay(error));
  };

  /** A `PeerNotFoundError` raised while every relay of this node is down says so. */
  #whenNoRelay(error: unknown): unknown {
    const relays = this.#relays.list();
    if (!(error instanceof PeerNotFoundError) || relays.length === 0) return error;
    if (relays.some((relay) => relay.up)) return error;
    return new PeerNotFoundError(error.peer, {
      cause: error,
      detail: `no such peer is known, and none of this node's ${relays.length} relay(s) is up ` +
        "right now (they reconnect by themselves); retry after a relayup event, or wait with " +
        "node.waitForPeer()",
    });
  }

  /** Validates `options` (throwing `TypeError`/`RangeError`) and registers the commands. */
  constructor(options: NodeOptions<Node>) {
    super();
    const o = resolveOptions(options);
    [this.name, this.network, this.#servers] = [o.name, o.network, o.servers];
    this.#life = new Lifecycle(o.name, { open: () => this.#open(), shut: () => this.#shut() });
    // The instance id and the network ids are made at start (see #open).
    const keyring = this.#keyring = new Keyring(o.network, o.networkKey, o.previousKey);
    const self: LocalIdentity = this.#self = {
      name: this.name,
      instance: "",
      network: this.network,
    };
    const emit = (type: string) => (detail: unknown) => this.#emit(type, detail);
    const { maxFrameSize, replayWindow, connectTimeout, keepaliveTick, maxRemotes, clientOnly } = o;
    const shared = {
      self,
      keys: keyring.keys,
      fernet: keyring.current.fernet,
      maxFrameSize,
      replayWindow,
      connectTimeout,
      transport: tcpTransport,
      budget: new BufferBudget(o.bufferBudget),
      nextId: () => ++this.#frameId,
      nextRequestId: () => ++this.#requestId,
      closing: this.#life.closing,
      pending: this.#pending,
      stats: this.#stats,
      warn: this.#warnings.warn.bind(this.#warnings),
      peers: this.#peers = new PeerTable({
        onJoin: emit(NodeEvent.PEER_JOIN),
        onLeave: (peer) => {
          this.#router.forget(peer.name, peer.instance);
          this.#emit(NodeEvent.PEER_LEAVE, peer);
        },
        onConflict: emit(NodeEvent.CONFLICT),
        probe: (name, route) => this.#router.probe(name, route),
      }),
    };
    this.#responder = new Responder({
      node: this,
      registry: this.#registry,
      replayWindow,
      concurrency: new Semaphore(o.maxInboundConcurrency),
      lifetime: shared.closing,
    });
    this.#relays = new RelayPool({
      ...shared,
      answering: (link) => this.#responder.countOn(link),
      credentials: (index) => keyring.credentials(index),
      maxRemotes,
      caCerts: o.caCerts,
      status: {
        relayStatus: (relay, up, reason) =>
          this.#emit(up ? NodeEvent.RELAY_UP : NodeEvent.RELAY_DOWN, { relay, reason }),
        relayRefused: (relay, refusal) =>
          this.#emit(NodeEvent.RELAY_REFUSED, { relay, ...refusal }),
      },
      client: {
        ...shared,
        keepaliveTick,
        clientOnly,
        onBatch: (...b) => inbox.deliver(...b),
      },
    });
    const parts = { ...shared, responder: this.#responder, relays: this.#relays };
    const inbox = new NodeInbox({ ...parts, serving: !clientOnly });
    const debug = o.debug ? { debug: emit(NodeEvent.DEBUG) } : {};
    const gate = this.#gate = new ConnectionGate({
      maxConnections: o.maxInboundConnections,
      maxConnectionsPerAddress: o.maxInboundConnectionsPerAddress,
    });
    const router = this.#router = new Router({ ...parts, inbox, gate, ...debug });
    const onConflict = emit(NodeEvent.CONFLICT);
    const previousFernet = keyring.previous ? { previousFernet: keyring.previous.fernet } : {};
    // lan.ts (UDP, the TCP listener) is imported only when used: a browser never evaluates it
    // (a single-file bundle still carries it; a bundler that splits code leaves it out).
    this.#makeLan = o.useLocal
      ? async () =>
        new (await import("./lan.ts")).Lan({
          ...shared,
          ...o,
          ...previousFernet,
          self,
          router,
          onConflict,
          instanceKey: () => keyring.credentials(0).instance,
        })
      : null;
    const assertRunning = () => this.#life.assertRunning();
    this.#caller = new Caller({ ...shared, name: this.name, router, assertRunning });
    registerBuiltins(this.#registry);
    if (o.commands) this.#registry.registerTree(o.commands);
  }

  /**
   * Resolves once the node has closed. A server wires signals to `close()`
   * (so peers hear its bye) and then waits on it.
   */
  get finished(): Promise<void> {
    return this.#life.finished;
  }

  /** Every registered command path, built-ins included, sorted. */
  get commands(): string[] {
    return this.#registry.list();
  }

  /** The peers known now, sorted by name (what `__peers__` answers). */
  get peers(): PeerInfo[] {
    return this.#peers.list();
  }

  /** The relays this node uses (maintained and learned), sorted by address. */
  get relays(): RelayInfo[] {
    return this.#relays.list();
  }

  /** The `host:port` peers are told to call (never `0.0.0.0`), once started on the LAN. */
  get address(): string | null {
    return this.#lan?.address ?? null;
  }

  /** Calls sent and served by path, retries, failovers, relay round trips (see `debug`). */
  get stats(): NodeStats {
    return this.#stats.snapshot(this.#relays.roundTrips(), this.#gate.counts);
  }

  /** Registers `handler` at the dotted `path` (replacing one there), creating namespaces. */
  registerCommand(path: string, handler: Handler<Node>): void {
    this.#registry.register(path, handler);
  }

  /** Merges a tree of handlers at `top` (a dotted path) or the root; others stay. */
  registerCommands(tree: CommandTree<Node>, top?: string): void {
    this.#registry.registerTree(tree, top);
  }

  /**
   * Starts serving and advertising; does not wait for peers (see {@linkcode waitForPeer}).
   * Safe to call twice. Rejects with `NoMulticastError` or `PortInUseError` naming the way out.
   */
  start(): Promise<void> {
    return this.#life.start();
  }

  /**
   * Rejects calls in flight with {@linkcode NodeClosedError}, aborts running handlers, tells
   * peers (LAN bye, relay leave), then closes every socket and timer. Safe to call twice.
   */
  close(): Promise<void> {
    return this.#life.close();
  }

  /**
   * This start's instance id: 16 hex characters, the hash of a key pair
   * made at start (relays check registrations against it). Throws
   * `NodeNotStartedError` before `start()`.
   */
  get instance(): string {
    if (!this.#self.instance) throw new NodeNotStartedError(this.name, "read its instance");
    return this.#self.instance;
  }

  async #open(): Promise<void> {
    this.#self.instance = await this.#keyring.prepare(this.name);
    if (this.#makeLan) {
      this.#lan = await this.#makeLan();
      await this.#lan.start();
    }
    this.#untie = tieToPage({
      close: () => void this.close(),
      retryNow: () => this.#relays.retryNow(),
    });
    await this.#relays.startMaintained(this.#servers);
  }

  async #shut(): Promise<void> {
    this.#untie();
    this.#pending.failAll(() => new NodeClosedError(this.name, "it closed during the call"));
    await this.#lan?.close();
    await this.#relays.close();
    await this.#router.close();
    this.#responder.clear();
    this.#peers.clear();
  }

  /** Closes the node (for `await using`). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** Calls every known peer (`"*"`, the default) or a list; `null` for each that fails. */
  command<T = unknown>(
    path: string,
    options: CommandOptions & { target?: "*" | string[]; raiseErrors: false },
  ): Promise<Record<string, T | null>>;
  /**
   * Calls `path` on every known peer (`target` unset or `"*"`) or a list of names; resolves
   * to `{ [name]: value }`, or rejects with {@linkcode CommandError} (all results kept).
   */
  command<T = unknown, O extends CommandOptions = CommandOptions>(
    path: string,
    options?: O & { target?: "*" | string[] },
  ): Promise<ManyResult<T, O>>;
  /** Calls `path` on one target; resolves to its value, or `null` when the call fails. */
  command<T = unknown, N extends string = never>(
    path: string,
    options: CommandOptions & { target: [N] extends [never] ? string : N; raiseErrors: false },
  ): Promise<CommandResult<T, N, { raiseErrors: false }>>;
  /**
   * Calls `path` on one target; resolves to its value, or rejects with the
   * typed error. A `string` variable that may hold `"*"` types as either
   * shape (with an explicit `T`, write `command<T, string>` for that).
   */
  command<T = unknown, N extends string = never, O extends CommandOptions = CommandOptions>(
    path: string,
    options: O & { target: [N] extends [never] ? string : N },
  ): Promise<CommandResult<T, N, O>>;
  /** Calls with options whose target's shape is known only at run time. */
  command<T = unknown>(
    path: string,
    options?: CommandOptions,
  ): Promise<T | null | Record<string, T | null>>;
  command(path: string, options?: CommandOptions, ...extra: unknown[]): Promise<unknown> {
    return this.#caller.command(path, options, extra.length).catch(this.#explain);
  }

  /** Lists the commands of every known peer or a list (timeout {@linkcode DEFAULT_LIST_TIMEOUT}). */
  getCommands<O extends Omit<CommandOptions, "args" | "kwargs" | "target">>(
    options?: O & { target?: "*" | string[] },
  ): Promise<ManyResult<string[], O>>;
  /** Lists the commands of one target. */
  getCommands<O extends Omit<CommandOptions, "args" | "kwargs" | "target">>(
    options: O & { target: string },
  ): Promise<SingleResult<string[], O>>;
  getCommands(options: Omit<CommandOptions, "args" | "kwargs"> = {}): Promise<unknown> {
    const withDefault = { timeout: DEFAULT_LIST_TIMEOUT, ...options };
    return this.#caller.command("__list_commands__", withDefault, 0).catch(this.#explain);
  }

  /**
   * Resolves once the peer `name` can be called (with its
   * {@linkcode PeerInfo}), or every peer of a list (with theirs, in order).
   * Rejects with {@linkcode PeerNotFoundError} after `timeout` (default
   * 10 s; `Infinity` waits for ever), or with `signal`'s reason.
   */
  waitForPeer(name: string, options?: WaitOptions): Promise<PeerInfo>;
  /** Waits for every peer of `names`. */
  waitForPeer(names: string[], options?: WaitOptions): Promise<PeerInfo[]>;
  /** Either of the above, for a value that may be one name or a list. */
  waitForPeer(names: string | string[], options?: WaitOptions): Promise<PeerInfo | PeerInfo[]>;
  waitForPeer(names: string | string[], options?: WaitOptions): Promise<unknown> {
    return waitForPeers(this, this.#peers, names, options, this.#life.closing).catch(this.#explain);
  }

  /**
   * Resolves with the first relay that is up as `relayup` means it
   * (registered, its members known), at once when one already is. Like
   * {@linkcode waitForPeer}: before `start()` it waits (the relays come up
   * once started); it rejects with `NodeClosedError` once the node closes,
   * with the signal's reason on abort, and with `NoRelayError`
   * naming the relays after `timeout` (default 10 s; `Infinity` waits for
   * ever), or at once when the node has no `servers` and no relay is up.
   *
   * @example A node without `servers` is refused at once
   * ```ts
   * import { generateKey, Node, NoRelayError } from "@peerbase/peerbase";
   * import assert from "node:assert/strict";
   *
   * const node = new Node({ name: "lan-only", network: "doc", networkKey: generateKey() });
   * await assert.rejects(node.waitForRelay(), NoRelayError);
   * ```
   */
  waitForRelay(options?: WaitOptions): Promise<RelayInfo> {
    const relays = this.#relays;
    return waitForRelay({
      node: this.name,
      servers: this.#servers,
      events: this,
      up: () => relays.announced(),
      relays: () => relays.list(),
      closing: this.#life.closing,
    }, options);
  }

  #emit(type: string, detail: unknown): void {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
