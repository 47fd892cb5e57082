// deno-lint-ignore-file no-console
/**
 * The README's performance block, generated from the recorded run
 * (`bench/results/latest.json`): the run's paragraph (machine, Deno, date,
 * load before and after, mode, rounds), the chart, a table of the headline
 * figures with their floors and comparisons, and the targets that run
 * judged. A figure the JSON lacks (an older run) shows as "—".
 *
 * ```sh
 * deno run --allow-read bench/readme.ts                      # print the block
 * deno run --allow-read --allow-write bench/readme.ts --write  # replace it in README.md
 * ```
 *
 * `--write` replaces what lies between `<!-- bench:start -->` and
 * `<!-- bench:end -->` in README.md; the text around the markers is
 * written by hand. `tests/bench_test.ts` checks that the two never drift.
 *
 * @module
 */

import { formatNumber, SEALED_ECHO_LABEL } from "./report.ts";

/** The line before the generated block in README.md. */
export const START_MARKER = "<!-- bench:start -->";
/** The line after the generated block in README.md. */
export const END_MARKER = "<!-- bench:end -->";

/** The recorded run, README.md, and how the README links the JSON and the chart. */
export const PATHS = {
  json: new URL("./results/latest.json", import.meta.url).pathname,
  readme: new URL("../README.md", import.meta.url).pathname,
} as const;

/** What the generator reads of a bench JSON report; every part may be missing in older runs. */
interface Report {
  machine?: {
    cpu?: string;
    cores?: number;
    os?: string;
    deno?: string;
    date?: string;
    loadBefore?: string;
  };
  placement?: { note?: string };
  config?: { mode?: string; rounds?: number };
  loadAfter?: string;
  figures?: {
    id: string;
    unit: string;
    value: { median: number } | null;
    floor: number | null;
    nats?: number | null;
    http?: number | null;
  }[];
  targets?: {
    label: string;
    unit: string;
    value: number | null;
    limit: number | null;
    comparison: string;
    pass: boolean | null;
    note?: string;
  }[];
}

const SIZES = [100, 65_536, 1_048_576];
const INFLIGHT = [1, 16, 64];
const LATENCY_SIZES = "100 B / 64 KiB / 1 MiB";
const FLOOR_NOTE = "F = the faster backend's Fernet encrypt + decrypt at that size; " +
  "a floor marked computed is a sum of figures measured in the same run, every other floor is measured";
const COMPARE_NOTE =
  "Like for like: relayed vs NATS (both through a server over plain TCP), direct vs HTTP " +
  "(`Deno.serve` + `fetch`, keep-alive, JSON; both one connection between two processes). " +
  "Neither NATS nor HTTP encrypts anything.";

const SYMBOL: Record<string, string> = { "<=": "≤", ">=": "≥", "<": "<" };

type Field = "value" | "floor" | "nats" | "http";

/** The generated block (without its markers) for a bench JSON report's text. */
export function readmeBlock(json: string): string {
  const report = JSON.parse(json) as Report;
  const byId = new Map((report.figures ?? []).map((f) => [f.id, f]));
  const num = (id: string, field: Field = "value"): number | null => {
    const f = byId.get(id);
    const v = field === "value" ? f?.value?.median : f?.[field];
    return typeof v === "number" && Number.isFinite(v) ? v : null;
  };
  /** Figures joined with " / ", then the unit; "—" alone when none was measured. */
  const join = (values: (number | null)[], unit: string) =>
    values.every((v) => v === null)
      ? "—"
      : `${values.map((v) => formatNumber(v)).join(" / ")}${unit === "" ? "" : ` ${unit}`}`;
  const cell = (ids: string[], unit: string, field: Field = "value") =>
    join(ids.map((id) => num(id, field)), unit);
  const named = (name: string, text: string) => text === "—" ? "—" : `${name} ${text}`;
  const sizes = (prefix: string, list = SIZES) => list.map((s) => `${prefix}.${s}`);
  const fernet = SIZES.map((s) => {
    const times = [num(`fernet.node.${s}`), num(`fernet.webcrypto.${s}`)]
      .filter((t): t is number => t !== null);
    return times.length > 0 ? Math.min(...times) : null;
  });
  const p99Sizes = [100, 65_536];
  const rows: string[][] = [
    ["Figure", "peerbase", "floor", "like for like", "for reference"],
    [
      `direct call p50, ${LATENCY_SIZES}`,
      cell(sizes("direct.p50"), "ms"),
      named("echo + 2F, computed:", cell(sizes("direct.p50"), "ms", "floor")),
      named("HTTP", cell(sizes("http.p50"), "ms")),
      named("NATS", cell(sizes("direct.p50"), "ms", "nats")),
    ],
    [
      `relayed call p50, ${LATENCY_SIZES}`,
      cell(sizes("relayed.p50"), "ms"),
      named("hop + 2F, computed:", cell(sizes("relayed.p50"), "ms", "floor")),
      named("NATS", cell(sizes("relayed.p50"), "ms", "nats")),
      "",
    ],
    [
      `1 MiB floor: ${SEALED_ECHO_LABEL}`,
      "",
      cell(["floor.sealed-echo.p50.1048576"], "ms"),
      "",
      "",
    ],
    [
      "direct call p99, 100 B / 64 KiB",
      cell(sizes("direct.p99", p99Sizes), "ms"),
      named("echo p99 + 2F, computed:", cell(sizes("direct.p99", p99Sizes), "ms", "floor")),
      named("HTTP", cell(sizes("http.p99", p99Sizes), "ms")),
      named("NATS", cell(sizes("direct.p99", p99Sizes), "ms", "nats")),
    ],
    [
      "relayed call p99, 100 B / 64 KiB",
      cell(sizes("relayed.p99", p99Sizes), "ms"),
      named("hop p99 + 2F, computed:", cell(sizes("relayed.p99", p99Sizes), "ms", "floor")),
      named("NATS", cell(sizes("relayed.p99", p99Sizes), "ms", "nats")),
      "",
    ],
    ...(["direct", "relayed"] as const).map((path) => [
      `${path} calls/s, 1 / 64 in flight`,
      cell([`${path}.rps.1`, `${path}.rps.64`], ""),
      named(
        path === "direct" ? "echo" : "hop",
        cell([`${path}.rps.1`, `${path}.rps.64`], "", "floor"),
      ),
      path === "direct"
        ? named("HTTP", cell(["http.rps.1", "http.rps.64"], ""))
        : named("NATS", cell(["relayed.rps.1", "relayed.rps.64"], "", "nats")),
      path === "direct" ? named("NATS", cell(["direct.rps.1", "direct.rps.64"], "", "nats")) : "",
    ]),
    [
      "interleaved rounds (one caller, paths in turn): 100 B p50, direct / relayed",
      cell(["paired.p50.direct", "paired.p50.relayed"], "ms"),
      "",
      named("HTTP / NATS", cell(["paired.p50.http", "paired.p50.nats"], "ms")),
      "",
    ],
    ...(["direct", "relayed"] as const).map((path) => [
      `interleaved rounds: ${path} calls/s, 1 / 16 / 64 in flight`,
      cell(INFLIGHT.map((n) => `paired.rps.${n}.${path}`), ""),
      "",
      path === "direct"
        ? named("HTTP", cell(INFLIGHT.map((n) => `paired.rps.${n}.http`), ""))
        : named("NATS", cell(INFLIGHT.map((n) => `paired.rps.${n}.nats`), "")),
      path === "direct" ? named("NATS", cell(INFLIGHT.map((n) => `paired.rps.${n}.nats`), "")) : "",
    ]),
    [
      "fan-out of one call to 8 peers, p50",
      cell(["fanout.p50"], "ms"),
      named("8 echo servers", cell(["fanout.p50"], "ms", "floor")),
      "",
      "",
    ],
    [
      "head-of-line: 100 B p50 beside 16 MiB calls, × idle, direct / relayed",
      cell(["hol.direct.ratio", "hol.relayed.ratio"], "×"),
      named("÷ with them on another link:", cell(["hol.direct.link", "hol.relayed.link"], "×")),
      "",
      "",
    ],
    [
      "soak through a relay: serving node RSS peak / idle",
      cell(["soak.rss.target.peak", "soak.rss.target.idle"], "MiB"),
      "",
      "",
      "",
    ],
    ["soak: serving node back within 32 MiB of idle after", cell(["soak.back"], "s"), "", "", ""],
    [
      "relay memory per idle node, 1,000 / 10,000",
      cell(["relay.memory.1000", "relay.memory.10000"], "KiB"),
      named("bare Deno server", cell(["relay.memory.1000", "relay.memory.10000"], "KiB", "floor")),
      "",
      named("NATS", cell(["relay.memory.1000", "relay.memory.10000"], "KiB", "nats")),
    ],
    [
      "relay memory per idle TLS node, 1,000 / 10,000",
      cell(["relay.memory.tls.1000", "relay.memory.tls.10000"], "KiB"),
      named(
        "bare Deno TLS server",
        cell(["relay.memory.tls.1000", "relay.memory.tls.10000"], "KiB", "floor"),
      ),
      "",
      "",
    ],
    [
      "relay CPU, 1,000 idle nodes",
      cell(["relay.cpu"], "%"),
      named("bare Deno server", cell(["relay.cpu"], "%", "floor")),
      "",
      named("NATS", cell(["relay.cpu"], "%", "nats")),
    ],
    ["failover after a relay is killed, p50", cell(["failover.p50"], "ms"), "", "", ""],
    [
      "failover after silent relay loss (no FIN), p50",
      cell(["failover.silent.p50"], "ms"),
      "",
      "",
      "",
    ],
    ["new node callable by a running one (LAN), p50", cell(["discovery.p50"], "ms"), "", "", ""],
    ["caller CPU while waiting on slow calls", cell(["caller.wait.cpu"], "%"), "", "", ""],
    [
      `Fernet encrypt + decrypt, ${LATENCY_SIZES}`,
      join(fernet, "µs"),
      "",
      "",
      named("Python `cryptography`", cell(sizes("fernet.python"), "µs")),
    ],
  ];
  return [
    "![p50 call latency by payload size: peerbase direct and relayed, HTTP, the bare TCP echo and hop",
    "floors, and NATS request-reply](bench/results/latency.svg)",
    "",
    ...wrap(runParagraph(report)),
    "",
    ...markdownTable(rows),
    "",
    ...wrap(`${FLOOR_NOTE}. ${COMPARE_NOTE}`),
    "",
    ...targetLines(report),
  ].join("\n");
}

function runParagraph(report: Report): string {
  const m = report.machine ?? {};
  const date = m.date ? `${m.date.slice(0, 10)} ${m.date.slice(11, 16)} UTC` : "unknown date";
  const machine = `${m.cpu ?? "unknown CPU"}, ${m.cores ?? "?"} cores, ${m.os ?? "unknown OS"}`;
  const mode = report.config?.mode ?? "unknown";
  const rounds = report.config?.rounds ?? "?";
  return `The recorded run ([bench/results/latest.json](bench/results/latest.json), ${mode} mode, ` +
    `medians of ${rounds} rounds): ${machine}, Deno ${m.deno ?? "unknown"}, ${date}; ` +
    `load average (1, 5, 15 min) ${m.loadBefore ?? "unknown"} before and ${
      report.loadAfter ?? "unknown"
    } after; ${report.placement?.note ?? "placement unknown"}.`;
}

function targetLines(report: Report): string[] {
  const targets = report.targets ?? [];
  const met = targets.filter((t) => t.pass === true).length;
  const figure = (t: (typeof targets)[number]) =>
    `${t.label}: ${formatNumber(t.value)} ${t.unit} (limit ${
      SYMBOL[t.comparison] ?? t.comparison
    } ${formatNumber(t.limit)} ${t.unit})`;
  const lines = [`Targets (as that run judged them): ${met} of ${targets.length} met.`];
  const missed = targets.filter((t) => t.pass === false);
  if (missed.length > 0) lines.push("", "Missed:", "", ...missed.flatMap((t) => bullet(figure(t))));
  const unjudged = targets.filter((t) => t.pass === null);
  if (unjudged.length > 0) {
    lines.push(
      "",
      "Not judged:",
      "",
      ...unjudged.flatMap((t) => bullet(`${t.label}${t.note ? ` (${t.note})` : ""}`)),
    );
  }
  return lines;
}

/** Words that would start a list item at the start of a line (deno fmt never breaks before them). */
const MARKUP = /^([-+*]|\d+[.)])$/;

/**
 * Text wrapped at 100 columns, as `deno fmt` wraps prose here: the first
 * line has no indent, and no line starts with a list marker (`-`, `+`, `*`,
 * `1.`): the word before it goes down with it.
 */
function wrap(text: string, width = 100, indent = ""): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(/\s+/).filter((w) => w !== "")) {
    const next = line === "" ? word : `${line} ${word}`;
    const room = lines.length === 0 ? width : width - indent.length;
    if ([...next].length <= room || line === "") {
      line = next;
      continue;
    }
    const cut = MARKUP.test(word) ? line.lastIndexOf(" ") : -1;
    lines.push(cut > 0 ? line.slice(0, cut) : line);
    line = cut > 0 ? `${line.slice(cut + 1)} ${word}` : word;
  }
  if (line !== "") lines.push(line);
  return lines.map((l, i) => i === 0 ? l : `${indent}${l}`);
}

function bullet(text: string): string[] {
  const [first = "", ...rest] = wrap(`- ${text}`, 100, "  ");
  return [first, ...rest];
}

/** A Markdown table padded as `deno fmt` pads it. */
function markdownTable(rows: string[][]): string[] {
  const width = (s: string) => [...s].length;
  const widths = rows[0]!.map((_, c) => Math.max(3, ...rows.map((r) => width(r[c]!))));
  const line = (row: string[]) =>
    `| ${row.map((cell, c) => cell + " ".repeat(widths[c]! - width(cell))).join(" | ")} |`;
  return [
    line(rows[0]!),
    `| ${widths.map((w) => "-".repeat(w)).join(" | ")} |`,
    ...rows.slice(1).map(line),
  ];
}

/** `readme` with the text between the markers replaced by `block`; throws when a marker is missing. */
export function replaceBlock(readme: string, block: string): string {
  const start = readme.indexOf(START_MARKER);
  const end = readme.indexOf(END_MARKER);
  if (start < 0 || end < start) {
    throw new Error(
      `Cannot replace the bench block: README.md lacks ${START_MARKER} … ${END_MARKER}`,
    );
  }
  return `${readme.slice(0, start + START_MARKER.length)}\n\n${block}\n\n${readme.slice(end)}`;
}

/** The block between the markers of `readme` (trimmed), or null when they are missing. */
export function currentBlock(readme: string): string | null {
  const start = readme.indexOf(START_MARKER);
  const end = readme.indexOf(END_MARKER);
  return start < 0 || end < start ? null : readme.slice(start + START_MARKER.length, end).trim();
}

if (import.meta.main) {
  const block = readmeBlock(await Deno.readTextFile(PATHS.json));
  if (Deno.args.includes("--write")) {
    const readme = await Deno.readTextFile(PATHS.readme);
    await Deno.writeTextFile(PATHS.readme, replaceBlock(readme, block));
    console.log(`wrote the bench block of ${PATHS.readme}`);
  } else console.log(block);
}
