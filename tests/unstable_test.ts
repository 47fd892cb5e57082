/**
 * What a node does when the runtime or its options rule out LAN discovery:
 * no `--unstable-net` (a subprocess run without the flag and without the
 * repository's deno.json), or `useLocal: false`. None of these advertise.
 */

import { ok, strictEqual, throws } from "node:assert/strict";
import { generateKey, Node } from "../mod.ts";
import { uniqueNetwork } from "./_env.ts";
import { deadline } from "./_fixtures.ts";

const SCRIPT = new URL("./fixtures/start_without_unstable.ts", import.meta.url);

/** Runs the fixture without --unstable-net; returns its outcome line. */
async function startWithoutUnstable(mode: "lan" | "relay-only"): Promise<string> {
  const child = new Deno.Command(Deno.execPath(), {
    // --no-config: the repository's deno.json would turn "unstable": ["net"] on.
    args: ["run", "-A", "--no-config", SCRIPT.href, uniqueNetwork("no-udp"), mode],
    env: { PEERBASE_KEY: generateKey() },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = await deadline(child.output(), "the subprocess to exit");
  const stdout = new TextDecoder().decode(output.stdout);
  strictEqual(output.code, 0, new TextDecoder().decode(output.stderr));
  const [outcome = "", probe] = stdout.trim().split("\n");
  strictEqual(probe, "listenDatagram: undefined", "the subprocess had UDP after all");
  return outcome;
}

Deno.test("start() without --unstable-net rejects with UnsupportedRuntimeError naming the flag", async () => {
  const outcome = await startWithoutUnstable("lan");
  ok(outcome.startsWith("UnsupportedRuntimeError: "), outcome);
  ok(outcome.includes("--unstable-net"), outcome);
});

Deno.test("start() with useLocal false and servers needs no --unstable-net and opens no RPC port", async () => {
  // The only server is a closed port: start() gives up waiting for it and keeps retrying in the background.
  strictEqual(await startWithoutUnstable("relay-only"), "started null");
});

Deno.test("new Node() with useLocal false and no servers throws RangeError", () => {
  throws(
    () =>
      new Node({ name: "a", network: uniqueNetwork(), networkKey: generateKey(), useLocal: false }),
    (error: Error) => error instanceof RangeError && error.message.includes("servers"),
  );
});
