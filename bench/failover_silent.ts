/**
 * Silent relay loss (section `failover-silent`): a relay whose host
 * vanishes sends no FIN. Caller and target sit on two relays; while calls
 * stream, every packet to and from the relay carrying them is dropped with
 * an nft table of this run's own, inside the bench's network namespace,
 * and the time to the next call answered through the other relay is taken.
 * Without a usable `nft`, no run is made and the result says why.
 *
 * @module
 */

import { callerNode, spawnNode, spawnRelay, until } from "./peerbase.ts";
import type { Context } from "./plan.ts";
import { type Proc, runClient, sleep, stopAll } from "./proc.ts";
import { runCommand } from "../tools/command.ts";

// ---- Caller side (inside worker_client.ts) ----

/** Parameters of {@linkcode callerSilentFailover}. */
export interface SilentFailoverParams {
  network: string;
  target: string;
  /** The two relays' `host:port`, on this namespace's loopback. */
  relays: string[];
  /** How long the stream of calls runs before the drop, ms. */
  leadMs: number;
}

/** Result of one silent-loss run. */
export interface SilentLossRun {
  /**
   * From the drop of every packet to and from the relay carrying the calls
   * (no FIN, no RST) to the end of the next call answered through the other
   * relay, ms.
   */
  ms: number;
  /** The relay whose packets were dropped. */
  dropped: string;
  /** Calls that failed during the switch (none is expected: the call in flight is retried). */
  failed: number;
}

/** The nft table a silent-loss run adds for `port`, removed at the end of the run. */
export function dropTable(port: number): string {
  return `peerbase_bench_silent_${port}`;
}

/**
 * Drops every TCP packet to or from `port` in this network namespace
 * (a table of its own, so no other rule is touched); resolves with the
 * function that deletes that table again.
 */
export async function dropPort(port: number): Promise<() => Promise<void>> {
  const table = dropTable(port);
  const rule = `tcp dport ${port} drop; tcp sport ${port} drop;`;
  await runCommand(
    "nft",
    ["-f", "-"],
    `table inet ${table} {
  chain input { type filter hook input priority 0; ${rule} }
  chain output { type filter hook output priority 0; ${rule} }
}
`,
  );
  return () => runCommand("nft", ["delete", "table", "inet", table]);
}

/**
 * Streams calls (one at a time, `whoami`, which answers with the relay the
 * call came through) to a target registered at two relays, drops every
 * packet of the relay carrying them with nft (no FIN: the relay's host
 * seems to vanish), and times until a call is answered through the other
 * relay. The node keeps its default options. The rule is removed before
 * this returns, whatever happens.
 */
export async function callerSilentFailover(params: SilentFailoverParams): Promise<SilentLossRun> {
  await using node = callerNode(params.network, params.relays);
  await node.start();
  await until(
    () =>
      node.peers.some((p) => p.name === params.target && p.relays.length === params.relays.length),
    `peer ${params.target} on every relay`,
  );
  const where = async () =>
    await node.command("whoami", { target: params.target, raiseErrors: true, timeout: 10_000 });
  let carrier = await where();
  if (typeof carrier !== "string" || !params.relays.includes(carrier)) {
    throw new Error(`The first call did not come through a relay: ${carrier}`);
  }
  const drop = { at: Infinity, victim: "", undo: null as (() => Promise<void>) | null };
  let recovered = Infinity;
  let failed = 0;
  let stop = false;
  const stream = (async () => {
    const end = Date.now() + params.leadMs + 20_000;
    while (!stop && Date.now() < end) {
      try {
        const relay = await where();
        if (!Number.isFinite(drop.at)) carrier = relay;
        else if (relay !== drop.victim) {
          recovered = performance.now();
          stop = true;
        }
      } catch {
        failed++;
        await sleep(1);
      }
    }
  })();
  try {
    await sleep(params.leadMs);
    drop.victim = carrier as string;
    drop.undo = await dropPort(Number(drop.victim.slice(drop.victim.lastIndexOf(":") + 1)));
    drop.at = performance.now();
    await stream;
    if (recovered === Infinity) {
      throw new Error("No call was answered through the other relay within 20 s of the drop");
    }
    return { ms: recovered - drop.at, dropped: drop.victim, failed };
  } finally {
    stop = true;
    await stream;
    await drop.undo?.();
  }
}

// ---- Bench side ----

/** The silent-loss runs, or why they could not be made. */
export interface SilentLossResult {
  runs: SilentLossRun[];
  /** Null when measured; else why not (such as nft missing), said in the report's row. */
  unmeasured: string | null;
}

/** Why nft cannot drop packets here, or null when it can. */
export async function nftProblem(): Promise<string | null> {
  try {
    const out = await new Deno.Command("nft", {
      args: ["list", "tables"],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).output();
    if (out.success) return null;
    return `nft cannot program this namespace's firewall: ${
      new TextDecoder().decode(out.stderr).trim()
    }`;
  } catch {
    return "nft is not installed (apt-get install nftables)";
  }
}

/**
 * Silent relay loss runs: ms from dropping the carrying relay's packets
 * (nft, inside the bench's own namespace) to the next call answered
 * through the other relay. Without a usable nft, no run, and why.
 */
export async function runSilentFailover(ctx: Context): Promise<SilentLossResult> {
  const problem = await nftProblem();
  if (problem !== null) return { runs: [], unmeasured: problem };
  const runs: SilentLossRun[] = [];
  for (let run = 0; run < ctx.plan.silentFailoverRuns; run++) {
    const net = `bench-silent-${crypto.randomUUID().slice(0, 8)}`;
    const relays: { proc: Proc; address: string }[] = [];
    let target: Proc | null = null;
    try {
      relays.push(...await Promise.all([spawnRelay(ctx), spawnRelay(ctx)]));
      target = await spawnNode(ctx, "target", net, relays.map((r) => r.address));
      runs.push(
        await runClient<SilentLossRun>(
          ctx,
          "failover-silent",
          {
            network: net,
            target: "target",
            relays: relays.map((r) => r.address),
            leadMs: ctx.plan.mode === "full" ? 600 : 300,
          } satisfies SilentFailoverParams,
          60_000,
        ),
      );
    } finally {
      await stopAll([target, ...relays.map((r) => r.proc)]);
    }
  }
  return { runs, unmeasured: null };
}
