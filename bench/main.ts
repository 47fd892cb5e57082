// deno-lint-ignore-file no-console
/**
 * The peerbase benchmark suite: floors, peerbase, and NATS when installed,
 * on loopback inside a private network namespace, with every Deno process
 * spawned through `Deno.execPath()` and pinned with `taskset` (clients on
 * core 0; servers, relays, hops and nats-server on core 1).
 *
 * ```sh
 * deno task bench [--quick | --smoke] [--rounds N] [--only NAMES] \
 *   [--skip-nats] [--json FILE] [--svg FILE] [--record]
 * ```
 *
 * `deno task bench` first caches npm `nats` through the bench's own lock
 * (`bench/deno.lock`, see `deps.ts`; there is no registry inside the
 * namespace), then runs this file through `tools/netns.ts`. Sections for
 * `--only` (comma-separated): fernet, floor, floor-tls, direct, http,
 * fanout, relayed, relayed-tls, relayed-ws, register, failover,
 * failover-silent, discovery, relay, cluster, attack, soak, hol, wait, nats,
 * nats-idle, paired. `paired` times direct, relayed, HTTP and NATS calls in
 * turn from one caller, round after round (`paired.ts`); the like-for-like
 * targets are judged on its rounds when it runs. `relayed-ws` is `relayed` over WebSocket links: the relay also
 * serves `--ws-port` and both nodes dial `ws://` (`ws_report.ts`: its cost
 * × relayed TCP of the same run, and the issue-13 bound of 1.3×).
 * `cluster` runs relays clustered on a nats-server with JetStream
 * (`cluster.ts`): cross-relay calls, compared with `relayed` and NATS of
 * the same run, and relay memory per idle node with 4 relays.
 * `failover-silent` drops a relay's packets with an nft table of its own
 * inside the namespace (removed after each run); without a usable `nft` its
 * row says NOT MEASURED and why (and with `PEERBASE_STRICT=1` the run
 * fails). `soak` keeps 64 calls in
 * flight through a relay for minutes and follows the RSS of caller, serving
 * node and relay (`soak.ts`); `hol` times 100 B calls beside 16 MiB ones on
 * the same link (`hol.ts`). `http` is plain HTTP between two Deno
 * processes (`Deno.serve` + `fetch`, `http.ts`), the comparison of the
 * direct rows. The TLS sections and `register` make a throw-away CA and
 * server certificate with `openssl` in a temporary directory, removed at
 * the end.
 *
 * Prints one table (each figure, its floor, measured or computed, the
 * ratios to the floor, to NATS and to HTTP, like-for-like ones marked), the targets with PASS/FAIL, and the checks (the TLS bound, and
 * TLS-off figures against the recorded run); writes the same as JSON with
 * `--json`, and the latency chart to `--svg` (by default into a new
 * temporary directory). Only `--record` writes the committed run in
 * `bench/results/` (the checks only read `bench/results/latest.json`).
 * Exits 1 when a section failed to run, including a NATS column that could
 * not be measured (no `nats-server`, or npm `nats` not cached) unless
 * `--skip-nats` says to go without it; a missed target or check does not
 * change the exit status. With `PEERBASE_STRICT=1` (as in CI) every
 * comparison column a run's sections need must be measured: `--skip-nats`,
 * or an `--only` that leaves out `nats`, `nats-idle` or `http` while keeping
 * a section compared with it, exits 1 at once ({@linkcode missingColumns}).
 *
 * @module
 */

import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { generateKey } from "../mod.ts";
import { runAttack } from "./attack.ts";
import { runCluster } from "./cluster.ts";
import { clusterFigures, formatCluster } from "./cluster_report.ts";
import { runSilentFailover } from "./failover_silent.ts";
import { runFernet } from "./fernet.ts";
import { runFloor, runFloorTls } from "./floor.ts";
import { formatHol, holFigures, holTargets, runHol } from "./hol.ts";
import { runHttp } from "./http.ts";
import { runNats } from "./nats.ts";
import { runPaired } from "./paired.ts";
import { formatPaired, pairedFigures, pairedTargets } from "./paired_report.ts";
import {
  runDirect,
  runDiscovery,
  runFailover,
  runFanout,
  runRelayed,
  runRelayedTls,
  runRelayedWs,
  runWaitCpu,
} from "./peerbase.ts";
import { type Context, type Mode, planFor, SIZES } from "./plan.ts";
import { choosePlacement, loadAverage, machineInfo } from "./proc.ts";
import {
  buildChecks,
  buildFigures,
  buildTargets,
  COMPUTED_NOTE,
  formatAttack,
  formatChecks,
  formatFigures,
  formatTargets,
  LIKE_FOR_LIKE_NOTE,
  type RawResults,
  type RecordedRun,
  recordedRun,
} from "./report.ts";
import { PATHS as README_PATHS, readmeBlock, replaceBlock } from "./readme.ts";
import { runRegister } from "./register.ts";
import { runEchoLoad, runRelayLoad } from "./relay_load.ts";
import { formatSoak, runSoak, soakFigures, soakTargets } from "./soak.ts";
import { latencySvg } from "./svg.ts";
import { BenchCertificates } from "./tls.ts";
import { formatWs, wsFigures, wsTargets } from "./ws_report.ts";

/** Section names, in the order they run. */
export const SECTIONS = [
  "fernet",
  "floor",
  "floor-tls",
  "direct",
  "http",
  "fanout",
  "relayed",
  "relayed-tls",
  "relayed-ws",
  "register",
  "failover",
  "failover-silent",
  "discovery",
  "relay",
  "cluster",
  "attack",
  "soak",
  "hol",
  "wait",
  "nats",
  "nats-idle",
  "paired",
] as const;

type Section = (typeof SECTIONS)[number];

/** How the report line starts when the NATS column was asked for and not measured. */
export const NATS_MISSING = "NATS column MISSING";

/** How the message starts when `PEERBASE_STRICT=1` finds the HTTP column left out. */
export const HTTP_MISSING = "HTTP column MISSING";

/**
 * How the message starts when `PEERBASE_STRICT=1` finds the relayed (TCP)
 * figures left out that the cluster's and the WebSocket rows compare with.
 */
export const RELAYED_MISSING = "Relayed column MISSING";

/** True when `PEERBASE_STRICT=1` (as in CI): no comparison column may be left out. */
export const STRICT: boolean = Deno.env.get("PEERBASE_STRICT") === "1";

/**
 * The comparison columns, each with the sections that fill it and the
 * sections compared with it: NATS (request-reply for the call rows, idle
 * connections for the relay rows), HTTP (the direct rows) and relayed (the
 * cluster's cross-relay rows, against the same relay; the WebSocket rows,
 * against TCP links of the same run).
 */
const COLUMNS = [
  {
    missing: NATS_MISSING,
    fills: "nats",
    compared: ["direct", "relayed", "relayed-tls", "relayed-ws", "cluster"],
  },
  { missing: NATS_MISSING, fills: "nats-idle", compared: ["relay"] },
  { missing: HTTP_MISSING, fills: "http", compared: ["direct"] },
  { missing: RELAYED_MISSING, fills: "relayed", compared: ["cluster", "relayed-ws"] },
] as const;

/**
 * Under `PEERBASE_STRICT=1`: one message per comparison column that this
 * run would leave out although a section compared with it runs (a missing
 * `nats-server` or npm module fails the run later, strict or not). Empty
 * when every column is there, or when not strict.
 */
export function missingColumns(
  options: Pick<BenchOptions, "sections" | "skipNats">,
  strict: boolean = STRICT,
): string[] {
  if (!strict) return [];
  const out: string[] = [];
  if (options.skipNats && options.sections.has("paired")) {
    out.push(
      `${NATS_MISSING}: --skip-nats was given, but paired times NATS itself and PEERBASE_STRICT=1 requires every comparison column: run without --skip-nats (install nats-server if it is missing)`,
    );
  }
  for (const { missing, fills, compared } of COLUMNS) {
    const using = compared.filter((s) => options.sections.has(s));
    if (using.length === 0 || options.sections.has(fills)) continue;
    const [why, fix] = options.skipNats && fills.startsWith("nats")
      ? ["--skip-nats was given", "run without --skip-nats (install nats-server if it is missing)"]
      : [`--only leaves out ${fills}`, `add ${fills} to --only`];
    out.push(
      `${missing}: ${why}, but ${using.join(", ")} ${
        using.length > 1 ? "are" : "is"
      } compared with it and PEERBASE_STRICT=1 requires every comparison column: ${fix}`,
    );
  }
  return out;
}

const USAGE = `Usage: deno task bench [options]

  --quick          fewer rounds and iterations, 1,000 idle nodes only, a 20 s soak
                   (about four minutes)
  --smoke          the least that proves every section still runs (for tests)
  --rounds N       rounds per figure (default 5; quick 3; smoke 1)
  --only NAMES     comma-separated sections: ${SECTIONS.join(", ")}
  --skip-nats      run without the NATS column (otherwise a missing nats-server
                   or uncached npm:nats fails the run); refused with
                   PEERBASE_STRICT=1, which requires every comparison column
  --json FILE      also write the results as JSON
  --svg FILE       latency chart (default: a new temporary directory; "" for none)
  --record         write the committed run: bench/results/latest.json and
                   bench/results/latency.svg (unless --json/--svg say otherwise),
                   then regenerate README.md's bench block from it, as
                   \`deno run --allow-read --allow-write bench/readme.ts --write\` does
  -h, --help       show this help`;

/** Longest a whole run may take, per mode, ms. */
const RUN_LIMIT: Record<Mode, number> = { full: 30 * 60_000, quick: 5 * 60_000, smoke: 3 * 60_000 };

/** The committed run's files, written only with `--record`. */
export const RECORDED = {
  json: new URL("./results/latest.json", import.meta.url).pathname,
  svg: new URL("./results/latency.svg", import.meta.url).pathname,
} as const;

/** The recorded run, read (never written) for the checks; null when there is none. */
async function readRecorded(): Promise<RecordedRun | null> {
  try {
    return recordedRun(RECORDED.json, await Deno.readTextFile(RECORDED.json));
  } catch {
    return null;
  }
}

/** The command-line options, parsed and checked. */
export type BenchOptions = ReturnType<typeof parseBenchArgs>;

/** Parses the command line; throws `RangeError` (or `TypeError`) for a bad one. */
export function parseBenchArgs(args: string[]) {
  const { values } = parseArgs({
    args,
    strict: true,
    allowPositionals: false,
    options: {
      quick: { type: "boolean", default: false },
      smoke: { type: "boolean", default: false },
      rounds: { type: "string" },
      only: { type: "string" },
      json: { type: "string" },
      svg: { type: "string" },
      record: { type: "boolean", default: false },
      "skip-nats": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  const mode: Mode = values.smoke ? "smoke" : values.quick ? "quick" : "full";
  const rounds = values.rounds === undefined ? undefined : Number(values.rounds);
  if (rounds !== undefined && !(Number.isInteger(rounds) && rounds >= 1 && rounds <= 100)) {
    throw new RangeError(`Invalid --rounds '${values.rounds}': expected a whole number 1 to 100`);
  }
  const only = values.only?.split(",").map((s) => s.trim()).filter((s) => s !== "");
  for (const name of only ?? []) {
    if (!(SECTIONS as readonly string[]).includes(name)) {
      throw new RangeError(`Invalid --only '${name}': expected some of ${SECTIONS.join(", ")}`);
    }
  }
  const sections = new Set<Section>((only as Section[] | undefined) ?? SECTIONS);
  if (values["skip-nats"]) {
    sections.delete("nats");
    sections.delete("nats-idle");
  }
  return {
    help: values.help,
    mode,
    rounds,
    sections,
    skipNats: values["skip-nats"],
    record: values.record,
    json: values.json,
    svg: values.svg,
  };
}

/**
 * Where a run writes its JSON and its chart (null: nowhere). Only `--record`
 * writes into `bench/results/`, and an explicit `--json`/`--svg` path
 * wins; otherwise the chart goes to `tempDir()` (called only then) and the
 * JSON is written only when `--json` names a file. An empty path means none.
 */
export function outputPaths(
  options: Pick<BenchOptions, "record" | "json" | "svg">,
  tempDir: () => string,
): { json: string | null; svg: string | null } {
  const json = options.json ?? (options.record ? RECORDED.json : "");
  const svg = options.svg ?? (options.record ? RECORDED.svg : join(tempDir(), "latency.svg"));
  return { json: json === "" ? null : json, svg: svg === "" ? null : svg };
}

/**
 * Runs `deno fmt` on a written result, so that results kept in bench/results
 * pass the repository's `deno fmt --check` (it formats SVG too).
 */
async function formatLikeTheRepo(path: string): Promise<void> {
  const config = new URL("../deno.json", import.meta.url).pathname;
  await new Deno.Command(Deno.execPath(), {
    args: ["fmt", "--quiet", "--config", config, path],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).output();
}

async function main(args: string[]): Promise<number> {
  let options;
  try {
    options = parseBenchArgs(args);
  } catch (error) {
    console.error(`bench: ${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (options.help) {
    console.log(USAGE);
    return 0;
  }
  const missing = missingColumns(options);
  if (missing.length > 0) {
    for (const message of missing) console.log(message);
    console.error(`bench: ${missing.join("\n")}`);
    return 1;
  }
  if (Deno.env.get("PEERBASE_NETNS") !== "1") {
    console.error(
      "bench: refusing to run outside a private network namespace, because its nodes advertise on UDP multicast; run `deno task bench`",
    );
    return 1;
  }
  const began = performance.now();
  // The TLS sections' certificates, made on first use and removed at the end.
  const certificates: { made: Promise<BenchCertificates> | null; dir: string | null } = {
    made: null,
    dir: null,
  };
  // Every part is bounded on its own; this only ends a run that hangs anyway.
  const watchdog = setTimeout(() => {
    console.error(`bench: gave up after ${RUN_LIMIT[options.mode] / 60_000} minutes`);
    if (certificates.dir) Deno.removeSync(certificates.dir, { recursive: true });
    Deno.exit(1);
  }, RUN_LIMIT[options.mode]);
  Deno.unrefTimer(watchdog);
  const placement = await choosePlacement();
  const machine = await machineInfo();
  const plan = planFor(options.mode, options.rounds);
  const ctx: Context = {
    plan,
    placement,
    key: generateKey(),
    log: (message) =>
      console.error(`bench ${((performance.now() - began) / 1000).toFixed(1)}s: ${message}`),
    tls: async () => {
      certificates.made ??= BenchCertificates.create().then((made) => {
        certificates.dir = made.dir;
        return made;
      });
      return (await certificates.made).files;
    },
  };
  if (!placement.pinned) console.error(`bench: ${placement.note}`);
  if (Number(machine.loadBefore.split(" ")[0]) > 0.5) {
    console.error(`bench: the machine is busy (load ${machine.loadBefore}): figures will be noisy`);
  }
  const raw: RawResults = {};
  const errors: Record<string, string> = {};
  const skipped: Record<string, string> = {};
  const run = async (section: Section, body: () => Promise<void>) => {
    if (!options.sections.has(section)) return;
    ctx.log(section);
    try {
      await body();
    } catch (error) {
      const { message, stack } = error as Error;
      // A missing comparison column keeps its marker at the start, as the nats section's does.
      errors[section] = message?.startsWith(NATS_MISSING) ? message : stack ?? String(error);
      console.error(`bench: section ${section} failed: ${errors[section]}`);
    }
  };
  await run("fernet", async () => void (raw.fernet = await runFernet(ctx)));
  await run("floor", async () => void (raw.floor = await runFloor(ctx)));
  await run("floor-tls", async () => void (raw.floorTls = await runFloorTls(ctx)));
  await run("direct", async () => void (raw.direct = await runDirect(ctx)));
  await run("http", async () => void (raw.http = await runHttp(ctx)));
  await run("fanout", async () => void (raw.fanout = await runFanout(ctx)));
  await run("relayed", async () => void (raw.relayed = await runRelayed(ctx)));
  await run("relayed-tls", async () => void (raw.relayedTls = await runRelayedTls(ctx)));
  await run("relayed-ws", async () => void (raw.relayedWs = await runRelayedWs(ctx)));
  await run("register", async () => void (raw.register = await runRegister(ctx)));
  await run("failover", async () => void (raw.failover = await runFailover(ctx)));
  await run("failover-silent", async () => {
    raw.failoverSilent = await runSilentFailover(ctx);
    const why = raw.failoverSilent.unmeasured;
    if (why !== null) {
      // Not silently missing: the row and its target say why; strict runs fail.
      if (STRICT) throw new Error(`silent relay loss not measured: ${why}`);
      skipped["failover-silent"] = why;
    }
  });
  await run("discovery", async () => void (raw.discovery = await runDiscovery(ctx)));
  await run("relay", async () => {
    raw.relayLoad = await runRelayLoad(ctx);
    raw.relayLoadTls = await runRelayLoad(ctx, await ctx.tls());
    raw.echoLoad = await runEchoLoad(ctx);
    raw.echoLoadTls = await runEchoLoad(ctx, await ctx.tls());
  });
  await run("cluster", async () => {
    raw.cluster = await runCluster(ctx);
    const why = raw.cluster.unmeasured;
    if (why !== null) {
      // Like the NATS column: a failure unless --skip-nats says to go without NATS (never if strict).
      if (STRICT || !options.skipNats) throw new Error(`cluster not measured: ${why}`);
      skipped.cluster = why;
    }
  });
  await run("attack", async () => {
    raw.attack = await runAttack(ctx);
    const unmeasured = Object.entries(raw.attack.unmeasured);
    if (unmeasured.length > 0) {
      // The measured scenarios stay in the report; the others fail the run, saying why.
      throw new Error(unmeasured.map(([id, why]) => `${id} not measured: ${why}`).join("; "));
    }
  });
  await run("soak", async () => void (raw.soak = await runSoak(ctx)));
  await run("hol", async () => {
    raw.hol = await runHol(ctx);
    const unmeasured = Object.entries(raw.hol.unmeasured);
    if (unmeasured.length > 0) {
      throw new Error(unmeasured.map(([path, why]) => `${path} not measured: ${why}`).join("; "));
    }
  });
  await run("wait", async () => void (raw.waitCpu = await runWaitCpu(ctx)));
  const natsParts = { path: options.sections.has("nats"), idle: options.sections.has("nats-idle") };
  if (natsParts.path || natsParts.idle) {
    const section = natsParts.path ? "nats" : "nats-idle";
    await run(section, async () => {
      raw.nats = await runNats(ctx, natsParts);
      if (raw.nats.skipped) {
        // Asked for and not measured: a failure, never a silently empty column.
        errors[section] = `${NATS_MISSING}: ${raw.nats.reason}; pass --skip-nats to run without it`;
        console.error(`bench: ${errors[section]}`);
      }
    });
  } else if (options.skipNats) {
    skipped.nats = "--skip-nats";
  }
  await run("paired", async () => {
    raw.paired = await runPaired(ctx, !options.skipNats);
    const why = raw.paired.natsUnmeasured;
    if (why !== null) {
      // Like the NATS column: a failure unless --skip-nats says to go without NATS (never if strict).
      if (STRICT || !options.skipNats) throw new Error(`${NATS_MISSING} in paired: ${why}`);
      skipped.paired = `NATS path not timed: ${why}`;
    }
  });
  if (raw.fernet && !raw.fernet.python) skipped.python = raw.fernet.pythonNote;
  await (await certificates.made?.catch(() => null))?.[Symbol.asyncDispose]();

  const figures = [
    ...buildFigures(raw),
    ...wsFigures(raw),
    ...clusterFigures(raw),
    ...soakFigures(raw.soak),
    ...holFigures(raw.hol),
    ...pairedFigures(raw.paired),
  ];
  // The like-for-like targets are judged on the paired section's rounds when it ran.
  const paired = pairedTargets(raw.paired);
  const targets = [
    ...buildTargets(raw).map((t) => paired.get(t.id) ?? t),
    ...wsTargets(raw),
    ...soakTargets(raw.soak, plan.mode),
    ...holTargets(raw.hol),
  ];
  const recorded = await readRecorded();
  const checks = buildChecks(raw, recorded, plan.mode);
  const seconds = (performance.now() - began) / 1000;
  const loadAfter = await loadAverage();
  console.log(
    `\npeerbase bench (${plan.mode}, ${plan.rounds} rounds) · ${machine.date} · ${machine.cpu}, ${machine.cores} cores · Deno ${machine.deno}`,
  );
  console.log(`placement: ${placement.note}`);
  console.log(`load average: ${machine.loadBefore} before, ${loadAfter} after`);
  console.log(
    `F = faster backend's Fernet encrypt + decrypt at that size; ratios are median/floor`,
  );
  console.log(`${COMPUTED_NOTE}\n${LIKE_FOR_LIKE_NOTE}\n`);
  console.log(formatFigures(figures));
  if (raw.attack) console.log(`\n${formatAttack(raw.attack)}`);
  if (raw.soak) console.log(`\n${formatSoak(raw.soak)}`);
  if (raw.hol) console.log(`\n${formatHol(raw.hol)}`);
  if (raw.cluster) console.log(`\n${formatCluster(raw)}`);
  if (raw.relayedWs) console.log(`\n${formatWs(raw)}`);
  if (raw.paired) console.log(`\n${formatPaired(raw.paired)}`);
  console.log(`\n${formatTargets(targets)}`);
  console.log(`\nchecks (reported only; they never fail the run):\n${formatChecks(checks)}`);
  for (const [name, reason] of Object.entries(skipped)) console.log(`skipped ${name}: ${reason}`);
  for (const [name, error] of Object.entries(errors)) {
    console.log(
      error.startsWith(NATS_MISSING) ? error : `FAILED section ${name} (see stderr)`,
    );
  }
  console.log(`\ntook ${seconds.toFixed(1)} s`);

  const report = {
    version: 1,
    machine,
    placement,
    config: {
      mode: plan.mode,
      rounds: plan.rounds,
      sections: [...options.sections],
      plan,
      spread: "min–max of the rounds",
      notes: [
        "latency: request and echoed answer of one Uint8Array, one call in flight; p50/p99 per round",
        "floor for latency (computed, not measured): bare echo (or hop) p50/p99 + 2F, F = faster backend's Fernet enc+dec at that size; every other floor is measured",
        "HTTP: Deno.serve in one process, fetch (keep-alive) in another, POST of a JSON body {data: payload as base64}, echoed as JSON; no encryption",
        LIKE_FOR_LIKE_NOTE,
        "relay memory: VmRSS growth of the relay per registered idle node, nodes 10 to a network",
        "relay CPU: utime+stime of the relay over the window with 1,000 idle nodes, % of one core",
        `caller CPU: the caller process while 8 calls to a handler sleeping 2 s are out`,
        "TLS: relay and floor servers are node:tls with TCP_NODELAY, clients Deno.connect + setNoDelay + Deno.startTls; a throw-away P-256 certificate",
        "TLS relayed floor: the TLS hop (client to hop and hop to echo both TLS) + 2F; NATS stays plain",
        "relayed WebSocket: the relay also serves --ws-port, both nodes dial ws:// (Deno's WebSocket client, the relay's own RFC 6455 server over its TCP transport); floor hop + 2F; vs-tcp rows: p50 WebSocket / TCP, calls/s TCP / WebSocket, both of this run",
        "registration: connect to REGISTERED with admission on, one after another, a new name each; proof parts timed alone in the client process",
        "soak: 64 calls of 100 B in flight through a relay (2 min; quick 20 s), VmRSS of caller, serving node and relay every 500 ms; afterwards, the caller connected and idle, the serving node's VmRSS until within 32 MiB of idle (judged within the 60 s replay window in a full run only)",
        "failover-silent: caller and target on two relays, calls one at a time; every packet to and from the carrying relay's port dropped with an nft table of the bench's own (no FIN); ms from the drop to the next call answered through the other relay; default node options",
        "1 MiB computed floor: 2 × the faster backend's seal (encrypt alone) at 1 MiB + echo p50 at 1 MiB, both of this run",
        "hol: 100 B calls one at a time on a link, idle and while one 16 MiB - 4 KiB echo after another runs on the same link (direct, and through one relay); row = loaded p50 / idle p50 per round; control: the same large calls on another link between the same two processes (second caller node to the serving process's twin node, which also gets an untimed 100 B call every 50 ms so that the large messages are paced as in the loaded phase), in turn with the loaded phase",
        "paired: one caller times direct, relayed, HTTP and NATS 100 B calls in turn (an untimed round first, then 8 rounds in a balanced order: each path in every place, and within a round after every other path, equally often); per path and round one latency round and one throughput round at 1, 16 and 64 in flight; the like-for-like targets are judged on the medians of these rounds",
        "cluster: relays with --cluster on one nats-server with JetStream; cross-relay = caller on relay A, serving node on relay B, both maxRemotes 1 (every call crosses the backplane), compared with relayed (same relay) and NATS of this run; idle: 4 relays × N raw idle nodes, networks of 10 spread over the relays, VmRSS growth per node (mean of the relays) and of nats-server, claims/s and CPU per claim, against one standalone relay with N of the same nodes",
        "attack: VmRSS of a fresh relay or node per scenario (peak sampled every 50 ms, then settled) under key-less connections declaring 16 MiB or never sending a byte; floor = the same process's idle baseline",
      ],
    },
    loadAfter,
    figures,
    targets,
    checks,
    skipped,
    errors,
    seconds,
    raw,
  };
  const out = outputPaths(
    options,
    () => Deno.makeTempDirSync({ prefix: "peerbase-bench-" }),
  );
  if (out.json) {
    await Deno.writeTextFile(out.json, JSON.stringify(report, null, 2) + "\n");
    await formatLikeTheRepo(out.json);
    console.log(`wrote ${out.json}`);
    if (out.json === RECORDED.json) {
      // The README's performance block always shows the recorded run.
      const readme = await Deno.readTextFile(README_PATHS.readme);
      const block = readmeBlock(await Deno.readTextFile(out.json));
      await Deno.writeTextFile(README_PATHS.readme, replaceBlock(readme, block));
      console.log(`wrote the bench block of ${README_PATHS.readme}`);
    }
  }
  if (out.svg) {
    const chart = latencySvg(
      [
        { label: "peerbase direct", color: "#1f77b4", dashed: false, latency: raw.direct?.latency },
        {
          label: "peerbase relayed",
          color: "#ff7f0e",
          dashed: false,
          latency: raw.relayed?.latency,
        },
        {
          label: "peerbase relayed, TLS",
          color: "#8c564b",
          dashed: false,
          latency: raw.relayedTls?.latency,
        },
        {
          label: "peerbase relayed, ws://",
          color: "#bcbd22",
          dashed: false,
          latency: raw.relayedWs?.latency,
        },
        {
          label: "HTTP (Deno.serve + fetch)",
          color: "#17becf",
          dashed: false,
          latency: raw.http?.latency,
        },
        { label: "floor: echo", color: "#2ca02c", dashed: true, latency: raw.floor?.echo.latency },
        { label: "floor: hop", color: "#9467bd", dashed: true, latency: raw.floor?.hop.latency },
        {
          label: "floor: TLS hop",
          color: "#e377c2",
          dashed: true,
          latency: raw.floorTls?.hop.latency,
        },
        {
          label: "NATS request-reply",
          color: "#d62728",
          dashed: false,
          latency: raw.nats && !raw.nats.skipped ? raw.nats.path?.latency : null,
        },
      ],
      [...SIZES],
      machine,
      placement,
    );
    await Deno.mkdir(dirname(out.svg), { recursive: true });
    await Deno.writeTextFile(out.svg, chart);
    await formatLikeTheRepo(out.svg);
    console.log(`wrote ${out.svg}`);
  }
  clearTimeout(watchdog);
  return Object.keys(errors).length > 0 ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
