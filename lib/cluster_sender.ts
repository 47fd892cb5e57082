/**
 * How a relay of a cluster sends frames to the other relays
 * (docs/PROTOCOL.md, "Relay clusters"): to one live relay of each target,
 * a `*` frame once per relay with the names it writes it to, each message
 * with its own reply subject; when NATS answers one with "no responders",
 * that message reached no one, so it goes to other relays of its targets
 * (never twice) and the silent relay is skipped for a while.
 *
 * @module
 */

import type { Backplane } from "./backplane.ts";
import { decodeFanout, encodeFanout, MAX_FANOUT_NAMES } from "./cluster_fanout.ts";
import { LEASE_INTERVAL, type Leases } from "./cluster_leases.ts";
import type { Seen } from "./directory_mirror.ts";
import { type Frame, FrameType, parseFrame } from "./frame.ts";
import { SentFrames } from "./sent_frames.ts";

const encoder = new TextEncoder();

/** How many times a message that reached no one is sent again. */
export const MAX_RESENDS = 5;
/** How long before a message goes again to the relay that just did not hear it, ms. */
export const RESEND_DELAY = 200;

/** A network's directory entries as a relay heard them, by pseudonym. */
export type Entries = ReadonlyMap<string, Seen>;

/** Sends frames from one relay of a cluster to the others. */
export class ClusterSender {
  readonly #backplane: Backplane;
  readonly #prefix: string;
  readonly #id: string;
  readonly #leases: Leases;
  readonly #entries: (network: string) => Entries | undefined;
  /** Messages sent lately, until NATS would have said nobody got them. */
  readonly #sent = new SentFrames();
  /** Relays NATS said had no subscription, and when. */
  readonly #unreachable = new Map<string, number>();
  /** Sends waiting to be tried again. */
  readonly #later = new Set<ReturnType<typeof setTimeout>>();

  /**
   * Sends for relay `id` on `backplane` under `prefix`; `leases` says which
   * relays are live, `entries` what this relay heard of a network.
   */
  constructor(
    backplane: Backplane,
    prefix: string,
    id: string,
    leases: Leases,
    entries: (network: string) => Entries | undefined,
  ) {
    this.#backplane = backplane;
    this.#prefix = prefix;
    this.#id = id;
    this.#leases = leases;
    this.#entries = entries;
  }

  /** Messages not sent: no live relay held their target, or the backplane was away. */
  dropped = 0;

  /** Sends a DATA frame to a relay of `target`; false when no live relay holds it. */
  toMember(entries: Entries, target: string, frame: Uint8Array, resent = 0): boolean {
    const relay = this.#relayOf(entries.get(target));
    if (relay) this.#send("r", relay, frame, resent);
    else this.dropped++;
    return relay !== null;
  }

  /** Sends a `*` frame to the relays of `names`, each with the names it writes it to. */
  toMembers(entries: Entries, names: Iterable<string>, frame: Uint8Array, resent = 0): void {
    const byRelay = new Map<string, string[]>();
    for (const name of names) {
      const seen = entries.get(name);
      if (!seen || seen.entry.o === 1) continue;
      const relay = this.#relayOf(seen);
      if (!relay) {
        this.dropped++; // As toMember counts it: no live relay holds this name.
        continue;
      }
      const list = byRelay.get(relay);
      if (list) list.push(name);
      else byRelay.set(relay, [name]);
    }
    const room = this.#backplane.maxPayload - frame.length - 2;
    for (const [relay, list] of byRelay) {
      for (const names of fitting(list, room)) {
        this.#send("f", relay, encodeFanout(names, frame), resent);
      }
    }
  }

  /**
   * NATS says nobody got what was sent as the `seq` ending `subject` (no
   * responders): its relay is tried last for a while, and the frame goes
   * to other relays of its targets, or to the same one again a little
   * later when it is the only one (it may be reconnecting to another NATS
   * server), at most {@linkcode MAX_RESENDS} times.
   */
  undelivered(subject: string): void {
    const sent = this.#sent.take(Number(subject.slice(subject.lastIndexOf(".") + 1)));
    if (!sent) return;
    if (sent.resent >= MAX_RESENDS) {
      this.dropped++;
      return;
    }
    this.#unreachable.set(sent.relay, performance.now());
    const resent = sent.resent + 1;
    if (sent.kind === "r") {
      const frame = dataFrame(sent.bytes);
      const entries = frame && this.#entries(frame.network);
      if (entries) this.toMember(entries, frame.target, sent.bytes, resent);
      else this.dropped++;
      return;
    }
    const body = decodeFanout(sent.bytes);
    const frame = body && dataFrame(body.frame);
    const entries = frame && this.#entries(frame.network);
    if (entries) this.toMembers(entries, body.names, body.frame, resent);
    else this.dropped++;
  }

  /** Drops the sends waiting to be tried again. */
  close(): void {
    for (const timer of this.#later) clearTimeout(timer);
    this.#later.clear();
  }

  /** Forgets relays called silent long ago. */
  sweep(): void {
    const old = performance.now() - LEASE_INTERVAL;
    for (const [relay, at] of this.#unreachable) if (at < old) this.#unreachable.delete(relay);
  }

  /**
   * A live relay of `seen`'s entry other than this one, preferring those
   * NATS did not just call silent.
   */
  #relayOf(seen: Seen | undefined): string | null {
    if (!seen) return null;
    const recently = performance.now() - LEASE_INTERVAL;
    let silent: string | null = null;
    for (const relay of seen.entry.r) {
      if (relay === this.#id || !this.#leases.isLive(relay, seen.at)) continue;
      if ((this.#unreachable.get(relay) ?? -Infinity) < recently) return relay;
      silent ??= relay;
    }
    return silent;
  }

  /** Sends now, or after {@linkcode RESEND_DELAY} to a relay that just came back unheard. */
  #send(kind: "r" | "f", relay: string, bytes: Uint8Array, resent: number): void {
    const silent = (this.#unreachable.get(relay) ?? -Infinity) >= performance.now() - RESEND_DELAY;
    if (resent === 0 || !silent) {
      this.#publish(kind, relay, bytes, resent);
      return;
    }
    const timer = setTimeout(() => {
      this.#later.delete(timer);
      this.#publish(kind, relay, bytes, resent);
    }, RESEND_DELAY);
    this.#later.add(timer);
  }

  /** Sends to `relay`, with a reply subject NATS answers if nobody gets it. */
  #publish(kind: "r" | "f", relay: string, bytes: Uint8Array, resent: number): void {
    const p = this.#prefix;
    const seq = this.#sent.add(relay, kind, bytes, performance.now(), resent);
    const subject = `${p}.${kind}.${relay}.${this.#id}`;
    if (!this.#backplane.publish(subject, bytes, `${p}.nr.${this.#id}.${seq}`)) {
      this.#sent.take(seq);
      this.dropped++;
    }
  }
}

/**
 * `names` in lists whose encoded size (a length byte and the UTF-8 bytes
 * each) fits `room` bytes, at most {@linkcode MAX_FANOUT_NAMES} names each.
 */
function* fitting(names: readonly string[], room: number): Generator<string[]> {
  let list: string[] = [];
  let size = 0;
  for (const name of names) {
    const bytes = 1 + encoder.encode(name).length;
    if (list.length > 0 && (size + bytes > room || list.length === MAX_FANOUT_NAMES)) {
      yield list;
      list = [];
      size = 0;
    }
    list.push(name);
    size += bytes;
  }
  if (list.length > 0) yield list;
}

/**
 * `bytes` as a DATA frame, or null: a relay writes nothing else from the
 * backplane.
 *
 * @example
 * ```ts
 * import { dataFrame } from "./cluster_sender.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(dataFrame(new Uint8Array([1, 2, 3])), null);
 * ```
 */
export function dataFrame(bytes: Uint8Array): Frame | null {
  try {
    const frame = parseFrame(bytes);
    return frame.type === FrameType.DATA ? frame : null;
  } catch {
    return null;
  }
}
