/**
 * When a relay link that carries calls has gone silent, as a sans-IO state
 * machine: the relay client feeds it the time, when it last heard the
 * relay and whether calls wait on the link, and does what it answers
 * (wait, probe, declare the link dead, or stop watching). See
 * docs/PROTOCOL.md, "Keepalive".
 *
 * @module
 */

/** Least silence (ms) on a link with calls outstanding before it is probed, and the probe's wait. */
export const DEFAULT_SILENCE_PROBE = 500;

/** Round trips to the relay that the silence before a probe lasts at least. */
const ROUND_TRIPS = 4;

/**
 * How long a link with calls outstanding may be silent before a probe, and
 * how long the probe then waits, ms: {@linkcode DEFAULT_SILENCE_PROBE}, or
 * four round trips to the relay when that is longer (`rtt` null: none
 * measured yet).
 *
 * @example
 * ```ts
 * import { silenceLimit } from "./silence_watch.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(silenceLimit(0.3), 500); // a LAN relay
 * assert.equal(silenceLimit(null), 500);
 * assert.equal(silenceLimit(300), 1200); // a distant one
 * ```
 */
export function silenceLimit(rtt: number | null): number {
  return Math.max(DEFAULT_SILENCE_PROBE, ROUND_TRIPS * (rtt ?? 0));
}

/** What the watch wants next. */
export type SilenceStep =
  /** No call waits on the link: stop watching until one is sent. */
  | { do: "idle" }
  /** Look again in `ms`. */
  | { do: "wait"; ms: number }
  /** Send a PING now (report its write with `probeWritten`), then look again in `ms`. */
  | { do: "probe"; ms: number }
  /** No answer to the probe: the link is dead. */
  | { do: "dead" };

/** What {@linkcode SilenceWatch.check} looks at. */
export interface SilenceInput {
  /** Now, ms (a monotonic clock: `performance.now()`). */
  now: number;
  /** When anything (a frame, or a byte of one) last arrived on the link, same clock. */
  heard: number;
  /** True while at least one call sent on the link waits for its answer. */
  outstanding: boolean;
  /** Silence before a probe, and the probe's wait, ms (see {@linkcode silenceLimit}). */
  limit: number;
}

/** A check that runs later than this after it was due judges nothing, ms. */
const LATE = 100;
/** How soon a late check looks again, ms: the reads that waited get their turn first. */
const RECHECK = 20;
/** Late checks in a row after which a check judges anyway (an event loop that is always late). */
const MAX_LATE = 3;

/**
 * The silence watch of one relay link. Armed when a call is sent while it is
 * idle; each {@linkcode check} says what to do next.
 *
 * @example A relay that stops answering is probed, then declared dead
 * ```ts
 * import { SilenceWatch } from "./silence_watch.ts";
 * import assert from "node:assert/strict";
 *
 * const watch = new SilenceWatch();
 * const limit = 500;
 * assert.deepEqual(watch.arm(1000, limit), { do: "wait", ms: 500 }); // a call went out at 1000
 * assert.deepEqual(watch.check({ now: 1500, heard: 900, outstanding: true, limit }), {
 *   do: "probe",
 *   ms: 500,
 * });
 * watch.probeWritten(1500);
 * assert.deepEqual(watch.check({ now: 2000, heard: 900, outstanding: true, limit }), {
 *   do: "dead",
 * });
 * ```
 *
 * @example A slow call on a live link: the relay answers the probe, nothing is cut
 * ```ts
 * import { SilenceWatch } from "./silence_watch.ts";
 * import assert from "node:assert/strict";
 *
 * const watch = new SilenceWatch();
 * const limit = 500;
 * watch.arm(0, limit);
 * assert.equal(watch.check({ now: 500, heard: 0, outstanding: true, limit }).do, "probe");
 * watch.probeWritten(500);
 * // The PONG came back at 501: silence counts from there.
 * assert.deepEqual(watch.check({ now: 1000, heard: 501, outstanding: true, limit }), {
 *   do: "wait",
 *   ms: 1,
 * });
 * // The answer came and no call waits any more.
 * assert.deepEqual(watch.check({ now: 1001, heard: 1001, outstanding: false, limit }), {
 *   do: "idle",
 * });
 * assert.equal(watch.armed, false);
 * ```
 */
export class SilenceWatch {
  /** When watching began (a call was sent while idle); null while idle. */
  #since: number | null = null;
  /** When the next check is due; a check much later than that judges nothing. */
  #due = 0;
  /** The probe in flight: when its write completed, or NaN while it is still being written. */
  #probe: number | null = null;
  /** Late checks in a row while a probe waits. */
  #lateInARow = 0;

  /** True while watching (a call may be outstanding). */
  get armed(): boolean {
    return this.#since !== null;
  }

  /**
   * A call was sent on the link at `now`. When idle, starts watching and
   * returns the first wait; null when already watching (its check is set).
   */
  arm(now: number, limit: number): SilenceStep | null {
    if (this.#since !== null) return null;
    this.#since = now;
    this.#probe = null;
    return this.#wait(now, limit);
  }

  /** The probe's PING was written at `now`: its wait starts. */
  probeWritten(now: number): void {
    if (this.#probe !== null && Number.isNaN(this.#probe)) this.#probe = now;
  }

  /** Says what to do at `input.now`; a returned wait or probe is the next check's due time. */
  check(input: SilenceInput): SilenceStep {
    const { now, heard, outstanding, limit } = input;
    if (!outstanding || this.#since === null) {
      this.#since = null;
      this.#probe = null;
      return { do: "idle" };
    }
    const late = now - this.#due > LATE;
    if (this.#probe !== null) {
      if (Number.isNaN(this.#probe)) return this.#wait(now, limit); // Still being written.
      if (heard < this.#probe) {
        if (late && ++this.#lateInARow <= MAX_LATE) return this.#wait(now, RECHECK);
        this.#lateInARow = 0;
        if (now - this.#probe >= limit) return { do: "dead" };
        return this.#wait(now, this.#probe + limit - now);
      }
      this.#probe = null; // Answered (or something else arrived): back to watching.
      this.#lateInARow = 0;
    }
    const silent = now - Math.max(heard, this.#since);
    if (silent < limit) return this.#wait(now, limit - silent);
    this.#probe = NaN;
    this.#due = now + limit;
    return { do: "probe", ms: limit };
  }

  #wait(now: number, ms: number): SilenceStep {
    this.#due = now + ms;
    return { do: "wait", ms };
  }
}
