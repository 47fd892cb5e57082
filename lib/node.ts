/**
 * The Node: a named member of an encrypted network that serves commands and
 * calls other members' commands. This file wires the parts together (the
 * caller, router, relay pool, LAN presence, responder and inbox) and keeps
 * the node's lifecycle.
 *
 * @module
 */

import { CommandRegistry, type CommandTree, type Handler } from "./commands.ts";
import { Fernet } from "./fernet.ts";
import "./fernet_node.ts"; // The synchronous backend: the fast path for small calls on Deno.
import { type PeerInfo, PeerTable } from "./peers.ts";
import { NodeEvent, NodeEventTarget } from "./events.ts";
import { PendingCalls } from "./calls.ts";
import { Router } from "./router.ts";
import { type RelayInfo, RelayPool } from "./relay_pool.ts";
import { Responder } from "./responder.ts";
import { Semaphore } from "./semaphore.ts";
import { NodeInbox } from "./inbox.ts";
import { Lan } from "./lan.ts";
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
import { NodeClosedError } from "./errors.ts";
import { Lifecycle } from "./lifecycle.ts";
import { toHex } from "./encoding.ts";

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
  /** Random id of this start of the node (16 hex chars). */
  readonly instance: string;

  readonly #servers: string[];
  readonly #registry = new CommandRegistry<Node>();
  readonly #peers: PeerTable;
  readonly #pending = new PendingCalls();
  readonly #stats = new StatsRecorder();
  readonly #responder: Responder<Node>;
  readonly #router: Router;
  readonly #relays: RelayPool;
  readonly #lan: Lan | null;
  readonly #caller: Caller;
  readonly #lifetime = new AbortController();
  readonly #life: Lifecycle;
  #requestId = 0;
  #frameId = 0;

  /**
   * Validates `options` (throwing `TypeError`/`RangeError`) and registers the commands.
   *
   * @example A bad option throws at once, naming it
   * ```ts
   * import { generateKey, Node } from "@peerbase/peerbase";
   * import assert from "node:assert/strict";
   *
   * const networkKey = generateKey();
   * assert.throws(() => new Node({ name: "a*b", network: "office", networkKey }), RangeError);
   * // Python's max_remotes=None is "leave maxRemotes unset" here; null is refused.
   * const fromPython = { name: "a", network: "office", networkKey, maxRemotes: null };
   * assert.throws(() => new Node(fromPython as never), TypeError);
   * ```
   */
  constructor(options: NodeOptions<Node>) {
    super();
    const o = resolveOptions(options);
    this.#servers = o.servers;
    this.name = o.name;
    this.network = o.network;
    this.instance = toHex(crypto.getRandomValues(new Uint8Array(8)));
    this.#life = new Lifecycle(o.name, { open: () => this.#open(), shut: () => this.#shut() });
    const self = { name: this.name, instance: this.instance, network: this.network };
    const fernet = new Fernet(o.networkKey);
    const emit = (type: string) => (detail: unknown) => this.#emit(type, detail);
    const nextRequestId = () => ++this.#requestId;
    const { maxFrameSize, replayWindow, connectTimeout, keepaliveTick, maxRemotes, clientOnly } = o;
    const shared = {
      fernet,
      self,
      maxFrameSize,
      replayWindow,
      connectTimeout,
      transport: tcpTransport,
      nextId: () => ++this.#frameId,
      peers: this.#peers = new PeerTable({
        onJoin: emit(NodeEvent.PEER_JOIN),
        onLeave: (peer) => {
          this.#router.forget(peer.name, peer.instance);
          this.#emit(NodeEvent.PEER_LEAVE, peer);
        },
        onConflict: emit(NodeEvent.CONFLICT),
        probe: (name, route) => this.#router.probe(name, route),
      }),
      pending: this.#pending,
    };
    this.#responder = new Responder({
      node: this,
      registry: this.#registry,
      replayWindow,
      concurrency: new Semaphore(o.maxInboundConcurrency),
      lifetime: this.#lifetime.signal,
    });
    this.#relays = new RelayPool({
      ...shared,
      maxRemotes,
      status: {
        relayStatus: (relay, up, reason) =>
          this.#emit(up ? NodeEvent.RELAY_UP : NodeEvent.RELAY_DOWN, { relay, reason }),
      },
      client: { ...shared, keepaliveTick, clientOnly, onBatch: (...b) => inbox.deliver(...b) },
    });
    const inbox = new NodeInbox({
      ...shared,
      responder: this.#responder,
      relays: this.#relays,
      stats: this.#stats,
    });
    this.#router = new Router({
      ...shared,
      relays: this.#relays,
      inbox,
      stats: this.#stats,
      nextRequestId,
      closing: this.#lifetime.signal,
      ...(o.debug ? { debug: emit(NodeEvent.DEBUG) } : {}),
    });
    const router = this.#router;
    const onConflict = emit(NodeEvent.CONFLICT);
    this.#lan = o.useLocal ? new Lan({ ...shared, ...o, self, router, onConflict }) : null;
    this.#caller = new Caller({
      name: this.name,
      router,
      peers: shared.peers,
      assertRunning: () => this.#life.assertRunning(),
      nextRequestId,
    });
    registerBuiltins(this.#registry);
    if (o.commands) this.#registry.registerTree(o.commands);
  }

  /**
   * Resolves once the node has closed. A server wires signals to `close()`
   * (so peers hear its bye) and then waits on it.
   *
   * @example A server that says goodbye on Ctrl-C
   * ```ts ignore
   * await node.start();
   * for (const sig of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(sig, () => node.close());
   * await node.finished;
   * ```
   */
  get finished(): Promise<void> {
    return this.#life.finished;
  }

  /**
   * Every registered command path, built-ins included, sorted.
   *
   * @example
   * ```ts
   * import { generateKey, Node } from "@peerbase/peerbase";
   * import assert from "node:assert/strict";
   *
   * const networkKey = generateKey();
   * const network = `doc-${crypto.randomUUID().slice(0, 8)}`;
   * await using node = new Node({ name: "calc", network, networkKey, commands: { math: {} } });
   * node.registerCommand("math.add", (_node, args) => (args as number[]).reduce((a, b) => a + b, 0));
   * assert.deepEqual(node.commands, ["__echo__", "__list_commands__", "__peers__", "math.add"]);
   * ```
   */
  get commands(): string[] {
    return this.#registry.list();
  }

  /**
   * The peers known now, sorted by name (what `__peers__` answers).
   *
   * @example
   * ```ts
   * import { generateKey, Node } from "@peerbase/peerbase";
   * import assert from "node:assert/strict";
   *
   * const networkKey = generateKey();
   * const network = `doc-${crypto.randomUUID().slice(0, 8)}`;
   * await using alice = new Node({ name: "alice", network, networkKey, hostname: "127.0.0.1" });
   * await using bob = new Node({ name: "bob", network, networkKey, hostname: "127.0.0.1" });
   * await alice.start();
   * await bob.start();
   * await bob.waitForPeer("alice");
   * const [peer] = bob.peers;
   * assert.equal(peer?.name, "alice");
   * assert.equal(peer?.local, true);
   * assert.equal(peer?.address, alice.address);
   * assert.deepEqual(peer?.relays, []);
   * ```
   */
  get peers(): PeerInfo[] {
    return this.#peers.list();
  }

  /**
   * The relays this node uses (maintained and learned), sorted by address.
   *
   * @example A relay-only node
   * ```ts
   * import { generateKey, Node } from "@peerbase/peerbase";
   * import { Relay } from "@peerbase/peerbase/relay";
   * import assert from "node:assert/strict";
   *
   * await using relay = new Relay({ hostname: "127.0.0.1", port: 0 });
   * await relay.start();
   * const address = `127.0.0.1:${relay.addr.port}`;
   * await using node = new Node({
   *   name: "worker", network: "office", networkKey: generateKey(),
   *   useLocal: false, servers: address,
   * });
   * await node.start();
   * assert.deepEqual(node.relays, [{ address, up: true, maintained: true }]);
   * ```
   */
  get relays(): RelayInfo[] {
    return this.#relays.list();
  }

  /**
   * The `host:port` peers are told to call for direct calls, once started
   * with `useLocal` (a node bound to every interface reports its primary
   * address, not `0.0.0.0`); null otherwise.
   *
   * @example
   * ```ts
   * import { generateKey, Node } from "@peerbase/peerbase";
   * import assert from "node:assert/strict";
   *
   * const networkKey = generateKey();
   * const network = `doc-${crypto.randomUUID().slice(0, 8)}`;
   * await using node = new Node({ name: "alice", network, networkKey, hostname: "127.0.0.1" });
   * assert.equal(node.address, null);
   * await node.start();
   * assert.match(node.address!, /^127\.0\.0\.1:\d+$/);
   * ```
   */
  get address(): string | null {
    return this.#lan?.address ?? null;
  }

  /**
   * Counters: calls sent and served by path, retries, failovers, relay
   * round trips. With the `debug` option the node also dispatches a `debug`
   * event for each route decision.
   *
   * @example Where did the call go?
   * ```ts
   * import { generateKey, Node, type RouteDecision } from "@peerbase/peerbase";
   * import assert from "node:assert/strict";
   *
   * const networkKey = generateKey();
   * const network = `doc-${crypto.randomUUID().slice(0, 8)}`;
   * await using alice = new Node({ name: "alice", network, networkKey, hostname: "127.0.0.1" });
   * await using bob = new Node({
   *   name: "bob", network, networkKey, hostname: "127.0.0.1", debug: true,
   * });
   * const decisions: RouteDecision[] = [];
   * bob.addEventListener("debug", (event) => decisions.push(event.detail));
   * await alice.start();
   * await bob.start();
   * await bob.waitForPeer("alice");
   * await bob.command("__echo__", { target: "alice" });
   * assert.equal(bob.stats.sent, 1);
   * assert.deepEqual(bob.stats.routes.direct, { sent: 1, served: 0 });
   * assert.equal(alice.stats.served, 1);
   * assert.equal(decisions[0]?.route, "direct");
   * assert.equal(decisions[0]?.peer, "alice");
   * ```
   */
  get stats(): NodeStats {
    return this.#stats.snapshot(this.#relays.roundTrips());
  }

  /**
   * Registers `handler` at the dotted `path`, creating namespaces as
   * needed; a path registered again gets the new handler.
   *
   * @example
   * ```ts
   * import { generateKey, Node } from "@peerbase/peerbase";
   * import assert from "node:assert/strict";
   *
   * const networkKey = generateKey();
   * const network = `doc-${crypto.randomUUID().slice(0, 8)}`;
   * await using node = new Node({ name: "calc", network, networkKey });
   * node.registerCommand("text.upper", (_node, [s]) => String(s).toUpperCase());
   * assert.ok(node.commands.includes("text.upper"));
   * assert.throws(() => node.registerCommand("text", () => 0), TypeError); // a namespace
   * ```
   */
  registerCommand(path: string, handler: Handler<Node>): void {
    this.#registry.register(path, handler);
  }

  /**
   * Merges a nested tree of handlers at `top` (a dotted path) or the root:
   * commands already registered stay, missing namespaces are created.
   *
   * @example
   * ```ts
   * import { generateKey, Node } from "@peerbase/peerbase";
   * import assert from "node:assert/strict";
   *
   * const networkKey = generateKey();
   * const network = `doc-${crypto.randomUUID().slice(0, 8)}`;
   * await using node = new Node({
   *   name: "calc", network, networkKey,
   *   commands: { math: { add: (_node, args) => (args as number[]).reduce((a, b) => a + b, 0) } },
   * });
   * node.registerCommands({ mul: (_node, args) => (args as number[]).reduce((a, b) => a * b, 1) }, "math");
   * node.registerCommands({ upper: (_node, [s]) => String(s).toUpperCase() }, "text.case");
   * const mine = node.commands.filter((path) => !path.startsWith("__"));
   * assert.deepEqual(mine, ["math.add", "math.mul", "text.case.upper"]);
   * ```
   */
  registerCommands(tree: CommandTree<Node>, top?: string): void {
    this.#registry.registerTree(tree, top);
  }

  /**
   * Starts serving and advertising. Resolves once peers can find and call
   * this node; it does not wait for peers (use {@linkcode waitForPeer}).
   * Safe to call twice. Rejects with `NoMulticastError` when no interface
   * carries multicast, and `PortInUseError` when a port is held.
   *
   * @example Calls before `start()` reject with NodeNotStartedError
   * ```ts
   * import { generateKey, Node, NodeNotStartedError } from "@peerbase/peerbase";
   * import assert from "node:assert/strict";
   *
   * const networkKey = generateKey();
   * const network = `doc-${crypto.randomUUID().slice(0, 8)}`;
   * await using node = new Node({ name: "alice", network, networkKey, hostname: "127.0.0.1" });
   * await assert.rejects(node.command("__echo__", { target: "bob" }), NodeNotStartedError);
   * await node.start();
   * await node.start(); // safe
   * assert.ok(node.address !== null);
   * ```
   */
  start(): Promise<void> {
    return this.#life.start();
  }

  /**
   * Stops everything: calls in flight reject with
   * {@linkcode NodeClosedError}, running handlers see their signal abort,
   * peers are told (LAN bye, relay leave), then the listener, every
   * connection and timer close. Safe to call twice.
   *
   * @example A closed node cannot start again
   * ```ts
   * import { generateKey, Node, NodeClosedError } from "@peerbase/peerbase";
   * import assert from "node:assert/strict";
   *
   * const networkKey = generateKey();
   * const network = `doc-${crypto.randomUUID().slice(0, 8)}`;
   * const node = new Node({ name: "alice", network, networkKey, hostname: "127.0.0.1" });
   * await node.start();
   * await node.close();
   * await node.close(); // safe
   * await node.finished; // resolved
   * await assert.rejects(node.start(), NodeClosedError);
   * ```
   */
  close(): Promise<void> {
    return this.#life.close();
  }

  async #open(): Promise<void> {
    await this.#lan?.start();
    await this.#relays.startMaintained(this.#servers);
  }

  async #shut(): Promise<void> {
    this.#lifetime.abort(new NodeClosedError(this.name));
    this.#pending.failAll(() => new NodeClosedError(this.name, "it closed during the call"));
    await this.#lan?.close();
    await this.#relays.close();
    await this.#router.stopListening();
    await this.#router.closeAll();
    this.#responder.clear();
    this.#peers.clear();
  }

  /** Closes the node (for `await using`). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /**
   * Calls `path` on every known peer (`target` unset or `"*"`) or on a list
   * of names; resolves to `{ [name]: value }`. Rejects with
   * {@linkcode CommandError} (every target's result kept) when one fails,
   * unless `raiseErrors: false` (then failed targets are `null`).
   *
   * @example Several targets: CommandError keeps the answers that arrived
   * ```ts
   * import { CommandError, generateKey, Node, PeerNotFoundError } from "@peerbase/peerbase";
   * import assert from "node:assert/strict";
   *
   * const networkKey = generateKey();
   * const network = `doc-${crypto.randomUUID().slice(0, 8)}`;
   * await using alice = new Node({ name: "alice", network, networkKey, hostname: "127.0.0.1" });
   * await using bob = new Node({ name: "bob", network, networkKey, hostname: "127.0.0.1" });
   * await alice.start();
   * await bob.start();
   * await bob.waitForPeer("alice");
   *
   * const everyone = await bob.command<{ node: string }>("__echo__"); // target "*"
   * assert.equal(everyone.alice?.node, "alice");
   * await assert.rejects(bob.command("__echo__", { target: ["alice", "nobody"] }), (error) => {
   *   assert.ok(error instanceof CommandError);
   *   assert.equal((error.results.alice as { node: string }).node, "alice");
   *   assert.ok(error.results.nobody instanceof PeerNotFoundError);
   *   return true;
   * });
   * const quiet = await bob.command("__echo__", { target: ["alice", "nobody"], raiseErrors: false });
   * assert.equal(quiet.nobody, null);
   * ```
   */
  command<T = unknown, O extends CommandOptions = CommandOptions>(
    path: string,
    options?: O & { target?: "*" | string[] },
  ): Promise<ManyResult<T, O>>;
  /**
   * Calls `path` on one target; resolves to its value, or rejects with the
   * typed error (`null` instead with `raiseErrors: false`). A `string`
   * variable that may hold `"*"` types as either shape.
   *
   * @example One target: its value, or the typed error
   * ```ts
   * import { generateKey, Node, UnknownCommandError } from "@peerbase/peerbase";
   * import assert from "node:assert/strict";
   *
   * const networkKey = generateKey();
   * const network = `doc-${crypto.randomUUID().slice(0, 8)}`;
   * await using alice = new Node({
   *   name: "alice", network, networkKey, hostname: "127.0.0.1",
   *   commands: { math: { add: (_node, args) => (args as number[]).reduce((a, b) => a + b, 0) } },
   * });
   * await using bob = new Node({ name: "bob", network, networkKey, hostname: "127.0.0.1" });
   * await alice.start();
   * await bob.start();
   * await bob.waitForPeer("alice");
   *
   * const sum: number = await bob.command<number>("math.add", { target: "alice", args: [2, 3] });
   * assert.equal(sum, 5);
   * await assert.rejects(bob.command("math.pow", { target: "alice" }), UnknownCommandError);
   * assert.equal(await bob.command("math.pow", { target: "alice", raiseErrors: false }), null);
   * await assert.rejects(bob.command("__echo__", { target: "bob" }), RangeError); // itself
   * // Python's positional command(path, args, kwargs, target), as plain JS might call it:
   * const untyped = bob.command.bind(bob) as (...args: unknown[]) => Promise<unknown>;
   * await assert.rejects(untyped("math.add", [2, 3], {}, "alice"), TypeError);
   * ```
   */
  command<T = unknown, N extends string = never, O extends CommandOptions = CommandOptions>(
    path: string,
    options: O & { target: [N] extends [never] ? string : N },
  ): Promise<CommandResult<T, N, O>>;
  command(path: string, options?: CommandOptions, ...extra: unknown[]): Promise<unknown> {
    return this.#caller.command(path, options, extra.length);
  }

  /**
   * Lists the commands of every known peer or of a list of names
   * (`__list_commands__`); the default timeout is {@linkcode DEFAULT_LIST_TIMEOUT}.
   *
   * @example
   * ```ts
   * import { generateKey, Node } from "@peerbase/peerbase";
   * import assert from "node:assert/strict";
   *
   * const networkKey = generateKey();
   * const network = `doc-${crypto.randomUUID().slice(0, 8)}`;
   * await using alice = new Node({
   *   name: "alice", network, networkKey, hostname: "127.0.0.1",
   *   commands: { math: { add: () => 0 } },
   * });
   * await using bob = new Node({ name: "bob", network, networkKey, hostname: "127.0.0.1" });
   * await alice.start();
   * await bob.start();
   * await bob.waitForPeer("alice");
   * const one: string[] = await bob.getCommands({ target: "alice" });
   * assert.deepEqual(one, ["__echo__", "__list_commands__", "__peers__", "math.add"]);
   * const all = await bob.getCommands(); // every peer, even when there is only one
   * assert.deepEqual(all, { alice: one });
   * ```
   */
  getCommands<O extends Omit<CommandOptions, "args" | "kwargs" | "target">>(
    options?: O & { target?: "*" | string[] },
  ): Promise<ManyResult<string[], O>>;
  /** Lists the commands of one target. */
  getCommands<O extends Omit<CommandOptions, "args" | "kwargs" | "target">>(
    options: O & { target: string },
  ): Promise<SingleResult<string[], O>>;
  getCommands(options: Omit<CommandOptions, "args" | "kwargs"> = {}): Promise<unknown> {
    return this.#caller.command("__list_commands__", {
      timeout: DEFAULT_LIST_TIMEOUT,
      ...options,
    }, 0);
  }

  /**
   * Resolves once the peer `name` can be called (with its
   * {@linkcode PeerInfo}), or every peer of a list (with theirs, in order).
   * Rejects with {@linkcode PeerNotFoundError} after `timeout` (default
   * 10 s; `Infinity` waits for ever), or with `signal`'s reason.
   *
   * @example
   * ```ts
   * import { generateKey, Node, PeerNotFoundError } from "@peerbase/peerbase";
   * import assert from "node:assert/strict";
   *
   * const networkKey = generateKey();
   * const network = `doc-${crypto.randomUUID().slice(0, 8)}`;
   * await using alice = new Node({ name: "alice", network, networkKey, hostname: "127.0.0.1" });
   * await using bob = new Node({ name: "bob", network, networkKey, hostname: "127.0.0.1" });
   * await bob.start();
   * await assert.rejects(bob.waitForPeer("alice", { timeout: 50 }), PeerNotFoundError);
   * await alice.start();
   * const peer = await bob.waitForPeer("alice");
   * assert.equal(peer.name, "alice");
   * assert.equal(peer.instance, alice.instance);
   * const [again] = await bob.waitForPeer(["alice"], { signal: AbortSignal.timeout(5000) });
   * assert.equal(again?.name, "alice");
   * ```
   */
  waitForPeer(name: string, options?: WaitOptions): Promise<PeerInfo>;
  /** Waits for every peer of `names`. */
  waitForPeer(names: string[], options?: WaitOptions): Promise<PeerInfo[]>;
  waitForPeer(names: string | string[], options?: WaitOptions): Promise<unknown> {
    return waitForPeers(this, this.#peers, names, options);
  }

  #emit(type: string, detail: unknown): void {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
