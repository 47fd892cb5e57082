/**
 * A node in a browser page: it closes when the page goes away (`pagehide`:
 * its peers hear a bye instead of waiting out a silence timeout), and its
 * relays retry at once when the network comes back (`online`) or a hidden
 * tab is shown again (`visibilitychange`), instead of waiting out their
 * backoff. Elsewhere (Deno: no `document`) it does nothing.
 *
 * @module
 */

/** What a page's events do to a node. */
export interface PageHooks {
  /** The page is going away. */
  close(): void;
  /** Connectivity may be back. */
  retryNow(): void;
}

/**
 * Listens to the page's events for `hooks`; returns the function that stops
 * listening. A no-op (and a no-op untie) where there is no `document`.
 *
 * @example
 * ```ts
 * import { tieToPage } from "./page_ties.ts";
 * import assert from "node:assert/strict";
 *
 * let closed = false;
 * const untie = tieToPage({ close: () => closed = true, retryNow: () => {} });
 * untie(); // On Deno there is no page: nothing was tied.
 * assert.equal(closed, false);
 * ```
 */
export function tieToPage(hooks: PageHooks): () => void {
  const page = globalThis as {
    document?: { visibilityState?: string };
    addEventListener?: typeof globalThis.addEventListener;
    removeEventListener?: typeof globalThis.removeEventListener;
  };
  if (typeof page.document !== "object" || typeof page.addEventListener !== "function") {
    return () => {};
  }
  const onHide = () => hooks.close();
  const onOnline = () => hooks.retryNow();
  const onVisible = () => {
    if (page.document?.visibilityState === "visible") hooks.retryNow();
  };
  page.addEventListener("pagehide", onHide);
  page.addEventListener("online", onOnline);
  page.addEventListener("visibilitychange", onVisible);
  return () => {
    page.removeEventListener?.("pagehide", onHide);
    page.removeEventListener?.("online", onOnline);
    page.removeEventListener?.("visibilitychange", onVisible);
  };
}
