/**
 * A newcomer's first hour needs nothing but Deno: `deno task` installs every
 * npm package of the root `deno.lock` before any task, so that lock pins no
 * package at all (the bench keeps npm `nats` in `bench/deno.lock`), nothing
 * the library, relay, CLI or examples load comes from a registry, and
 * `deno task relay --help` works with an empty `DENO_DIR` and no network.
 *
 * The no-network run needs `unshare` (util-linux) able to make a network
 * namespace: `unshare -n` as root, `unshare -rn` with unprivileged user
 * namespaces. Without it that test is skipped with the reason (a failure
 * under `PEERBASE_STRICT=1`).
 *
 * @module
 */

import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { type Output, runToEnd, testIf } from "./_env.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));

/** Cap for each Deno child: transpiling the relay from an empty cache takes a few seconds. */
const RUN_TIMEOUT = 60_000;

/** Runs `cmd args` from the repository root to completion, killed after {@linkcode RUN_TIMEOUT}. */
function run(cmd: string, args: string[], env: Record<string, string> = {}): Promise<Output> {
  const quiet = { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1", ...env };
  return runToEnd(cmd, args, { cwd: ROOT, env: quiet, timeout: RUN_TIMEOUT });
}

/** The `unshare` flags that make a network namespace here (`-n` as root, else `-rn`), or null. */
async function unshareFlags(): Promise<string | null> {
  for (const flags of ["-n", "-rn"]) {
    try {
      const probe = await new Deno.Command("unshare", {
        args: [flags, "true"],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).output();
      if (probe.success) return flags;
    } catch {
      return null; // No unshare at all.
    }
  }
  return null;
}

const UNSHARE = await unshareFlags();
const UNSHARE_REASON =
  "needs unshare (util-linux) able to make a network namespace (`unshare -n` as root, or `unshare -rn` with unprivileged user namespaces)";

testIf(UNSHARE !== null, UNSHARE_REASON, {
  name: "deno task relay --help prints the usage with an empty DENO_DIR and no network",
  sanitizeResources: true,
  sanitizeOps: true,
  async fn() {
    const denoDir = await Deno.makeTempDir({ prefix: "peerbase-offline-" });
    try {
      const out = await run(
        "unshare",
        [UNSHARE!, "--", Deno.execPath(), "task", "relay", "--help"],
        { DENO_DIR: denoDir },
      );
      const detail = `exit ${out.code}\nstdout:\n${out.stdout}\nstderr:\n${out.stderr}`;
      strictEqual(out.code, 0, detail);
      ok(out.stdout.includes("Usage: peerbase-relay [options]"), detail);
      ok(/in seconds/i.test(out.stdout), detail);
      ok(!/error|dns|registry/i.test(out.stderr), detail);
    } finally {
      await Deno.remove(denoDir, { recursive: true });
    }
  },
});

Deno.test("the root deno.lock pins no npm, jsr or remote package (the bench has its own)", async () => {
  const lock = JSON.parse(await Deno.readTextFile(`${ROOT}deno.lock`));
  for (const section of ["npm", "jsr", "remote", "workspace"]) {
    ok(
      !(section in lock),
      `deno.lock has a '${section}' section: ${JSON.stringify(lock[section])}`,
    );
  }
  deepStrictEqual(Object.keys(lock.specifiers ?? {}), []);
  const bench = JSON.parse(await Deno.readTextFile(`${ROOT}bench/deno.lock`));
  ok(Object.keys(bench.specifiers ?? {}).some((s) => s.startsWith("npm:nats@")), "bench/deno.lock");
});

Deno.test("relay/cluster.lock pins the npm nats that a clustered relay loads, as the bench does", async () => {
  const { NATS_MODULE } = await import("../lib/nats_backplane.ts");
  for (const path of ["relay/cluster.lock", "bench/deno.lock"]) {
    const lock = JSON.parse(await Deno.readTextFile(`${ROOT}${path}`));
    deepStrictEqual(Object.keys(lock.specifiers ?? {}), [NATS_MODULE], path);
  }
});

/** What a newcomer runs: every export of deno.json, the relay, the CLI (once there) and the examples. */
async function entryPoints(): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`));
  const exports: string[] = typeof config.exports === "string"
    ? [config.exports]
    : Object.values(config.exports as Record<string, string>);
  const entries = new Set(exports.map((path) => path.replace(/^\.\//, "")));
  entries.add("relay.ts");
  for (const optional of ["cli.ts"]) {
    if (await Deno.stat(`${ROOT}${optional}`).then(() => true, () => false)) entries.add(optional);
  }
  for await (const entry of Deno.readDir(`${ROOT}examples`)) {
    if (entry.isFile && entry.name.endsWith(".ts")) entries.add(`examples/${entry.name}`);
  }
  return [...entries].sort();
}

Deno.test("the library's exports, relay, CLI and examples load only local and node: modules", async () => {
  const entries = await entryPoints();
  ok(entries.includes("mod.ts") && entries.includes("examples/demo.ts"), entries.join(", "));
  const offenders: string[] = [];
  for (const entry of entries) {
    // --no-remote/--no-npm: a registry import shows up as an error, and nothing is fetched.
    const out = await run(Deno.execPath(), ["info", "--json", "--no-remote", "--no-npm", entry]);
    strictEqual(out.code, 0, `deno info ${entry}: ${out.stderr}`);
    const info = JSON.parse(out.stdout) as {
      modules: { specifier: string; error?: string }[];
      npmPackages: Record<string, unknown>;
    };
    for (const module of info.modules) {
      if (!/^(file|node):/.test(module.specifier) || module.error !== undefined) {
        offenders.push(
          `${entry} loads ${module.specifier}${module.error ? ` (${module.error})` : ""}`,
        );
      }
    }
    deepStrictEqual(info.npmPackages, {}, entry);
  }
  deepStrictEqual(offenders, []);
});
