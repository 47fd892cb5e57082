// deno-lint-ignore-file no-console
/**
 * The relay compiled to one binary, as the `compile` task builds it
 * (`deno compile --allow-net --allow-read --output dist/peerbase-relay relay.ts`),
 * answers `--help` and carries a real session between two remote-only nodes.
 *
 * `deno compile` needs `denort`, the runtime it embeds the program in. It is
 * downloaded on first use, which cannot happen here, so this test runs only
 * when `DENORT_BIN` points at a denort binary of the same Deno version.
 * Otherwise it is registered as ignored with the reason in its name. It is
 * the one test allowed to skip under `PEERBASE_STRICT=1`: it does not use
 * `testIf`.
 */

import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Node } from "../mod.ts";
import { RELAY_VERSION } from "../relay.ts";
import { deadline, Spawned, testNetwork, waitFor } from "./_fixtures.ts";
import { meetVia, RELAY_SCRIPT, remoteOptions } from "./_relay_fixtures.ts";

const DENORT_BIN = Deno.env.get("DENORT_BIN");
const NAME = "the compiled relay answers --help and carries calls between two remote-only nodes";
const SKIP_REASON =
  "needs DENORT_BIN pointing at a denort binary; denort cannot be downloaded here";

/** Runs `cmd args` to completion (60 s cap for compiling): exit code, stdout, stderr. */
async function run(
  cmd: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await deadline(
    new Deno.Command(cmd, { args, env, stdin: "null", stdout: "piped", stderr: "piped" }).output(),
    `${cmd} ${args.join(" ")}`,
    60_000,
  );
  const text = new TextDecoder();
  return {
    code: output.code,
    stdout: text.decode(output.stdout),
    stderr: text.decode(output.stderr),
  };
}

if (DENORT_BIN === undefined) {
  console.warn(`skipped: ${NAME}: ${SKIP_REASON}`);
}

Deno.test({
  name: DENORT_BIN === undefined ? `${NAME} [skipped: ${SKIP_REASON}]` : NAME,
  ignore: DENORT_BIN === undefined,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "peerbase-compile-" });
    try {
      const binary = join(
        dir,
        Deno.build.os === "windows" ? "peerbase-relay.exe" : "peerbase-relay",
      );
      const compiled = await run(Deno.execPath(), [
        "compile",
        "--allow-net",
        "--allow-read",
        "--output",
        binary,
        fileURLToPath(RELAY_SCRIPT),
      ], { DENORT_BIN: DENORT_BIN! });
      strictEqual(compiled.code, 0, compiled.stderr);

      const help = await run(binary, ["--help"]);
      strictEqual(help.code, 0, help.stderr);
      ok(help.stdout.includes("Usage:"), help.stdout);
      ok(/in seconds/i.test(help.stdout), help.stdout);
      const version = await run(binary, ["--version"]);
      strictEqual(version.stdout.trim(), RELAY_VERSION);
      strictEqual((await run(binary, ["--bogus"])).code, 2);

      // A real session through the compiled relay.
      await using relay = new Spawned(
        new Deno.Command(binary, {
          args: ["--host", "127.0.0.1", "--port", "0"],
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        }).spawn(),
      );
      const listening = /listening on 127\.0\.0\.1:(\d+)/;
      await waitFor(() => listening.test(relay.stderr) || relay.exited, "the relay's start line");
      const port = listening.exec(relay.stderr)?.[1];
      ok(port !== undefined, relay.stderr);
      const address = `127.0.0.1:${port}`;
      const net = testNetwork("compiled");
      await using a = new Node(remoteOptions(net, "a", address, {
        commands: { who: (_n, _a, _k, ctx) => ({ caller: ctx.caller, via: ctx.via }) },
      }));
      await using b = new Node(remoteOptions(net, "b", address));
      await a.start();
      await b.start();
      await meetVia([a, b], address);
      deepStrictEqual(await b.command("who", { target: "a", raiseErrors: true }), {
        caller: "b",
        via: "relay",
      });
      await a.close();
      await b.close();
      strictEqual((await relay.stop("SIGTERM")).code, 0, relay.stderr);
      deepStrictEqual(relay.stderr.trimEnd().split("\n"), [
        `peerbase-relay ${RELAY_VERSION} listening on ${address}`,
        "peerbase-relay stopped",
      ]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
