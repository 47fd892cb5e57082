/**
 * The caller's side of RPC: calls waiting for their answers, keyed by the
 * target's name and the request id, and how an error answer becomes a
 * typed error.
 *
 * @module
 */

import { ErrorCode, type Message, NOT_SERVING } from "./message.ts";
import { ConnectionClosedError, RemoteError, UnknownCommandError } from "./errors.ts";

/** A call waiting for one target's answer. */
interface Slot {
  peer: string;
  path: string;
  /** The link the request went out on, so its loss fails the call promptly. */
  link: object | null;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
}

/** Turns an error answer into the matching typed error. */
export function answerError(
  peer: string,
  path: string,
  answer: { c: string; n: string; m: string },
): Error {
  switch (answer.c) {
    case ErrorCode.UNKNOWN_COMMAND:
      return answer.n === NOT_SERVING
        ? new UnknownCommandError(peer, path, {
          detail: "the peer is a client-only member, which serves nothing",
        })
        : new UnknownCommandError(peer, path);
    case ErrorCode.CLOSING:
      return new ConnectionClosedError(peer, "the peer is closing");
    default:
      return new RemoteError(peer, path, answer.n, answer.m);
  }
}

/**
 * The one place that decides whether a failed call may be sent again through
 * another path (another relay, or a relay after the direct link): only when
 * the path itself failed. The target's remembered answers make a repeat run
 * at most once.
 */
export function isRetriable(error: unknown): boolean {
  return error instanceof ConnectionClosedError;
}

/** One registered call, as {@linkcode PendingCalls.add} returns it. */
export interface PendingCall {
  /** Settles with the target's answer. */
  answer: Promise<unknown>;
  /** Records the link the request goes out on, so losing it fails the call. */
  bind: (link: object) => void;
  /** Stops waiting, without settling. */
  forget: () => void;
  /** Rejects the call with `error`, unless it settled already. */
  fail: (error: unknown) => void;
}

/** Calls in flight. */
export class PendingCalls {
  readonly #slots = new Map<string, Slot>();

  /** Number of calls waiting. */
  get size(): number {
    return this.#slots.size;
  }

  /**
   * Registers a call of `path` on `peer` with request `id`, sent on `link`
   * (or on the link given later to `bind`). Returns its answer promise and
   * functions that bind, fail or forget it.
   */
  add(
    peer: string,
    id: number,
    path: string,
    link: object | null,
  ): PendingCall {
    const key = `${id}\0${peer}`;
    let slot!: Slot;
    const answer = new Promise<unknown>((resolve, reject) => {
      slot = { peer, path, link, resolve, reject };
    });
    this.#slots.set(key, slot);
    return {
      answer,
      bind: (link) => slot.link = link,
      forget: () => {
        if (this.#slots.get(key) === slot) this.#slots.delete(key);
      },
      fail: (error) => {
        if (this.#slots.get(key) !== slot) return;
        this.#slots.delete(key);
        slot.reject(error as Error);
      },
    };
  }

  /** Settles the call `message` answers; false when no call waits for it. */
  settle(peer: string, message: Message): boolean {
    const key = `${message.id}\0${peer}`;
    const slot = this.#slots.get(key);
    if (!slot) return false;
    this.#slots.delete(key);
    if (message.k === "r") slot.resolve(message.v ?? null);
    else if (message.k === "pong") slot.resolve(true);
    else if (message.k === "e") slot.reject(answerError(peer, slot.path, message));
    return true;
  }

  /** Number of calls waiting for an answer on `link`. */
  countOn(link: object): number {
    let count = 0;
    for (const slot of this.#slots.values()) if (slot.link === link) count++;
    return count;
  }

  /** Fails every call sent on `link` with the error `make` builds. */
  failLink(link: object, make: (peer: string) => Error): void {
    for (const [key, slot] of this.#slots) {
      if (slot.link !== link) continue;
      this.#slots.delete(key);
      slot.reject(make(slot.peer));
    }
  }

  /** Fails the calls to `peer` sent on `link` (the peer left that relay). */
  failPeer(peer: string, link: object, make: () => Error): void {
    for (const [key, slot] of this.#slots) {
      if (slot.peer !== peer || slot.link !== link) continue;
      this.#slots.delete(key);
      slot.reject(make());
    }
  }

  /** Fails every call with the error `make` builds. */
  failAll(make: (peer: string) => Error): void {
    for (const slot of this.#slots.values()) slot.reject(make(slot.peer));
    this.#slots.clear();
  }
}
