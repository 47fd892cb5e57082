/**
 * The benchmark suite still runs: `bench/main.ts --quick` end to end, once,
 * inside the suite's network namespace, with the bench's own lock
 * (`bench/deno.lock`) as `deno task bench` runs it. It proves the bench works,
 * fills the NATS column, writes its JSON where told and its chart to a
 * temporary directory, never into `bench/results/`; it asserts no speed at
 * all (the TLS bound and the comparison with the recorded run are checks
 * that are reported, never asserted). A NATS column that cannot be measured
 * fails the run unless `--skip-nats` says so.
 *
 * @module
 */

import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { dirname } from "node:path";
import { LOCK_ARGS } from "../bench/deps.ts";
import { NATS_MISSING, outputPaths, parseBenchArgs, RECORDED, SECTIONS } from "../bench/main.ts";
import { findNatsServer, natsModuleMissing } from "../bench/nats.ts";
import { IN_NETNS, NETNS_REASON, type Output, runToEnd, STRICT, testIf } from "./_env.ts";

const BENCH = new URL("../bench/main.ts", import.meta.url).pathname;

/** Hard limit for the run; only catches hangs (it takes about a minute). */
const RUN_TIMEOUT = 240_000;

/** Why the NATS column cannot be measured here, or null when it can (only asked in the namespace). */
async function natsProblem(): Promise<string | null> {
  if (!IN_NETNS) return NETNS_REASON;
  if (await findNatsServer() === null) return "needs nats-server (apt-get install nats-server)";
  const missing = await natsModuleMissing();
  return missing === null ? null : `needs ${missing}`;
}

const NATS_PROBLEM = await natsProblem();

/** Runs bench/main.ts with the bench lock, as `deno task bench` does. */
function runBench(args: string[], env: Record<string, string> = {}): Promise<Output> {
  const argv = ["run", "-A", "--unstable-net", ...LOCK_ARGS, BENCH, ...args];
  return runToEnd(Deno.execPath(), argv, { env, timeout: RUN_TIMEOUT });
}

function describe(out: Output): string {
  return `bench exited ${out.code}\nstdout:\n${out.stdout}\nstderr:\n${out.stderr.slice(-4000)}`;
}

/** The one `--quick` run, shared by the tests that look at it. */
interface QuickRun {
  out: Output;
  report: Record<string, unknown> & {
    errors: Record<string, string>;
    skipped: Record<string, string>;
    figures: {
      id: string;
      value: { median: number } | null;
      floor: number | null;
      nats: number | null;
    }[];
    targets: { id: string; pass: boolean | null }[];
    checks: { id: string; value: number | null; limit: number | null; pass: boolean | null }[];
    machine: Record<string, unknown>;
    placement: { pinned: unknown };
  };
  /** The chart as written by default (no --svg), or null when no path was printed. */
  svg: string | null;
  svgPath: string | null;
  recordedBefore: string[];
  recordedAfter: string[];
}

let quickRun: Promise<QuickRun> | undefined;

/** Runs `--quick` once (without `--svg`); later callers get the same run. */
function quick(): Promise<QuickRun> {
  quickRun ??= (async () => {
    const recorded = () =>
      Promise.all([RECORDED.json, RECORDED.svg].map((p) => Deno.readTextFile(p).catch(() => "")));
    const recordedBefore = await recorded();
    const dir = await Deno.makeTempDir({ prefix: "peerbase-bench-test-" });
    try {
      const json = `${dir}/bench.json`;
      // Only a machine without NATS, outside CI, runs without the column, and says so.
      const args = ["--quick", "--json", json, ...(NATS_PROBLEM && !STRICT ? ["--skip-nats"] : [])];
      const out = await runBench(args);
      strictEqual(out.code, 0, describe(out));
      const report = JSON.parse(await Deno.readTextFile(json));
      const svgPath = /^wrote (.*latency\.svg)$/m.exec(out.stdout)?.[1] ?? null;
      let svg: string | null = null;
      if (svgPath !== null) {
        svg = await Deno.readTextFile(svgPath);
        await Deno.remove(dirname(svgPath), { recursive: true });
      }
      return { out, report, svg, svgPath, recordedBefore, recordedAfter: await recorded() };
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  })();
  return quickRun;
}

Deno.test("bench/main.ts writes into bench/results/ only with --record or an explicit path", async (t) => {
  const temp = "/tmp/peerbase-bench-x";
  const table: [string[], { json: string | null; svg: string | null }][] = [
    [[], { json: null, svg: `${temp}/latency.svg` }],
    [["--quick", "--json", "a.json"], { json: "a.json", svg: `${temp}/latency.svg` }],
    [["--svg", ""], { json: null, svg: null }],
    [["--svg", "b.svg"], { json: null, svg: "b.svg" }],
    [["--record"], { json: RECORDED.json, svg: RECORDED.svg }],
    [["--record", "--svg", "", "--json", "c.json"], { json: "c.json", svg: null }],
  ];
  for (const [args, expected] of table) {
    await t.step(args.map((a) => a === "" ? `""` : a).join(" ") || "(no option)", () => {
      deepStrictEqual(outputPaths(parseBenchArgs(args), () => temp), expected);
    });
  }
  ok(!outputPaths(parseBenchArgs([]), () => temp).svg!.startsWith(dirname(RECORDED.svg)));
});

Deno.test("bench/main.ts --only selects the TLS and registration sections", () => {
  for (const name of ["floor-tls", "relayed-tls", "register"]) {
    ok((SECTIONS as readonly string[]).includes(name), name);
  }
  const sections = parseBenchArgs(["--quick", "--only", "floor-tls,relayed-tls,register"]).sections;
  deepStrictEqual([...sections], ["floor-tls", "relayed-tls", "register"]);
});

Deno.test("bench/main.ts --skip-nats drops both NATS sections", () => {
  const sections = parseBenchArgs(["--skip-nats"]).sections;
  ok(!sections.has("nats") && !sections.has("nats-idle") && sections.has("direct"));
});

testIf(IN_NETNS, NETNS_REASON, {
  name:
    "bench/main.ts --quick runs every section, writes its JSON where told and its chart to a temporary directory",
  sanitizeResources: true,
  sanitizeOps: true,
  async fn() {
    const { report, svg, svgPath, recordedBefore, recordedAfter } = await quick();
    for (
      const key of ["version", "machine", "placement", "config", "figures", "targets", "raw"]
    ) {
      ok(key in report, `the JSON has no '${key}'`);
    }
    for (const key of ["cpu", "cores", "deno", "date"]) ok(key in report.machine, key);
    ok(typeof report.placement.pinned === "boolean");
    deepStrictEqual(report.errors, {}, "no section failed");
    const ids = new Set(report.figures.map((f) => f.id));
    for (
      const id of [
        "direct.p50.100",
        "direct.p50.1048576",
        "direct.rps.64",
        "relayed.p50.65536",
        "relayed.rps.1",
        "relayed-tls.p50.100",
        "relayed-tls.p99.65536",
        "relayed-tls.p50.1048576",
        "relayed-tls.rps.64",
        "register.tcp.p50",
        "register.tcp.p99",
        "register.tls.p50",
        "register.tls.dial",
        "register.sign",
        "register.verify",
        "fanout.p50",
        "failover.p50",
        "discovery.p50",
        "relay.memory.1000",
        "relay.cpu",
        "caller.wait.cpu",
        "attack.relay.baseline",
        "attack.relay.partial.peak",
        "attack.relay.idle.peak",
        "attack.relay.idle.per-conn",
        "attack.relay.idle.open",
        "attack.node.baseline",
        "attack.node.partial.after",
        "attack.node.partial.open",
        "attack.node.idle.peak",
        "floor.echo.p50.100",
        "floor.hop.p50.100",
        "floor.tls-echo.p50.100",
        "floor.tls-echo.p50.1048576",
        "floor.tls-hop.p50.65536",
        "fernet.node.100",
        "fernet.webcrypto.1048576",
      ]
    ) {
      ok(ids.has(id), `the JSON has no figure '${id}'`);
    }
    // Measured by a full run only, or only when Python's cryptography is installed.
    const optional = (id: string) => id === "relay.memory.10000" || id.startsWith("fernet.python");
    for (const f of report.figures) {
      if (optional(f.id)) continue;
      ok(f.value !== null && typeof f.value.median === "number", `figure ${f.id} was measured`);
    }
    // The TLS rows are compared with their floors (TLS hop + 2F), the TLS floors with TCP's.
    for (const f of report.figures) {
      if (/^(relayed-tls\.|floor\.tls-)/.test(f.id)) {
        ok(typeof f.floor === "number", `figure ${f.id} has its floor`);
      }
    }
    ok(report.targets.length > 10);
    const checks = new Set(report.checks.map((c) => c.id));
    for (const size of [100, 65_536, 1_048_576]) {
      for (const id of [`tls.bound.echo.${size}`, `recorded.relayed.p50.${size}`]) {
        ok(checks.has(id), `the JSON has no check '${id}'`);
      }
    }
    for (const c of report.checks) {
      ok(c.pass === null || typeof c.pass === "boolean", c.id);
      // Every figure the TLS bound needs was measured: it is judged, never skipped.
      if (c.id.startsWith("tls.bound.")) {
        ok(typeof c.pass === "boolean", `check ${c.id} was judged`);
      }
    }
    for (const t of report.targets) ok(t.pass === null || typeof t.pass === "boolean", t.id);
    // The attack targets are judged (whether they pass is the bench's to report, not the test's).
    const attackTargets = report.targets.filter((t) => t.id.startsWith("attack."));
    ok(attackTargets.length >= 6, "the attack targets are there");
    for (const t of attackTargets) ok(typeof t.pass === "boolean", `target ${t.id} was judged`);
    ok(svgPath !== null && !svgPath.startsWith(dirname(RECORDED.svg)), `chart at ${svgPath}`);
    ok(svg?.startsWith("<svg"), "the SVG was written");
    deepStrictEqual(recordedAfter, recordedBefore, "bench/results/ is left alone");
  },
});

testIf(NATS_PROBLEM === null, NATS_PROBLEM ?? "", {
  name: "bench/main.ts --quick fills the NATS column through bench/deno.lock",
  sanitizeResources: true,
  sanitizeOps: true,
  async fn() {
    const { report, out } = await quick();
    ok(!("nats" in report.skipped), `NATS was skipped: ${report.skipped.nats}`);
    for (
      const id of [
        "direct.p50.100",
        "direct.rps.64",
        "relayed-tls.p50.100",
        "relay.memory.1000",
        "relay.cpu",
      ]
    ) {
      const figure = report.figures.find((f) => f.id === id);
      ok(typeof figure?.nats === "number", `figure ${id} has no NATS value\n${describe(out)}`);
    }
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "bench/main.ts fails loudly when the NATS column cannot be measured, unless --skip-nats",
  sanitizeResources: true,
  sanitizeOps: true,
  async fn() {
    // An empty DENO_DIR: npm:nats is not cached, and there is no registry in the namespace.
    const denoDir = await Deno.makeTempDir({ prefix: "peerbase-bench-empty-" });
    try {
      const env = { DENO_DIR: denoDir, NO_COLOR: "1" };
      const missing = await runBench(["--smoke", "--only", "nats", "--svg", ""], env);
      strictEqual(missing.code, 1, describe(missing));
      const line = missing.stdout.split("\n").find((l) => l.startsWith(NATS_MISSING));
      ok(line?.includes("--skip-nats"), describe(missing));
      const skipped = await runBench(
        ["--smoke", "--only", "nats", "--skip-nats", "--svg", ""],
        env,
      );
      strictEqual(skipped.code, 0, describe(skipped));
      ok(skipped.stdout.includes("skipped nats: --skip-nats"), describe(skipped));
    } finally {
      await Deno.remove(denoDir, { recursive: true });
    }
  },
});
