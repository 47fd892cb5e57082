/**
 * The `paired` section's rows, sentences and like-for-like targets
 * (`paired.ts` measures): direct, relayed, HTTP and NATS timed in turn by
 * one caller, each row with its like-for-like comparison of the same rounds.
 *
 * @module
 */

import type { ThroughputResult } from "./measure.ts";
import type { PairedPath, PairedResult } from "./paired.ts";
import { INFLIGHT } from "./plan.ts";
import { type Figure, figure, formatNumber, type Target, target } from "./report.ts";
import { medianOrNull as med } from "./stats.ts";

const NAME: Record<PairedPath, string> = {
  direct: "direct",
  relayed: "relayed",
  http: "HTTP (Deno.serve + fetch, JSON)",
  nats: "NATS request-reply",
};

/**
 * The rows: per path, the 100 B p50 and calls/s at each in-flight count of
 * the interleaved rounds; direct rows carry HTTP (like for like) and NATS,
 * relayed rows NATS (like for like), all of the same rounds.
 */
export function pairedFigures(paired: PairedResult | undefined): Figure[] {
  const paths = paired?.paths ?? {};
  const out: Figure[] = [];
  const rps = (path: PairedPath, n: number) => med(paths[path]?.rps[n]);
  for (const path of ["direct", "relayed", "http", "nats"] as const) {
    const peer = path === "direct" || path === "relayed";
    const like: Figure["likeForLike"] = path === "direct"
      ? "http"
      : path === "relayed"
      ? "nats"
      : null;
    const compare = (pick: (other: PairedPath) => number | null) => ({
      nats: peer ? pick("nats") : null,
      extra: { http: path === "direct" ? pick("http") : null, likeForLike: like },
    });
    const p50 = compare((other) => med(paths[other]?.p50));
    out.push(figure(
      `paired.p50.${path}`,
      `interleaved rounds: ${NAME[path]} 100 B p50`,
      "ms",
      paths[path]?.p50,
      null,
      null,
      p50.nats,
      p50.extra,
    ));
    for (const n of INFLIGHT) {
      const at = compare((other) => rps(other, n));
      out.push(figure(
        `paired.rps.${n}.${path}`,
        `interleaved rounds: ${NAME[path]} calls/s, ${n} in flight`,
        "calls/s",
        paths[path]?.rps[n],
        null,
        null,
        at.nats,
        at.extra,
      ));
    }
  }
  return out;
}

/**
 * The like-for-like targets judged on the interleaved rounds, by the ids of
 * the single-section targets they replace: direct p50 ≤ HTTP p50, relayed
 * p50 ≤ NATS p50, and direct and relayed calls/s ≥ NATS at each in-flight
 * count. Only those whose two paths were both timed.
 */
export function pairedTargets(paired: PairedResult | undefined): Map<string, Target> {
  const paths = paired?.paths ?? {};
  const out = new Map<string, Target>();
  const add = (t: Target) => out.set(t.id, t);
  for (
    const [id, other, name] of [["direct", "http", "HTTP"], ["relayed", "nats", "NATS"]] as const
  ) {
    const [mine, theirs] = [paths[id], paths[other]];
    if (!mine || !theirs) continue;
    add(target(
      `${id}.p50.100.${other}`,
      `${id} p50 100 B ≤ ${name} p50 (like for like, interleaved rounds)`,
      "ms",
      med(mine.p50),
      "<=",
      med(theirs.p50),
    ));
  }
  const nats = paths.nats;
  for (const id of ["direct", "relayed"] as const) {
    const mine = paths[id];
    if (!mine || !nats) continue;
    for (const n of INFLIGHT) {
      add(target(
        `${id}.rps.${n}.nats`,
        `${id} calls/s at ${n} in flight ≥ NATS (interleaved rounds)`,
        "calls/s",
        med(mine.rps[n]),
        ">=",
        med(nats.rps[n]),
      ));
    }
  }
  return out;
}

/** Each round's ratio a / b, formatted, comma-separated. */
function perRound(a: readonly number[], b: readonly number[]): string {
  return a.map((v, i) => formatNumber(v / b[i]!)).join(", ");
}

/** The section as sentences: medians and each round's like-for-like ratio. */
export function formatPaired(paired: PairedResult): string {
  const { direct, relayed, http, nats } = paired.paths;
  const rounds = direct?.p50.length ?? 0;
  const lines = [
    `paired: ${rounds} interleaved rounds, one caller timing direct, relayed, HTTP${
      nats ? " and NATS" : ""
    } in turn${paired.natsUnmeasured ? ` (NATS not timed: ${paired.natsUnmeasured})` : ""}:`,
  ];
  const p50 = (path: PairedPath) => `${formatNumber(med(paired.paths[path]?.p50))} ms`;
  if (direct && http) {
    lines.push(
      `  100 B p50 direct ${p50("direct")} vs HTTP ${p50("http")}; per round direct / HTTP: ${
        perRound(direct.p50, http.p50)
      }`,
    );
  }
  if (relayed && nats) {
    lines.push(
      `  100 B p50 relayed ${p50("relayed")} vs NATS ${p50("nats")}; per round relayed / NATS: ${
        perRound(relayed.p50, nats.p50)
      }`,
    );
  }
  const rps = (r: ThroughputResult | undefined, n: number) => formatNumber(med(r?.[n]));
  for (const n of INFLIGHT) {
    lines.push(
      `  calls/s at ${n} in flight: direct ${rps(direct?.rps, n)}, relayed ${
        rps(relayed?.rps, n)
      }, HTTP ${rps(http?.rps, n)}, NATS ${rps(nats?.rps, n)}`,
    );
  }
  return lines.join("\n");
}
