/**
 * The latency chart: p50 by payload size for each path (peerbase direct,
 * peerbase relayed, peerbase relayed over TLS and over WebSocket, HTTP,
 * floor echo, floor hop, floor TLS hop, NATS), log-log, with the rounds'
 * min–max as error bars, and the date and machine noted.
 *
 * @module
 */

import type { LatencyResult } from "./measure.ts";
import type { Machine, Placement } from "./proc.ts";
import { summarize } from "./stats.ts";

/** One line of the chart. */
export interface Series {
  label: string;
  color: string;
  /** Dashed for floors. */
  dashed: boolean;
  latency: LatencyResult | null | undefined;
}

const WIDTH = 760;
const HEIGHT = 500;
const LEFT = 70;
const RIGHT = 190;
const TOP = 50;
const BOTTOM = 90;

function escape(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function sizeName(size: number): string {
  if (size >= 1_048_576) return `${size / 1_048_576} MiB`;
  if (size >= 1024) return `${size / 1024} KiB`;
  return `${size} B`;
}

function msName(ms: number): string {
  if (ms >= 1000) return `${ms / 1000} s`;
  if (ms >= 1) return `${ms} ms`;
  return `${Math.round(ms * 1000)} µs`;
}

/** Draws the chart as an SVG document. */
export function latencySvg(
  series: Series[],
  sizes: number[],
  machine: Machine,
  placement: Placement,
): string {
  const points = series.map((s) =>
    sizes.map((size) => {
      const summary = summarize(s.latency?.[String(size)]?.p50 ?? []);
      return summary ? { size, ...summary } : null;
    })
  );
  const values = points.flat().flatMap((p) => p ? [p.min, p.max] : []);
  const low = values.length > 0 ? Math.min(...values) : 0.01;
  const high = values.length > 0 ? Math.max(...values) : 100;
  const yMin = 10 ** Math.floor(Math.log10(low));
  const yMax = 10 ** Math.ceil(Math.log10(high));
  const xMin = Math.log10(Math.min(...sizes));
  const xMax = Math.log10(Math.max(...sizes));
  const plotW = WIDTH - LEFT - RIGHT;
  const plotH = HEIGHT - TOP - BOTTOM;
  const x = (size: number) => LEFT + ((Math.log10(size) - xMin) / (xMax - xMin || 1)) * plotW;
  const y = (ms: number) =>
    TOP + plotH -
    ((Math.log10(ms) - Math.log10(yMin)) / (Math.log10(yMax) - Math.log10(yMin) || 1)) * plotH;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${LEFT}" y="24" font-size="16" font-weight="bold">Call latency (p50) by payload size</text>`,
    `<text x="${LEFT}" y="40" fill="#555">request and echoed answer, one call in flight; bars: min–max of rounds; log scales</text>`,
  ];
  for (let decade = yMin; decade <= yMax * 1.0001; decade *= 10) {
    const yy = y(decade).toFixed(1);
    out.push(
      `<line x1="${LEFT}" x2="${LEFT + plotW}" y1="${yy}" y2="${yy}" stroke="#ddd"/>`,
      `<text x="${LEFT - 6}" y="${yy}" text-anchor="end" dominant-baseline="middle">${
        escape(msName(Number(decade.toPrecision(1))))
      }</text>`,
    );
  }
  for (const size of sizes) {
    const xx = x(size).toFixed(1);
    out.push(
      `<line x1="${xx}" x2="${xx}" y1="${TOP}" y2="${TOP + plotH}" stroke="#eee"/>`,
      `<text x="${xx}" y="${TOP + plotH + 16}" text-anchor="middle">${sizeName(size)}</text>`,
    );
  }
  out.push(
    `<rect x="${LEFT}" y="${TOP}" width="${plotW}" height="${plotH}" fill="none" stroke="#888"/>`,
    `<text x="${LEFT + plotW / 2}" y="${
      TOP + plotH + 34
    }" text-anchor="middle">payload size</text>`,
  );
  series.forEach((s, i) => {
    const pts = points[i]!.filter((p) => p !== null);
    const dash = s.dashed ? ` stroke-dasharray="5,4"` : "";
    if (pts.length > 1) {
      const d = pts.map((p, j) =>
        `${j ? "L" : "M"}${x(p.size).toFixed(1)},${y(p.median).toFixed(1)}`
      )
        .join(" ");
      out.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"${dash}/>`);
    }
    for (const p of pts) {
      const xx = x(p.size).toFixed(1);
      out.push(
        `<line x1="${xx}" x2="${xx}" y1="${y(p.min).toFixed(1)}" y2="${
          y(p.max).toFixed(1)
        }" stroke="${s.color}"/>`,
        `<circle cx="${xx}" cy="${y(p.median).toFixed(1)}" r="3.5" fill="${s.color}">` +
          `<title>${escape(s.label)} ${sizeName(p.size)}: ${
            p.median.toPrecision(3)
          } ms</title></circle>`,
      );
    }
    const ly = TOP + 10 + i * 20;
    const lx = LEFT + plotW + 16;
    out.push(
      `<line x1="${lx}" x2="${
        lx + 24
      }" y1="${ly}" y2="${ly}" stroke="${s.color}" stroke-width="2"${dash}/>`,
      `<text x="${lx + 30}" y="${ly}" dominant-baseline="middle">${escape(s.label)}${
        pts.length === 0 ? " (not run)" : ""
      }</text>`,
    );
  });
  const notes = [
    `${machine.date} · ${machine.cpu}, ${machine.cores} cores · Deno ${machine.deno} (V8 ${machine.v8}) · ${machine.kernel}`,
    `placement: ${placement.note}`,
    `load average (1, 5, 15 min) when the run began: ${machine.loadBefore}`,
  ];
  notes.forEach((note, i) => {
    out.push(
      `<text x="${LEFT}" y="${HEIGHT - 44 + i * 15}" fill="#555" font-size="11">${
        escape(note)
      }</text>`,
    );
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}
