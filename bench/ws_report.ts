/**
 * The `relayed-ws` section against relayed TCP of the same run (issue 13):
 * what the WebSocket path costs, as a multiple of the TCP path, per size
 * (p50) and per calls in flight, its two targets, and the comparison in
 * sentences. The `relayed-ws` rows themselves (floor: hop + 2F, and NATS)
 * are `buildFigures`'s in `report.ts`.
 *
 * @module
 */

import type { PathResult } from "./measure.ts";
import { INFLIGHT, SIZES } from "./plan.ts";
import { type Figure, figure, formatNumber, type RawResults, type Target } from "./report.ts";
import { medianOrNull as med } from "./stats.ts";

/** The most the WebSocket path may cost, × the TCP path of the same run (issue 13). */
export const WS_BOUND = 1.3;

const SIZE_LABEL: Record<number, string> = { 100: "100 B", 65_536: "64 KiB", 1_048_576: "1 MiB" };

function p50(path: PathResult | undefined, size: number): number | null {
  return med(path?.latency[String(size)]?.p50);
}

function rps(path: PathResult | undefined, n: number): number | null {
  return med(path?.throughput[n]);
}

/** `a / b`, or null when either is missing (or b is 0). */
function over(a: number | null, b: number | null): number | null {
  return a === null || b === null || b === 0 ? null : a / b;
}

/** Which of the two sections a comparison needs did not run, as `needs …`; "" when both did. */
function needs(raw: RawResults): string {
  const missing = [["relayed", raw.relayed], ["relayed-ws", raw.relayedWs]]
    .filter(([, path]) => !path).map(([name]) => name);
  return missing.length > 0 ? `needs ${missing.join(", ")}` : "";
}

/**
 * The WebSocket path's cost × the TCP path's, per figure: p50 WebSocket /
 * p50 TCP per size, and calls/s TCP / calls/s WebSocket per calls in flight
 * (above 1: WebSocket is slower, in both).
 */
export function wsCosts(raw: RawResults): {
  p50: Record<number, number | null>;
  rps: Record<number, number | null>;
} {
  const [tcp, ws] = [raw.relayed, raw.relayedWs];
  return {
    p50: Object.fromEntries(SIZES.map((size) => [size, over(p50(ws, size), p50(tcp, size))])),
    rps: Object.fromEntries(INFLIGHT.map((n) => [n, over(rps(tcp, n), rps(ws, n))])),
  };
}

/** The cost rows: WebSocket over TCP, p50 per size and calls/s per calls in flight (×, lower is better). */
export function wsFigures(raw: RawResults): Figure[] {
  const costs = wsCosts(raw);
  const one = (value: number | null) => value === null ? [] : [value];
  return [
    ...SIZES.map((size) =>
      figure(
        `relayed-ws.vs-tcp.p50.${size}`,
        `relayed WebSocket ÷ relayed TCP, ${SIZE_LABEL[size] ?? `${size} B`} p50 (same run)`,
        "×",
        one(costs.p50[size] ?? null),
      )
    ),
    ...INFLIGHT.map((n) =>
      figure(
        `relayed-ws.vs-tcp.rps.${n}`,
        `relayed TCP ÷ relayed WebSocket calls/s, ${n} in flight (same run)`,
        "×",
        one(costs.rps[n] ?? null),
      )
    ),
  ];
}

/**
 * The issue's targets: relayed-ws 100 B p50 ≤ 1.3 × relayed 100 B p50, and
 * relayed-ws calls/s at 64 in flight ≥ relayed's / 1.3, both of this run.
 */
export function wsTargets(raw: RawResults): Target[] {
  const note = needs(raw);
  const judge = (
    id: string,
    label: string,
    unit: Target["unit"],
    value: number | null,
    comparison: "<=" | ">=",
    limit: number | null,
  ): Target => ({
    id,
    label,
    unit,
    value,
    limit,
    comparison,
    pass: value === null || limit === null
      ? null
      : comparison === "<="
      ? value <= limit
      : value >= limit,
    note,
  });
  const tcpP50 = p50(raw.relayed, 100);
  const tcpRps = rps(raw.relayed, 64);
  return [
    judge(
      "ws.p50.100",
      `relayed WebSocket p50 100 B ≤ ${WS_BOUND} × relayed p50 (same run)`,
      "ms",
      p50(raw.relayedWs, 100),
      "<=",
      tcpP50 === null ? null : WS_BOUND * tcpP50,
    ),
    judge(
      "ws.rps.64",
      `relayed WebSocket calls/s at 64 in flight ≥ relayed / ${WS_BOUND} (same run)`,
      "calls/s",
      rps(raw.relayedWs, 64),
      ">=",
      tcpRps === null ? null : tcpRps / WS_BOUND,
    ),
  ];
}

/** The comparison in sentences, under the table. */
export function formatWs(raw: RawResults): string {
  const why = needs(raw);
  if (why !== "") return `relayed over WebSocket vs TCP: not compared (${why})`;
  const [tcp, ws] = [raw.relayed, raw.relayedWs];
  const costs = wsCosts(raw);
  const ratio = (value: number | null | undefined) =>
    value === null || value === undefined ? "—" : `${value.toFixed(2)}×`;
  const sizes = SIZES.map((size) =>
    `${SIZE_LABEL[size] ?? `${size} B`} ${formatNumber(p50(ws, size))} vs ${
      formatNumber(p50(tcp, size))
    } ms (${ratio(costs.p50[size])})`
  );
  const flights = INFLIGHT.map((n) =>
    `${n} in flight ${formatNumber(rps(ws, n))} vs ${formatNumber(rps(tcp, n))} (cost ${
      ratio(costs.rps[n])
    })`
  );
  return [
    `relayed over WebSocket (ws://, both nodes) vs relayed TCP, same run, WebSocket first; limit ${WS_BOUND}× at 100 B p50 and 64 in flight:`,
    `  p50: ${sizes.join("; ")}`,
    `  calls/s: ${flights.join("; ")}`,
  ].join("\n");
}
