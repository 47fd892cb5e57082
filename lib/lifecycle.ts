/**
 * A node's lifecycle as a small state machine: new → starting → running →
 * closing → closed. `start()` and `close()` are idempotent, a failed start
 * closes what it opened, and calls are refused with the typed error for
 * the state they meet.
 *
 * @module
 */

import { NodeClosedError, NodeNotStartedError } from "./errors.ts";

/** Where a node is in its life. */
export type LifecycleState = "new" | "starting" | "running" | "closing" | "closed";

/** What starting and closing do. */
export interface LifecycleSteps {
  /** Opens everything; a throw closes the node and rejects `start()`. */
  open(): Promise<void>;
  /** Closes everything; runs once. */
  shut(): Promise<void>;
}

/** Runs a node's start and close once each, in order. */
export class Lifecycle {
  /** Resolves once closed. */
  readonly finished: Promise<void>;
  readonly #name: string;
  readonly #steps: LifecycleSteps;
  readonly #closingSignal = new AbortController();
  #state: LifecycleState = "new";
  #starting: Promise<void> | null = null;
  #opening: Promise<void> | null = null;
  #closing: Promise<void> | null = null;
  #resolveFinished!: () => void;

  /** Creates the lifecycle of node `name`. */
  constructor(name: string, steps: LifecycleSteps) {
    this.#name = name;
    this.#steps = steps;
    this.finished = new Promise((resolve) => this.#resolveFinished = resolve);
  }

  /** Aborts (with {@linkcode NodeClosedError}) the moment closing begins. */
  get closing(): AbortSignal {
    return this.#closingSignal.signal;
  }

  /** The current state. */
  get state(): LifecycleState {
    return this.#state;
  }

  /** Starts once; rejects with {@linkcode NodeClosedError} after `close()`. */
  start(): Promise<void> {
    if (this.#state === "closing" || this.#state === "closed") {
      return Promise.reject(new NodeClosedError(this.#name, "the node was closed"));
    }
    this.#starting ??= this.#start();
    return this.#starting;
  }

  async #start(): Promise<void> {
    this.#state = "starting";
    this.#opening = this.#steps.open();
    try {
      await this.#opening;
    } catch (error) {
      this.#closing ??= this.#close();
      await this.#closing;
      throw error;
    }
    if (this.#state !== "starting") {
      throw new NodeClosedError(this.#name, "closed while starting");
    }
    this.#state = "running";
  }

  /** Closes once, after an open in progress has settled. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#state = "closing";
    // Whoever closes has heard enough: a start this close cuts short needs no handler.
    this.#starting?.catch(() => {});
    // The open step, not start(): a start that fails waits for this close.
    await this.#opening?.catch(() => {});
    this.#closingSignal.abort(new NodeClosedError(this.#name));
    await this.#steps.shut();
    this.#state = "closed";
    this.#resolveFinished();
  }

  /** Throws {@linkcode NodeNotStartedError} or {@linkcode NodeClosedError} unless running. */
  assertRunning(): void {
    if (this.#state === "running") return;
    if (this.#state === "new" || this.#state === "starting") {
      throw new NodeNotStartedError(this.#name);
    }
    throw new NodeClosedError(this.#name, `it is ${this.#state}`);
  }
}
