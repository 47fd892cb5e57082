/**
 * A browser tab as a member of a network, in real headless Chromium: the
 * example page (`examples/browser/`) loads the browser bundle, joins through
 * the relay's WebSocket port, calls a Deno node's command, and serves a
 * command the Deno node calls. Screenshot and page console on failure.
 */

import { deepStrictEqual, match, ok, strictEqual } from "node:assert/strict";
import { testIf } from "./_env.ts";
import {
  chromiumMissing,
  launchChromium,
  type Page,
  withScreenshotOnFailure,
} from "./_chromium.ts";
import { startDemo } from "../examples/browser/demo.ts";
import { CONTENT_SECURITY_POLICY } from "../examples/browser/serve.ts";
import { uniqueNetwork } from "./_env.ts";
import { Node } from "../mod.ts";
import { Relay } from "../relay/mod.ts";

const PROBLEM = await chromiumMissing();

/** Fills the page's join form and joins as `name`. */
async function join(page: Page, name: string): Promise<void> {
  await page.waitFor("document.body.dataset.ready === 'true'");
  await page.evaluate(`(() => {
    document.getElementById("name").value = ${JSON.stringify(name)};
    document.getElementById("join-button").click();
  })()`);
  await page.waitFor("document.getElementById('status').className === 'status on'", 15_000);
}

testIf(PROBLEM === null, PROBLEM ?? "", {
  name:
    "a page in headless Chromium joins through the relay's WebSocket port, calls a Deno node and serves a command the Deno node calls",
  async fn(t) {
    await using demo = await startDemo({ network: uniqueNetwork("browser") });
    await using browser = await launchChromium();
    const page = await browser.newPage(demo.url);
    await withScreenshotOnFailure(page, "browser-joins", async () => {
      await t.step("the page is served with a strict Content-Security-Policy", async () => {
        const response = await fetch(demo.page.url);
        await response.body?.cancel();
        strictEqual(response.headers.get("content-security-policy"), CONTENT_SECURITY_POLICY);
        match(CONTENT_SECURITY_POLICY, /script-src 'self'; base-uri 'none'/);
        strictEqual(response.headers.get("referrer-policy"), "no-referrer");
        strictEqual(response.headers.get("x-content-type-options"), "nosniff");
        // Every violation from here on is recorded, to show the page works under the policy.
        await page.waitFor("document.body.dataset.ready === 'true'");
        await page.evaluate(`(() => {
          globalThis.violations = [];
          document.addEventListener("securitypolicyviolation", (e) => {
            globalThis.violations.push(e.violatedDirective + " " + e.blockedURI);
          });
        })()`);
      });

      await t.step("the page loads the bundle and joins the network", async () => {
        await join(page, "tab");
        await page.waitFor(
          "[...document.querySelectorAll('#peers li')].some((li) => li.textContent.startsWith('deno'))",
        );
      });

      await t.step("the page's call of math.add returns the Deno node's answer", async () => {
        await page.evaluate(`(() => {
          document.getElementById("target").value = "deno";
          document.getElementById("path").value = "math.add";
          document.getElementById("args").value = "[19, 23]";
          document.getElementById("call-button").click();
        })()`);
        await page.waitFor(
          "document.getElementById('result').textContent !== 'calling…' && document.getElementById('result').textContent !== 'no call yet'",
        );
        strictEqual(await page.evaluate("document.getElementById('result').textContent"), "42");
      });

      await t.step("the Deno node calls the page's chat.post and the page shows it", async () => {
        const answer = await demo.node.command("chat.post", {
          target: "tab",
          args: ["ping from the test"],
        });
        strictEqual(answer, "received");
        await page.waitFor(
          "document.getElementById('messages').textContent.includes('ping from the test')",
        );
      });

      await t.step("the page's chat reaches the Deno node through target '*'", async () => {
        await page.evaluate(`(() => {
          document.getElementById("say").value = "hello everyone";
          document.getElementById("say-button").click();
        })()`);
        const until = Date.now() + 10_000;
        while (!demo.chat.includes("tab: hello everyone") && Date.now() < until) {
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        ok(demo.chat.includes("tab: hello everyone"), `chat seen by the Deno node: ${demo.chat}`);
      });

      await t.step("an unknown command comes back to the page as a typed error", async () => {
        await page.evaluate(`(() => {
          document.getElementById("path").value = "math.nope";
          document.getElementById("call-button").click();
        })()`);
        await page.waitFor("document.getElementById('result').className === 'result error'");
        match(
          await page.evaluate<string>("document.getElementById('result').textContent"),
          /^UnknownCommandError/,
        );
      });

      await t.step("the page says it cannot do LAN discovery or dial a TCP relay", async () => {
        const errors = await page.evaluate<string[]>(
          `import("./peerbase.js").then(({ Node, generateKey }) => {
          const base = { name: "x", network: "n", networkKey: generateKey() };
          const names = [];
          for (const extra of [{ useLocal: true, servers: "ws://127.0.0.1:1" }, { servers: "127.0.0.1:7000" }]) {
            try { new Node({ ...base, ...extra }); names.push("none"); } catch (e) { names.push(e.name + ": " + e.message); }
          }
          return names;
        })`,
        );
        match(
          errors[0]!,
          /^UnsupportedRuntimeError: Cannot create node: useLocal .* set useLocal: false/,
        );
        match(
          errors[1]!,
          /^UnsupportedRuntimeError: Cannot create node: servers\[0\] '127\.0\.0\.1:7000' is a TCP relay/,
        );
        strictEqual(errors.length, 2);
      });

      await t.step("pagehide closes the page's node, and the Deno node sees it leave", async () => {
        await page.evaluate(`(() => {
          dispatchEvent(new Event("online")); // Connected: nothing to retry, nothing breaks.
          dispatchEvent(new Event("pagehide"));
          return globalThis.peerbaseNode.finished;
        })()`);
        const until = Date.now() + 10_000;
        while (demo.node.peers.some((peer) => peer.name === "tab") && Date.now() < until) {
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        deepStrictEqual(demo.node.peers.map((peer) => peer.name), []);
      });

      await t.step(
        "a page restored from the back/forward cache joins again and can call",
        async () => {
          await page.evaluate(`(() => {
            dispatchEvent(new PageTransitionEvent("pageshow", { persisted: true }));
          })()`);
          await page.waitFor("document.getElementById('status').className === 'status on'", 15_000);
          ok(await page.evaluate<boolean>("globalThis.peerbaseNode.relays.some((r) => r.up)"));
          const until = Date.now() + 10_000;
          while (!demo.node.peers.some((peer) => peer.name === "tab") && Date.now() < until) {
            await new Promise((resolve) => setTimeout(resolve, 20));
          }
          deepStrictEqual(demo.node.peers.map((peer) => peer.name), ["tab"]);
          await page.waitFor("document.getElementById('target').value === 'deno'");
          await page.evaluate(`(() => {
            document.getElementById("path").value = "math.add";
            document.getElementById("args").value = "[1, 2]";
            document.getElementById("call-button").click();
          })()`);
          await page.waitFor("document.getElementById('result').textContent === '3'");
        },
      );

      await t.step(
        "nothing the page did broke its policy, which blocks inline script",
        async () => {
          deepStrictEqual(await page.evaluate<string[]>("globalThis.violations"), []);
          await page.evaluate(`(() => {
          const script = document.createElement("script");
          script.textContent = "globalThis.injected = true";
          document.body.append(script);
        })()`);
          await page.waitFor("globalThis.violations.length > 0");
          strictEqual(await page.evaluate("globalThis.injected ?? false"), false);
          match((await page.evaluate<string[]>("globalThis.violations"))[0]!, /^script-src/);
        },
      );
    });
  },
});

testIf(PROBLEM === null, PROBLEM ?? "", {
  name:
    "a page skips TCP relays it learns from peers, and registers again by itself after its relay restarts",
  async fn(t) {
    await using demo = await startDemo({ network: uniqueNetwork("browser") });
    // A Deno node on the demo's relay and on a TCP-only one: it reports the second to the page.
    await using other = new Relay({ hostname: "127.0.0.1", port: 0 });
    await other.start();
    const tcpOnly = `127.0.0.1:${other.addr.port}`;
    await using reporter = new Node({
      name: "reporter",
      network: demo.node.network,
      networkKey: demo.networkKey,
      useLocal: false,
      servers: [`127.0.0.1:${demo.relay.addr.port}`, tcpOnly],
    });
    await reporter.start();
    await using browser = await launchChromium();
    const page = await browser.newPage(demo.url);
    await withScreenshotOnFailure(page, "browser-relays", async () => {
      await t.step("a TCP relay a peer reports is not dialled from the page", async () => {
        await join(page, "tab");
        await page.waitFor(
          "globalThis.peerbaseNode.peers.some((peer) => peer.name === 'reporter')",
        );
        // The Deno node, told of the TCP-only relay by the same kind of report, registers there.
        const learned = () =>
          demo.node.relays.some((relay) => relay.address === tcpOnly && relay.up);
        const until = Date.now() + 10_000;
        while (!learned() && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
        ok(learned(), "the Deno node learned the TCP-only relay");
        deepStrictEqual(
          await page.evaluate("globalThis.peerbaseNode.relays.map((relay) => relay.address)"),
          [demo.ws],
        );
        strictEqual(other.stats.nodes, 2); // The reporter and the Deno node; not the page.
      });

      await t.step("after its relay restarts on the same ports, the page calls again", async () => {
        const { port } = demo.relay.addr;
        const wsPort = demo.relay.wsAddr!.port;
        await demo.relay.close();
        await page.waitFor("document.getElementById('status').className === 'status bad'");
        await using again = new Relay({ hostname: "127.0.0.1", port, wsPort });
        await again.start();
        await page.waitFor("document.getElementById('status').className === 'status on'", 15_000);
        await page.waitFor(
          "globalThis.peerbaseNode.peers.some((peer) => peer.name === 'deno')",
          15_000,
        );
        strictEqual(
          await page.evaluate(
            "globalThis.peerbaseNode.command('math.add', { target: 'deno', args: [40, 2] })",
          ),
          42,
        );
        await page.evaluate("globalThis.peerbaseNode.close()");
        await reporter.close();
        await demo.node.close();
      });
    });
  },
});
