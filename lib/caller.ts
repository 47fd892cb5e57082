/**
 * The calling side of `node.command()`: option checks, one target or a
 * fan-out to several within a concurrency cap, how failures surface
 * (thrown by default, `null`s on request), and waiting for peers.
 *
 * @module
 */

import { encodeRecord, type Message, stampRequest } from "./message.ts";
import type { Router } from "./router.ts";
import type { PeerInfo, PeerTable } from "./peers.ts";
import { Semaphore } from "./semaphore.ts";
import { CommandError, PeerNotFoundError } from "./errors.ts";

/**
 * Default per-target timeout of `command()`: 5000 ms.
 *
 * @example The defaults, in milliseconds
 * ```ts
 * import {
 *   DEFAULT_COMMAND_TIMEOUT,
 *   DEFAULT_LIST_TIMEOUT,
 *   DEFAULT_MAX_CONCURRENCY,
 *   DEFAULT_WAIT_TIMEOUT,
 * } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 *
 * assert.equal(DEFAULT_COMMAND_TIMEOUT, 5000); // Python: timeout=5 (seconds)
 * assert.equal(DEFAULT_LIST_TIMEOUT, 4000); // Python: get_commands(timeout=4)
 * assert.equal(DEFAULT_MAX_CONCURRENCY, 32); // Python: max_threads=32
 * assert.equal(DEFAULT_WAIT_TIMEOUT, 10_000);
 * ```
 */
export const DEFAULT_COMMAND_TIMEOUT = 5000;
/** Default timeout of `getCommands()`: 4000 ms. */
export const DEFAULT_LIST_TIMEOUT = 4000;
/** Default number of targets called at once by one `command()`: 32. */
export const DEFAULT_MAX_CONCURRENCY = 32;
/** Default time `waitForPeer()` waits: 10 000 ms. */
export const DEFAULT_WAIT_TIMEOUT = 10_000;
/** How often `waitForPeer()` looks again besides on `peerjoin`, ms. */
const WAIT_POLL_INTERVAL = 200;
/** Longest finite timeout a timer can hold, ms (about 24.8 days). */
export const MAX_TIMEOUT = 2_147_483_647;

/**
 * Options of {@linkcode Node.command}. Times in milliseconds.
 *
 * @example Python's `timeout=None` and `raise_errors=False`
 * ```ts
 * import type { CommandOptions } from "@peerbase/peerbase";
 * import { checkTimeout } from "./caller.ts";
 * import assert from "node:assert/strict";
 *
 * const options: CommandOptions = { target: "calc", timeout: null, raiseErrors: false };
 * assert.equal(checkTimeout(options.timeout, "Cannot call"), Infinity); // no timer is armed
 * assert.throws(() => checkTimeout(0, "Cannot call"), RangeError);
 * ```
 */
export interface CommandOptions {
  /** Positional arguments. @default [] */
  args?: unknown[];
  /** Keyword arguments. @default {} */
  kwargs?: Record<string, unknown>;
  /** A peer name, a list of names, or `"*"` for every known peer. @default "*" */
  target?: string | string[];
  /**
   * Reject with the typed error when a call fails (for several targets, a
   * {@linkcode CommandError} that keeps the others' results). `false`
   * yields `null` for each failed target instead, as Python peerbase does.
   * @default true
   */
  raiseErrors?: boolean;
  /**
   * Per target, counted from when its request is sent. `Infinity` or
   * `null` means no limit (Python's `timeout=None`).
   * @default 5000
   */
  timeout?: number | null;
  /** Most targets called at once. @default 32 */
  maxConcurrency?: number;
  /** Aborts the whole call; it rejects with the signal's reason. */
  signal?: AbortSignal;
}

/**
 * A call's result for one target: `T`, or `T | null` with `raiseErrors: false`.
 *
 * @example
 * ```ts
 * import type { SingleResult } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 *
 * const thrown: SingleResult<number, { target: "calc" }> = 5; // null would not type-check
 * const quiet: SingleResult<number, { raiseErrors: false }> = null;
 * assert.equal(thrown, 5);
 * assert.equal(quiet, null);
 * ```
 */
export type SingleResult<T, O> = O extends { raiseErrors: false } ? T | null : T;
/**
 * A call's result for several targets: each target's {@linkcode SingleResult}.
 *
 * @example
 * ```ts
 * import type { ManyResult } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 *
 * const results: ManyResult<number, { raiseErrors: false }> = { a: 1, b: null };
 * assert.deepEqual(Object.keys(results), ["a", "b"]);
 * ```
 */
export type ManyResult<T, O> = Record<string, SingleResult<T, O>>;
/**
 * What `command()` resolves to for a `target` of type `N`: one value for a
 * single name, a record for `"*"` or a list, and either when the target is
 * a `string` whose value is not known to the type checker.
 *
 * @example
 * ```ts
 * import type { CommandResult, ManyResult } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 *
 * const one: CommandResult<number, "calc", object> = 5;
 * const all: CommandResult<number, "*", object> = { calc: 5 };
 * // A `string` might hold "*": the value or the record, to be told apart at run time.
 * const either: CommandResult<number, string, object> = { calc: 5 };
 * assert.equal(one, 5);
 * assert.deepEqual(all, either as ManyResult<number, object>);
 * ```
 */
export type CommandResult<T, N, O> = [N] extends [never] ? SingleResult<T, O>
  : string extends N ? SingleResult<T, O> | ManyResult<T, O>
  : N extends "*" ? ManyResult<T, O>
  : SingleResult<T, O>;

/**
 * Options of {@linkcode Node.waitForPeer}.
 *
 * @example
 * ```ts
 * import type { WaitOptions } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 *
 * const forever: WaitOptions = { timeout: Infinity, signal: AbortSignal.timeout(60_000) };
 * assert.equal(forever.timeout, Infinity);
 * ```
 */
export interface WaitOptions {
  /** Give up after this long, ms; `Infinity` or `null` waits until `signal` aborts. @default 10000 */
  timeout?: number | null;
  /** Stops waiting; the wait rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** What a {@linkcode Caller} needs from its node. */
export interface CallerParts {
  /** The calling node's name (a node cannot call itself). */
  name: string;
  router: Router;
  peers: PeerTable;
  /** Throws the typed error when the node cannot call now (not started, closed). */
  assertRunning: () => void;
  /** Next request id of this node instance. */
  nextRequestId: () => number;
}

/** Checked and defaulted call options. */
interface Call {
  path: string;
  /** The encoded request; with `stamped`, its `t` and `dl` are in it already. */
  record: Uint8Array;
  stamped: boolean;
  id: number;
  targets: string | string[];
  raiseErrors: boolean;
  timeout: number;
  maxConcurrency: number;
  signal: AbortSignal | undefined;
}

/** Sends calls for one node. */
export class Caller {
  readonly #parts: CallerParts;

  /** Creates the caller over `parts`. */
  constructor(parts: CallerParts) {
    this.#parts = parts;
  }

  /** `node.command(path, options)`; `extra` is anything passed after the options. */
  async command(path: unknown, options: unknown, extra: number): Promise<unknown> {
    const call = this.#check(path, options, extra);
    call.signal?.throwIfAborted();
    this.#parts.assertRunning();
    if (typeof call.targets === "string") {
      try {
        return await this.#one(call, call.targets);
      } catch (error) {
        if (call.signal?.aborted) throw call.signal.reason;
        if (call.raiseErrors) throw error;
        return null;
      }
    }
    return await this.#many(call, call.targets);
  }

  /**
   * Calls one target. The request is stamped with this moment and the
   * timeout (`t`, `dl`), so the target never starts it after this call gave
   * up: the router's timer starts right after, so the stamped deadline is
   * never later than the moment the call gives up.
   */
  #one(call: Call, target: string): Promise<unknown> {
    return this.#parts.router.call(
      target,
      call.path,
      call.id,
      call.stamped ? call.record : stampRequest(call.record, Date.now(), call.timeout),
      call.timeout,
      call.signal,
    );
  }

  async #many(call: Call, targets: string[]): Promise<Record<string, unknown>> {
    const gate = new Semaphore(call.maxConcurrency);
    const results = new Map<string, unknown>();
    const run = async (name: string) => {
      await gate.acquire(call.signal);
      try {
        results.set(name, await this.#one(call, name));
      } catch (error) {
        if (call.signal?.aborted) throw call.signal.reason;
        results.set(name, error);
      } finally {
        gate.release();
      }
    };
    await Promise.all(targets.map(run));
    // fromEntries defines own properties: a peer named "__proto__" is a key like any other.
    const out: Record<string, unknown> = Object.fromEntries(
      targets.map((name) => [name, results.get(name)]),
    );
    if (call.raiseErrors && targets.some((name) => out[name] instanceof Error)) {
      throw new CommandError(call.path, out);
    }
    for (const name of targets) if (out[name] instanceof Error) out[name] = null;
    return out;
  }

  #check(path: unknown, options: unknown, extra: number): Call {
    if (typeof path !== "string" || path === "") {
      throw new TypeError("Cannot call: the command path must be a non-empty string");
    }
    if (extra > 0 || Array.isArray(options)) {
      throw new TypeError(
        `Cannot call '${path}': command() takes (path, options); pass arguments as command(path, { args, kwargs, target }), not positionally as in Python`,
      );
    }
    if (options !== undefined && (typeof options !== "object" || options === null)) {
      throw new TypeError(`Cannot call '${path}': options must be an object`);
    }
    const {
      args = [],
      kwargs = {},
      target = "*",
      raiseErrors = true,
      timeout = DEFAULT_COMMAND_TIMEOUT,
      maxConcurrency = DEFAULT_MAX_CONCURRENCY,
      signal,
    } = (options ?? {}) as CommandOptions;
    if (!Array.isArray(args)) throw new TypeError(`Cannot call '${path}': args must be an array`);
    if (typeof kwargs !== "object" || kwargs === null || Array.isArray(kwargs)) {
      throw new TypeError(`Cannot call '${path}': kwargs must be a plain object`);
    }
    if (!Number.isInteger(maxConcurrency) || maxConcurrency < 1) {
      throw new RangeError(
        `Cannot call '${path}': maxConcurrency must be a positive integer, got ${maxConcurrency}`,
      );
    }
    const targets = this.#targets(path, target);
    const ms = checkTimeout(timeout, `Cannot call '${path}'`);
    const id = this.#parts.nextRequestId();
    // One target: stamped as it is encoded, the moment it is sent. Several: each when its turn comes.
    const stamped = typeof targets === "string";
    const request: Message = { k: "q", id, p: path, a: args, kw: kwargs };
    if (stamped) {
      request.t = Date.now();
      if (Number.isFinite(ms)) request.dl = ms;
    }
    return {
      path,
      targets,
      raiseErrors: raiseErrors !== false,
      timeout: ms,
      maxConcurrency,
      signal,
      id,
      record: encodeRecord(request),
      stamped,
    };
  }

  /** One name (a string), or the list of names a call goes to. */
  #targets(path: string, target: unknown): string | string[] {
    if (target === "*") return this.#parts.peers.list().map((peer) => peer.name);
    const names = typeof target === "string" ? [target] : target;
    if (!Array.isArray(names) || !names.every((name) => typeof name === "string")) {
      throw new TypeError(
        `Cannot call '${path}': target must be a peer name, an array of names, or "*"`,
      );
    }
    if (names.includes(this.#parts.name)) {
      throw new RangeError(
        `Cannot call '${path}' on '${this.#parts.name}': that is this node itself; call the handler directly, or target other peers`,
      );
    }
    return typeof target === "string" ? target : [...new Set(names)];
  }
}

/**
 * Checks a timeout option: a positive number of ms, or `Infinity`/`null`
 * for no limit (returned as `Infinity`). `context` starts the message.
 */
export function checkTimeout(timeout: unknown, context: string): number {
  if (timeout === null || timeout === Infinity) return Infinity;
  if (typeof timeout !== "number" || !(timeout > 0) || timeout > MAX_TIMEOUT) {
    throw new RangeError(
      `${context}: timeout must be a positive number of ms up to ${MAX_TIMEOUT}, or Infinity (or null) for no limit, got ${
        String(timeout)
      }`,
    );
  }
  return timeout;
}

/**
 * Resolves once `name` (or every name of a list) is a callable peer (known,
 * and not a contested name), with its {@linkcode PeerInfo} (or theirs, in
 * the order asked). Rejects with {@linkcode PeerNotFoundError} naming the
 * first missing peer when `timeout` passes first, with the signal's reason
 * on abort, and with the node's {@linkcode NodeClosedError} once `closing`
 * aborts.
 */
export async function waitForPeers(
  events: EventTarget,
  peers: PeerTable,
  name: string | string[],
  options: WaitOptions = {},
  closing?: AbortSignal,
): Promise<PeerInfo | PeerInfo[]> {
  const names = typeof name === "string" ? [name] : name;
  if (!Array.isArray(names) || !names.every((n) => typeof n === "string")) {
    throw new TypeError("Cannot wait for peers: pass a peer name or an array of names");
  }
  const { signal } = options;
  const stop = signal && closing ? AbortSignal.any([signal, closing]) : signal ?? closing;
  const found = await waitForAll(events, peers, names, options.timeout, stop);
  return typeof name === "string" ? found[0]! : found;
}

function waitForAll(
  events: EventTarget,
  peers: PeerTable,
  names: string[],
  limit: number | null | undefined,
  signal: AbortSignal | undefined,
): Promise<PeerInfo[]> {
  const timeout = checkTimeout(
    limit === undefined ? DEFAULT_WAIT_TIMEOUT : limit,
    "Cannot wait for peers",
  );
  const missing = () => names.find((name) => !callable(peers.get(name)));
  const found = () => names.map((name) => peers.get(name)!);
  signal?.throwIfAborted();
  if (missing() === undefined) return Promise.resolve(found());
  return new Promise((resolve, reject) => {
    const done = () => {
      clearTimeout(timer);
      clearInterval(poll);
      signal?.removeEventListener("abort", aborted);
      events.removeEventListener("peerjoin", check);
    };
    const check = () => {
      if (missing() !== undefined) return;
      done();
      resolve(found());
    };
    const aborted = () => {
      done();
      reject(signal!.reason);
    };
    const timer = Number.isFinite(timeout)
      ? setTimeout(() => {
        done();
        const name = missing() ?? names[0]!;
        reject(
          new PeerNotFoundError(name, {
            detail:
              `it did not appear within ${timeout} ms; check its name, network and key, or wait longer`,
          }),
        );
      }, timeout)
      : undefined;
    // A join is announced by an event; a conflict that ends is not, so look again now and then.
    const poll = setInterval(check, WAIT_POLL_INTERVAL);
    signal?.addEventListener("abort", aborted, { once: true });
    events.addEventListener("peerjoin", check);
  });
}

function callable(peer: PeerInfo | undefined): boolean {
  return peer !== undefined && !peer.conflict;
}
