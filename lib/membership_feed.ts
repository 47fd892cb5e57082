/**
 * A network's membership changes on their way to the members a relay
 * holds: joins and leaves are pushed together in one MEMBERS frame at most
 * every {@linkcode MEMBERS_FLUSH_DELAY} ms. Nodes apply a push's leaves
 * before its joins, so a leave of a member whose join is still queued
 * pushes the queued changes first (else the member would stay listed).
 *
 * @module
 */

import { FrameType } from "./frame.ts";
import { encodeControl, type Leaving, type Member as MemberEntry } from "./relay_protocol.ts";

/** Membership changes are pushed in batches at most this often, ms. */
export const MEMBERS_FLUSH_DELAY = 5;

/**
 * The queued membership changes of one network.
 *
 * @example Changes within the delay go out in one MEMBERS frame
 * ```ts
 * import { MembershipFeed } from "./membership_feed.ts";
 * import { parseFrame } from "./frame.ts";
 * import { decodeMembers } from "./relay_protocol.ts";
 * import assert from "node:assert/strict";
 *
 * const pushed: Uint8Array[] = [];
 * const feed = new MembershipFeed("net", (bytes) => pushed.push(bytes));
 * feed.join(["a", "i1", "card"]);
 * feed.leave(["b", "i2"]);
 * assert.equal(feed.pending, true);
 * feed.flush();
 * assert.equal(pushed.length, 1);
 * const body = decodeMembers(parseFrame(pushed[0]!));
 * assert.deepEqual(body, { join: [["a", "i1", "card"]], leave: [["b", "i2"]] });
 * ```
 */
export class MembershipFeed {
  readonly #network: string;
  readonly #push: (bytes: Uint8Array) => void;
  readonly #flushed: () => void;
  #join: MemberEntry[] = [];
  #leave: Leaving[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;

  /**
   * A feed for network `network` that hands each MEMBERS frame to `push`,
   * and calls `flushed` after a timed push.
   */
  constructor(network: string, push: (bytes: Uint8Array) => void, flushed: () => void = () => {}) {
    this.#network = network;
    this.#push = push;
    this.#flushed = flushed;
  }

  /** True while changes wait for their push. */
  get pending(): boolean {
    return this.#timer !== undefined;
  }

  /** Queues a join. */
  join(member: MemberEntry): void {
    this.#join.push(member);
    this.#schedule();
  }

  /** Queues a leave (pushing first a queued join of the same member). */
  leave(member: Leaving): void {
    if (this.#join.some(([n, i]) => n === member[0] && i === member[1])) this.flush();
    this.#leave.push(member);
    this.#schedule();
  }

  /** Pushes the queued changes now. */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const body = { join: this.#join, leave: this.#leave };
    this.#join = [];
    this.#leave = [];
    this.#push(encodeControl(FrameType.MEMBERS, this.#network, "", body));
  }

  /** Drops the queued changes and their timer. */
  close(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#join = [];
    this.#leave = [];
  }

  #schedule(): void {
    this.#timer ??= setTimeout(() => {
      this.flush();
      this.#flushed();
    }, MEMBERS_FLUSH_DELAY);
  }
}
