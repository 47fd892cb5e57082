/**
 * Which runtime this is: Deno (sockets, UDP, `Deno.errors`) or one without
 * `Deno`, a browser. One test, so every part that branches on it agrees.
 *
 * @module
 */

/**
 * The `Deno` namespace when this runtime has one; null in a browser.
 *
 * @example
 * ```ts
 * import { denoRuntime } from "./runtime.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(denoRuntime(), Deno); // These examples run on Deno.
 * ```
 */
export function denoRuntime(): typeof Deno | null {
  const deno = (globalThis as { Deno?: typeof Deno }).Deno;
  return typeof deno === "object" ? deno : null;
}
