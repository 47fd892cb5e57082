/**
 * The relay cluster's directory of names (docs/PROTOCOL.md, "Relay
 * clusters"): one bucket key per registered name, `<network id>.<pseudonym>`,
 * holding the instance and the relays it is registered at. Every write is
 * conditional, so two relays never both admit a name for different
 * instances.
 *
 * @module
 */

import type { Bucket, BucketEntry } from "./backplane.ts";
import type { Registration } from "./switchboard.ts";

/** A name's directory entry. */
export interface DirectoryEntry {
  /** Instance id. */
  readonly i: string;
  /** Instance public key. */
  readonly k: string;
  /** Member card. */
  readonly c: string;
  /** 1 for a client-only member. */
  readonly o: 0 | 1;
  /** Relay ids where the instance is registered. */
  readonly r: readonly string[];
}

/** Rounds a conditional write may lose before the name counts as taken. */
export const MAX_WRITE_ROUNDS = 8;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The key of `name` in network `network`. */
export function directoryKey(network: string, name: string): string {
  return `${network}.${name}`;
}

/** Encodes an entry. */
export function encodeEntry(entry: DirectoryEntry): Uint8Array {
  return encoder.encode(JSON.stringify(entry));
}

/**
 * Decodes an entry; null when it is not one (a bucket shared with something
 * else, or a broken writer): such a key is treated as absent.
 *
 * @example
 * ```ts
 * import { decodeEntry, encodeEntry } from "./cluster_directory.ts";
 * import assert from "node:assert/strict";
 *
 * const entry = { i: "0a", k: "key", c: "card", o: 0 as const, r: ["relay1"] };
 * assert.deepEqual(decodeEntry(encodeEntry(entry)), entry);
 * assert.equal(decodeEntry(new TextEncoder().encode('{"i":1}')), null);
 * ```
 */
export function decodeEntry(bytes: Uint8Array): DirectoryEntry | null {
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(bytes));
  } catch {
    return null;
  }
  const e = value as Partial<DirectoryEntry> | null;
  if (
    typeof e !== "object" || e === null || typeof e.i !== "string" || typeof e.k !== "string" ||
    typeof e.c !== "string" || (e.o !== 0 && e.o !== 1) || !Array.isArray(e.r) ||
    !e.r.every((relay) => typeof relay === "string")
  ) {
    return null;
  }
  return { i: e.i, k: e.k, c: e.c, o: e.o, r: e.r };
}

/** The entry a registration makes at relay `relay`. */
function entryOf(registration: Registration, relays: readonly string[]): DirectoryEntry {
  return {
    i: registration.instance,
    k: registration.instanceKey,
    c: registration.card,
    o: registration.clientOnly ? 1 : 0,
    r: relays,
  };
}

/** Whether any of `relays` is live. */
async function anyLive(
  relays: readonly string[],
  isLive: (relay: string) => boolean | Promise<boolean>,
): Promise<boolean> {
  for (const relay of relays) if (await isLive(relay)) return true;
  return false;
}

/** Whether `entry` already shows `registration`'s card and visibility. */
function sameFace(entry: DirectoryEntry, registration: Registration): boolean {
  return entry.c === registration.card && entry.o === (registration.clientOnly ? 1 : 0);
}

/**
 * Claims a name for `registration` at relay `relay`: creates its key, adds
 * `relay` to the same instance's entry, or replaces an entry none of whose
 * relays `isLive`. Returns false when another instance holds it.
 */
export async function claimName(
  bucket: Bucket,
  registration: Registration,
  relay: string,
  isLive: (relay: string) => boolean | Promise<boolean>,
): Promise<boolean> {
  const key = directoryKey(registration.network, registration.name);
  const fresh = encodeEntry(entryOf(registration, [relay]));
  // Most names are new: try the create first (one round trip), read only when it loses.
  if (await bucket.create(key, fresh) !== null) return true;
  for (let round = 1; round < MAX_WRITE_ROUNDS; round++) {
    const current = await bucket.get(key);
    if (current === null) {
      if (await bucket.create(key, fresh) !== null) return true;
      continue;
    }
    const entry = decodeEntry(current.value);
    let relays: readonly string[];
    if (entry && entry.k === registration.instanceKey) {
      if (entry.r.includes(relay) && sameFace(entry, registration)) return true;
      relays = entry.r.includes(relay) ? entry.r : [...entry.r, relay];
    } else if (!entry || !await anyLive(entry.r, isLive)) {
      relays = [relay]; // Held by relays that are gone: the claim is stale.
    } else return false;
    const next = encodeEntry(entryOf(registration, relays));
    if (await bucket.update(key, next, current.revision) !== null) return true;
  }
  return false;
}

/**
 * Removes relay `relay` from the entry at `key` while it is instance key
 * `instanceKey`'s. Throws when the backplane fails or the key keeps moving.
 */
export async function releaseKey(
  bucket: Bucket,
  key: string,
  instanceKey: string,
  relay: string,
): Promise<void> {
  for (let round = 0; round < MAX_WRITE_ROUNDS; round++) {
    const current = await bucket.get(key);
    const entry = current && decodeEntry(current.value);
    if (!current || !entry || entry.k !== instanceKey) return;
    if (!entry.r.includes(relay)) return;
    if (await dropRelays(bucket, key, current, entry, (r) => r === relay)) return;
  }
  throw new Error(`Cannot release ${key}: it kept changing`);
}

/**
 * Writes `entry` (read at `current`) without the relays `gone` picks, or
 * deletes the key when none is left. False when the key moved on.
 */
export async function dropRelays(
  bucket: Bucket,
  key: string,
  current: BucketEntry,
  entry: DirectoryEntry,
  gone: (relay: string) => boolean,
): Promise<boolean> {
  const relays = entry.r.filter((relay) => !gone(relay));
  if (relays.length === entry.r.length) return true;
  if (relays.length === 0) return await bucket.delete(key, current.revision);
  const next = encodeEntry({ ...entry, r: relays });
  return await bucket.update(key, next, current.revision) !== null;
}
