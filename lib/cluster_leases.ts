/**
 * The leases of a relay cluster (docs/PROTOCOL.md, "Relay clusters"): each
 * relay puts its key in the leases bucket every {@linkcode LEASE_INTERVAL}
 * ms on a timer of its own, and watches the others' puts. A relay is live
 * while its last put is less than {@linkcode LEASE_TTL} old and it did not
 * delete its key; the bucket drops a key that old, so a claim can also ask
 * the bucket. While the watch does not bring back this relay's own puts,
 * nobody is judged dead.
 *
 * @module
 */

import type { Bucket, Watch } from "./backplane.ts";

/** How often a relay refreshes its lease, ms. */
export const LEASE_INTERVAL = 3000;
/** A lease not refreshed for this long is gone, ms (the bucket's max age). */
export const LEASE_TTL = 9000;
/** How long closing waits for the lease's delete, ms (it expires anyway). */
const CLOSE_WAIT = 1000;

const EMPTY = new TextEncoder().encode("{}");

/** This relay's lease and what it hears of the others'. */
export class Leases {
  readonly #bucket: Bucket;
  readonly #id: string;
  /** When each relay's lease was last heard put or deleted (performance.now()). */
  readonly #heard = new Map<string, { at: number; gone: boolean }>();
  /** When this relay's own last put was heard back through the watch. */
  #ownHeard = -Infinity;
  #watch: Watch | null = null;
  #timer: ReturnType<typeof setInterval> | undefined;
  #refreshing = false;
  /** Refreshes that failed (the backplane was unavailable). */
  failures = 0;

  /** The leases in `bucket`, this relay's under `id`. */
  constructor(bucket: Bucket, id: string) {
    this.#bucket = bucket;
    this.#id = id;
  }

  /** Takes the lease, hears the others' (those present now count as just put) and keeps it. */
  async start(): Promise<void> {
    this.#watch = await this.#bucket.watch(">", ({ key, entry }) => {
      const at = performance.now();
      this.#heard.set(key, { at, gone: entry === null });
      if (key === this.#id && entry) this.#ownHeard = at;
    });
    const now = performance.now();
    for (const { key, entry } of await this.#bucket.snapshot(">")) {
      if (entry && !this.#heard.has(key)) this.#heard.set(key, { at: now, gone: false });
    }
    await this.#bucket.put(this.#id, EMPTY);
    this.#ownHeard = performance.now(); // Heard or not, the watch gets its grace from now.
    this.#timer = setInterval(() => void this.#refresh(), LEASE_INTERVAL);
  }

  /**
   * Whether `relay` is live: this relay; one whose lease was heard within
   * the TTL; or one never heard of whose entry (heard at `heardAt`) is
   * younger than the TTL, since a relay takes its lease before it claims.
   */
  isLive(relay: string, heardAt = -Infinity): boolean {
    if (relay === this.#id || this.stale) return true;
    const heard = this.#heard.get(relay);
    if (heard?.gone) return false;
    return performance.now() - (heard?.at ?? heardAt) <= LEASE_TTL;
  }

  /**
   * True when the watch has not brought back this relay's own refresh for
   * 1.5 intervals (its consumer was lost with a NATS server, say): then
   * nobody can be judged dead, and {@linkcode Leases.isLive} says live.
   */
  get stale(): boolean {
    return performance.now() - this.#ownHeard > 1.5 * LEASE_INTERVAL;
  }

  /** Whether `relay` holds its lease: live as heard, or its key is in the bucket now. */
  async holds(relay: string): Promise<boolean> {
    return this.isLive(relay) || (await this.#bucket.get(relay)) !== null;
  }

  /** Stops refreshing and watching, and gives the lease up (waiting at most a second). */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    this.#watch?.stop();
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.#bucket.delete(this.#id).catch(() => false),
      new Promise((resolve) => timer = setTimeout(resolve, CLOSE_WAIT)),
    ]);
    clearTimeout(timer);
  }

  async #refresh(): Promise<void> {
    if (this.stale) this.#watch?.restart(); // Its consumer stalled with a NATS server: start afresh.
    if (this.#refreshing) return;
    this.#refreshing = true;
    try {
      await this.#bucket.put(this.#id, EMPTY);
    } catch {
      this.failures++; // The backplane is away: the next refresh tries again.
    } finally {
      this.#refreshing = false;
    }
    const old = performance.now() - 10 * LEASE_TTL;
    for (const [relay, { at }] of this.#heard) if (at < old) this.#heard.delete(relay);
  }
}
