/**
 * Hellos are single-use (docs/PROTOCOL.md, "Memory: bytes received, never
 * bytes declared"): a node remembers the MAC of every hello that made one
 * of its connections trusted for as long as that token could still be
 * accepted, so a hello captured on the LAN and sent again opens nothing.
 *
 * @module
 */

/** Most hellos remembered; past it the oldest is forgotten first. */
export const MAX_HELLOS = 65_536;

/**
 * The hellos a node has accepted, each kept for `keep` ms.
 *
 * @example A hello is accepted once
 * ```ts
 * import assert from "node:assert/strict";
 * import { HelloGuard } from "./hello_guard.ts";
 *
 * const guard = new HelloGuard(120_000);
 * const token = crypto.getRandomValues(new Uint8Array(89));
 * assert.equal(guard.first(token, 0), true);
 * assert.equal(guard.first(token, 1000), false); // The same token again: a replay.
 * assert.equal(guard.first(token, 121_000), true); // Long expired as a token by then.
 * ```
 */
export class HelloGuard {
  readonly #keep: number;
  readonly #max: number;
  /** MAC (hex of its last 16 bytes) → when it may be forgotten. Insertion order is age order. */
  readonly #seen = new Map<string, number>();

  /** Remembers each hello for `keep` ms (the longest a token stays acceptable), at most `max` of them. */
  constructor(keep: number, max: number = MAX_HELLOS) {
    this.#keep = keep;
    this.#max = max;
  }

  /** Hellos remembered now. */
  get size(): number {
    return this.#seen.size;
  }

  /** True the first time `token` (an authentic hello's token) is seen within its lifetime. */
  first(token: Uint8Array, now: number = Date.now()): boolean {
    this.#forget(now);
    const mac = token.subarray(Math.max(0, token.length - 16)).toHex();
    if (this.#seen.has(mac)) return false;
    if (this.#seen.size >= this.#max) this.#seen.delete(this.#seen.keys().next().value!);
    this.#seen.set(mac, now + this.#keep);
    return true;
  }

  #forget(now: number): void {
    for (const [mac, until] of this.#seen) {
      if (until > now) return;
      this.#seen.delete(mac);
    }
  }
}
