/**
 * The `cluster` section's rows and sentences (`cluster.ts` measures):
 * cross-relay calls against the same run's relayed and NATS figures, and
 * what idle nodes cost clustered relays, the nats-server and a standalone
 * relay.
 *
 * @module
 */

import type { IdleProcess, IdleRun } from "./cluster.ts";
import type { PathResult } from "./measure.ts";
import { IDLE_GROUP } from "./plan.ts";
import { type Figure, figure, formatNumber, type RawResults } from "./report.ts";
import { medianOrNull as med } from "./stats.ts";

/** RSS growth per node of `process`, which holds `nodes` of them, KiB. */
function kibPerNode(process: IdleProcess, nodes: number): number {
  return (process.after - process.before) / 1024 / Math.max(1, nodes);
}

/** What an idle run cost per node and how fast it registered, null when it did not run. */
export function idleCosts(run: IdleRun | null | undefined) {
  if (!run) return null;
  const each = run.registered / run.relays.length;
  const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
  const claims = run.registered / (run.registerMs / 1000);
  return {
    /** Relay RSS growth per node, mean of the relays, KiB. */
    relayKib: mean(run.relays.map((r) => kibPerNode(r, each))),
    natsKib: run.nats ? kibPerNode(run.nats, run.registered) : null,
    /** Claims per second, all relays together and per relay. */
    claims,
    claimsPerRelay: claims / run.relays.length,
    /** Relay CPU per claim (mean of the relays) and the nats-server's, µs. */
    relayCpu: mean(run.relays.map((r) => r.cpu / Math.max(1, each) * 1e6)),
    natsCpu: run.nats ? run.nats.cpu / Math.max(1, run.registered) * 1e6 : null,
  };
}

function natsPath(raw: RawResults): PathResult | null {
  return raw.nats && !raw.nats.skipped ? raw.nats.path : null;
}

const SIZE_LABEL: Record<number, string> = { 100: "100 B", 65_536: "64 KiB" };

/**
 * The cluster rows: cross-relay latency and calls/s, each with the same
 * run's relayed (same relay) figure as its floor and NATS request-reply;
 * relay and nats-server memory per idle node, claims per second and CPU
 * per claim, with the standalone relay under the same nodes as the floor.
 */
export function clusterFigures(raw: RawResults): Figure[] {
  const cluster = raw.cluster;
  const path = cluster?.crossRelay;
  const same = raw.relayed;
  const nats = natsPath(raw);
  // The reason itself is printed under the table (`formatCluster`), and in the JSON.
  const why = cluster?.unmeasured ? " — NOT MEASURED (see below)" : "";
  const out: Figure[] = [];
  for (const size of [100, 65_536]) {
    for (const stat of ["p50", "p99"] as const) {
      out.push(figure(
        `cluster.${stat}.${size}`,
        `cross-relay (cluster) call ${SIZE_LABEL[size]} ${stat}${out.length === 0 ? why : ""}`,
        "ms",
        path?.latency[size]?.[stat],
        med(same?.latency[size]?.[stat]),
        `relayed (same relay) ${stat}, this run`,
        med(nats?.latency[size]?.[stat]),
      ));
    }
  }
  const paired = path?.paired;
  out.push(figure(
    "cluster.paired.cross",
    "cluster, interleaved rounds: cross-relay 100 B p50",
    "ms",
    paired?.cross,
    med(paired?.sameRelay),
    "same relay, interleaved",
    med(paired?.nats),
  ));
  out.push(figure(
    "cluster.paired.same",
    "cluster, interleaved rounds: same-relay (clustered relay A) 100 B p50",
    "ms",
    paired?.sameRelay,
    null,
    null,
    med(paired?.nats),
  ));
  out.push(figure(
    "cluster.paired.nats",
    "cluster, interleaved rounds: NATS request-reply 100 B p50 (cluster's nats-server)",
    "ms",
    paired?.nats,
  ));
  for (const n of [1, 64]) {
    out.push(figure(
      `cluster.rps.${n}`,
      `cross-relay (cluster) calls/s, ${n} in flight`,
      "calls/s",
      path?.throughput[n],
      med(same?.throughput[n]),
      `relayed (same relay) ${n} in flight`,
      med(nats?.throughput[n]),
    ));
  }
  const relays = raw.cluster?.clustered?.relays.length ?? 4;
  const n = (cluster?.nodesPerRelay ?? 0).toLocaleString("en");
  const [mine, alone] = [idleCosts(cluster?.clustered), idleCosts(cluster?.standalone)];
  const standalone = `standalone relay, ${n} of the same nodes`;
  const rows = [
    ["memory", `relay memory per idle node, ${relays} × ${n} (mean)`, "KiB", "relayKib"],
    ["memory.nats", `nats-server memory per idle node, ${relays} × ${n}`, "KiB", "natsKib"],
    ["claims", `claims/s per relay, ${relays} relays at once`, "claims/s", "claimsPerRelay"],
    ["claims.total", `claims/s, all ${relays} relays`, "claims/s", "claims"],
    ["cpu.claim", `relay CPU per claim (mean of ${relays})`, "µs", "relayCpu"],
    ["cpu.claim.nats", "nats-server CPU per claim", "µs", "natsCpu"],
  ] as const;
  for (const [id, label, unit, key] of rows) {
    const value = mine?.[key] ?? null;
    const floor = key === "natsKib" || key === "natsCpu"
      ? null
      : key === "claimsPerRelay"
      ? alone?.claims ?? null
      : alone?.[key] ?? null;
    out.push({
      ...figure(
        `cluster.${id}`,
        `cluster: ${label}`,
        unit,
        value === null ? [] : [value],
        floor,
        standalone,
      ),
      better: unit === "claims/s" ? "higher" : "lower",
    });
  }
  return out;
}

function jetstreamText(run: IdleRun): string {
  const js = run.jetstream;
  if (!js?.after) return "not read (/jsz did not answer)";
  const api = js.before ? (js.after.api - js.before.api) / Math.max(1, run.registered) : null;
  return `${js.after.streams} streams, ${js.after.consumers} consumers, ${js.after.messages} messages (${
    formatNumber(js.after.bytes / 1024)
  } KiB); ${formatNumber(api)} JetStream API requests per claim`;
}

/** The cluster section in sentences: the comparisons, and what the idle runs cost. */
export function formatCluster(raw: RawResults): string {
  const cluster = raw.cluster!;
  if (cluster.unmeasured) return `cluster: NOT MEASURED: ${cluster.unmeasured}`;
  const path = cluster.crossRelay!;
  const nats = natsPath(raw);
  const vs = (value: number | null, other: number | null, name: string) =>
    `${formatNumber(other)} ${name}${
      value !== null && other ? ` (${(value / other).toFixed(2)}×)` : ""
    }`;
  const lines = [
    `cluster (${cluster.version}): caller on relay A, serving node on relay B, maxRemotes 1 (the caller sees it through ${path.callerRelays.join()}, it answers through ${path.targetRelay}):`,
  ];
  const p50 = med(path.latency[100]?.p50);
  lines.push(
    `  100 B p50 ${formatNumber(p50)} ms vs ${
      vs(p50, med(raw.relayed?.latency[100]?.p50), "ms relayed")
    }, ${vs(p50, med(nats?.latency[100]?.p50), "ms NATS")}`,
  );
  if (path.paired) {
    const { cross, sameRelay, nats: viaNats } = path.paired;
    lines.push(
      `  interleaved rounds (${cross.length}), 100 B p50: cross-relay ${
        formatNumber(med(cross))
      } ms, same relay ${formatNumber(med(sameRelay))} ms, NATS ${
        formatNumber(med(viaNats))
      } ms; per round cross − (same + NATS): ${
        cross.map((c, i) => formatNumber(c - sameRelay[i]! - viaNats[i]!)).join(", ")
      } ms`,
    );
  }
  for (const n of [1, 64]) {
    const rps = med(path.throughput[n]);
    lines.push(
      `  calls/s at ${n} in flight ${formatNumber(rps)} vs ${
        vs(rps, med(raw.relayed?.throughput[n]), "relayed")
      }, ${vs(rps, med(nats?.throughput[n]), "NATS")}`,
    );
  }
  const [mine, alone] = [idleCosts(cluster.clustered), idleCosts(cluster.standalone)];
  const run = cluster.clustered!, single = cluster.standalone!;
  const kib = (v: number | null | undefined) => `${formatNumber(v)} KiB`;
  const relayLoad = raw.relayLoad?.memory[cluster.nodesPerRelay];
  lines.push(
    `  ${run.relays.length} relays × ${cluster.nodesPerRelay} idle nodes (networks of ${IDLE_GROUP} spread over the relays), ${run.registered}/${run.nodes} registered in ${
      formatNumber(run.registerMs / 1000)
    } s: ${formatNumber(mine!.claims)} claims/s (${
      formatNumber(mine!.claimsPerRelay)
    } per relay); per node: relay ${kib(mine!.relayKib)} (relays: ${
      run.relays.map((r) => formatNumber(kibPerNode(r, run.registered / run.relays.length))).join(
        ", ",
      )
    }), nats-server ${kib(mine!.natsKib)}; CPU per claim: relay ${
      formatNumber(mine!.relayCpu)
    } µs, nats-server ${formatNumber(mine!.natsCpu)} µs`,
    `  nats-server JetStream after the nodes: ${jetstreamText(run)}`,
    `  standalone relay × ${cluster.nodesPerRelay} of the same nodes, ${single.registered}/${single.nodes} registered in ${
      formatNumber(single.registerMs / 1000)
    } s: ${formatNumber(alone!.claims)} claims/s; per node ${kib(alone!.relayKib)}${
      relayLoad === undefined ? "" : ` (the relay section's: ${kib(relayLoad / 1024)})`
    }; CPU per claim ${formatNumber(alone!.relayCpu)} µs`,
  );
  return lines.join("\n");
}
