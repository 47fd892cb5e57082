/**
 * What one relay of a cluster knows of one network it has members in
 * (docs/PROTOCOL.md, "Relay clusters"): the network's directory entries as
 * heard, the members it holds itself, and the MEMBERS feed that tells
 * them what changes.
 *
 * @module
 */

import type { BucketChange } from "./backplane.ts";
import { decodeEntry, type DirectoryEntry } from "./cluster_directory.ts";
import { MembershipFeed } from "./membership_feed.ts";
import type { Member as MemberEntry } from "./relay_protocol.ts";
import type { Registration } from "./switchboard.ts";

/** A member this relay holds. */
export interface Holding<P> {
  readonly holder: P;
  readonly registration: Registration;
}

/** A directory entry as heard. */
export interface Seen {
  readonly entry: DirectoryEntry;
  readonly revision: number;
  /** When this relay heard it (performance.now()). */
  readonly at: number;
}

/**
 * One network seen from one relay of a cluster.
 *
 * @example Changes apply in revision order; an entry that appears is a join
 * ```ts
 * import { NetworkView } from "./cluster_view.ts";
 * import { encodeEntry } from "./cluster_directory.ts";
 * import assert from "node:assert/strict";
 *
 * const view = new NetworkView<string>("net", () => {});
 * const value = encodeEntry({ i: "i1", k: "k1", c: "card", o: 0, r: ["relay"] });
 * const put = { key: "net.a", entry: { value, revision: 2 }, revision: 2 };
 * assert.equal(view.apply(put), "a");
 * assert.equal(view.apply({ key: "net.a", entry: null, revision: 1 }), null); // older
 * assert.deepEqual(view.members(""), [["a", "i1", "card"]]);
 * view.close();
 * ```
 */
export class NetworkView<P> {
  /** The network id. */
  readonly id: string;
  /** Its entries as heard, by pseudonym. */
  readonly entries = new Map<string, Seen>();
  /** The members this relay holds, by pseudonym. */
  readonly local = new Map<string, Holding<P>>();
  /** Claims under way: they hold the view open too. */
  pending = 0;
  /** Resolves once the entries have been read. */
  ready: Promise<void> = Promise.resolve();
  readonly #feed: MembershipFeed;
  /** Deletions heard while the entries are first read, by revision (null once read). */
  #tombstones: Map<string, number> | null = new Map();

  /** The view of network `id`; MEMBERS frames go to each local member through `push`. */
  constructor(id: string, push: (holder: P, bytes: Uint8Array) => void) {
    this.id = id;
    this.#feed = new MembershipFeed(id, (bytes) => {
      for (const { holder } of this.local.values()) push(holder, bytes);
    });
  }

  /** True with no local member and no claim under way. */
  get idle(): boolean {
    return this.local.size === 0 && this.pending === 0;
  }

  /** The entries have been read: from now on, changes come in the watch's order alone. */
  loaded(): void {
    this.#tombstones = null;
  }

  /**
   * Applies a change of the directory unless a later revision of its key
   * was heard already, queueing what members see change; returns the
   * pseudonym it changed, or null.
   */
  apply({ key, entry, revision }: BucketChange): string | null {
    const name = key.slice(this.id.length + 1);
    if ((this.entries.get(name)?.revision ?? 0) >= revision) return null;
    if ((this.#tombstones?.get(name) ?? 0) >= revision) return null;
    const next = entry && decodeEntry(entry.value);
    if (!next) this.#tombstones?.set(name, revision);
    const before = this.entries.get(name)?.entry;
    if (next) this.entries.set(name, { entry: next, revision, at: performance.now() });
    else this.entries.delete(name);
    this.#announce(name, before, next);
    return name;
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

  /** What members see change from `before` to `after`: an instance that changes leaves and joins. */
  #announce(name: string, before?: DirectoryEntry | null, after?: DirectoryEntry | null): void {
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
