/**
 * The benchmark suite still runs: `bench/main.ts --quick` end to end, once,
 * inside the suite's network namespace. It proves the bench works and
 * writes its JSON and chart; it asserts no speed at all.
 *
 * @module
 */

import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { IN_NETNS, NETNS_REASON, testIf } from "./_env.ts";

const BENCH = new URL("../bench/main.ts", import.meta.url).pathname;

/** Hard limit for the run; only catches hangs (it takes about a minute). */
const RUN_TIMEOUT = 240_000;

testIf(IN_NETNS, NETNS_REASON, {
  name: "bench/main.ts --quick runs every section and writes its JSON and SVG",
  sanitizeResources: true,
  sanitizeOps: true,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "peerbase-bench-test-" });
    try {
      const json = `${dir}/bench.json`;
      const svg = `${dir}/latency.svg`;
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          "--unstable-net",
          "--no-lock",
          BENCH,
          "--quick",
          "--json",
          json,
          "--svg",
          svg,
        ],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(RUN_TIMEOUT),
      }).output();
      const text = new TextDecoder();
      strictEqual(
        out.code,
        0,
        `bench exited ${out.code}\nstdout:\n${text.decode(out.stdout)}\nstderr:\n${
          text.decode(out.stderr).slice(-4000)
        }`,
      );
      const report = JSON.parse(await Deno.readTextFile(json));
      for (
        const key of ["version", "machine", "placement", "config", "figures", "targets", "raw"]
      ) {
        ok(key in report, `the JSON has no '${key}'`);
      }
      for (const key of ["cpu", "cores", "deno", "date"]) ok(key in report.machine, key);
      ok(typeof report.placement.pinned === "boolean");
      deepStrictEqual(report.errors, {}, "no section failed");
      const ids = new Set(report.figures.map((f: { id: string }) => f.id));
      for (
        const id of [
          "direct.p50.100",
          "direct.p50.1048576",
          "direct.rps.64",
          "relayed.p50.65536",
          "relayed.rps.1",
          "fanout.p50",
          "failover.p50",
          "discovery.p50",
          "relay.memory.1000",
          "relay.cpu",
          "caller.wait.cpu",
          "floor.echo.p50.100",
          "floor.hop.p50.100",
          "fernet.node.100",
          "fernet.webcrypto.1048576",
        ]
      ) {
        ok(ids.has(id), `the JSON has no figure '${id}'`);
      }
      // Measured by a full run only, or only when Python's cryptography is installed.
      const optional = (id: string) =>
        id === "relay.memory.10000" || id.startsWith("fernet.python");
      for (const f of report.figures) {
        if (optional(f.id)) continue;
        ok(f.value !== null && typeof f.value.median === "number", `figure ${f.id} was measured`);
      }
      ok(report.targets.length > 10);
      for (const t of report.targets) ok(t.pass === null || typeof t.pass === "boolean", t.id);
      ok((await Deno.readTextFile(svg)).startsWith("<svg"), "the SVG was written");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
