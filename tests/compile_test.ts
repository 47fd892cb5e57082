// deno-lint-ignore-file no-console
/**
 * The binaries of `deno task compile` work: each one the task builds (read
 * from deno.json, so a second `deno compile ...` in the task is tested too)
 * is compiled into a temporary directory and answers `--help`, `--version`
 * and a bad option; the relay also carries a real session between two
 * remote-only nodes, which proves the binary is the relay.
 *
 * `deno compile` embeds the program in `denort`, Deno's runtime-only binary
 * for the target, which it downloads from dl.deno.land on first use and
 * keeps in `DENO_DIR` (`dl/release/v<version>/denort-<target>.zip`), unless
 * `DENORT_BIN` names a local denort of the same Deno version. Tests never
 * download (inside the suite's network namespace they cannot), so the
 * compiling test runs only when `DENORT_BIN` is set or denort is already in
 * `DENO_DIR`; otherwise it is registered as ignored with that reason in its
 * name. It is the one test allowed to skip under `PEERBASE_STRICT=1`: it does
 * not use `testIf` (CI has no denort).
 */

import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { basename, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Node } from "../mod.ts";
import { RELAY_V8_FLAGS, RELAY_VERSION } from "../relay.ts";
import { deadline, Spawned, testNetwork, waitFor } from "./_fixtures.ts";
import { meetVia, remoteOptions } from "./_relay_fixtures.ts";
import { findNatsServer, startNatsCluster } from "./_nats_fixtures.ts";
import { NATS_INTERNALS, NATS_MODULE } from "../lib/nats_backplane.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));

/** One `deno compile` of the compile task. */
interface Build {
  /** The binary's file name, e.g. `peerbase-relay`. */
  name: string;
  /** Where the task writes it, e.g. `dist/peerbase-relay`. */
  output: string;
  /** The script compiled, relative to the repository root. */
  script: string;
  /** Every argument after `compile` except `--output FILE` and the script. */
  flags: string[];
}

/** The builds of a `compile` task: `deno compile [flags] --output dist/NAME SCRIPT && ...`. */
function parseCompileTask(task: string): Build[] {
  return task.split("&&").map((part) => {
    const words = part.trim().split(/\s+/);
    const at = words.indexOf("--output");
    if (words[0] !== "deno" || words[1] !== "compile" || at < 0 || at + 1 >= words.length - 1) {
      throw new Error(`Cannot read the compile task: '${part.trim()}' is not 'deno compile ...'`);
    }
    const output = words[at + 1]!;
    return {
      name: basename(output),
      output,
      script: words.at(-1)!,
      flags: [...words.slice(2, at), ...words.slice(at + 2, -1)],
    };
  });
}

const CONFIG = JSON.parse(await Deno.readTextFile(join(ROOT, "deno.json")));
const BUILDS = parseCompileTask(CONFIG.tasks.compile);

/** Where `deno compile` keeps the denort it downloaded, for this Deno and target. */
async function cachedDenort(): Promise<string | null> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json"],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).output();
  if (!out.success) return null;
  const { denoDir } = JSON.parse(new TextDecoder().decode(out.stdout)) as { denoDir: string };
  const zip = join(
    denoDir,
    "dl",
    "release",
    `v${Deno.version.deno}`,
    `denort-${Deno.build.target}.zip`,
  );
  return await Deno.stat(zip).then((s) => s.isFile ? zip : null, () => null);
}

const DENORT_BIN = Deno.env.get("DENORT_BIN");
const CACHED = DENORT_BIN === undefined ? await cachedDenort() : null;
const NAME =
  "deno task compile's binaries answer --help, --version and a bad option; the compiled relay carries calls between two remote-only nodes";
const SKIP_REASON =
  `DENORT_BIN is not set and denort ${Deno.version.deno} (${Deno.build.target}) ` +
  `is not in DENO_DIR, so deno compile would download it from dl.deno.land, which tests never do; ` +
  `set DENORT_BIN to a denort binary of Deno ${Deno.version.deno} to run it`;
const CAN_COMPILE = DENORT_BIN !== undefined || CACHED !== null;

/** Runs `cmd args` to completion (60 s cap for compiling): exit code, stdout, stderr. */
async function run(
  cmd: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await deadline(
    new Deno.Command(cmd, {
      args,
      cwd: ROOT,
      env: { NO_COLOR: "1", ...env },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output(),
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

/** What every binary does: usage on `--help`, one line on `--version`, exit 2 on a bad option. */
async function checkCommandLine(binary: string): Promise<void> {
  const help = await run(binary, ["--help"]);
  strictEqual(help.code, 0, help.stderr);
  ok(help.stdout.includes("Usage:"), help.stdout);
  const version = await run(binary, ["--version"]);
  strictEqual(version.code, 0, version.stderr);
  ok(/^\S.*\n?$/.test(version.stdout), `--version printed '${version.stdout}'`);
  strictEqual((await run(binary, ["--bogus"])).code, 2);
}

/** The relay binary is the relay: its help, version and a real session through it. */
async function checkRelay(binary: string): Promise<void> {
  ok(/in seconds/i.test((await run(binary, ["--help"])).stdout));
  strictEqual((await run(binary, ["--version"])).stdout.trim(), RELAY_VERSION);
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
}

/** The relay binary joins a cluster: the NATS client it loads at run time was compiled in. */
async function checkClusterRelay(binary: string): Promise<void> {
  if (await findNatsServer() === null) {
    console.warn("skipped the compiled relay's --cluster check: no nats-server");
    return;
  }
  await using nats = await startNatsCluster({ servers: 1 });
  await using relay = new Spawned(
    new Deno.Command(binary, {
      args: ["--host", "127.0.0.1", "--port", "0", "--cluster", nats.urls[0]!],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn(),
  );
  const joined = /joined the relay cluster/;
  await waitFor(() => joined.test(relay.stderr) || relay.exited, "the relay's cluster line");
  ok(joined.test(relay.stderr), relay.stderr);
  strictEqual((await relay.stop("SIGTERM")).code, 0, relay.stderr);
}

/** Checks beyond {@linkcode checkCommandLine}, by binary name. */
const EXTRA_CHECKS: Record<string, (binary: string) => Promise<void>> = {
  "peerbase-relay": async (binary) => {
    await checkRelay(binary);
    await checkClusterRelay(binary);
  },
};

Deno.test("deno task compile builds dist/peerbase-relay from relay.ts with the relay's V8 flags, the NATS client of cluster mode, and only --allow-net, --allow-read and the network interfaces", () => {
  const relay = BUILDS.find((build) => build.name === "peerbase-relay");
  deepStrictEqual(relay, {
    name: "peerbase-relay",
    output: "dist/peerbase-relay",
    script: "relay.ts",
    flags: [
      // The NATS client of cluster mode, loaded through a variable, comes in by name and lock.
      "--lock=relay/cluster.lock",
      "--frozen",
      "--include",
      NATS_MODULE,
      // Its protocol handler, which the relay runs on its own transport (lib/nats_transport.ts).
      "--include",
      NATS_INTERNALS,
      `--v8-flags=${RELAY_V8_FLAGS}`,
      "--allow-net",
      "--allow-read",
      "--allow-sys=networkInterfaces",
    ],
  });
  for (const build of BUILDS) {
    ok(!build.flags.some((flag) => flag === "-A" || flag === "--allow-all"), build.name);
  }
});

if (!CAN_COMPILE) console.warn(`skipped: ${NAME}: ${SKIP_REASON}`);

Deno.test({
  name: CAN_COMPILE ? NAME : `${NAME} [skipped: ${SKIP_REASON}]`,
  ignore: !CAN_COMPILE,
  async fn(t) {
    if (DENORT_BIN !== undefined) {
      const found = await Deno.stat(DENORT_BIN).then((s) => s.isFile, () => false);
      ok(found, `DENORT_BIN is set to '${DENORT_BIN}', which is not a file: unset it or fix it`);
    }
    const dir = await Deno.makeTempDir({ prefix: "peerbase-compile-" });
    try {
      for (const build of BUILDS) {
        await t.step(`${build.name} (${build.script})`, async () => {
          const binary = join(dir, Deno.build.os === "windows" ? `${build.name}.exe` : build.name);
          const compiled = await run(
            Deno.execPath(),
            ["compile", ...build.flags, "--output", binary, build.script],
            DENORT_BIN === undefined ? {} : { DENORT_BIN },
          );
          strictEqual(compiled.code, 0, compiled.stderr);
          await checkCommandLine(binary);
          await EXTRA_CHECKS[build.name]?.(binary);
        });
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
