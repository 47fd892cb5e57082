/**
 * The Node: a named member of an encrypted network that serves commands and
 * calls other members' commands.
 *
 * @module
 */

import { CommandRegistry, type CommandTree, type Handler } from "./commands.ts";
import { Fernet } from "./fernet.ts";
import { type DiscoveredPeer, Discovery } from "./discovery.ts";
import type { Link } from "./link.ts";
import { encodeRecord, type Envelope, type Message } from "./message.ts";
import { type PeerInfo, PeerTable } from "./peers.ts";
import { NodeEvent, type NodeEventMap } from "./events.ts";
import { PendingCalls } from "./calls.ts";
import { Router } from "./router.ts";
import { type RelayInfo, RelayPool } from "./relay_pool.ts";
import type { RelayClient } from "./relay_client.ts";
import type { Member } from "./relay_protocol.ts";
import { Responder } from "./responder.ts";
import { Semaphore } from "./semaphore.ts";
import { type NodeOptions, type ResolvedOptions, resolveOptions } from "./options.ts";
import { formatHostPort } from "./address.ts";
import {
  CommandError,
  ConnectionClosedError,
  NodeClosedError,
  UnsupportedRuntimeError,
} from "./errors.ts";
import { toHex } from "./encoding.ts";

/** Default per-target timeout of `command()`: 5000 ms. */
export const DEFAULT_COMMAND_TIMEOUT = 5000;
/** Default timeout of `getCommands()`: 4000 ms. */
export const DEFAULT_LIST_TIMEOUT = 4000;
/** Default number of targets called at once by one `command()`: 32. */
export const DEFAULT_MAX_CONCURRENCY = 32;

/** Options of {@linkcode Node.command}. Times in milliseconds. */
export interface CommandOptions {
  /** Positional arguments. @default [] */
  args?: unknown[];
  /** Keyword arguments. @default {} */
  kwargs?: Record<string, unknown>;
  /** A peer name, a list of names, or `"*"` for every known peer. @default "*" */
  target?: string | string[];
  /** Reject on failure instead of yielding `null` for the failed target. @default false */
  raiseErrors?: boolean;
  /** Per target, counted from when its request is sent. @default 5000 */
  timeout?: number;
  /** Most targets called at once. @default 32 */
  maxConcurrency?: number;
  /** Aborts the whole call; it rejects with the signal's reason. */
  signal?: AbortSignal;
}

type State = "new" | "starting" | "running" | "closing" | "closed";

const WILDCARDS = new Set(["0.0.0.0", "::", ""]);

/**
 * A member of a peerbase network.
 *
 * @example Two nodes on one machine call each other
 * ```ts
 * import { generateKey, Node } from "@peerbase/peerbase";
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
 * // Discovery takes a moment; wait for alice to appear.
 * for (let i = 0; i < 100 && !bob.peers.some((p) => p.name === "alice"); i++) {
 *   await new Promise((r) => setTimeout(r, 20));
 * }
 * console.log(await bob.command("math.add", { target: "alice", args: [1, 2] })); // 3
 * ```
 */
export class Node extends EventTarget {
  /** This node's name. */
  readonly name: string;
  /** Its network's name. */
  readonly network: string;
  /** Random id of this start of the node (16 hex chars). */
  readonly instance: string;
  /** Resolves once the node has closed: `await node.start(); await node.finished;` blocks. */
  readonly finished: Promise<void>;

  readonly #options: ResolvedOptions<Node>;
  readonly #fernet: Fernet;
  readonly #registry = new CommandRegistry<Node>();
  readonly #peers: PeerTable;
  readonly #pending = new PendingCalls();
  readonly #responder: Responder<Node>;
  readonly #router: Router;
  readonly #selfConflicts = new Set<string>();
  readonly #lifetime = new AbortController();
  #state: State = "new";
  #starting: Promise<void> | null = null;
  #closing: Promise<void> | null = null;
  #resolveFinished!: () => void;
  #listener: Deno.TcpListener | null = null;
  #accepting: Promise<void> | null = null;
  #discovery: Discovery | null = null;
  readonly #relays: RelayPool;
  #requestId = 0;
  #frameId = 0;

  /** Validates `options` (throwing `TypeError`/`RangeError`) and registers the commands. */
  constructor(options: NodeOptions<Node>) {
    super();
    this.#options = resolveOptions(options);
    this.name = this.#options.name;
    this.network = this.#options.network;
    this.#fernet = new Fernet(this.#options.networkKey);
    this.instance = toHex(crypto.getRandomValues(new Uint8Array(8)));
    this.finished = new Promise((resolve) => this.#resolveFinished = resolve);
    this.#peers = new PeerTable({
      onJoin: (peer) => this.#emit(NodeEvent.PEER_JOIN, peer),
      onLeave: (peer) => this.#peerLeft(peer),
      onConflict: (conflict) => this.#emit(NodeEvent.CONFLICT, conflict),
      probe: (name, route) => this.#router.probe(name, route),
    });
    this.#responder = new Responder({
      node: this,
      registry: this.#registry,
      replayWindow: this.#options.replayWindow,
      concurrency: new Semaphore(this.#options.maxInboundConcurrency),
      lifetime: this.#lifetime.signal,
    });
    this.#relays = this.#createRelayPool();
    this.#router = new Router({
      self: { name: this.name, instance: this.instance, network: this.network },
      fernet: this.#fernet,
      maxFrameSize: this.#options.maxFrameSize,
      replayWindow: this.#options.replayWindow,
      connectTimeout: this.#options.connectTimeout,
      peers: this.#peers,
      relays: this.#relays,
      pending: this.#pending,
      nextId: () => ++this.#frameId,
      nextRequestId: () => ++this.#requestId,
      onBatch: (from, envelope, messages) => this.#onBatch(from, envelope, messages),
      isOpen: () => this.#state !== "closing" && this.#state !== "closed",
      onClosed: (link) => this.#responder.abandon(link),
    });
    this.#registerBuiltins();
    if (this.#options.commands) this.#registry.registerTree(this.#options.commands);
  }

  /** Every registered command path, built-ins included, sorted. */
  get commands(): string[] {
    return this.#registry.list();
  }

  /** The peers known now, sorted by name. */
  get peers(): PeerInfo[] {
    return this.#peers.list();
  }

  /** The relays this node uses (maintained and learned), sorted by address. */
  get relays(): RelayInfo[] {
    return this.#relays.list();
  }

  /** The `host:port` this node serves direct calls on, once started with `useLocal`. */
  get address(): string | null {
    const addr = this.#listener?.addr;
    return addr ? formatHostPort(addr) : null;
  }

  /** Registers `handler` at the dotted `path`, creating namespaces as needed. */
  registerCommand(path: string, handler: Handler<Node>): void {
    this.#registry.register(path, handler);
  }

  /** Merges a nested tree of handlers at `top` (a dotted path) or the root. */
  registerCommands(tree: CommandTree<Node>, top?: string): void {
    this.#registry.registerTree(tree, top);
  }

  /**
   * Starts serving and advertising. Resolves once peers can find and call
   * this node. Safe to call twice.
   */
  start(): Promise<void> {
    if (this.#state === "closing" || this.#state === "closed") {
      return Promise.reject(new NodeClosedError(this.name, "the node was closed"));
    }
    this.#starting ??= this.#start();
    return this.#starting;
  }

  async #start(): Promise<void> {
    this.#state = "starting";
    const { servers, useLocal } = this.#options;
    try {
      if (useLocal) await this.#startLocal();
      await this.#relays.startMaintained(servers);
    } catch (error) {
      this.#closing ??= this.#close(false);
      await this.#closing;
      throw error;
    }
    if (this.#state !== "starting") throw new NodeClosedError(this.name, "closed while starting");
    this.#state = "running";
  }

  async #startLocal(): Promise<void> {
    if (typeof Deno.listenDatagram !== "function") {
      throw new UnsupportedRuntimeError(
        'LAN discovery needs UDP: run deno with --unstable-net (or "unstable": ["net"] in deno.json), or pass useLocal: false with servers',
      );
    }
    const { hostname, localPort } = this.#options;
    try {
      this.#listener = Deno.listen({ hostname, port: localPort });
    } catch (cause) {
      const detail = cause instanceof Deno.errors.AddrInUse
        ? `port ${localPort} is already in use; choose another port or 0 for any`
        : (cause as Error).message;
      throw new UnsupportedRuntimeError(`node '${this.name}' cannot listen: ${detail}`, { cause });
    }
    this.#accepting = this.#acceptLoop(this.#listener);
    this.#discovery = new Discovery({
      name: this.name,
      network: this.network,
      instance: this.instance,
      fernet: this.#fernet,
      rpcPort: this.#listener.addr.port,
      ...(WILDCARDS.has(hostname) ? {} : { host: hostname }),
      maxFrameSize: this.#options.maxFrameSize,
      port: this.#options.advertiserPort,
      group: this.#options.multicastGroup,
      interval: this.#options.advertiseInterval,
      onAnnounce: (peer) => this.#announced(peer),
      onBye: (name, instance) => this.#peers.drop(name, instance),
      onTick: () => this.#peers.expire(),
    });
    await this.#discovery.start();
  }

  /**
   * Stops everything: advertising (peers are told), the listener, every
   * connection and timer. Calls in flight reject with
   * {@linkcode NodeClosedError}; running handlers see their signal abort.
   * Safe to call twice.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(awaitStart = true): Promise<void> {
    const wasStarting = this.#starting;
    this.#state = "closing";
    if (awaitStart) await wasStarting?.catch(() => {});
    this.#lifetime.abort(new NodeClosedError(this.name));
    await this.#discovery?.close();
    await this.#relays.close();
    try {
      this.#listener?.close();
    } catch {
      // Already closed.
    }
    await this.#accepting;
    this.#pending.failAll(() => new NodeClosedError(this.name, "it closed during the call"));
    await this.#router.closeAll();
    this.#responder.clear();
    this.#peers.clear();
    this.#state = "closed";
    this.#resolveFinished();
  }

  /** Closes the node (for `await using`). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** Calls `path` on several targets or `"*"`; resolves to `{ [name]: value }`. */
  command<T = unknown>(
    path?: string,
    options?: CommandOptions & { target?: "*" | string[] },
  ): Promise<Record<string, T | null>>;
  /** Calls `path` on one target; resolves to its value (or null on failure without raiseErrors). */
  command<T = unknown>(
    path: string,
    options: CommandOptions & { target: string },
  ): Promise<T | null>;
  async command(path = "__echo__", options: CommandOptions = {}): Promise<unknown> {
    const {
      args = [],
      kwargs = {},
      target = "*",
      raiseErrors = false,
      timeout = DEFAULT_COMMAND_TIMEOUT,
      maxConcurrency = DEFAULT_MAX_CONCURRENCY,
      signal,
    } = options;
    checkCallOptions(path, args, kwargs, target, timeout, maxConcurrency);
    signal?.throwIfAborted();
    if (this.#state !== "running") {
      throw new NodeClosedError(this.name, `it is ${this.#state}; await start() first`);
    }
    const id = ++this.#requestId;
    const record = encodeRecord({ k: "q", id, p: path, a: args, kw: kwargs });
    if (typeof target === "string" && target !== "*") {
      try {
        return await this.#router.call(target, path, id, record, timeout, signal);
      } catch (error) {
        if (signal?.aborted) throw signal.reason;
        if (raiseErrors) throw error;
        return null;
      }
    }
    const targets = target === "*" ? this.peers.map((peer) => peer.name) : [...new Set(target)];
    const gate = new Semaphore(maxConcurrency);
    const results: Record<string, unknown> = {};
    const run = async (name: string) => {
      await gate.acquire(signal);
      try {
        results[name] = await this.#router.call(name, path, id, record, timeout, signal);
      } catch (error) {
        if (signal?.aborted) throw signal.reason;
        results[name] = error;
      } finally {
        gate.release();
      }
    };
    await Promise.all(targets.map(run));
    if (raiseErrors && Object.values(results).some((v) => v instanceof Error)) {
      throw new CommandError(path, results);
    }
    const out: Record<string, unknown> = {};
    for (const name of targets) out[name] = results[name] instanceof Error ? null : results[name];
    return out;
  }

  /** Lists the commands of several targets or `"*"` (`__list_commands__`). */
  getCommands(
    options?: Omit<CommandOptions, "args" | "kwargs" | "target"> & { target?: "*" | string[] },
  ): Promise<Record<string, string[] | null>>;
  /** Lists the commands of one target. */
  getCommands(
    options: Omit<CommandOptions, "args" | "kwargs" | "target"> & { target: string },
  ): Promise<string[] | null>;
  getCommands(options: Omit<CommandOptions, "args" | "kwargs"> = {}): Promise<unknown> {
    return this.command<string[]>(
      "__list_commands__",
      {
        timeout: DEFAULT_LIST_TIMEOUT,
        ...options,
      } as CommandOptions & { target: string },
    );
  }

  async #acceptLoop(listener: Deno.TcpListener): Promise<void> {
    try {
      for await (const conn of listener) {
        if (this.#state === "closing" || this.#state === "closed") {
          conn.close();
          continue;
        }
        conn.setNoDelay(true);
        this.#router.adopt(conn);
      }
    } catch {
      // The listener was closed.
    }
  }

  #onBatch(link: Link, envelope: Envelope, messages: Message[]): void {
    for (const message of messages) {
      switch (message.k) {
        case "q":
          this.#responder.serve(link, envelope, message);
          break;
        case "x":
          this.#responder.cancel(envelope, message.id);
          break;
        case "ping":
          link.send(envelope.s, envelope.i, encodeRecord({ k: "pong", id: message.id }));
          break;
        case "relays":
          this.#relays.learn(message.l);
          break;
        default:
          this.#pending.settle(envelope.s, message);
      }
    }
  }

  #announced(peer: DiscoveredPeer): void {
    if (peer.name === this.name) {
      if (!this.#selfConflicts.has(peer.instance)) {
        this.#selfConflicts.add(peer.instance);
        this.#emit(NodeEvent.CONFLICT, {
          name: this.name,
          instances: [this.instance, peer.instance],
        });
        void this.#discovery?.announce();
      }
      return;
    }
    this.#peers.seen(peer.name, {
      instance: peer.instance,
      hostname: peer.hostname,
      port: peer.port,
      interval: peer.interval,
      lastSeen: Date.now(),
      ...(peer.maxFrameSize ? { maxFrameSize: peer.maxFrameSize } : {}),
    });
  }

  #peerLeft(peer: PeerInfo): void {
    this.#router.forget(peer.name, peer.instance);
    this.#emit(NodeEvent.PEER_LEAVE, peer);
  }

  #createRelayPool(): RelayPool {
    return new RelayPool({
      maxRemotes: this.#options.maxRemotes,
      client: {
        fernet: this.#fernet,
        self: { name: this.name, instance: this.instance, network: this.network },
        maxFrameSize: this.#options.maxFrameSize,
        replayWindow: this.#options.replayWindow,
        keepaliveTick: this.#options.keepaliveTick,
        connectTimeout: this.#options.connectTimeout,
        nextId: () => ++this.#frameId,
        onBatch: (from, envelope, messages) => this.#onBatch(from, envelope, messages),
        onMembers: (client, join, leave) => this.#relayMembers(client, join, leave),
        onLinkClosed: (client, link, reason) =>
          this.#pending.failLink(
            link,
            (peer) => new ConnectionClosedError(peer, `relay ${client.address} closed: ${reason}`),
          ),
        onStatus: (client, up, reason) =>
          this.#emit(up ? NodeEvent.RELAY_UP : NodeEvent.RELAY_DOWN, {
            relay: client.address,
            reason,
          }),
      },
    });
  }

  #relayMembers(client: RelayClient, join: Member[], leave: Member[]): void {
    const relay = client.address;
    for (const [name, instance] of leave) {
      this.#peers.relayLeave(name, instance, relay);
      const link = client.link;
      if (link) {
        this.#pending.failPeer(
          name,
          link,
          () => new ConnectionClosedError(name, `it left relay ${relay}`),
        );
      }
    }
    for (const [name, instance] of join) this.#peers.relayJoin(name, instance, relay);
    this.#reportRelays(client, join);
  }

  /**
   * Tells members that just appeared at `client`'s relay about the other
   * relays this node knows, inside sealed messages (a relay cannot forge or
   * alter them, so it cannot make nodes dial arbitrary hosts).
   */
  #reportRelays(client: RelayClient, members: Member[]): void {
    const others = this.#relays.addresses().filter((a) => a !== client.address);
    const link = client.link;
    if (others.length === 0 || !link || members.length === 0) return;
    const record = encodeRecord({ k: "relays", id: 0, l: others.slice(0, 64) });
    for (const [name, instance] of members) {
      try {
        link.send(name, instance, record);
      } catch {
        return; // The relay link is gone; its members are gone with it.
      }
    }
  }

  #emit(type: string, detail: unknown): void {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  #registerBuiltins(): void {
    this.#registry.register("__echo__", (node, args, kwargs) => ({
      node: node.name,
      time: new Date().toISOString(),
      args,
      kwargs,
    }));
    this.#registry.register("__list_commands__", (node) => node.commands);
    this.#registry.register("__peers__", (node) => node.peers);
  }
}

function checkCallOptions(
  path: unknown,
  args: unknown,
  kwargs: unknown,
  target: unknown,
  timeout: unknown,
  maxConcurrency: unknown,
): void {
  if (typeof path !== "string" || path === "") {
    throw new TypeError("Cannot call: the command path must be a non-empty string");
  }
  if (!Array.isArray(args)) throw new TypeError("Cannot call: args must be an array");
  if (
    typeof target !== "string" &&
    !(Array.isArray(target) && target.every((name) => typeof name === "string"))
  ) {
    throw new TypeError('Cannot call: target must be a peer name, an array of names, or "*"');
  }
  if (typeof kwargs !== "object" || kwargs === null || Array.isArray(kwargs)) {
    throw new TypeError("Cannot call: kwargs must be a plain object");
  }
  if (typeof timeout !== "number" || !(timeout > 0) || timeout > 2_147_483_647) {
    throw new RangeError(`Cannot call: timeout must be a positive number of ms, got ${timeout}`);
  }
  if (!Number.isInteger(maxConcurrency) || (maxConcurrency as number) < 1) {
    throw new RangeError(
      `Cannot call: maxConcurrency must be a positive integer, got ${maxConcurrency}`,
    );
  }
}

/** Typed `addEventListener` for {@linkcode NodeEventMap}. */
export interface Node {
  /** Listens for a node event. */
  addEventListener<K extends keyof NodeEventMap>(
    type: K,
    listener: (event: NodeEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  /** Listens for any event. */
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  /** Stops listening for a node event. */
  removeEventListener<K extends keyof NodeEventMap>(
    type: K,
    listener: (event: NodeEventMap[K]) => void,
    options?: boolean | EventListenerOptions,
  ): void;
  /** Stops listening for any event. */
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void;
}
