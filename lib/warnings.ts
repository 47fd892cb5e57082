/**
 * Warnings: what a node sees going wrong that would otherwise fail
 * silently (a member with another key, a skewed clock, a lost multicast
 * interface, an advert of another version). Each is dispatched as a
 * `warning` event, at most once per {@linkcode DEFAULT_WARNING_INTERVAL}
 * per code, and the latest is named by {@linkcode PeerNotFoundError}'s
 * message as the likely cause.
 *
 * @module
 */

import { CommandError, PeerNotFoundError } from "./errors.ts";

/**
 * Why a node warns:
 * - `key-mismatch`: an advert or frame for this network does not verify
 *   under any key this node holds (a node with the same network name and
 *   another key, or a forgery);
 * - `clock-skew`: an authentic advert or token lies outside the clock
 *   allowance (`skew` says by how much);
 * - `multicast-lost`: sending adverts to the multicast group fails after
 *   start (the interface went away, or its multicast route);
 * - `advert-version`: an advert for this network has another version.
 */
export type WarningCode = "key-mismatch" | "clock-skew" | "multicast-lost" | "advert-version";

/** What a node reports: detail of a `warning` event. */
export interface NodeWarning {
  /** Why; one event per code at most every {@linkcode DEFAULT_WARNING_INTERVAL}. */
  code: WarningCode;
  /** What was seen and what to do, in one sentence. */
  message: string;
  /** The address the offending datagram or connection came from, when known. */
  source?: string;
  /** For `clock-skew`: the sender's time minus this node's, in milliseconds. */
  skew?: number;
  /** Warnings of this code left out since the previous event (rate limit). */
  suppressed: number;
}

/** A warning as reported by a part of the node, before the rate limit. */
export type WarningInput = Omit<NodeWarning, "suppressed">;

/** Shortest time between two `warning` events of one code, in milliseconds. */
export const DEFAULT_WARNING_INTERVAL = 60_000;

/** How long a warning is named as the likely cause of a `PeerNotFoundError`, in milliseconds. */
export const DEFAULT_WARNING_RECALL = 600_000;

/** Options of {@linkcode Warnings}. */
export interface WarningsOptions {
  /** Shortest time between two events of one code, ms. @default {DEFAULT_WARNING_INTERVAL} */
  interval?: number;
  /** Monotonic clock, ms. @default {performance.now} */
  now?: () => number;
}

interface Last {
  warning: WarningInput;
  seenAt: number;
  emittedAt: number;
  suppressed: number;
}

/**
 * Rate-limits warnings per code and remembers the latest of each.
 *
 * @example One event per code per interval
 * ```ts
 * import { deepStrictEqual, match } from "node:assert/strict";
 * import { PeerNotFoundError } from "./errors.ts";
 * import { type NodeWarning, Warnings } from "./warnings.ts";
 *
 * const events: NodeWarning[] = [];
 * const warnings = new Warnings((w) => events.push(w));
 * const warning = { code: "key-mismatch", message: "adverts under another key" } as const;
 * warnings.warn(warning);
 * warnings.warn(warning);
 * deepStrictEqual(events, [{ ...warning, suppressed: 0 }]);
 * match(warnings.explain(new PeerNotFoundError("bob")).message, /likely cause: adverts under another key/);
 * ```
 */
export class Warnings {
  readonly #emit: (warning: NodeWarning) => void;
  readonly #interval: number;
  readonly #now: () => number;
  readonly #last = new Map<WarningCode, Last>();

  /** Reports through `emit`. */
  constructor(emit: (warning: NodeWarning) => void, options: WarningsOptions = {}) {
    this.#emit = emit;
    this.#interval = options.interval ?? DEFAULT_WARNING_INTERVAL;
    this.#now = options.now ?? (() => performance.now());
  }

  /** Records `warning`; emits it unless one of its code was emitted within the interval. */
  warn(warning: WarningInput): void {
    const now = this.#now();
    const last = this.#last.get(warning.code);
    if (last && now - last.emittedAt < this.#interval) {
      last.warning = warning;
      last.seenAt = now;
      last.suppressed++;
      return;
    }
    this.#last.set(warning.code, { warning, seenAt: now, emittedAt: now, suppressed: 0 });
    this.#emit({ ...warning, suppressed: last?.suppressed ?? 0 });
  }

  /** The latest warning seen within {@linkcode DEFAULT_WARNING_RECALL}, if any. */
  latest(): WarningInput | undefined {
    let found: Last | undefined;
    for (const last of this.#last.values()) {
      if (this.#now() - last.seenAt > DEFAULT_WARNING_RECALL) continue;
      if (!found || last.seenAt > found.seenAt) found = last;
    }
    return found?.warning;
  }

  /**
   * Adds the likely cause (the latest warning) to the message of a
   * `PeerNotFoundError`, or of those inside a `CommandError`; returns
   * `error`.
   */
  explain<E>(error: E): E {
    const latest = this.latest();
    if (latest === undefined) return error;
    const errors = error instanceof CommandError ? error.errors : [error];
    for (const each of errors) {
      if (each instanceof PeerNotFoundError && !each.message.includes("; likely cause: ")) {
        each.message += `; likely cause: ${latest.message} (warning ${latest.code})`;
      }
    }
    return error;
  }
}

/**
 * How far the time stamped in a Fernet token (a raw token, seconds
 * resolution) is from `now`: positive when the sender's clock is ahead, in
 * milliseconds. For the `skew` of a `clock-skew` warning about a token
 * refused as `future` or `expired`; NaN for a token too short to carry a
 * time.
 *
 * @example
 * ```ts
 * import { strictEqual } from "node:assert/strict";
 * import { Fernet, generateKey } from "./fernet.ts";
 * import { tokenSkew } from "./warnings.ts";
 *
 * const now = Date.UTC(2030, 0, 1);
 * const token = await new Fernet(generateKey()).encryptBytes(new Uint8Array(1), { now: now + 3_600_000 });
 * strictEqual(tokenSkew(token, now), 3_600_000);
 * ```
 */
export function tokenSkew(token: Uint8Array, now: number = Date.now()): number {
  if (token.length < 9) return NaN;
  const view = new DataView(token.buffer, token.byteOffset + 1, 8);
  return (view.getUint32(0) * 2 ** 32 + view.getUint32(4)) * 1000 - now;
}
