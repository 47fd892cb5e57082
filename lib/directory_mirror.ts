/**
 * A relay's copy of its cluster's directory (docs/PROTOCOL.md, "Relay
 * clusters"): every entry, by network, kept from one watch of the whole
 * directory plus one read of it at start, merged by revision, so a change
 * heard before the read does not come back older.
 *
 * @module
 */

import type { BucketChange } from "./backplane.ts";
import { decodeEntry, type DirectoryEntry } from "./cluster_directory.ts";

/** A directory entry as heard. */
export interface Seen {
  readonly entry: DirectoryEntry;
  readonly revision: number;
  /** When this relay heard it (performance.now()). */
  readonly at: number;
}

/** What a change did to one name. */
export interface EntryChange {
  readonly network: string;
  readonly name: string;
  readonly before: DirectoryEntry | undefined;
  readonly after: DirectoryEntry | null;
}

const NONE: ReadonlyMap<string, Seen> = new Map();

/**
 * Every entry of the directory, by network and pseudonym.
 *
 * @example A change applies unless a later revision of its key was heard
 * ```ts
 * import { DirectoryMirror } from "./directory_mirror.ts";
 * import { encodeEntry } from "./cluster_directory.ts";
 * import assert from "node:assert/strict";
 *
 * const mirror = new DirectoryMirror();
 * const value = encodeEntry({ i: "i1", k: "k1", c: "card", o: 0, r: ["relay"] });
 * assert.equal(mirror.apply({ key: "net.a", entry: { value, revision: 2 }, revision: 2 })?.name, "a");
 * assert.equal(mirror.apply({ key: "net.a", entry: null, revision: 1 }), null); // older
 * assert.equal(mirror.entries("net").get("a")?.entry.i, "i1");
 * ```
 */
export class DirectoryMirror {
  readonly #networks = new Map<string, Map<string, Seen>>();
  /** Deletions heard before the first read finished, by key (null once read). */
  #tombstones: Map<string, number> | null = new Map();
  #size = 0;

  /** Entries held. */
  get size(): number {
    return this.#size;
  }

  /** The entries of `network`, by pseudonym. */
  entries(network: string): ReadonlyMap<string, Seen> {
    return this.#networks.get(network) ?? NONE;
  }

  /** The first read is done: from now on, changes come in the watch's order alone. */
  loaded(): void {
    this.#tombstones = null;
  }

  /** Applies a change unless a later revision of its key was heard; what it changed, or null. */
  apply({ key, entry, revision }: BucketChange): EntryChange | null {
    const dot = key.indexOf(".");
    if (dot <= 0) return null;
    const network = key.slice(0, dot), name = key.slice(dot + 1);
    const entries = this.#networks.get(network);
    const seen = entries?.get(name);
    if ((seen?.revision ?? 0) >= revision) return null;
    if ((this.#tombstones?.get(key) ?? 0) >= revision) return null;
    const after = entry && decodeEntry(entry.value);
    if (after) {
      const map = entries ?? this.#networks.set(network, new Map()).get(network)!;
      map.set(name, { entry: after, revision, at: performance.now() });
      if (!seen) this.#size++;
    } else {
      this.#tombstones?.set(key, revision);
      if (seen) {
        entries!.delete(name);
        this.#size--;
        if (entries!.size === 0) this.#networks.delete(network);
      }
    }
    return { network, name, before: seen?.entry, after };
  }
}
