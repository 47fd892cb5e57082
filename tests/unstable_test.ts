/**
 * What a node does when the runtime or its options rule out LAN discovery:
 * no `--unstable-net` (a subprocess run without the flag and without the
 * repository's deno.json), or `useLocal: false`. None of these advertise.
 */

import { ok, rejects, strictEqual, throws } from "node:assert/strict";
import { generateKey, Node, UnsupportedRuntimeError } from "../mod.ts";
import { uniqueNetwork } from "./_env.ts";
import { deadline } from "./_fixtures.ts";

const SCRIPT = new URL("./fixtures/start_without_unstable.ts", import.meta.url);

Deno.test("start() without --unstable-net rejects with UnsupportedRuntimeError naming the flag", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    // --no-config: the repository's deno.json would turn "unstable": ["net"] on.
    args: ["run", "-A", "--no-config", SCRIPT.href, uniqueNetwork("no-udp")],
    env: { PEERBASE_KEY: generateKey() },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = await deadline(child.output(), "the subprocess to exit");
  const stdout = new TextDecoder().decode(output.stdout);
  const stderr = new TextDecoder().decode(output.stderr);
  strictEqual(output.code, 0, stderr);
  const [result, probe] = stdout.trim().split("\n");
  strictEqual(probe, "listenDatagram: undefined", "the subprocess had UDP after all");
  ok(result?.startsWith("UnsupportedRuntimeError: "), stdout);
  ok(result.includes("--unstable-net"), result);
});

Deno.test("new Node() with useLocal false and no servers throws RangeError", () => {
  throws(
    () => new Node({ name: "a", network: uniqueNetwork(), networkKey: generateKey(), useLocal: false }),
    (error: Error) => error instanceof RangeError && error.message.includes("servers"),
  );
});

Deno.test("start() with useLocal false rejects with UnsupportedRuntimeError about servers while relays are not implemented", async () => {
  await using node = new Node({
    name: "a",
    network: uniqueNetwork(),
    networkKey: generateKey(),
    hostname: "127.0.0.1",
    useLocal: false,
    servers: ["127.0.0.1:9"],
  });
  await rejects(
    node.start(),
    (error: Error) => error instanceof UnsupportedRuntimeError && error.message.includes("servers"),
  );
  strictEqual(node.address, null);
});
