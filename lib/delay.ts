/**
 * A wait that ends early, without rejecting, when a signal aborts: for
 * loops (reconnection backoff, accept retries) that check the signal
 * themselves right after.
 *
 * @module
 */

/**
 * Resolves after `ms`, or at once when `signal` aborts; leaves no timer or
 * listener behind.
 *
 * @example
 * ```ts
 * import { delay } from "./delay.ts";
 * import assert from "node:assert/strict";
 *
 * const stop = new AbortController();
 * stop.abort();
 * const started = performance.now();
 * await delay(60_000, stop.signal);
 * assert.ok(performance.now() - started < 1000);
 * ```
 */
export function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    if (signal.aborted) done();
    else signal.addEventListener("abort", done, { once: true });
  });
}
