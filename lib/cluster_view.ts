/**
 * One network a relay of a cluster has members in (docs/PROTOCOL.md,
 * "Relay clusters"): the members it holds itself, the network's entries in
 * the relay's copy of the directory, and the MEMBERS feed that tells the
 * members what changes.
 *
 * @module
 */

import type { DirectoryEntry } from "./cluster_directory.ts";
import type { DirectoryMirror, Seen } from "./directory_mirror.ts";
import { MembershipFeed } from "./membership_feed.ts";
import type { Member as MemberEntry } from "./relay_protocol.ts";
import type { Registration } from "./switchboard.ts";

/** A member this relay holds. */
export interface Holding<P> {
  readonly holder: P;
  readonly registration: Registration;
}

/**
 * One network seen from one relay of a cluster.
 *
 * @example An entry that appears is a join for the members held here
 * ```ts
 * import { NetworkView } from "./cluster_view.ts";
 * import { DirectoryMirror } from "./directory_mirror.ts";
 * import { encodeEntry } from "./cluster_directory.ts";
 * import assert from "node:assert/strict";
 *
 * const mirror = new DirectoryMirror();
 * const view = new NetworkView<string>("net", mirror, () => {});
 * const value = encodeEntry({ i: "i1", k: "k1", c: "card", o: 0, r: ["relay"] });
 * const change = mirror.apply({ key: "net.a", entry: { value, revision: 2 }, revision: 2 })!;
 * view.announce(change.name, change.before, change.after);
 * assert.deepEqual(view.members(""), [["a", "i1", "card"]]);
 * view.close();
 * ```
 */
export class NetworkView<P> {
  /** The network id. */
  readonly id: string;
  /** The members this relay holds, by pseudonym. */
  readonly local = new Map<string, Holding<P>>();
  /** Claims under way: they hold the view open too. */
  pending = 0;
  readonly #mirror: DirectoryMirror;
  readonly #feed: MembershipFeed;

  /**
   * The view of network `id` in `mirror`; MEMBERS frames go to each local
   * member through `push`.
   */
  constructor(id: string, mirror: DirectoryMirror, push: (holder: P, bytes: Uint8Array) => void) {
    this.id = id;
    this.#mirror = mirror;
    this.#feed = new MembershipFeed(id, (bytes) => {
      for (const { holder } of this.local.values()) push(holder, bytes);
    });
  }

  /** True with no local member and no claim under way. */
  get idle(): boolean {
    return this.local.size === 0 && this.pending === 0;
  }

  /** The network's entries, by pseudonym. */
  get entries(): ReadonlyMap<string, Seen> {
    return this.#mirror.entries(this.id);
  }

  /** The listed members (client-only ones are never listed), `except` left out. */
  members(except: string): MemberEntry[] {
    const members: MemberEntry[] = [];
    for (const [name, { entry }] of this.entries) {
      if (name !== except && entry.o === 0) members.push([name, entry.i, entry.c]);
    }
    return members;
  }

  /** Whether the entries show `relay` holding `name` for its local holder (true with none). */
  holds(name: string, relay: string): boolean {
    const local = this.local.get(name);
    const entry = this.entries.get(name)?.entry;
    return !local || (entry?.k === local.registration.instanceKey && entry.r.includes(relay));
  }

  /** Drops the queued membership changes. */
  close(): void {
    this.#feed.close();
  }

  /**
   * Queues what members see change when `name`'s entry goes from `before`
   * to `after`: an instance that changes leaves and joins.
   */
  announce(name: string, before?: DirectoryEntry | null, after?: DirectoryEntry | null): void {
    const wasListed = before?.o === 0, listed = after?.o === 0;
    if (before && after && before.i === after.i) {
      if (wasListed && !listed) this.#feed.leave([name, after.i]);
      if (!wasListed && listed) this.#feed.join([name, after.i, after.c]);
      return;
    }
    if (wasListed) this.#feed.leave([name, before.i]);
    if (listed) this.#feed.join([name, after.i, after.c]);
  }
}
