/**
 * The serving side of RPC: runs handlers for requests, at most once per
 * request id within the replay window, within the node's concurrency cap,
 * and sends each answer back on the link the request came in on.
 *
 * @module
 */

import type { CallContext, CommandRegistry } from "./commands.ts";
import { encodeRecord, type Envelope, ErrorCode, type Message } from "./message.ts";
import { ReplayCache } from "./replay.ts";
import type { Semaphore } from "./semaphore.ts";
import { EncodeError, MessageTooLargeError } from "./errors.ts";

/** Where answers go: a link, or anything that can send a record to a peer. */
export interface AnswerPath {
  send(target: string, targetInstance: string | undefined, record: Uint8Array): void;
  /** The relay's `host:port` when the request came through one. */
  readonly relay?: string | undefined;
}

/** Options of {@linkcode Responder}. */
export interface ResponderOptions<N> {
  node: N;
  registry: CommandRegistry<N>;
  replayWindow: number;
  concurrency: Semaphore;
  /** Aborts when the node closes. */
  lifetime: AbortSignal;
}

type Request = Extract<Message, { k: "q" }>;

/** Runs requests and answers them. */
export class Responder<N = unknown> {
  readonly #options: ResponderOptions<N>;
  readonly #replay: ReplayCache;
  readonly #running = new Map<string, { cancel: Cancellation; path: AnswerPath }>();

  /** Creates a responder for `options.node`. */
  constructor(options: ResponderOptions<N>) {
    this.#options = options;
    this.#replay = new ReplayCache(options.replayWindow);
  }

  /** Serves one request that arrived on `path` in a batch sealed as `envelope`. */
  serve(path: AnswerPath, envelope: Envelope, request: Request): void {
    const key = `${envelope.i}:${request.id}`;
    const admission = this.#replay.admit(envelope.i, request.id);
    if (!admission.fresh) {
      void admission.answer.then((record) =>
        this.#reply(path, envelope, request.id, record ?? forgotten(request.id))
      );
      return;
    }
    void this.#run(path, envelope, request, key).then((record) => {
      admission.settle(record);
      this.#reply(path, envelope, request.id, record);
    });
  }

  /** The caller gave up on request `id`: abort its handler's signal. */
  cancel(envelope: Envelope, id: number): void {
    this.#running.get(`${envelope.i}:${id}`)?.cancel.abort(
      new Error("The caller gave up on this call"),
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

  /** Forgets remembered answers (the node is closing). */
  clear(): void {
    this.#replay.clear();
  }

  async #run(path: AnswerPath, envelope: Envelope, request: Request, key: string) {
    const { registry, node, concurrency, lifetime } = this.#options;
    const handler = registry.lookup(request.p);
    if (!handler) {
      return errorRecord(request.id, ErrorCode.UNKNOWN_COMMAND, "UnknownCommandError", request.p);
    }
    const cancel = new Cancellation(lifetime);
    this.#running.set(key, { cancel, path });
    let acquired = false;
    try {
      if (!concurrency.tryAcquire()) await concurrency.acquire(cancel.signal);
      acquired = true;
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
      const value = await handler(node, request.a, request.kw, ctx);
      return encodeRecord({ k: "r", id: request.id, v: value ?? null });
    } catch (error) {
      if (error instanceof EncodeError) {
        return errorRecord(
          request.id,
          ErrorCode.ENCODE,
          "EncodeError",
          `the result: ${error.message}`,
        );
      }
      const name = error instanceof Error ? error.name : "Error";
      const message = error instanceof Error ? error.message : String(error);
      if (lifetime.aborted) return errorRecord(request.id, ErrorCode.CLOSING, name, message);
      return errorRecord(request.id, ErrorCode.HANDLER, name, message);
    } finally {
      if (acquired) concurrency.release();
      this.#running.delete(key);
    }
  }

  #reply(path: AnswerPath, envelope: Envelope, id: number, record: Uint8Array): void {
    try {
      path.send(envelope.s, envelope.i, record);
    } catch (error) {
      // Any other failure means the path is gone; a retry gets the remembered answer.
      if (!(error instanceof MessageTooLargeError)) return;
      try {
        path.send(
          envelope.s,
          envelope.i,
          errorRecord(id, ErrorCode.HANDLER, "MessageTooLargeError", error.message),
        );
      } catch {
        // The path is gone.
      }
    }
  }
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
    "this request already ran and its answer was dropped to bound memory; it is not run twice",
  );
}
