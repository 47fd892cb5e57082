/**
 * The benchmark suite still runs: `bench/main.ts --smoke` end to end, once,
 * inside the suite's network namespace, with the bench's own lock
 * (`bench/deno.lock`) as `deno task bench` runs it. It proves every section
 * still runs (the HTTP comparison, relayed calls over WebSocket links, the
 * attack section and the relay cluster on nats-server included), fills
 * the NATS and HTTP columns, labels computed floors and like-for-like
 * comparisons, writes its JSON where told and its chart to a temporary
 * directory, never into `bench/results/`; it asserts no speed at all (the
 * targets, the TLS bound and the comparison with the recorded run are
 * judged and reported, never asserted). A NATS column that cannot be
 * measured fails the run unless `--skip-nats` says so, and under
 * `PEERBASE_STRICT=1` a comparison column left out fails it even then.
 *
 * @module
 */

import { deepStrictEqual, ok, rejects, strictEqual } from "node:assert/strict";
import { dirname } from "node:path";
import { LOCK_ARGS } from "../bench/deps.ts";
import {
  HTTP_MISSING,
  missingColumns,
  NATS_MISSING,
  outputPaths,
  parseBenchArgs,
  RECORDED,
  RELAYED_MISSING,
  SECTIONS,
} from "../bench/main.ts";
import { findNatsServer, natsModuleMissing } from "../bench/nats.ts";
import { currentBlock, PATHS, readmeBlock, replaceBlock } from "../bench/readme.ts";
import { buildFigures, buildTargets, type RawResults } from "../bench/report.ts";
import { interleave, measureLatency } from "../bench/measure.ts";
import type { PairedResult } from "../bench/paired.ts";
import { pairedTargets } from "../bench/paired_report.ts";
import { busyPhase, holFigures, holTargets, keepBusy } from "../bench/hol.ts";
import { sleep } from "../bench/proc.ts";
import { type SoakResult, soakTargets } from "../bench/soak.ts";
import { formatWs, WS_BOUND, wsFigures, wsTargets } from "../bench/ws_report.ts";
import { IN_NETNS, NETNS_REASON, type Output, runToEnd, STRICT, testIf } from "./_env.ts";

const BENCH = new URL("../bench/main.ts", import.meta.url).pathname;

/** Hard limit for the run; only catches hangs (`--smoke` takes well under a minute). */
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

/** The one `--smoke` run, shared by the tests that look at it. */
interface SmokeRun {
  out: Output;
  report: Record<string, unknown> & {
    errors: Record<string, string>;
    skipped: Record<string, string>;
    figures: {
      id: string;
      label: string;
      value: { median: number } | null;
      floor: number | null;
      floorLabel: string | null;
      floorComputed: boolean;
      nats: number | null;
      http: number | null;
      likeForLike: "nats" | "http" | null;
    }[];
    targets: { id: string; pass: boolean | null }[];
    checks: { id: string; value: number | null; limit: number | null; pass: boolean | null }[];
    machine: Record<string, unknown>;
    placement: { pinned: unknown };
    raw: {
      failoverSilent?: { runs: unknown[]; unmeasured: string | null };
      echoLoad?: { missing: Record<string, number> };
      echoLoadTls?: { missing: Record<string, number> };
    };
  };
  /** The chart as written by default (no --svg), or null when no path was printed. */
  svg: string | null;
  svgPath: string | null;
  recordedBefore: string[];
  recordedAfter: string[];
}

let smokeRun: Promise<SmokeRun> | undefined;

/** Runs `--smoke` once (without `--svg`); later callers get the same run. */
function smoke(): Promise<SmokeRun> {
  smokeRun ??= (async () => {
    const recorded = () =>
      Promise.all([RECORDED.json, RECORDED.svg].map((p) => Deno.readTextFile(p).catch(() => "")));
    const recordedBefore = await recorded();
    const dir = await Deno.makeTempDir({ prefix: "peerbase-bench-test-" });
    try {
      const json = `${dir}/bench.json`;
      // Only a machine without NATS, outside CI, runs without the column, and says so.
      const args = ["--smoke", "--json", json, ...(NATS_PROBLEM && !STRICT ? ["--skip-nats"] : [])];
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
  return smokeRun;
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

Deno.test("README.md's bench block is what bench/readme.ts makes from the committed bench/results/latest.json", async () => {
  const block = readmeBlock(await Deno.readTextFile(PATHS.json));
  const readme = await Deno.readTextFile(PATHS.readme);
  strictEqual(
    currentBlock(readme),
    block,
    "README.md drifted from the recorded run: run `deno run --allow-read --allow-write bench/readme.ts --write`",
  );
  strictEqual(replaceBlock(readme, block), readme, "regenerating changes nothing");
});

Deno.test("bench/readme.ts shows — for figures a report lacks, and lists missed and unjudged targets", () => {
  const block = readmeBlock(JSON.stringify({
    machine: { cpu: "X", cores: 2, deno: "9.9.9", date: "2026-12-01T10:00:00.000Z" },
    config: { mode: "quick", rounds: 3 },
    figures: [{ id: "failover.p50", unit: "ms", value: { median: 2 }, floor: null }],
    targets: [
      { label: "a", unit: "ms", value: 1, limit: 2, comparison: "<=", pass: true },
      { label: "b", unit: "ms", value: 3, limit: 2, comparison: "<=", pass: false },
      { label: "c", unit: "KiB", value: null, limit: 16, comparison: "<", pass: null, note: "why" },
    ],
  }));
  ok(block.replaceAll("\n", " ").includes("quick mode, medians of 3 rounds"), block);
  ok(/\| failover after a relay is killed, p50 +\| 2\.00 ms +\|/.test(block), block);
  ok(/\| failover after silent relay loss \(no FIN\), p50 +\| — +\|/.test(block), block);
  ok(block.includes("Targets (as that run judged them): 1 of 3 met."), block);
  ok(block.includes("- b: 3.00 ms (limit ≤ 2.00 ms)"), block);
  ok(block.includes("- c (why)"), block);
  ok(block.includes("(bench/results/latency.svg)"), "the chart line");
});

Deno.test("bench targets: calls/s at 1, 16, 64 in flight vs NATS, tails, 1 MiB vs NATS, fan-out, memory at 1,000 and 10,000, silent loss", () => {
  const path = (p50: number, p99: number, rps: number) => ({
    latency: Object.fromEntries(
      [100, 65_536, 1_048_576].map((s) => [String(s), { p50: [p50], p99: [p99], calls: [10] }]),
    ),
    throughput: { 1: [rps], 16: [rps], 64: [rps] },
  });
  const raw = {
    floor: { echo: path(0.1, 0.5, 1), hop: path(0.1, 0.5, 1), fanout: path(1, 1, 1).latency },
    fernet: {
      ours: { node: {}, webcrypto: {} },
      seal: { node: { 1048576: [3000] }, webcrypto: { 1048576: [2000] } },
      python: null,
      pythonVersion: null,
      pythonNote: "",
    },
    direct: path(1, 2, 5000),
    relayed: path(1, 4, 3000),
    nats: { skipped: false, path: path(0.8, 1, 4000), idle: null },
    fanout: path(2.5, 3, 1).latency,
    relayLoad: { memory: { 1000: 20 * 1024, 10_000: 10 * 1024 }, cpu: [1] },
    relayLoadTls: { memory: { 1000: 30 * 1024 }, cpu: [1] },
    failoverSilent: { runs: [{ ms: 900, dropped: "x", failed: 0 }], unmeasured: null },
    cluster: { crossRelay: path(1.7, 3, 2000), unmeasured: null },
  } as unknown as RawResults;
  const judged = Object.fromEntries(
    buildTargets(raw).map((t) => [t.id, [t.value, t.limit, t.pass]]),
  );
  deepStrictEqual(judged["direct.rps.1.nats"], [5000, 4000, true]);
  deepStrictEqual(judged["relayed.rps.16.nats"], [3000, 4000, false]);
  deepStrictEqual(judged["direct.p99.100"], [2, 3, true]);
  deepStrictEqual(judged["relayed.p99.100"], [4, 3, false]);
  deepStrictEqual(judged["relayed.p99.65536"], [4, 3, false], "max(3 × 1, 3 × 0.5)");
  deepStrictEqual(judged["direct.p50.1048576.nats"], [1, 1.2000000000000002, true]);
  deepStrictEqual(judged["relayed.p50.1048576.nats"], [1, 1.2800000000000002, true]);
  deepStrictEqual(judged["fanout"], [2.5, 2, false]);
  deepStrictEqual(judged["relay.memory.1000"], [20, 16, false]);
  deepStrictEqual(judged["relay.memory.10000"], [10, 16, true]);
  deepStrictEqual(judged["relay.memory.tls.1000"], [30, 40, true]);
  deepStrictEqual(judged["relay.memory.tls.10000"], [null, 40, null]);
  deepStrictEqual(judged["failover.silent"], [900, 1500, true]);
  deepStrictEqual(judged["cluster.p50.100"], [1.7, 1.8, true], "≤ relayed p50 + NATS p50");
  const interleaved = buildTargets({
    ...raw,
    cluster: {
      crossRelay: {
        ...path(1.7, 3, 2000),
        paired: { cross: [0.7, 0.6, 0.9], sameRelay: [0.4, 0.5, 0.3], nats: [0.3, 0.2, 0.25] },
      },
      unmeasured: null,
    },
  } as unknown as RawResults).find((t) => t.id === "cluster.p50.100");
  deepStrictEqual(
    [interleaved?.value, interleaved?.limit, interleaved?.pass],
    [0.7, 0.4 + 0.25, false],
    "the interleaved rounds' medians, not the relayed and nats sections'",
  );
  const noCluster = buildTargets({
    ...raw,
    cluster: { unmeasured: "nats-server is not installed" },
  } as unknown as RawResults).find((t) => t.id === "cluster.p50.100");
  deepStrictEqual([noCluster?.pass, noCluster?.note], [
    null,
    "not measured: nats-server is not installed",
  ]);
  const figures = new Map(buildFigures(raw).map((f) => [f.id, f.value?.median ?? null]));
  strictEqual(figures.get("floor.sealed-echo.p50.1048576"), 2 * 2 + 0.1, "2 × seal + echo, ms");
  strictEqual(figures.get("failover.silent.p50"), 900);
  strictEqual(figures.get("relay.memory.tls.10000"), null, "a row even when not measured");
  const unmeasured = buildTargets({
    ...raw,
    failoverSilent: { runs: [], unmeasured: "nft is not installed" },
  }).find((t) => t.id === "failover.silent");
  deepStrictEqual([unmeasured?.pass, unmeasured?.note], [
    null,
    "not measured: nft is not installed",
  ]);
  const row = buildFigures({
    ...raw,
    failoverSilent: { runs: [], unmeasured: "nft is not installed" },
  })
    .find((f) => f.id === "failover.silent.p50");
  ok(row?.label.includes("NOT MEASURED: nft is not installed"), row?.label);
  const noNats = buildTargets(
    { ...raw, nats: { skipped: true, reason: "no nats-server" } } as RawResults,
  )
    .find((t) => t.id === "direct.rps.1.nats");
  deepStrictEqual([noNats?.pass, noNats?.note], [null, "NATS skipped: no nats-server"]);
});

Deno.test("bench WebSocket targets judge relayed-ws against relayed of the same run: 100 B p50 ≤ 1.3× and calls/s at 64 ≥ 1 / 1.3", () => {
  const path = (p50: number, rps: number) => ({
    latency: Object.fromEntries(
      [100, 65_536, 1_048_576].map((s) => [String(s), { p50: [p50], p99: [p50], calls: [10] }]),
    ),
    throughput: { 1: [rps], 16: [rps], 64: [rps] },
  });
  const judged = (raw: RawResults) =>
    Object.fromEntries(wsTargets(raw).map((t) => [t.id, [t.value, t.limit, t.pass, t.note]]));
  strictEqual(WS_BOUND, 1.3);
  deepStrictEqual(judged({ relayed: path(1, 13_000), relayedWs: path(1.2, 10_400) }), {
    "ws.p50.100": [1.2, 1.3, true, ""],
    "ws.rps.64": [10_400, 10_000, true, ""],
  });
  deepStrictEqual(judged({ relayed: path(1, 13_000), relayedWs: path(1.4, 9_000) }), {
    "ws.p50.100": [1.4, 1.3, false, ""],
    "ws.rps.64": [9_000, 10_000, false, ""],
  });
  deepStrictEqual(judged({ relayedWs: path(1.4, 9_000) }), {
    "ws.p50.100": [1.4, null, null, "needs relayed"],
    "ws.rps.64": [9_000, null, null, "needs relayed"],
  });
  deepStrictEqual(judged({})["ws.p50.100"], [null, null, null, "needs relayed, relayed-ws"]);
  // The cost rows: WebSocket p50 / TCP p50, and TCP calls/s / WebSocket calls/s (above 1: slower).
  const costs = new Map(
    wsFigures({ relayed: path(1, 13_000), relayedWs: path(2, 6_500) })
      .map((f) => [f.id, [f.unit, f.better, f.value?.median ?? null]]),
  );
  deepStrictEqual(costs.get("relayed-ws.vs-tcp.p50.1048576"), ["×", "lower", 2]);
  deepStrictEqual(costs.get("relayed-ws.vs-tcp.rps.64"), ["×", "lower", 2]);
  const empty = wsFigures({ relayed: path(1, 13_000) });
  strictEqual(empty.length, 6, "a row per size and per calls in flight, even when not measured");
  ok(empty.every((f) => f.value === null));
  ok(formatWs({ relayed: path(1, 13_000) }).includes("needs relayed-ws"));
  ok(formatWs({ relayed: path(1, 13_000), relayedWs: path(2, 6_500) }).includes("(2.00×)"));
  // The relayed-ws rows themselves have the hop + 2F floor and the NATS column, not like for like.
  const rows = new Map(
    buildFigures({
      relayedWs: path(1.2, 10_400),
      floor: { echo: path(0.1, 1), hop: path(0.1, 1) },
      fernet: { ours: { node: { 100: [10] }, webcrypto: {} } },
      nats: { skipped: false, path: path(0.8, 4000), idle: null },
    } as unknown as RawResults).map((f) => [f.id, f]),
  );
  const row = rows.get("relayed-ws.p50.100");
  deepStrictEqual(
    [row?.value?.median, row?.floor, row?.floorLabel, row?.nats, row?.likeForLike],
    [1.2, 0.1 + 2 * 0.01, "hop p50 + 2F, computed", 0.8, null],
  );
});

Deno.test("bench/main.ts --only selects the TLS and registration sections", () => {
  for (const name of ["floor-tls", "relayed-tls", "register"]) {
    ok((SECTIONS as readonly string[]).includes(name), name);
  }
  const sections = parseBenchArgs(["--quick", "--only", "floor-tls,relayed-tls,register"]).sections;
  deepStrictEqual([...sections], ["floor-tls", "relayed-tls", "register"]);
});

Deno.test("bench/main.ts --only selects the soak and head-of-line sections, which need no comparison column", () => {
  const options = parseBenchArgs(["--quick", "--only", "soak,hol", "--skip-nats"]);
  deepStrictEqual([...options.sections], ["soak", "hol"]);
  deepStrictEqual(missingColumns(options, true), [], "PEERBASE_STRICT=1 accepts them alone");
});

Deno.test("bench soak targets judge the return to idle in a full run only, and any failed call", () => {
  const MiB = 1024 * 1024;
  const soak = (backMs: number | null, failed = 0): SoakResult => ({
    inflight: 64,
    size: 100,
    load: { ms: 120_000, calls: 1000, failed, perSecond: [], errors: [] },
    caller: { idle: null, peak: 90 * MiB, end: 90 * MiB },
    target: { idle: 50 * MiB, peak: 120 * MiB, end: 110 * MiB },
    relay: { idle: 50 * MiB, peak: 60 * MiB, end: 60 * MiB },
    series: { caller: [90], target: [50, 120, 110], relay: [60] },
    after: { waitMs: 60_000, backMs, rss: 100 * MiB, judged: true },
  });
  const pass = (targets: { id: string; pass: boolean | null }[]) =>
    Object.fromEntries(targets.map((t) => [t.id, t.pass]));
  deepStrictEqual(pass(soakTargets(soak(4000), "full")), {
    "soak.rss.target.peak": true,
    "soak.back": true,
    "soak.failed": true,
  });
  deepStrictEqual(pass(soakTargets(soak(null, 2), "full")), {
    "soak.rss.target.peak": true,
    "soak.back": false,
    "soak.failed": false,
  });
  const quick = { ...soak(null), after: { ...soak(null).after, waitMs: 10_000, judged: false } };
  strictEqual(pass(soakTargets(quick, "quick"))["soak.back"], null, "quick only reports it");
  deepStrictEqual(pass(soakTargets(undefined, "full")), {
    "soak.rss.target.peak": null,
    "soak.back": null,
    "soak.failed": null,
  });
  const hol = holTargets({
    bigSize: 1,
    direct: {
      idle: [1, 1],
      loaded: [1.5, 3],
      control: [3, 2],
      idleCalls: [],
      loadedCalls: [],
      controlCalls: [],
      big: [],
      controlBig: [],
      bigMs: [],
    },
    unmeasured: { relayed: "a large call failed" },
  });
  deepStrictEqual(hol.map((t) => [t.id, t.value, t.pass]), [
    ["hol.direct", 2.25, false],
    ["hol.relayed", null, null],
  ]);
  ok(hol[1]!.note.includes("a large call failed"));
});

Deno.test("bench head-of-line control: the link's own part is the loaded p50 over the p50 with the large calls on another link", () => {
  const path = {
    idle: [0.1, 0.1],
    loaded: [0.4, 0.3],
    control: [0.5, 0.6],
    idleCalls: [10, 10],
    loadedCalls: [10, 10],
    controlCalls: [10, 10],
    big: [3, 3],
    controlBig: [3, 4],
    bigMs: [300, 310],
  };
  const figures = new Map(
    holFigures({ bigSize: 1, direct: path, unmeasured: {} }).map((f) => [f.id, f]),
  );
  strictEqual(figures.get("hol.direct.control.p50")!.value!.median.toFixed(2), "0.55");
  strictEqual(figures.get("hol.direct.control.p50")!.floor, 0.1, "against the idle p50");
  const link = figures.get("hol.direct.link")!.value!;
  deepStrictEqual([link.min, link.max].map((v) => v.toFixed(2)), ["0.50", "0.80"]);
  strictEqual(
    figures.get("hol.relayed.link")!.value,
    null,
    "a path not measured has no control either",
  );
});

Deno.test("bench like-for-like targets are judged on the paired section's interleaved rounds when it timed both paths", () => {
  const path = (p50: number, rps: number) => ({
    latency: { 100: { p50: [p50], p99: [p50], calls: [1] } },
    throughput: { 1: [rps], 16: [rps], 64: [rps] },
  });
  const raw = {
    direct: path(0.2, 5000),
    http: path(0.1, 6000),
    relayed: path(0.4, 3000),
    nats: { skipped: false, path: path(0.3, 4000), idle: null },
  } as unknown as RawResults;
  const rounds = (p50: number[], rps: number[]) => ({
    p50,
    rps: { 1: rps, 16: rps, 64: rps },
  });
  const paired = pairedTargets(
    {
      paths: {
        direct: rounds([0.12, 0.2, 0.11], [7000, 6000, 8000]),
        http: rounds([0.1, 0.3, 0.13], [8000, 5000, 7000]),
        relayed: rounds([0.25, 0.26, 0.24], [3900, 4000, 4100]),
        nats: rounds([0.2, 0.3, 0.27], [4000, 4500, 3500]),
      },
      natsUnmeasured: null,
    } satisfies PairedResult,
  );
  const judged = Object.fromEntries(
    buildTargets(raw).map((t) => paired.get(t.id) ?? t).map((t) => [t.id, t]),
  );
  const verdict = (id: string) => [judged[id]?.value, judged[id]?.limit, judged[id]?.pass];
  deepStrictEqual(verdict("direct.p50.100.http"), [0.12, 0.13, true], "medians of the rounds");
  deepStrictEqual(verdict("relayed.p50.100.nats"), [0.25, 0.27, true]);
  deepStrictEqual(verdict("direct.rps.1.nats"), [7000, 4000, true]);
  deepStrictEqual(verdict("relayed.rps.64.nats"), [4000, 4000, true]);
  ok(judged["relayed.p50.100.nats"]!.label.includes("interleaved rounds"));
  const noNats = pairedTargets({
    paths: { direct: rounds([0.12], [1]), http: rounds([0.1], [1]), relayed: rounds([0.2], [1]) },
    natsUnmeasured: "--skip-nats",
  });
  deepStrictEqual([...noNats.keys()], ["direct.p50.100.http"], "only pairs timed together");
  const alone = buildTargets(raw).find((t) => t.id === "relayed.p50.100.nats")!;
  deepStrictEqual([alone.value, alone.limit, alone.pass], [0.4, 0.3, false], "else the sections'");
});

Deno.test("bench interleave times every path once per round, each path in every place and after every other path equally often", async () => {
  for (const names of [["a", "b", "c", "d"], ["a", "b", "c"]]) {
    const order: string[] = [];
    const calls = Object.fromEntries(
      names.map((name) => [name, () => Promise.resolve(order.push(name))]),
    );
    const rounds = names.length % 2 === 0 ? names.length : 2 * names.length;
    const out = await interleave(calls, rounds, async (call) => {
      await call(new Uint8Array());
      return order.length;
    });
    for (const name of names) strictEqual(out[name]!.length, rounds, `${name}: one per round`);
    const places = new Map<string, number>();
    const follows = new Map<string, number>();
    for (let round = 0; round < rounds; round++) {
      const row = order.slice(round * names.length, (round + 1) * names.length);
      deepStrictEqual([...row].sort(), names, `round ${round} times each path once`);
      row.forEach((name, i) => places.set(`${name}@${i}`, (places.get(`${name}@${i}`) ?? 0) + 1));
      for (let i = 1; i < row.length; i++) {
        const pair = `${row[i - 1]}>${row[i]}`;
        follows.set(pair, (follows.get(pair) ?? 0) + 1);
      }
    }
    const each = rounds / names.length;
    strictEqual(places.size, names.length ** 2, "every path in every place");
    ok([...places.values()].every((n) => n === each), JSON.stringify([...places]));
    strictEqual(follows.size, names.length * (names.length - 1), "every path after every other");
    ok(new Set(follows.values()).size === 1, JSON.stringify([...follows]));
  }
});

Deno.test("bench/main.ts --skip-nats drops both NATS sections", () => {
  const sections = parseBenchArgs(["--skip-nats"]).sections;
  ok(!sections.has("nats") && !sections.has("nats-idle") && sections.has("direct"));
  ok(sections.has("http"), "the HTTP column is not NATS's to skip");
});

Deno.test("bench/main.ts under PEERBASE_STRICT=1 refuses to leave out a comparison column", () => {
  const missing = (args: string[], strict = true) => missingColumns(parseBenchArgs(args), strict);
  deepStrictEqual(missing([]), [], "every column is there");
  deepStrictEqual(missing(["--skip-nats"], false), [], "not strict: --skip-nats is allowed");
  deepStrictEqual(missing(["--only", "fernet,floor", "--skip-nats"]), [], "nothing to compare");
  const skipped = missing(["--skip-nats"]);
  strictEqual(skipped.length, 3, skipped.join("\n")); // request-reply, idle connections, paired
  for (const line of skipped) ok(line.startsWith(NATS_MISSING) && line.includes("--skip-nats"));
  const only = missing(["--only", "direct"]);
  ok(only.some((l) => l.startsWith(NATS_MISSING) && l.includes("leaves out nats")), only.join());
  ok(only.some((l) => l.startsWith(HTTP_MISSING) && l.includes("leaves out http")), only.join());
  deepStrictEqual(missing(["--only", "direct,http,nats"]), []);
  const cluster = missing(["--only", "cluster,nats"]);
  ok(cluster.length === 1 && cluster[0]!.startsWith(RELAYED_MISSING), cluster.join());
  ok(missing(["--only", "cluster,relayed"])[0]?.startsWith(NATS_MISSING));
  deepStrictEqual(missing(["--only", "cluster,relayed,nats"]), []);
  const ws = missing(["--only", "relayed-ws,nats"]);
  ok(ws.length === 1 && ws[0]!.startsWith(RELAYED_MISSING), ws.join());
  ok(ws[0]!.includes("relayed-ws is compared with it"), ws[0]);
  ok(missing(["--only", "relayed-ws,relayed"])[0]?.startsWith(NATS_MISSING));
  deepStrictEqual(missing(["--only", "relayed-ws,relayed,nats"]), []);
  deepStrictEqual(missing(["--only", "relayed-ws,nats"], false), [], "not strict: allowed");
  const paired = missing(["--only", "paired", "--skip-nats"]);
  ok(paired.length === 1 && paired[0]!.startsWith(NATS_MISSING), paired.join());
  ok(paired[0]!.includes("paired times NATS itself"), paired[0]);
  deepStrictEqual(missing(["--only", "paired"]), [], "paired fills its own HTTP and NATS");
});

Deno.test("bench/main.ts with PEERBASE_STRICT=1 and --skip-nats exits 1 at once, saying why", async () => {
  const out = await runBench(["--smoke", "--skip-nats", "--svg", ""], {
    PEERBASE_STRICT: "1",
    NO_COLOR: "1",
  });
  strictEqual(out.code, 1, describe(out));
  const line = out.stdout.split("\n").find((l) => l.startsWith(NATS_MISSING));
  ok(line?.includes("--skip-nats") && line.includes("PEERBASE_STRICT=1"), describe(out));
  ok(!out.stdout.includes("peerbase bench ("), "nothing was measured");
});

testIf(IN_NETNS, NETNS_REASON, {
  name:
    "bench/main.ts --smoke runs every section, writes its JSON where told and its chart to a temporary directory",
  sanitizeResources: true,
  sanitizeOps: true,
  async fn() {
    const { report, svg, svgPath, recordedBefore, recordedAfter } = await smoke();
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
        "http.p50.100",
        "http.p99.65536",
        "http.p50.1048576",
        "http.rps.1",
        "http.rps.64",
        "relayed.p50.65536",
        "relayed.rps.1",
        "relayed-tls.p50.100",
        "relayed-tls.p99.65536",
        "relayed-tls.p50.1048576",
        "relayed-tls.rps.64",
        "relayed-ws.p50.100",
        "relayed-ws.p99.65536",
        "relayed-ws.p50.1048576",
        "relayed-ws.rps.1",
        "relayed-ws.rps.64",
        "relayed-ws.vs-tcp.p50.100",
        "relayed-ws.vs-tcp.p50.1048576",
        "relayed-ws.vs-tcp.rps.64",
        "register.tcp.p50",
        "register.tcp.p99",
        "register.tls.p50",
        "register.tls.dial",
        "register.sign",
        "register.verify",
        "fanout.p50",
        "failover.p50",
        "failover.silent.p50",
        "floor.sealed-echo.p50.1048576",
        "fernet.seal.webcrypto.1048576",
        "discovery.p50",
        "relay.memory.100",
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
        "soak.rps",
        "soak.calls",
        "soak.failed",
        "soak.rss.caller.peak",
        "soak.rss.target.idle",
        "soak.rss.target.peak",
        "soak.rss.target.end",
        "soak.rss.target.after",
        "soak.rss.relay.peak",
        "soak.back",
        "hol.direct.idle.p50",
        "hol.direct.loaded.p50",
        "hol.direct.ratio",
        "hol.direct.control.p50",
        "hol.direct.link",
        "hol.direct.big",
        "hol.relayed.ratio",
        "hol.relayed.big.p50",
        "cluster.p50.100",
        "cluster.p99.100",
        "cluster.p50.65536",
        "cluster.rps.1",
        "cluster.rps.64",
        "cluster.paired.cross",
        "cluster.paired.same",
        "cluster.paired.nats",
        "cluster.memory",
        "cluster.memory.nats",
        "cluster.claims",
        "cluster.claims.total",
        "cluster.cpu.claim",
        "cluster.cpu.claim.nats",
        "floor.echo.p50.100",
        "floor.hop.p50.100",
        "floor.tls-echo.p50.100",
        "floor.tls-echo.p50.1048576",
        "floor.tls-hop.p50.65536",
        "fernet.node.100",
        "fernet.webcrypto.1048576",
        "paired.p50.direct",
        "paired.p50.relayed",
        "paired.p50.http",
        "paired.p50.nats",
        "paired.rps.1.relayed",
        "paired.rps.64.http",
      ]
    ) {
      ok(ids.has(id), `the JSON has no figure '${id}'`);
    }
    // Measured by a full (10,000) or quick (1,000) run only (smoke: 100 idle nodes), or only
    // when Python's cryptography is installed; a serving node may not come back to idle within
    // the smoke soak's 2 s wait.
    // Silent relay loss needs nft in the namespace; without it its row says so.
    const noNft: string | null = report.raw.failoverSilent?.unmeasured ?? null;
    // The cluster needs nats-server: a run without NATS (--skip-nats, not strict) skips it.
    const noCluster = "cluster" in report.skipped;
    // So does the paired section's NATS path; its other three paths are still timed.
    const noPairedNats = "paired" in report.skipped;
    const optional = (id: string) =>
      (noPairedNats && /^paired\.(p50|rps\.\d+)\.nats$/.test(id)) ||
      /^relay\.memory\.(tls\.)?(1000|10000)$/.test(id) || id.startsWith("fernet.python") ||
      id === "soak.back" || (noNft !== null && id === "failover.silent.p50") ||
      (noCluster && id.startsWith("cluster."));
    const silentRow = report.figures.find((f) => f.id === "failover.silent.p50");
    if (noNft !== null) ok(silentRow?.label.includes(`NOT MEASURED: ${noNft}`), silentRow?.label);
    else ok((report.raw.failoverSilent?.runs.length ?? 0) > 0, "silent relay loss was measured");
    for (const f of report.figures) {
      if (optional(f.id)) continue;
      ok(f.value !== null && typeof f.value.median === "number", `figure ${f.id} was measured`);
    }
    // The TLS rows are compared with their floors (TLS hop + 2F), the TLS floors with TCP's, the
    // WebSocket rows with the hop + 2F; relay memory per idle node, TCP and TLS, with a bare
    // server's, whose clients all connected.
    for (const f of report.figures) {
      const compared = /^(relayed-tls\.|relayed-ws\.(p50|p99|rps)\.|floor\.tls-)/.test(f.id) ||
        (/^relay\.memory\.(tls\.)?\d+$/.test(f.id) && f.value !== null);
      if (compared) ok(typeof f.floor === "number", `figure ${f.id} has its floor`);
    }
    for (const load of [report.raw.echoLoad, report.raw.echoLoadTls]) {
      ok(load && Object.values(load.missing).every((n) => n === 0), "every floor client connected");
    }
    // Computed floors (a measured floor + 2F) say so; HTTP's floor, the bare echo, is measured.
    const byId = new Map(report.figures.map((f) => [f.id, f]));
    for (const id of ["direct.p50.100", "relayed.p99.65536", "relayed-tls.p50.1048576"]) {
      const f = byId.get(id);
      ok(f?.floorComputed === true && f.floorLabel?.endsWith("+ 2F, computed"), id);
    }
    for (const id of ["http.p50.100", "floor.tls-echo.p50.100", "direct.rps.1", "fanout.p50"]) {
      strictEqual(byId.get(id)?.floorComputed, false, id);
    }
    // The direct rows carry the HTTP column, like for like; relayed rows are NATS's.
    for (const id of ["direct.p50.100", "direct.p99.1048576", "direct.rps.16"]) {
      const f = byId.get(id);
      ok(typeof f?.http === "number" && f.likeForLike === "http", `figure ${id}: HTTP`);
    }
    for (const id of ["relayed.p50.100", "relayed.rps.64"]) {
      strictEqual(byId.get(id)?.likeForLike, "nats", id);
    }
    strictEqual(byId.get("relayed-tls.p50.100")?.likeForLike, null, "TLS vs plain NATS is not");
    strictEqual(byId.get("relayed-ws.p50.100")?.likeForLike, null, "WebSocket vs NATS is not");
    ok(report.targets.length > 10);
    const http = report.targets.find((t) => t.id === "direct.p50.100.http");
    ok(typeof http?.pass === "boolean", "the direct-vs-HTTP target was judged");
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
    // The soak's peak and failures and both head-of-line rows are judged; the return to idle only
    // in a full run.
    for (
      const id of [
        "soak.rss.target.peak",
        "soak.failed",
        "hol.direct",
        "hol.relayed",
        "ws.p50.100",
        "ws.rps.64",
      ]
    ) {
      const t = report.targets.find((t) => t.id === id);
      ok(typeof t?.pass === "boolean", `target ${id} was judged`);
    }
    strictEqual(
      report.targets.find((t) => t.id === "soak.back")?.pass,
      null,
      "judged in full only",
    );
    ok(svgPath !== null && !svgPath.startsWith(dirname(RECORDED.svg)), `chart at ${svgPath}`);
    ok(svg?.startsWith("<svg"), "the SVG was written");
    deepStrictEqual(recordedAfter, recordedBefore, "bench/results/ is left alone");
  },
});

testIf(NATS_PROBLEM === null, NATS_PROBLEM ?? "", {
  name:
    "bench/main.ts --smoke fills the NATS column and runs the relay cluster through bench/deno.lock",
  sanitizeResources: true,
  sanitizeOps: true,
  async fn() {
    const { report, out } = await smoke();
    ok(!("nats" in report.skipped), `NATS was skipped: ${report.skipped.nats}`);
    for (
      const id of [
        "direct.p50.100",
        "direct.rps.64",
        "relayed-tls.p50.100",
        "relayed-ws.p50.100",
        "relay.memory.100",
        "relay.cpu",
      ]
    ) {
      const figure = report.figures.find((f) => f.id === id);
      ok(typeof figure?.nats === "number", `figure ${id} has no NATS value\n${describe(out)}`);
    }
    // The cluster ran on nats-server: its rows have the relayed (same relay) floor and NATS.
    ok(!("cluster" in report.skipped), `the cluster was skipped: ${report.skipped.cluster}`);
    for (const id of ["cluster.p50.100", "cluster.rps.64"]) {
      const figure = report.figures.find((f) => f.id === id);
      ok(typeof figure?.nats === "number" && typeof figure.floor === "number", id);
    }
    const cluster = report.targets.find((t) => t.id === "cluster.p50.100");
    ok(typeof cluster?.pass === "boolean", "the cross-relay target was judged");
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
      // Not strict here (CI is): this test is about --skip-nats itself.
      const env = { DENO_DIR: denoDir, NO_COLOR: "1", PEERBASE_STRICT: "0" };
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

Deno.test("bench/readme.ts wraps a missed target's line as deno fmt does, at 100 columns including the bullet", async () => {
  // "- <label>: 0.551 ms (limit" is exactly 100 columns for some label lengths: it must stay whole;
  // and a line break just before "+" (or "-", "*", "1.") must not start a line as a list item.
  const labels = [
    ...Array.from(
      { length: 8 },
      (_, extra) =>
        `cross-relay p50 100 B ≤ same-relay p50 + NATS p50 (interleaved rounds)${
          "x".repeat(extra + 20)
        }`,
    ),
    ...["+", "-", "*", "1."].flatMap((mark) =>
      Array.from(
        { length: 6 },
        (_, extra) => `${"y".repeat(88 + extra)} ${mark} z p50 ${mark} hop p50 (computed)`,
      )
    ),
  ];
  for (const label of labels) {
    const block = readmeBlock(JSON.stringify({
      targets: [{ label, unit: "ms", value: 0.551, limit: 0.368, comparison: "<=", pass: false }],
    }));
    const fmt = new Deno.Command(Deno.execPath(), {
      args: ["fmt", "--ext", "md", "-"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const writer = fmt.stdin.getWriter();
    await writer.write(new TextEncoder().encode(`${block}\n`));
    await writer.close();
    const { stdout } = await fmt.output();
    strictEqual(new TextDecoder().decode(stdout), `${block}\n`, `label of ${label.length}`);
  }
});

Deno.test("bench figures: the TLS relay memory rows' floor is a bare TLS server under the same idle clients", () => {
  const raw = {
    relayLoadTls: {
      memory: { 1000: 50 * 1024, 10_000: 35 * 1024 },
      rss: {},
      cpu: [1],
      missing: {},
    },
    echoLoadTls: { memory: { 1000: 40 * 1024 }, rss: {}, cpu: [1], missing: {} },
  } satisfies RawResults;
  const rows = new Map(buildFigures(raw).map((f) => [f.id, f]));
  const at1000 = rows.get("relay.memory.tls.1000");
  deepStrictEqual(
    [at1000?.value?.median, at1000?.floor, at1000?.floorLabel, at1000?.vsFloor],
    [50, 40, "bare Deno TLS server (TlsTransport), per connection", 1.25],
  );
  strictEqual(rows.get("relay.memory.tls.10000")?.floor, null, "no floor where none was measured");
});

Deno.test("bench measureLatency: once its signal is aborted it calls no more and returns what it timed", async () => {
  const failed = new AbortController();
  let calls = 0;
  const call = () => {
    if (++calls === 3) failed.abort(new Error("a large call failed"));
    return Promise.resolve();
  };
  const plan = { sizes: [100], rounds: 2, warmup: 0, maxMs: 60_000, minCalls: 1000, maxCalls: 1e6 };
  const timed = await measureLatency(call, plan, failed.signal);
  strictEqual(calls, 3, "no call after the abort (without it: a million calls per round)");
  deepStrictEqual(timed[100]?.calls, [3], "the round in progress is kept, no further round starts");
});

/** A call that takes one timer turn, so timers (a failing call's) get their turn too. */
const timerCall = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

/** A busy phase that would time small calls for a minute if nothing failed. */
const longPhase = {
  latency: { sizes: [100], rounds: 1, warmup: 2, maxMs: 60_000, minCalls: 1e6, maxCalls: 1e6 },
  loadedMs: 60_000,
  loadedMinCalls: 1e6,
};

Deno.test("bench hol: a busy phase whose large call fails rejects with that failure, not after its minute", async () => {
  let small = 0;
  const call = () => (small++, timerCall());
  const bigCall = async () => {
    await sleep(20);
    throw new Error("the large call failed");
  };
  await rejects(busyPhase(call, bigCall, new Uint8Array(1), longPhase), /the large call failed/);
  ok(small < 10_000, `${small} small calls: it stopped when the large call failed`);
});

Deno.test("bench hol: a busy phase whose pacer fails rejects with the pacer's failure", async () => {
  const pacer = keepBusy(async () => {
    await sleep(20);
    throw new Error("a pacing call failed");
  }, new Uint8Array(1));
  await rejects(
    busyPhase(timerCall, timerCall, new Uint8Array(1), longPhase, pacer),
    /a pacing call failed/,
  );
  await rejects(pacer.stop(), /a pacing call failed/);
});
