/**
 * The browser build: `browser.ts` bundles offline with `deno bundle` (the
 * task `deno task bundle`), stays within its size budget, and keeps
 * `node:` modules and Deno-only entry points out.
 */

import { ok } from "node:assert/strict";
import { buildBundle } from "../examples/browser/serve.ts";

/** The minified bundle's budget, bytes (120 KiB measured on 2026-12-02). */
const BUNDLE_BUDGET = 160 * 1024;

Deno.test("the browser bundle builds offline, stays under 160 KiB and imports no node: module", async () => {
  const dir = await Deno.makeTempDir({ prefix: "peerbase-bundle-" });
  try {
    const size = await buildBundle(`${dir}/peerbase.js`);
    const text = await Deno.readTextFile(`${dir}/peerbase.js`);
    // deno-lint-ignore no-console
    console.log(`browser bundle: ${size} bytes minified`);
    ok(size < BUNDLE_BUDGET, `the bundle is ${size} bytes, over its ${BUNDLE_BUDGET} budget`);
    ok(!/from\s*"node:|require\("node:/.test(text), "the bundle imports a node: module");
    ok(!text.includes("createCipheriv"), "the node:crypto Fernet backend is in the bundle");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
