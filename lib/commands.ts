/**
 * The command registry: a tree of namespaces whose leaves are handlers,
 * addressed by dotted paths such as `math.add`.
 *
 * @module
 */

/**
 * How a request reached this node.
 *
 * @example
 * ```ts
 * import type { CallContext, Via } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 *
 * const where = (ctx: CallContext): string => ctx.via === "relay" ? `via ${ctx.relay}` : "on the LAN";
 * const via: Via = "relay";
 * const signal = new AbortController().signal;
 * const ctx = { caller: "desk", instance: "d1", path: "math.add", via, relay: "r1:7000", signal };
 * assert.equal(where(ctx), "via r1:7000");
 * ```
 */
export type Via = "local" | "relay";

/**
 * What a handler learns about the call it serves.
 *
 * @example A handler that stops when the caller gives up
 * ```ts
 * import type { CallContext } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 *
 * const slow = (_node: unknown, _args: unknown[], _kwargs: unknown, ctx: CallContext) =>
 *   new Promise((resolve, reject) => {
 *     const timer = setTimeout(resolve, 60_000, `done for ${ctx.caller}`);
 *     ctx.signal.addEventListener("abort", () => (clearTimeout(timer), reject(ctx.signal.reason)));
 *   });
 * const caller = new AbortController();
 * const ctx: CallContext = {
 *   caller: "desk", instance: "d1", path: "slow", via: "local", signal: caller.signal,
 * };
 * const running = slow(null, [], {}, ctx);
 * caller.abort(new Error("the caller timed out"));
 * await assert.rejects(running, /the caller timed out/);
 * ```
 */
export interface CallContext {
  /** The authenticated caller's node name. */
  caller: string;
  /** The caller's instance id (random per start of that node). */
  instance: string;
  /** The dotted command path that was called. */
  path: string;
  /** `"local"` for a direct LAN connection, `"relay"` when it came through a relay. */
  via: Via;
  /** The relay's `host:port` when `via` is `"relay"`. */
  relay?: string;
  /** Fires when the caller gives up (timeout, abort) or this node closes. */
  signal: AbortSignal;
}

/**
 * A command handler. What it returns (or resolves to) is the answer; what it
 * throws reaches the caller as a `RemoteError` with its `name` and `message`. `node` is the serving node (typed loosely here to keep
 * this file free of the Node class; the Node narrows it).
 */
export type Handler<N = unknown> = (
  node: N,
  args: unknown[],
  kwargs: Record<string, unknown>,
  ctx: CallContext,
) => unknown;

/**
 * A nested tree of handlers, as accepted by `registerCommands` and the
 * `commands` option.
 *
 * @example
 * ```ts
 * import type { CommandTree, Handler } from "@peerbase/peerbase";
 * import { CommandRegistry } from "./commands.ts";
 * import assert from "node:assert/strict";
 *
 * const add: Handler = (_node, args) => (args as number[]).reduce((a, b) => a + b, 0);
 * const tree: CommandTree = { math: { add } };
 * const registry = new CommandRegistry();
 * registry.registerTree(tree);
 * const signal = new AbortController().signal;
 * const ctx = { caller: "desk", instance: "d1", path: "math.add", via: "local" as const, signal };
 * assert.equal(registry.lookup("math.add")?.(null, [2, 3], {}, ctx), 5);
 * ```
 */
export interface CommandTree<N = unknown> {
  /** A handler, or a namespace of further commands; names may not contain `.`. */
  [name: string]: Handler<N> | CommandTree<N>;
}

type Branch = Map<string, Branch | Handler<never>>;

/**
 * Splits and checks a dotted path.
 *
 * @example
 * ```ts
 * import { splitPath } from "./commands.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(splitPath("math.add"), ["math", "add"]);
 * assert.throws(() => splitPath("math..add"), RangeError);
 * ```
 */
export function splitPath(path: string): string[] {
  if (typeof path !== "string") {
    throw new TypeError(`Cannot use command path ${String(path)}: it must be a string`);
  }
  const parts = path.split(".");
  if (parts.some((part) => part === "")) {
    throw new RangeError(
      `Cannot use command path '${path}': each dot-separated part must be non-empty`,
    );
  }
  return parts;
}

/**
 * A tree of command handlers with dotted-path lookup. Registering merges:
 * what is there stays, missing namespaces are created, and a path
 * registered again gets the new handler.
 *
 * @example
 * ```ts
 * import { CommandRegistry } from "./commands.ts";
 * import assert from "node:assert/strict";
 *
 * const registry = new CommandRegistry();
 * registry.registerTree({ math: { add: () => "add" } });
 * registry.registerTree({ mul: () => "mul" }, "math");
 * registry.register("text.case.upper", () => "upper");
 * assert.deepEqual(registry.list(), ["math.add", "math.mul", "text.case.upper"]);
 * assert.throws(() => registry.register("math", () => 0), TypeError); // a namespace
 * assert.equal(registry.lookup("math"), undefined);
 * ```
 */
export class CommandRegistry<N = unknown> {
  #root: Branch = new Map();
  /** Every handler by its full path, for a lookup per request without splitting the path. */
  readonly #byPath = new Map<string, Handler<N>>();

  /**
   * Registers `handler` at `path`, creating intermediate namespaces. Throws
   * when a namespace stands where the function would go, or a function
   * stands where a namespace is needed.
   */
  register(path: string, handler: Handler<N>): void {
    if (typeof handler !== "function") {
      throw new TypeError(`Cannot register '${path}': the handler must be a function`);
    }
    const parts = splitPath(path);
    const leaf = parts.pop()!;
    let branch = this.#root;
    for (const [i, part] of parts.entries()) {
      const next = branch.get(part);
      if (typeof next === "function") {
        throw new TypeError(
          `Cannot register '${path}': '${
            parts.slice(0, i + 1).join(".")
          }' is a command, not a namespace; choose another path`,
        );
      }
      if (next === undefined) {
        const created: Branch = new Map();
        branch.set(part, created);
        branch = created;
      } else {
        branch = next;
      }
    }
    if (branch.get(leaf) instanceof Map) {
      throw new TypeError(
        `Cannot register '${path}': it is a namespace of other commands; choose another path`,
      );
    }
    branch.set(leaf, handler as Handler<never>);
    this.#byPath.set(path, handler);
  }

  /** Merges a nested tree of handlers at `top` (a dotted path) or the root. */
  registerTree(tree: CommandTree<N>, top?: string): void {
    if (typeof tree !== "object" || tree === null) {
      throw new TypeError("Cannot register commands: the tree must be an object");
    }
    const prefix = top === undefined || top === "" ? "" : `${splitPath(top).join(".")}.`;
    for (const [name, value] of Object.entries(tree)) {
      if (name.includes(".")) {
        throw new RangeError(
          `Cannot register '${prefix}${name}': tree keys may not contain '.'; nest objects instead`,
        );
      }
      if (typeof value === "function") this.register(`${prefix}${name}`, value);
      else this.registerTree(value, `${prefix}${name}`);
    }
  }

  /** The handler at `path`, or `undefined` (also for a namespace or a bad path). */
  lookup(path: string): Handler<N> | undefined {
    return this.#byPath.get(path);
  }

  /** Every registered path, flattened and sorted. */
  list(): string[] {
    const out: string[] = [];
    const walk = (branch: Branch, prefix: string) => {
      for (const [name, value] of branch) {
        if (value instanceof Map) walk(value, `${prefix}${name}.`);
        else out.push(`${prefix}${name}`);
      }
    };
    walk(this.#root, "");
    return out.sort();
  }
}
