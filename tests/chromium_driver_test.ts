/**
 * The headless-Chromium driver (`_chromium.ts`) against a real Chromium and
 * two `Deno.serve` servers on 127.0.0.1: a page and a WebSocket echo. Inside
 * the test network namespace Chromium reaches only loopback.
 */

import { deepStrictEqual, ok, rejects } from "node:assert/strict";
import { testIf } from "./_env.ts";
import { chromiumMissing, launchChromium, withScreenshotOnFailure } from "./_chromium.ts";

const PROBLEM = await chromiumMissing();
const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** A page server and a WebSocket echo server, both on 127.0.0.1 port 0. */
class Fixture implements AsyncDisposable {
  /** Messages the echo server received, in order. */
  readonly received: string[] = [];
  readonly #echo = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    const { socket, response } = Deno.upgradeWebSocket(request);
    socket.onmessage = (event) => {
      this.received.push(String(event.data));
      socket.send(`echo: ${event.data}`);
    };
    return response;
  });
  readonly #page = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => {
    const html = `<!doctype html><meta charset="utf-8"><title>driver test</title>
<button id="go" onclick="document.getElementById('out').textContent = 'clicked'">Go</button>
<p id="out"></p>
<script>
  console.log("page ready");
  window.echo = new Promise((resolve, reject) => {
    const ws = new WebSocket("ws://127.0.0.1:${this.#echo.addr.port}/");
    ws.onopen = () => ws.send("ping");
    ws.onmessage = (event) => { resolve(event.data); ws.close(); };
    ws.onerror = () => reject(new Error("WebSocket to the echo server failed"));
  });
</script>`;
    return new Response(html, { headers: { "content-type": "text/html; charset=utf-8" } });
  });

  /** The page's URL. */
  get url(): string {
    return `http://127.0.0.1:${this.#page.addr.port}/`;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await Promise.all([this.#page.shutdown(), this.#echo.shutdown()]);
  }
}

/** True when `path` is a PNG file (by its signature). */
async function isPng(path: string): Promise<boolean> {
  const bytes = await Deno.readFile(path);
  return bytes.length > 100 && PNG_SIGNATURE.every((byte, i) => bytes[i] === byte);
}

testIf(PROBLEM === null, PROBLEM ?? "", {
  name: "headless Chromium runs page script, clicks a button and echoes over a loopback WebSocket",
  async fn(t) {
    await using fixture = new Fixture();
    const screenshots = await Deno.makeTempDir({ prefix: "peerbase-screenshots-test-" });
    try {
      await using browser = await launchChromium({ screenshotsDir: screenshots });
      const page = await browser.newPage(fixture.url);

      await t.step("evaluate() returns JSON values and awaits promises", async () => {
        deepStrictEqual(await page.evaluate("({ sum: 1 + 2, title: document.title })"), {
          sum: 3,
          title: "driver test",
        });
        deepStrictEqual(await page.evaluate("Promise.resolve([1, 'two'])"), [1, "two"]);
      });

      await t.step("evaluate() rethrows what the page throws, with its text", async () => {
        await rejects(page.evaluate("throw new RangeError('boom 42')"), /RangeError: boom 42/);
        await rejects(page.evaluate("Promise.reject(new Error('later'))"), /Error: later/);
      });

      await t.step("a click through evaluate() sets the text waitFor() sees", async () => {
        deepStrictEqual(await page.evaluate("document.querySelector('#out').textContent"), "");
        await page.evaluate("document.querySelector('#go').click()");
        deepStrictEqual(
          await page.waitFor("document.querySelector('#out').textContent === 'clicked'"),
          true,
        );
      });

      await t.step("the page's WebSocket reaches the echo server on loopback", async () => {
        deepStrictEqual(await page.evaluate("window.echo"), "echo: ping");
        deepStrictEqual(fixture.received, ["ping"]);
      });

      await t.step("consoleMessages() has the page's console output", () => {
        ok(page.consoleMessages().includes("log: page ready"), page.consoleMessages().join("\n"));
      });

      await t.step("screenshot() writes a PNG file", async () => {
        const path = `${screenshots}/page.png`;
        await page.screenshot(path);
        ok(await isPng(path), `${path} is not a PNG`);
      });

      await t.step("waitFor() names the expression when it times out", async () => {
        await rejects(page.waitFor("window.never === true", 200), /window\.never === true/);
      });

      await t.step("withScreenshotOnFailure() saves <name>.png and rethrows", async () => {
        const failing = () => page.waitFor("document.title === 'other'", 100);
        await rejects(withScreenshotOnFailure(page, "title check", failing), /document\.title/);
        ok(await isPng(`${screenshots}/title_check.png`), "no title_check.png");
        deepStrictEqual(await withScreenshotOnFailure(page, "passes", () => page.evaluate("7")), 7);
        await rejects(Deno.stat(`${screenshots}/passes.png`), Deno.errors.NotFound);
      });

      await t.step("newPage() rejects naming the URL when nothing listens there", async () => {
        const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
        const url = `http://127.0.0.1:${listener.addr.port}/`;
        listener.close();
        await rejects(browser.newPage(url), /ERR_CONNECTION_REFUSED/);
      });
    } finally {
      await Deno.remove(screenshots, { recursive: true });
    }
  },
});

testIf(PROBLEM === null, PROBLEM ?? "", {
  name: "Browser.close() stops Chromium, removes its profile and fails later requests cleanly",
  async fn() {
    await using fixture = new Fixture();
    const browser = await launchChromium();
    const page = await browser.newPage(fixture.url);
    ok((await Deno.stat(`${browser.profile}/DevToolsActivePort`)).isFile);
    const inFlight = rejects(
      page.evaluate("new Promise(() => {})", 60_000),
      /^Error: Cannot finish CDP Runtime\.evaluate: socket closed$/,
    );
    await browser.close();
    await browser.close();
    await inFlight;
    await rejects(page.evaluate("1"), /^Error: Cannot send CDP Runtime\.evaluate: socket closed$/);
    await rejects(Deno.stat(browser.profile), Deno.errors.NotFound);
  },
});

Deno.test("launchChromium() rejects with the binary's stderr when it exits at once", async () => {
  await rejects(
    launchChromium({ binary: "/bin/sh" }),
    /^Error: Cannot launch Chromium: it exited with code 2; its stderr: .*illegal option/is,
  );
});

Deno.test("launchChromium() kills a browser that never opens DevTools and quotes its stderr", async () => {
  const dir = await Deno.makeTempDir({ prefix: "peerbase-fake-chromium-" });
  try {
    // Prints its arguments, then waits on a child that holds stderr open too.
    const fake = `${dir}/chromium`;
    await Deno.writeTextFile(fake, '#!/bin/sh\necho "fake chromium $*" >&2\nsleep 60 &\nwait\n');
    await Deno.chmod(fake, 0o755);
    const error = await launchChromium({ binary: fake, timeout: 300 }).then(
      () => new Error("launched"),
      (error: Error) => error,
    );
    ok(
      /^Cannot launch Chromium: no DevToolsActivePort after 300 ms; its stderr: fake chromium /
        .test(error.message),
      error.message,
    );
    const profile = error.message.match(/--user-data-dir=(\S+)/)?.[1];
    ok(profile, error.message);
    await rejects(Deno.stat(profile), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
