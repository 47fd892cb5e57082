// deno-lint-ignore-file no-console
/**
 * Takes the README's screenshot of the browser example: runs
 * `examples/browser/demo.ts` on loopback, joins from headless Chromium,
 * calls the Deno node, chats, and saves `docs/images/browser.png`.
 *
 * ```sh
 * deno run -A tools/netns.ts -- run -A tools/browser_screenshot.ts
 * ```
 *
 * @module
 */

import { launchChromium } from "../tests/_chromium.ts";
import { startDemo } from "../examples/browser/demo.ts";

const OUTPUT = new URL("../docs/images/browser.png", import.meta.url).pathname;

await using demo = await startDemo({ network: "office" });
await using browser = await launchChromium();
const page = await browser.newPage(demo.url);
await page.waitFor("document.body.dataset.ready === 'true'");
await page.evaluate(`(() => {
  document.getElementById("name").value = "laptop-tab";
  document.getElementById("join-button").click();
})()`);
await page.waitFor("document.getElementById('status').className === 'status on'", 15_000);
await page.waitFor("document.getElementById('target').options.length > 0");
await page.evaluate(`(() => {
  document.getElementById("args").value = "[19, 23]";
  document.getElementById("call-button").click();
})()`);
await page.waitFor("document.getElementById('result').textContent === '42'");
await page.waitFor("document.getElementById('messages').textContent.includes('from Deno')");
await page.evaluate(`(() => {
  document.getElementById("say").value = "hi from the browser";
  document.getElementById("say-button").click();
})()`);
await page.waitFor("document.getElementById('messages').children.length >= 2");
await page.screenshot(OUTPUT);
console.log(`Saved ${OUTPUT}`);
