/**
 * The serving side of RPC: runs handlers for requests, at most once per
 * request id whatever the clocks, never after the caller's deadline, within
 * the node's concurrency cap and bounded queues, and sends each answer back
 * on the link the request came in on (docs/PROTOCOL.md, "At most once").
 *
 * @module
 */

import type { CallContext, CommandRegistry, Handler } from "./commands.ts";
import { encodeRecord, type Envelope, ErrorCode, type Message } from "./message.ts";
import { ReplayCache, type ReplayCacheOptions, type ReplayStats } from "./replay.ts";
import type { Semaphore } from "./semaphore.ts";
import { EncodeError, MessageTooLargeError } from "./errors.ts";

/**
 * Default cap on the requests of one caller instance running or waiting
 * for a handler slot: 1024. More are answered `busy` and never run.
 *
 * @example
 * ```ts
 * import { DEFAULT_MAX_CALLER_IN_FLIGHT, DEFAULT_MAX_IN_FLIGHT } from "./responder.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(DEFAULT_MAX_CALLER_IN_FLIGHT, 1024);
 * assert.equal(DEFAULT_MAX_IN_FLIGHT, 16_384);
 * ```
 */
export const DEFAULT_MAX_CALLER_IN_FLIGHT = 1024;
/** Default cap on the requests of all callers running or waiting for a handler slot: 16 384. */
export const DEFAULT_MAX_IN_FLIGHT = 16_384;
/**
 * How often a responder whose replay cache holds anything drops what
 * expired, ms: without requests nothing else would, and the memory of the
 * last answers would stay until the next one.
 */
const SWEEP_INTERVAL = 5000;
/** Longest delay a timer can hold, ms. */
const MAX_DELAY = 2_147_483_647;
/** Why a wait for a handler slot ended: the caller's deadline passed. */
const DEADLINE = Symbol("deadline");

/**
 * Whose replay state, clock offset and in-flight count a request uses: the
 * sealed sender name and instance together, so a member that claims
 * another's instance id under its own name touches only its own state.
 */
function callerOf(envelope: Envelope): string {
  return `${envelope.s}\0${envelope.i}`;
}

/** Where answers go: a link, or anything that can send a record to a peer. */
export interface AnswerPath {
  /** Sends `record` to `target` (and its instance, when known); `answer`: it answers a request. */
  send(
    target: string,
    targetInstance: string | undefined,
    record: Uint8Array,
    answer?: boolean,
  ): void;
  /** The relay's `host:port` when the request came through one. */
  readonly relay?: string | undefined;
}

/** Options of {@linkcode Responder}. */
export interface ResponderOptions<N> {
  /** What handlers receive as their node. */
  node: N;
  /** The handlers, by path. */
  registry: CommandRegistry<N>;
  /** Tokens older than this (ms) are refused; ids are kept this long plus 60 s. */
  replayWindow: number;
  /** Slots for handlers running at once. */
  concurrency: Semaphore;
  /** Aborts when the node closes. */
  lifetime: AbortSignal;
  /** Most requests of one caller instance running or waiting for a slot. @default 1024 */
  maxCallerInFlight?: number;
  /** Most requests of all callers running or waiting for a slot. @default 16384 */
  maxInFlight?: number;
  /** Memory budgets of the remembered ids and answers. @default the replay cache's */
  replay?: ReplayCacheOptions;
}

type Request = Extract<Message, { k: "q" }>;

/** Runs requests and answers them. */
export class Responder<N = unknown> {
  readonly #options: ResponderOptions<N>;
  readonly #replay: ReplayCache;
  readonly #running = new Map<string, { cancel: Cancellation; path: AnswerPath }>();
  /** Requests running or waiting for a slot, per caller instance. */
  readonly #inFlight = new Map<string, number>();
  #inFlightTotal = 0;
  #sweepTimer: ReturnType<typeof setTimeout> | undefined;

  /** Creates a responder for `options.node`. */
  constructor(options: ResponderOptions<N>) {
    this.#options = options;
    this.#replay = new ReplayCache(options.replayWindow, options.replay);
  }

  /** What the replay cache holds (callers, answers, bytes). */
  get replayStats(): ReplayStats {
    return this.#replay.stats;
  }

  /** Requests running or waiting for a handler slot. */
  get inFlight(): number {
    return this.#inFlightTotal;
  }

  /**
   * Serves one request that arrived on `path` in a batch sealed as
   * `envelope`: runs it unless its id was seen, its deadline has passed
   * (judged with the caller's measured clock offset), or too many of its
   * caller's (or anyone's) requests are in flight. Every refusal consumes
   * the id.
   */
  serve(path: AnswerPath, envelope: Envelope, request: Request): void {
    const now = Date.now();
    const caller = callerOf(envelope);
    const admission = this.#admit(caller, request.id, now, request.t);
    if (!admission) return;
    this.#armSweep();
    if (!admission.fresh) {
      // A repeat on the link a run still going came on gets no second answer: the first goes there.
      if (this.#running.get(`${caller}:${request.id}`)?.path === path) return;
      void admission.answer.then((record) =>
        this.#reply(path, envelope, request.id, record ?? forgotten(request.id))
      );
      return;
    }
    const deadline =
      request.t === undefined || request.dl === undefined || admission.offset === null
        ? Infinity
        : request.t + request.dl + admission.offset;
    const refusal = this.#refusal(caller, request.id, deadline, now);
    if (refusal) {
      admission.settle(refusal, now, deadline);
      this.#reply(path, envelope, request.id, refusal);
      return;
    }
    const answered = (record: Uint8Array) => {
      // Kept for repeats until the caller stops waiting: later, none can reach it.
      admission.settle(record, Date.now(), deadline);
      this.#reply(path, envelope, request.id, record);
    };
    const record = this.#run({ path, envelope, caller, request, deadline });
    if (record instanceof Uint8Array) answered(record);
    else void record.then(answered);
  }

  /**
   * The caller gave up on request `id`: abort its handler's signal. A
   * cancel that overtook its request consumes the id, so the request never
   * runs when it arrives.
   */
  cancel(envelope: Envelope, id: number): void {
    const caller = callerOf(envelope);
    const running = this.#running.get(`${caller}:${id}`);
    if (running) {
      running.cancel.abort(new Error("The caller gave up on this call"));
      return;
    }
    const admission = this.#admit(caller, id, Date.now(), undefined);
    if (admission) this.#armSweep();
    if (admission?.fresh) {
      admission.settle(
        errorRecord(
          id,
          ErrorCode.CANCELLED,
          "CancelledError",
          "the caller cancelled this request before it arrived; it was not run",
        ),
      );
    }
  }

  /** Admits request `id` of `instance`; null for an id the replay cache cannot hold (below 1). */
  #admit(instance: string, id: number, now: number, sent: number | undefined) {
    try {
      return this.#replay.admit(instance, id, { now, sent });
    } catch {
      return null; // The decoder refuses such ids already.
    }
  }

  /** Why a fresh request must not run: its deadline passed, or too many are in flight. */
  #refusal(instance: string, id: number, deadline: number, now: number): Uint8Array | null {
    if (now > deadline) return expired(id);
    const {
      maxCallerInFlight = DEFAULT_MAX_CALLER_IN_FLIGHT,
      maxInFlight = DEFAULT_MAX_IN_FLIGHT,
    } = this.#options;
    const mine = this.#inFlight.get(instance) ?? 0;
    if (mine < maxCallerInFlight && this.#inFlightTotal < maxInFlight) return null;
    const what = mine >= maxCallerInFlight
      ? `${maxCallerInFlight} requests of this caller are`
      : `${maxInFlight} requests are`;
    return errorRecord(
      id,
      ErrorCode.BUSY,
      "BusyError",
      `${what} already running or waiting on this node; it was not run, call again later`,
    );
  }

  /** Number of requests that arrived on `path` and are still being served. */
  countOn(path: object): number {
    let count = 0;
    for (const running of this.#running.values()) if (running.path === path) count++;
    return count;
  }

  /**
   * The direct connection `path` closed: its caller can no longer receive
   * answers, so abort the handlers it started. (Not for relay links: a
   * caller may retry through another relay and wait for the running call.)
   */
  abandon(path: AnswerPath): void {
    for (const { cancel, path: from } of this.#running.values()) {
      if (from === path) cancel.abort(new Error("The caller's connection closed"));
    }
  }

  /** Forgets remembered answers and stops sweeping (the node is closing). */
  clear(): void {
    clearTimeout(this.#sweepTimer);
    this.#sweepTimer = undefined;
    this.#replay.clear();
  }

  /** Sweeps the replay cache every {@linkcode SWEEP_INTERVAL} until it holds nothing. */
  #armSweep(): void {
    if (this.#sweepTimer !== undefined || this.#options.lifetime.aborted) return;
    this.#sweepTimer = setTimeout(() => {
      this.#sweepTimer = undefined;
      this.#replay.sweep();
      if (!this.#replay.idle) this.#armSweep();
    }, SWEEP_INTERVAL);
  }

  /**
   * Runs a fresh request's handler and makes its answer record. A handler
   * that returns a value (not a promise) with a slot free is answered at
   * once: it is not in flight a promise turn longer, and the answer is
   * written before the link reads on.
   */
  #run(job: Omit<Job<N>, "handler" | "key" | "cancel">): Uint8Array | Promise<Uint8Array> {
    const { request, caller, path } = job;
    const handler = this.#options.registry.lookup(request.p);
    if (!handler) {
      return errorRecord(request.id, ErrorCode.UNKNOWN_COMMAND, "UnknownCommandError", request.p);
    }
    const key = `${caller}:${request.id}`;
    const cancel = new Cancellation(this.#options.lifetime);
    this.#running.set(key, { cancel, path });
    this.#count(caller, 1);
    const started = { ...job, handler, key, cancel };
    return this.#options.concurrency.tryAcquire() ? this.#call(started) : this.#callLater(started);
  }

  /** Waits for a handler slot, then calls the handler. */
  async #callLater(job: Job<N>): Promise<Uint8Array> {
    try {
      await this.#acquire(job.cancel, job.deadline);
    } catch (error) {
      this.#running.delete(job.key);
      this.#count(job.caller, -1);
      return this.#failure(job.request.id, error);
    }
    return await this.#call(job);
  }

  /** Calls the handler with a slot held; the slot is freed once its answer is made. */
  #call(job: Job<N>): Uint8Array | Promise<Uint8Array> {
    const { request } = job;
    let pending = false;
    try {
      // Never start after the caller's deadline, however long the wait was.
      if (Date.now() > job.deadline) return expired(request.id);
      const value = job.handler(this.#options.node, request.a, request.kw, context(job));
      if (!isThenable(value)) return encodeRecord({ k: "r", id: request.id, v: value ?? null });
      pending = true;
      return this.#settle(job, value);
    } catch (error) {
      return this.#failure(request.id, error);
    } finally {
      if (!pending) this.#release(job);
    }
  }

  /** The answer of a handler that returned a promise. */
  async #settle(job: Job<N>, value: PromiseLike<unknown>): Promise<Uint8Array> {
    try {
      return encodeRecord({ k: "r", id: job.request.id, v: (await value) ?? null });
    } catch (error) {
      return this.#failure(job.request.id, error);
    } finally {
      this.#release(job);
    }
  }

  #release(job: Job<N>): void {
    this.#options.concurrency.release();
    this.#running.delete(job.key);
    this.#count(job.caller, -1);
  }

  /** The error record for what a handler (or the wait for its slot) threw. */
  #failure(id: number, error: unknown): Uint8Array {
    if (error === DEADLINE) return expired(id);
    if (error instanceof EncodeError) {
      return errorRecord(id, ErrorCode.ENCODE, "EncodeError", `the result: ${error.message}`);
    }
    const { name, message } = describeThrown(error);
    if (this.#options.lifetime.aborted) return errorRecord(id, ErrorCode.CLOSING, name, message);
    return errorRecord(id, ErrorCode.HANDLER, name, message);
  }

  /** Waits for a handler slot until the request is cancelled or its deadline passes. */
  async #acquire(cancel: Cancellation, deadline: number): Promise<void> {
    const { concurrency } = this.#options;
    const wait = deadline - Date.now();
    if (!(wait <= MAX_DELAY)) return await concurrency.acquire(cancel.signal);
    const expiry = new AbortController();
    const timer = setTimeout(() => expiry.abort(DEADLINE), Math.max(0, wait));
    try {
      await concurrency.acquire(AbortSignal.any([cancel.signal, expiry.signal]));
    } finally {
      clearTimeout(timer);
    }
  }

  #count(instance: string, change: number): void {
    this.#inFlightTotal += change;
    const count = (this.#inFlight.get(instance) ?? 0) + change;
    if (count > 0) this.#inFlight.set(instance, count);
    else this.#inFlight.delete(instance);
  }

  #reply(path: AnswerPath, envelope: Envelope, id: number, record: Uint8Array): void {
    try {
      path.send(envelope.s, envelope.i, record, true);
    } catch (error) {
      // Any other failure means the path is gone; a retry gets the remembered answer.
      if (!(error instanceof MessageTooLargeError)) return;
      try {
        path.send(
          envelope.s,
          envelope.i,
          errorRecord(id, ErrorCode.HANDLER, "MessageTooLargeError", error.message),
          true,
        );
      } catch {
        // The path is gone.
      }
    }
  }
}

/** A fresh request on its way through {@linkcode Responder}'s `#run`. */
interface Job<N> {
  path: AnswerPath;
  envelope: Envelope;
  caller: string;
  request: Request;
  deadline: number;
  handler: Handler<N>;
  key: string;
  cancel: Cancellation;
}

/** What a handler is told about its call. */
function context<N>({ envelope, request, path, cancel }: Job<N>): CallContext {
  const ctx: CallContext = {
    caller: envelope.s,
    instance: envelope.i,
    path: request.p,
    via: path.relay ? "relay" : "local",
    get signal() {
      return cancel.signal;
    },
  };
  if (path.relay) ctx.relay = path.relay;
  return ctx;
}

/**
 * The name and message a caller is told for what a handler threw; never
 * throws itself (`throw Object.create(null)`, a `message` getter that throws),
 * so every request is answered and its id settled.
 */
function describeThrown(error: unknown): { name: string; message: string } {
  try {
    if (error instanceof Error) return { name: String(error.name), message: String(error.message) };
    return { name: "Error", message: String(error) };
  } catch {
    return { name: "Error", message: "the handler threw a value that cannot be shown as text" };
  }
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as { then?: unknown } | null)?.then === "function";
}

/**
 * A request's cancellation. Most handlers never look at their signal, so
 * the `AbortSignal` is built only when asked for.
 */
class Cancellation {
  readonly #lifetime: AbortSignal;
  #controller: AbortController | null = null;
  #signal: AbortSignal | null = null;
  #reason: { value: unknown } | null = null;

  constructor(lifetime: AbortSignal) {
    this.#lifetime = lifetime;
  }

  abort(reason: unknown): void {
    if (this.#controller) this.#controller.abort(reason);
    else this.#reason ??= { value: reason };
  }

  get signal(): AbortSignal {
    if (!this.#signal) {
      this.#controller = new AbortController();
      if (this.#reason) this.#controller.abort(this.#reason.value);
      this.#signal = AbortSignal.any([this.#controller.signal, this.#lifetime]);
    }
    return this.#signal;
  }
}

function errorRecord(id: number, code: string, name: string, message: string): Uint8Array {
  return encodeRecord({ k: "e", id, c: code, n: name, m: message });
}

function forgotten(id: number): Uint8Array {
  return errorRecord(
    id,
    ErrorCode.FORGOTTEN,
    "ReplayError",
    "this request may already have run and its answer is no longer kept; it is not run twice",
  );
}

function expired(id: number): Uint8Array {
  return errorRecord(
    id,
    ErrorCode.EXPIRED,
    "DeadlineError",
    "the caller's deadline passed before the handler could start; it was not run",
  );
}
