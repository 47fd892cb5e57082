/**
 * Turns the raw measurements into figures (each with its floor, measured or
 * computed, its ratio to the floor, to NATS and to HTTP, and which of those
 * comparisons is like for like), the targets table and the checks (bounds
 * between figures, and against the recorded run), and prints them.
 *
 * @module
 */

import { DEFAULT_WEBCRYPTO_THRESHOLD } from "../fernet/mod.ts";
import type { AttackResult, AttackScenario } from "./attack.ts";
import type { ClusterResult } from "./cluster.ts";
import type { FernetResult } from "./fernet.ts";
import type { FloorResult, FloorTlsResult } from "./floor.ts";
import type { LatencyResult, PathResult } from "./measure.ts";
import type { NatsResult } from "./nats.ts";
import type { PairedResult } from "./paired.ts";
import type { SilentLossResult } from "./failover_silent.ts";
import type { FailoverResult } from "./peerbase.ts";
import { FANOUT_PEERS, INFLIGHT, SIZES } from "./plan.ts";
import type { RegisterResult } from "./register.ts";
import type { IdleLoadResult } from "./relay_load.ts";
import type { HolResult } from "./hol.ts";
import type { SoakResult } from "./soak.ts";
import { ratio, summarize, type Summary } from "./stats.ts";

/** Everything measured, as measured. */
export interface RawResults {
  fernet?: FernetResult;
  floor?: FloorResult;
  /** The echo and the hop over TLS. */
  floorTls?: FloorTlsResult;
  direct?: PathResult;
  /** Plain HTTP between two Deno processes (`Deno.serve` + `fetch`, JSON): the direct rows' comparison. */
  http?: PathResult;
  fanout?: LatencyResult;
  relayed?: PathResult;
  /** Relayed through a relay serving TLS. */
  relayedTls?: PathResult;
  /** Relayed over WebSocket links (`ws://`, both nodes) of a relay's `--ws-port`. */
  relayedWs?: PathResult;
  /** Registration with admission on, and the proof's parts alone. */
  register?: RegisterResult;
  failover?: FailoverResult[];
  /** A relay's packets dropped (no FIN): ms to the next call answered through the other relay. */
  failoverSilent?: SilentLossResult;
  discovery?: number[];
  relayLoad?: IdleLoadResult;
  /** The same idle nodes at a relay serving TLS. */
  relayLoadTls?: IdleLoadResult;
  /** The floor of relayLoad: a bare Deno echo server under the same idle clients. */
  echoLoad?: IdleLoadResult;
  /** The floor of relayLoadTls: the same echo server serving TLS as a relay does. */
  echoLoadTls?: IdleLoadResult;
  waitCpu?: number[];
  nats?: NatsResult;
  /** RSS of a relay and a node under key-less connections, and their idle baselines. */
  attack?: AttackResult;
  /** Calls through a relay for minutes, and RSS of caller, serving node and relay. */
  soak?: SoakResult;
  /** 100 B call p50 with the link idle and while 16 MiB calls run on it. */
  hol?: HolResult;
  /** Relays on a NATS backplane: cross-relay calls, and idle nodes spread over 4 relays. */
  cluster?: ClusterResult;
  /** Direct, relayed, HTTP and NATS timed in turn by one caller: the like-for-like targets. */
  paired?: PairedResult;
}

/** A unit of a figure. */
export type Unit =
  | "ms"
  | "µs"
  | "calls/s"
  | "claims/s"
  | "KiB"
  | "MiB"
  | "conns"
  | "%"
  | "calls"
  | "s"
  | "×";

/** One reported figure. */
export interface Figure {
  id: string;
  label: string;
  unit: Unit;
  /** "lower" when less is better (times, memory, CPU), else "higher". */
  better: "lower" | "higher";
  /** The rounds' median and spread; null when not measured. */
  value: Summary | null;
  /** The floor it is compared with, same unit, and what that floor is. */
  floor: number | null;
  floorLabel: string | null;
  /** True when the floor is computed (a measured floor + 2F), not measured itself. */
  floorComputed: boolean;
  /** value / floor. */
  vsFloor: number | null;
  /** NATS's figure for the same thing, same unit. */
  nats: number | null;
  /** value / NATS. */
  vsNats: number | null;
  /** Plain HTTP's figure for the same thing (direct rows only), same unit. */
  http: number | null;
  /** value / HTTP. */
  vsHttp: number | null;
  /**
   * Which comparison is like for like, if any: relayed vs NATS (both through
   * a server over plain TCP), direct vs HTTP (both one connection between
   * two processes).
   */
  likeForLike: "nats" | "http" | null;
}

/** What the table's computed floors are. */
export const COMPUTED_NOTE =
  "floor 'computed': echo (or hop) p50/p99 + 2F, a sum of measured figures; every other floor is measured";

/** What the table's like-for-like mark (`*`) means. */
export const LIKE_FOR_LIKE_NOTE =
  "* like for like: relayed vs NATS (both through a server over plain TCP), direct vs HTTP (Deno.serve + fetch, keep-alive, JSON, both one connection between two processes); HTTP and NATS are not encrypted";

/** One target and whether it was met; `pass` is null when it could not be judged. */
export interface Target {
  id: string;
  label: string;
  unit: Unit;
  value: number | null;
  limit: number | null;
  comparison: "<=" | "<" | ">=";
  pass: boolean | null;
  note: string;
}

const SIZE_LABEL: Record<number, string> = { 100: "100 B", 65_536: "64 KiB", 1_048_576: "1 MiB" };

function sizeLabel(size: number): string {
  return SIZE_LABEL[size] ?? `${size} B`;
}

function med(values: readonly number[] | undefined): number | null {
  return summarize(values ?? [])?.median ?? null;
}

function p50(result: LatencyResult | undefined, size: number): number[] | undefined {
  return result?.[String(size)]?.p50;
}

function p99(result: LatencyResult | undefined, size: number): number[] | undefined {
  return result?.[String(size)]?.p99;
}

/** F: the faster backend's encrypt + decrypt at `size`, ms. */
function fernetF(raw: RawResults, size: number): number | null {
  const times = ["node", "webcrypto"].map((b) => med(raw.fernet?.ours[b]?.[size]))
    .filter((t): t is number => t !== null);
  return times.length > 0 ? Math.min(...times) / 1000 : null;
}

/** The faster backend's seal (encrypt alone) at `size`, ms; null when not measured. */
function fernetSeal(raw: RawResults, size: number): number | null {
  const times = ["node", "webcrypto"].map((b) => med(raw.fernet?.seal?.[b]?.[size]))
    .filter((t): t is number => t !== null);
  return times.length > 0 ? Math.min(...times) / 1000 : null;
}

/** The 1 MiB payload, bytes. */
const MIB = 1_048_576;

/** The computed 1 MiB floor, ms: 2 × seal(1 MiB) + echo p50 (1 MiB), both of this run. */
export function sealedEchoFloor(raw: RawResults): number | null {
  return plus(med(p50(raw.floor?.echo.latency, MIB)), fernetSeal(raw, MIB), 2);
}

/** What the computed 1 MiB floor is. */
export const SEALED_ECHO_LABEL = "2 × seal(1 MiB) + echo(1 MiB), computed";

/** Our Fernet at `size` as the "auto" backend picks it, µs. */
function fernetAuto(raw: RawResults, size: number): number | null {
  const backend = size >= DEFAULT_WEBCRYPTO_THRESHOLD ? "webcrypto" : "node";
  return med(raw.fernet?.ours[backend]?.[size]);
}

function plus(a: number | null, b: number | null, times = 1): number | null {
  return a === null || b === null ? null : a + times * b;
}

function natsPath(raw: RawResults): PathResult | null {
  return raw.nats && !raw.nats.skipped ? raw.nats.path : null;
}

function natsIdle(raw: RawResults): IdleLoadResult | null {
  return raw.nats && !raw.nats.skipped ? raw.nats.idle : null;
}

/** The comparisons of a call row beyond NATS: HTTP, which one is like for like, a computed floor. */
interface Extra {
  http?: number | null;
  likeForLike?: Figure["likeForLike"];
  floorComputed?: boolean;
}

/** One figure from its rounds' values; its ratios are computed here. */
export function figure(
  id: string,
  label: string,
  unit: Unit,
  values: readonly number[] | undefined,
  floor: number | null = null,
  floorLabel: string | null = null,
  nats: number | null = null,
  extra: Extra = {},
): Figure {
  const value = summarize(values ?? []);
  const http = extra.http ?? null;
  return {
    id,
    label,
    unit,
    better: unit === "calls/s" ? "higher" : "lower",
    value,
    floor,
    floorLabel: floor === null ? null : floorLabel,
    floorComputed: floor !== null && (extra.floorComputed ?? false),
    vsFloor: ratio(value?.median, floor),
    nats,
    vsNats: ratio(value?.median, nats),
    http,
    vsHttp: ratio(value?.median, http),
    likeForLike: extra.likeForLike ?? null,
  };
}

/** Every figure, floors included. */
export function buildFigures(raw: RawResults): Figure[] {
  const out: Figure[] = [];
  const echo = raw.floor?.echo;
  const hop = raw.floor?.hop;
  const nats = natsPath(raw);
  // Each call path; peerbase's floors add 2F (computed), HTTP's is the bare echo (measured).
  const paths = [
    ["direct", "direct", raw.direct, echo, "echo", true, "http"],
    ["http", "HTTP (Deno.serve + fetch, JSON)", raw.http, echo, "echo", false, null],
    ["relayed", "relayed", raw.relayed, hop, "hop", true, "nats"],
    ["relayed-tls", "relayed TLS", raw.relayedTls, raw.floorTls?.hop, "TLS hop", true, null],
    ["relayed-ws", "relayed WebSocket", raw.relayedWs, hop, "hop", true, null],
  ] as const;
  for (const [id, name, path, floor, floorName, sealed, likeForLike] of paths) {
    // The HTTP rows carry no NATS figure: they are a comparison themselves.
    const compared = id === "http" ? null : nats;
    const httpPath = id === "direct" ? raw.http : undefined;
    for (const size of SIZES) {
      const twoF = sealed ? fernetF(raw, size) : 0;
      for (const [stat, pick] of [["p50", p50], ["p99", p99]] as const) {
        out.push(figure(
          `${id}.${stat}.${size}`,
          `${name} call ${sizeLabel(size)} ${stat}`,
          "ms",
          pick(path?.latency, size),
          plus(med(pick(floor?.latency, size)), twoF, 2),
          sealed ? `${floorName} ${stat} + 2F, computed` : `${floorName} ${stat}`,
          med(pick(compared?.latency, size)),
          { http: med(pick(httpPath?.latency, size)), likeForLike, floorComputed: sealed },
        ));
      }
    }
    for (const n of INFLIGHT) {
      out.push(figure(
        `${id}.rps.${n}`,
        `${name} calls/s, ${n} in flight`,
        "calls/s",
        path?.throughput[n],
        med(floor?.throughput[n]),
        `${floorName} ${n} in flight`,
        med(compared?.throughput[n]),
        { http: med(httpPath?.throughput[n]), likeForLike },
      ));
    }
    if (id === "direct") {
      out.push(figure(
        "fanout.p50",
        "fan-out to 8 peers, 100 B p50",
        "ms",
        p50(raw.fanout, 100),
        med(p50(raw.floor?.fanout, 100)),
        "echo to 8 processes",
      ));
    }
  }
  const register = raw.register;
  for (const kind of ["tcp", "tls"] as const) {
    const name = kind.toUpperCase();
    for (const stat of ["p50", "p99"] as const) {
      out.push(figure(
        `register.${kind}.${stat}`,
        `registration over ${name}, connect to REGISTERED ${stat}`,
        "ms",
        register?.[kind][stat],
      ));
    }
    out.push(figure(
      `register.${kind}.dial`,
      `registration over ${name}: ${kind === "tls" ? "connect + handshake" : "connect"} p50`,
      "ms",
      register?.[kind].dial,
    ));
  }
  const proofParts = [
    ["credentials", "admission: a node's credentials per start p50"],
    ["sign", "admission: signing one REGISTER p50 (node)"],
    ["verify", "admission: verifying one REGISTER p50 (relay)"],
  ] as const;
  for (const [part, label] of proofParts) {
    out.push(figure(`register.${part}`, label, "µs", register?.proofs[part]));
  }
  out.push(figure("failover.p50", "relay failover", "ms", raw.failover?.map((f) => f.ms)));
  const silent = raw.failoverSilent;
  out.push(figure(
    "failover.silent.p50",
    `relay failover, silent loss (packets dropped, no FIN)${
      silent?.unmeasured ? ` — NOT MEASURED: ${silent.unmeasured}` : ""
    }`,
    "ms",
    silent?.runs.map((r) => r.ms),
  ));
  out.push(figure("discovery.p50", "LAN discovery to first call", "ms", raw.discovery));
  const idle = raw.relayLoad;
  const floorIdle = raw.echoLoad;
  const counts = new Set([1000, 10_000, ...Object.keys(idle?.memory ?? {}).map(Number)]);
  for (const count of [...counts].sort((a, b) => a - b)) {
    const kib = (bytes: number | undefined) => bytes === undefined ? null : bytes / 1024;
    const perNode = kib(idle?.memory[count]);
    out.push(figure(
      `relay.memory.${count}`,
      `relay memory per idle node, ${count.toLocaleString("en")}`,
      "KiB",
      perNode === null ? [] : [perNode],
      kib(floorIdle?.memory[count]),
      "bare Deno TCP server, per connection",
      kib(natsIdle(raw)?.memory[count]),
    ));
  }
  const tlsMemory = raw.relayLoadTls?.memory ?? {};
  const tlsCounts = new Set([1000, 10_000, ...Object.keys(tlsMemory).map(Number)]);
  for (const count of [...tlsCounts].sort((a, b) => a - b)) {
    const bytes = tlsMemory[count];
    const floorBytes = raw.echoLoadTls?.memory[count];
    out.push(figure(
      `relay.memory.tls.${count}`,
      `relay memory per idle TLS node, ${count.toLocaleString("en")}`,
      "KiB",
      bytes === undefined ? [] : [bytes / 1024],
      floorBytes === undefined ? null : floorBytes / 1024,
      "bare Deno TLS server (TlsTransport), per connection",
    ));
  }
  const firstCount = idle ? Object.keys(idle.memory)[0] ?? "1000" : "1000";
  out.push(figure(
    "relay.cpu",
    `relay CPU, ${Number(firstCount).toLocaleString("en")} idle nodes`,
    "%",
    idle?.cpu,
    med(floorIdle?.cpu),
    "bare Deno TCP server, same beats",
    med(natsIdle(raw)?.cpu),
  ));
  out.push(figure("caller.wait.cpu", "caller CPU waiting on slow calls", "%", raw.waitCpu));
  out.push(...attackFigures(raw.attack));
  // The floors themselves; a TLS floor's own floor is the same over TCP.
  const floors = [
    ["echo", "echo", echo, null],
    ["tls-echo", "TLS echo", raw.floorTls?.echo, echo],
    ["hop", "hop", hop, null],
    ["tls-hop", "TLS hop", raw.floorTls?.hop, hop],
  ] as const;
  for (const [id, name, path, tcp] of floors) {
    const tcpName = tcp === null ? null : name.replace("TLS ", "TCP ");
    for (const size of SIZES) {
      out.push(figure(
        `floor.${id}.p50.${size}`,
        `floor: ${name} ${sizeLabel(size)} p50`,
        "ms",
        p50(path?.latency, size),
        tcp === null ? null : med(p50(tcp?.latency, size)),
        `${tcpName} p50`,
      ));
    }
    for (const n of INFLIGHT) {
      out.push(figure(
        `floor.${id}.rps.${n}`,
        `floor: ${name} calls/s, ${n} in flight`,
        "calls/s",
        path?.throughput[n],
        tcp === null ? null : med(tcp?.throughput[n]),
        `${tcpName} ${n} in flight`,
      ));
    }
  }
  const sealedEcho = sealedEchoFloor(raw);
  out.push(figure(
    "floor.sealed-echo.p50.1048576",
    `floor: ${SEALED_ECHO_LABEL}`,
    "ms",
    sealedEcho === null ? [] : [sealedEcho],
  ));
  for (const backend of ["node", "webcrypto"]) {
    out.push(figure(
      `fernet.seal.${backend}.${MIB}`,
      `floor: Fernet ${backend} seal alone (encrypt), 1 MiB`,
      "µs",
      raw.fernet?.seal?.[backend]?.[MIB],
    ));
  }
  for (const backend of ["node", "webcrypto"]) {
    for (const size of SIZES) {
      out.push(figure(
        `fernet.${backend}.${size}`,
        `floor: Fernet ${backend} ${sizeLabel(size)}`,
        "µs",
        raw.fernet?.ours[backend]?.[size],
        null,
        null,
      ));
    }
  }
  for (const size of SIZES) {
    out.push(figure(
      `fernet.python.${size}`,
      `floor: Fernet Python ${sizeLabel(size)}`,
      "µs",
      raw.fernet?.python?.[size],
    ));
  }
  return out;
}

/** The attack section's targets, and how each of their scenarios is named. */
const ATTACK_TARGETS = [["relay", "relay"], ["node", "node direct-call port"]] as const;
const ATTACK_SCENARIOS = {
  partial: (n: string) => `${n} key-less conns declaring 16 MiB`,
  idle: (n: string) => `${n} silent conns`,
} as const;

function mib(bytes: number | undefined): number[] {
  return bytes === undefined ? [] : [bytes / 1024 / 1024];
}

/** RSS growth per connection opened, peak over baseline, KiB. */
function perConnection(run: AttackScenario | undefined): number | null {
  return run ? (run.peak - run.baseline) / Math.max(1, run.attacker.opened) / 1024 : null;
}

/** The largest peak RSS under partial frames, as a multiple of the idle baseline. */
export const ATTACK_PARTIAL_BOUND = 1.5;

/**
 * The attack rows: each target's idle baseline (both of its processes),
 * then per scenario its peak and settled RSS with that process's baseline
 * as the floor (×floor is the ratio to the idle baseline), and the
 * connections still open at the end.
 */
function attackFigures(attack: AttackResult | undefined): Figure[] {
  const out: Figure[] = [];
  for (const [target, name] of ATTACK_TARGETS) {
    const runs = attack?.[target] ?? {};
    const baselines = [runs.partial?.baseline, runs.idle?.baseline]
      .filter((b): b is number => b !== undefined);
    out.push(figure(
      `attack.${target}.baseline`,
      `${name} RSS, idle baseline (of ${baselines.length || "its"} processes)`,
      "MiB",
      baselines.map((b) => b / 1024 / 1024),
    ));
    for (const scenario of ["partial", "idle"] as const) {
      const run: AttackScenario | undefined = runs[scenario];
      const what = ATTACK_SCENARIOS[scenario](run ? run.connections.toLocaleString("en") : "the");
      const baseline = run ? run.baseline / 1024 / 1024 : null;
      out.push(figure(
        `attack.${target}.${scenario}.peak`,
        `${name} RSS, ${what}, peak`,
        "MiB",
        mib(run?.peak),
        baseline,
        "idle baseline",
      ));
      out.push(figure(
        `attack.${target}.${scenario}.after`,
        `${name} RSS after ${what}, settled`,
        "MiB",
        mib(run?.after),
        baseline,
        "idle baseline",
      ));
      if (scenario === "idle") {
        const perConn = perConnection(run);
        out.push(figure(
          `attack.${target}.idle.per-conn`,
          `${name} RSS growth per silent conn (peak − baseline)`,
          "KiB",
          perConn === null ? [] : [perConn],
          perConnection(attack?.floor),
          "bare Deno TCP server, same silent conns",
        ));
      }
      out.push(figure(
        `attack.${target}.${scenario}.open`,
        scenario === "partial"
          ? `${name}: ${what} not cut within the send window`
          : `${name}: ${what} open 2 s after the 5 s trust deadline`,
        "conns",
        run ? [run.attacker.opened - run.attacker.cut] : [],
      ));
    }
  }
  return out;
}

/** The attack targets: no key-less connection outlives its first oversized header or its deadline. */
function attackTargets(attack: AttackResult | undefined): Target[] {
  const out: Target[] = [];
  for (const [host, name] of ATTACK_TARGETS) {
    const partial = attack?.[host].partial;
    out.push(target(
      `attack.${host}.partial.peak`,
      `${name}: RSS under key-less conns declaring 16 MiB ≤ ${ATTACK_PARTIAL_BOUND}× idle`,
      "MiB",
      partial ? partial.peak / 1024 / 1024 : null,
      "<=",
      partial ? ATTACK_PARTIAL_BOUND * partial.baseline / 1024 / 1024 : null,
      partial ? "" : `not measured: ${attack?.unmeasured[`${host}.partial`] ?? "not run"}`,
    ));
    for (const scenario of ["partial", "idle"] as const) {
      const run = attack?.[host][scenario];
      const why = attack?.unmeasured[`${host}.${scenario}`];
      out.push(target(
        `attack.${host}.${scenario}.open`,
        scenario === "partial"
          ? `${name}: key-less conns declaring 16 MiB left open = 0`
          : `${name}: silent conns open after the trust deadline = 0`,
        "conns",
        run ? run.attacker.opened - run.attacker.cut : null,
        "<=",
        0,
        run ? "" : `not measured${why ? `: ${why}` : ""}`,
      ));
    }
  }
  return out;
}

function describeScenario(run: AttackScenario, scenario: "partial" | "idle"): string {
  const a = run.attacker;
  const rss = (bytes: number) =>
    `${formatNumber(bytes / 1024 / 1024)} MiB (${formatRatio(ratio(bytes, run.baseline))})`;
  const codes = Object.entries(a.goaway).map(([code, n]) => `GOAWAY ${code} ×${n}`).join(", ");
  const life = a.lifeMs
    ? `, closed ${formatNumber(a.lifeMs.min / 1000)}–${
      formatNumber(a.lifeMs.max / 1000)
    } s after connecting`
    : "";
  const atOnce = a.lifeMs === null || a.openMs < a.lifeMs.min
    ? "all open at once"
    : "NOT all open at once: the first closed before the last opened";
  const opened = `${a.opened}/${run.connections} opened in ${
    formatNumber(a.openMs / 1000)
  } s (${atOnce})`;
  const detail = scenario === "partial"
    ? `${opened}, ${a.cut} cut${life} (${codes || "no GOAWAY"}); at most ${
      formatNumber(a.maxSent / 1024)
    } KiB of one taken by the kernel before the cut`
    : `${opened}, ${a.opened - a.cut} still open at the end${life} (${codes || "no GOAWAY"})`;
  return `idle ${formatNumber(run.baseline / 1024 / 1024)} MiB → peak ${rss(run.peak)}, after ${
    rss(run.after)
  }; ${detail}`;
}

/** The attack section as sentences, saying plainly what could not be measured. */
export function formatAttack(attack: AttackResult): string {
  const limit = attack.openFileLimit === null ? "unknown" : String(attack.openFileLimit);
  const lines = [
    `attack: RSS under key-less connections, × the same process's idle baseline (open-file limit ${limit}):`,
  ];
  const rows = [
    ...ATTACK_TARGETS.flatMap(([target, name]) =>
      (["partial", "idle"] as const).map((scenario) =>
        [`${target}.${scenario}`, name, scenario, attack[target][scenario]] as const
      )
    ),
    ["floor", "floor: bare Deno TCP server", "idle", attack.floor] as const,
  ];
  for (const [id, name, scenario, run] of rows) {
    const what = ATTACK_SCENARIOS[scenario](run ? String(run.connections) : "the");
    const why = attack.unmeasured[id] ?? "not run";
    lines.push(
      `  ${name}, ${what}: ${run ? describeScenario(run, scenario) : `NOT MEASURED: ${why}`}`,
    );
  }
  return lines.join("\n");
}

/** One target, judged: `value` against `limit` by `comparison` (null when either is missing). */
export function target(
  id: string,
  label: string,
  unit: Unit,
  value: number | null,
  comparison: Target["comparison"],
  limit: number | null,
  note = "",
): Target {
  let pass: boolean | null = null;
  if (value !== null && limit !== null) {
    pass = comparison === "<="
      ? value <= limit
      : comparison === "<"
      ? value < limit
      : value >= limit;
  }
  return { id, label, unit, value, limit, comparison, pass, note };
}

/** The targets of the issue, judged. */
export function buildTargets(raw: RawResults): Target[] {
  const out: Target[] = [];
  const nats = natsPath(raw);
  const natsNote = raw.nats?.skipped ? `NATS skipped: ${raw.nats.reason}` : "";
  for (const size of SIZES) {
    const floor = plus(med(p50(raw.floor?.echo.latency, size)), fernetF(raw, size), 2);
    out.push(target(
      `direct.p50.${size}`,
      `direct p50 ${sizeLabel(size)} ≤ 1.5×(echo p50 + 2F, computed)`,
      "ms",
      med(p50(raw.direct?.latency, size)),
      "<=",
      floor === null ? null : 1.5 * floor,
    ));
  }
  const echo100 = med(p50(raw.floor?.echo.latency, 100));
  out.push(target(
    "direct.p50.100.echo",
    "direct p50 100 B ≤ 4× echo",
    "ms",
    med(p50(raw.direct?.latency, 100)),
    "<=",
    echo100 === null ? null : 4 * echo100,
  ));
  for (const size of SIZES) {
    const floor = plus(med(p50(raw.floor?.hop.latency, size)), fernetF(raw, size), 2);
    out.push(target(
      `relayed.p50.${size}`,
      `relayed p50 ${sizeLabel(size)} ≤ 1.5×(hop p50 + 2F, computed)`,
      "ms",
      med(p50(raw.relayed?.latency, size)),
      "<=",
      floor === null ? null : 1.5 * floor,
    ));
  }
  out.push(target(
    "direct.p50.100.http",
    "direct p50 100 B ≤ HTTP p50 (like for like)",
    "ms",
    med(p50(raw.direct?.latency, 100)),
    "<=",
    med(p50(raw.http?.latency, 100)),
    raw.http ? "" : "HTTP not measured (the http section did not run)",
  ));
  out.push(target(
    "relayed.p50.100.nats",
    "relayed p50 100 B ≤ NATS p50 (like for like)",
    "ms",
    med(p50(raw.relayed?.latency, 100)),
    "<=",
    med(p50(nats?.latency, 100)),
    natsNote,
  ));
  for (const [id, path] of [["direct", raw.direct], ["relayed", raw.relayed]] as const) {
    for (const n of INFLIGHT) {
      out.push(target(
        `${id}.rps.${n}.nats`,
        `${id} calls/s at ${n} in flight ≥ NATS`,
        "calls/s",
        med(path?.throughput[n]),
        ">=",
        med(nats?.throughput[n]),
        natsNote,
      ));
    }
  }
  out.push(clusterTarget(raw));
  out.push(...tailTargets(raw));
  for (
    const [id, path, bound] of [["direct", raw.direct, 1.5], ["relayed", raw.relayed, 1.6]] as const
  ) {
    const natsMib = med(p50(nats?.latency, MIB));
    out.push(target(
      `${id}.p50.${MIB}.nats`,
      `${id} p50 1 MiB ≤ ${bound} × NATS p50${id === "relayed" ? " (like for like)" : ""}`,
      "ms",
      med(p50(path?.latency, MIB)),
      "<=",
      natsMib === null ? null : bound * natsMib,
      natsNote,
    ));
  }
  const fanoutFloor = med(p50(raw.floor?.fanout, 100));
  out.push(target(
    "fanout",
    `fan-out to ${FANOUT_PEERS} peers p50 ≤ 2 × floor (echo to ${FANOUT_PEERS} processes)`,
    "ms",
    med(p50(raw.fanout, 100)),
    "<=",
    fanoutFloor === null ? null : 2 * fanoutFloor,
  ));
  for (const size of SIZES) {
    out.push(target(
      `fernet.${size}`,
      `our Fernet ${sizeLabel(size)} ≤ Python`,
      "µs",
      fernetAuto(raw, size),
      "<=",
      med(raw.fernet?.python?.[size]),
      raw.fernet && !raw.fernet.python ? raw.fernet.pythonNote : "",
    ));
  }
  out.push(target("discovery", "LAN discovery p50 < 50 ms", "ms", med(raw.discovery), "<", 50));
  out.push(
    target(
      "failover",
      "failover p50 < 100 ms",
      "ms",
      med(raw.failover?.map((f) => f.ms)),
      "<",
      100,
    ),
  );
  const silent = raw.failoverSilent;
  out.push(target(
    "failover.silent",
    "silent relay loss (packets dropped, no FIN): next good call p50 < 1.5 s",
    "ms",
    med(silent?.runs.map((r) => r.ms)),
    "<",
    1500,
    silent?.unmeasured
      ? `not measured: ${silent.unmeasured}`
      : silent
      ? ""
      : "the failover-silent section did not run",
  ));
  out.push(...memoryTargets(raw));
  const cpuCount = Number(Object.keys(raw.relayLoad?.memory ?? {})[0] ?? 1000);
  out.push(target(
    "relay.cpu",
    "relay CPU, 1,000 idle < 5%",
    "%",
    cpuCount === 1000 ? med(raw.relayLoad?.cpu) : null,
    "<",
    5,
    cpuCount === 1000 ? "" : `measured with ${cpuCount} idle nodes only`,
  ));
  out.push(
    target("caller.wait.cpu", "caller CPU while waiting < 2%", "%", med(raw.waitCpu), "<", 2),
  );
  out.push(...attackTargets(raw.attack));
  return out;
}

/**
 * The cluster's target: a cross-relay call adds at most one backplane hop to
 * a same-relay one. Judged on the section's interleaved rounds (cross-relay,
 * same relay and NATS timed in turn, so a drift of the machine weighs on all
 * three); runs recorded before those existed compare the `relayed` and
 * `nats` sections' figures.
 */
function clusterTarget(raw: RawResults): Target {
  const paired = raw.cluster?.crossRelay?.paired;
  if (paired) {
    return target(
      "cluster.p50.100",
      "cross-relay (cluster) p50 100 B ≤ same-relay p50 + NATS p50 (interleaved rounds)",
      "ms",
      med(paired.cross),
      "<=",
      plus(med(paired.sameRelay), med(paired.nats)),
    );
  }
  const limit = plus(med(p50(raw.relayed?.latency, 100)), med(p50(natsPath(raw)?.latency, 100)));
  const missing = [
    ["relayed", raw.relayed],
    ["nats", natsPath(raw)],
    ["cluster", raw.cluster?.crossRelay],
  ].filter(([, v]) => !v).map(([name]) => name);
  const why = raw.cluster?.unmeasured
    ? `not measured: ${raw.cluster.unmeasured}`
    : raw.nats?.skipped
    ? `NATS skipped: ${raw.nats.reason}`
    : missing.length > 0
    ? `needs ${missing.join(", ")}`
    : "";
  return target(
    "cluster.p50.100",
    "cross-relay (cluster) p50 100 B ≤ relayed p50 + NATS p50 (same run)",
    "ms",
    med(p50(raw.cluster?.crossRelay?.latency, 100)),
    "<=",
    limit,
    why,
  );
}

/** The tail targets: p99 ≤ 3 × p50 at 100 B; at 64 KiB ≤ max(3 × p50, 3 × the echo floor's p99). */
function tailTargets(raw: RawResults): Target[] {
  const out: Target[] = [];
  const echoP99 = med(p99(raw.floor?.echo.latency, 65_536));
  for (const [id, path] of [["direct", raw.direct], ["relayed", raw.relayed]] as const) {
    const mid = med(p50(path?.latency, 100));
    out.push(target(
      `${id}.p99.100`,
      `${id} p99 100 B ≤ 3 × its p50`,
      "ms",
      med(p99(path?.latency, 100)),
      "<=",
      mid === null ? null : 3 * mid,
    ));
    const mid64 = med(p50(path?.latency, 65_536));
    const limit = mid64 === null || echoP99 === null ? null : Math.max(3 * mid64, 3 * echoP99);
    out.push(target(
      `${id}.p99.65536`,
      `${id} p99 64 KiB ≤ max(3 × its p50, 3 × echo p99)`,
      "ms",
      med(p99(path?.latency, 65_536)),
      "<=",
      limit,
      limit === null
        ? `needs ${id} and the floor section's echo p99`
        : `max(3 × ${formatNumber(mid64)}, 3 × ${formatNumber(echoP99)}) ms`,
    ));
  }
  return out;
}

/** The relay memory targets: per idle node < 16 KiB on TCP, < 40 KiB on TLS, at 1,000 and 10,000. */
function memoryTargets(raw: RawResults): Target[] {
  const out: Target[] = [];
  for (
    const [kind, load, limit] of [["", raw.relayLoad, 16], ["TLS ", raw.relayLoadTls, 40]] as const
  ) {
    for (const count of [1000, 10_000]) {
      const bytes = load?.memory[count];
      const which = count === 1000 ? "a full or quick run" : "a full run";
      out.push(target(
        `relay.memory.${kind === "" ? "" : "tls."}${count}`,
        `relay memory per idle ${kind}node at ${count.toLocaleString("en")} < ${limit} KiB`,
        "KiB",
        bytes === undefined ? null : bytes / 1024,
        "<",
        limit,
        bytes === undefined
          ? `${count.toLocaleString("en")} nodes are measured by ${which} only`
          : "",
      ));
    }
  }
  return out;
}

/** One check: a bound between figures of this run, or against the recorded run. Reported only. */
export interface Check {
  id: string;
  label: string;
  unit: Unit;
  value: number | null;
  limit: number | null;
  /** Null when it could not be judged (a figure it needs was not measured). */
  pass: boolean | null;
  /** How the limit was computed, with the numbers; or why it was not judged. */
  detail: string;
}

/** The figures of the recorded run (`bench/results/latest.json`) that checks compare with. */
export interface RecordedRun {
  /** Where it was read from. */
  path: string;
  /** When it was recorded. */
  date: string;
  /** Its mode (full, quick). */
  mode: string;
  /** Figure id → median. */
  medians: Record<string, number>;
}

/** The medians of a bench JSON report, or null when `json` is not one. */
export function recordedRun(path: string, json: string): RecordedRun | null {
  try {
    const report = JSON.parse(json) as {
      machine?: { date?: string };
      config?: { mode?: string };
      figures?: { id: string; value: { median: number } | null }[];
    };
    const medians: Record<string, number> = {};
    for (const f of report.figures ?? []) {
      if (typeof f.value?.median === "number") medians[f.id] = f.value.median;
    }
    return {
      path,
      date: report.machine?.date ?? "unknown date",
      mode: report.config?.mode ?? "unknown mode",
      medians,
    };
  } catch {
    return null;
  }
}

/** The slack of the TLS bound: 10%. */
export const TLS_BOUND_SLACK = 1.1;
/** The largest change of a TLS-off figure from the recorded run: 5%. */
export const RECORDED_SLACK = 0.05;

/**
 * The checks of the TLS issue, per size: TLS relayed p50 ≤ (relayed p50 +
 * (TLS echo p50 − echo p50)) × 1.1, the same with the hop floors (a relayed
 * call crosses two TLS links), and, with TLS off, relayed p50 within 5% of
 * the recorded run (slower by at most 5%).
 */
export function buildChecks(
  raw: RawResults,
  recorded: RecordedRun | null,
  mode = "full",
): Check[] {
  const out: Check[] = [];
  const bounds = [
    ["echo", "echo", raw.floor?.echo, raw.floorTls?.echo],
    ["hop", "hop", raw.floor?.hop, raw.floorTls?.hop],
  ] as const;
  for (const [id, name, tcp, tls] of bounds) {
    for (const size of SIZES) {
      const relayed = med(p50(raw.relayed?.latency, size));
      const tlsFloor = med(p50(tls?.latency, size));
      const tcpFloor = med(p50(tcp?.latency, size));
      const value = med(p50(raw.relayedTls?.latency, size));
      const missing = [
        ["relayed", relayed],
        [`floor (${name})`, tcpFloor],
        [`floor-tls (TLS ${name})`, tlsFloor],
        ["relayed-tls", value],
      ].filter(([, v]) => v === null).map(([section]) => section);
      const limit = missing.length > 0
        ? null
        : TLS_BOUND_SLACK * (relayed! + (tlsFloor! - tcpFloor!));
      out.push({
        id: `tls.bound.${id}.${size}`,
        label: `TLS relayed p50 ${
          sizeLabel(size)
        } ≤ (relayed + (TLS ${name} − ${name})) × ${TLS_BOUND_SLACK}`,
        unit: "ms",
        value,
        limit,
        pass: limit === null || value === null ? null : value <= limit,
        detail: missing.length > 0
          ? `needs ${missing.join(", ")}`
          : `(${formatNumber(relayed)} + (${formatNumber(tlsFloor)} − ${
            formatNumber(tcpFloor)
          })) × ${TLS_BOUND_SLACK} = ${formatNumber(limit)} ms`,
      });
    }
  }
  for (const size of SIZES) {
    const id = `relayed.p50.${size}`;
    const value = med(p50(raw.relayed?.latency, size));
    const before = recorded?.medians[id] ?? null;
    const limit = before === null ? null : before * (1 + RECORDED_SLACK);
    let detail: string;
    if (value === null) detail = "needs relayed";
    else if (recorded === null) detail = "no recorded run (bench/results/latest.json)";
    else if (before === null) detail = `the recorded run has no ${id}`;
    else if (recorded.mode !== mode) {
      detail = `the recorded run is a ${recorded.mode} run; compare a ${recorded.mode} run`;
    } else {
      const change = (value / before - 1) * 100;
      detail = `recorded ${formatNumber(before)} ms (${recorded.mode}, ${
        recorded.date.slice(0, 10)
      }); ${change >= 0 ? "+" : ""}${change.toFixed(1)}%`;
    }
    out.push({
      id: `recorded.relayed.p50.${size}`,
      label: `relayed p50 ${sizeLabel(size)} (TLS off) ≤ recorded run + ${RECORDED_SLACK * 100}%`,
      unit: "ms",
      value,
      limit,
      pass: value === null || limit === null || recorded?.mode !== mode ? null : value <= limit,
      detail,
    });
  }
  return out;
}

/** The checks as text. */
export function formatChecks(checks: Check[]): string {
  const rows = [["check", "value", "limit", "result", "how"]];
  for (const c of checks) {
    rows.push([
      c.label,
      `${formatNumber(c.value)} ${c.unit}`,
      `<= ${formatNumber(c.limit)}`,
      c.pass === null ? "skip" : c.pass ? "PASS" : "FAIL",
      c.detail,
    ]);
  }
  return table(rows);
}

/** A number with 3 significant digits (integers above 1000 unchanged). */
export function formatNumber(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return "—";
  if (Math.abs(value) >= 1000) return Math.round(value).toLocaleString("en");
  if (value === 0) return "0";
  return value.toPrecision(3);
}

function formatRatio(value: number | null): string {
  return value === null ? "—" : `${value.toFixed(2)}×`;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => [...r[c]!].length)));
  const line = (row: string[]) =>
    row.map((cell, c) => c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!)).join("  ");
  const rule = widths.map((w) => "-".repeat(w)).join("  ");
  return [line(rows[0]!), rule, ...rows.slice(1).map(line)].join("\n");
}

/** The figures table as text. */
export function formatFigures(figures: Figure[]): string {
  const rows = [[
    "figure",
    "unit",
    "median",
    "min–max",
    "floor",
    "×floor",
    "NATS",
    "×NATS",
    "HTTP",
    "×HTTP",
  ]];
  const mark = (f: Figure, column: Figure["likeForLike"], value: number | null) =>
    `${formatRatio(value)}${f.likeForLike === column && value !== null ? " *" : "  "}`;
  for (const f of figures) {
    rows.push([
      f.label,
      f.unit,
      formatNumber(f.value?.median),
      f.value ? `${formatNumber(f.value.min)}–${formatNumber(f.value.max)}` : "—",
      `${formatNumber(f.floor)}${f.floorComputed ? " computed" : ""}`,
      formatRatio(f.vsFloor),
      formatNumber(f.nats),
      mark(f, "nats", f.vsNats),
      formatNumber(f.http),
      mark(f, "http", f.vsHttp),
    ]);
  }
  return table(rows);
}

/** The targets table as text. */
export function formatTargets(targets: Target[]): string {
  const rows = [["target", "value", "limit", "result"]];
  for (const t of targets) {
    rows.push([
      t.label,
      `${formatNumber(t.value)} ${t.unit}`,
      `${t.comparison} ${formatNumber(t.limit)}`,
      t.pass === null ? `skip${t.note ? ` (${t.note})` : ""}` : t.pass ? "PASS" : "FAIL",
    ]);
  }
  return table(rows);
}
