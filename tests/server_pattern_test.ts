/**
 * The README's server pattern: a node whose signals are wired to `close()`
 * says goodbye on Ctrl-C (peers drop it at once, not after 3 missed
 * adverts) and its process then exits by itself.
 */

import { ok, strictEqual } from "node:assert/strict";
import { Node } from "../mod.ts";
import { IN_NETNS, NETNS_REASON, testIf } from "./_env.ts";
import { deadline, nodeOptions, testNetwork } from "./_fixtures.ts";

const SCRIPT = new URL("./fixtures/server_pattern.ts", import.meta.url);

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  testIf(IN_NETNS, NETNS_REASON, {
    name: `the README server pattern says goodbye on ${signal} and exits 0`,
    async fn() {
      const net = testNetwork("pattern");
      await using watcher = new Node(nodeOptions(net, "watcher"));
      await watcher.start();
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--unstable-net", SCRIPT.pathname, net.network, net.networkKey],
        stdin: "null",
        stdout: "piped",
        stderr: "null",
      }).spawn();
      const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      try {
        let seen = "";
        while (!seen.includes("ready\n")) {
          const { value, done } = await deadline(lines.read(), "the server to be ready");
          if (done) throw new Error(`the server exited before it was ready: ${seen}`);
          seen += value;
        }
        await watcher.waitForPeer("server");
        const left = new Promise<void>((resolve) =>
          watcher.addEventListener("peerleave", (event) => {
            if (event.detail.name === "server") resolve();
          })
        );
        child.kill(signal);
        // Its adverts come every 60 s: only its bye can tell the watcher this soon.
        await deadline(left, "the watcher to hear the server's bye");
        const { code } = await deadline(child.status, "the server process to exit");
        strictEqual(code, 0);
        ok(!watcher.peers.some((peer) => peer.name === "server"));
      } finally {
        try {
          child.kill("SIGKILL");
        } catch {
          // Already exited.
        }
        await lines.cancel();
        await child.status;
      }
    },
  });
}
