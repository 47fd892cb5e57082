/**
 * The NATS comparison: request-reply through a local `nats-server`
 * (Debian's package) with the npm `nats` client (in `worker_nats.ts`),
 * same payloads and in-flight counts as peerbase, and the server's memory
 * per idle connection and CPU under idle connections.
 *
 * Without `nats-server` or the cached npm module (`deno task bench` caches
 * it through `bench/deno.lock` before entering the namespace: there is no
 * registry inside it), {@linkcode runNats} says why; `main.ts` then fails
 * the run unless `--skip-nats` was given.
 *
 * @module
 */

import { LOCK_ARGS, NATS_MODULE } from "./deps.ts";
import type { PathResult } from "./measure.ts";
import type { Context } from "./plan.ts";
import { freePort, type Proc, sleep, spawnCommand, spawnWorker, stopAll } from "./proc.ts";
import { type IdleLoadResult, runIdleLoad } from "./relay_load.ts";

/** The NATS figures, or why there are none. */
export type NatsResult =
  | { skipped: false; version: string; path: PathResult | null; idle: IdleLoadResult | null }
  | { skipped: true; reason: string };

/** Path and version of `nats-server`, or null when it is missing. */
export async function findNatsServer(): Promise<{ path: string; version: string } | null> {
  for (const path of ["nats-server", "/usr/sbin/nats-server", "/usr/bin/nats-server"]) {
    try {
      const out = await new Deno.Command(path, { args: ["--version"], stderr: "null" }).output();
      if (out.success) return { path, version: new TextDecoder().decode(out.stdout).trim() };
    } catch {
      // Try the next.
    }
  }
  return null;
}

/** How to cache the npm module, outside the namespace. */
export const NATS_CACHE_COMMAND = "deno run --lock=bench/deno.lock --frozen bench/deps.ts";

/**
 * Why the npm `nats` module cannot be loaded without a registry (as inside
 * the namespace), or null when it can: loads it the way the workers do, with
 * the bench lock and `--cached-only`.
 */
export async function natsModuleMissing(): Promise<string | null> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...LOCK_ARGS, "--cached-only", new URL("./deps.ts", import.meta.url).pathname],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  if (out.success) return null;
  // deno-lint-ignore no-control-regex
  const plain = new TextDecoder().decode(out.stderr).replace(/\x1b\[[0-9;]*m/g, "");
  const error = (plain.split("\n").find((line) => line.startsWith("error:")) ?? plain.trim())
    .replace(/^error: (Uncaught \(in promise\) )?/, "");
  return `${NATS_MODULE} cannot be loaded from the cache with bench/deno.lock (${
    error.slice(0, 300)
  }): run \`${NATS_CACHE_COMMAND}\` outside the namespace (\`deno task bench\` does)`;
}

/** A plain nats-server (no JetStream) on a free port, on the server core; resolves once it accepts. */
export async function startNatsServer(ctx: Context, binary: string) {
  const port = freePort();
  const config = await Deno.makeTempFile({ prefix: "peerbase-bench-nats-", suffix: ".conf" });
  await Deno.writeTextFile(
    config,
    `listen: "127.0.0.1:${port}"\nmax_payload: 8388608\nmax_connections: 100000\n`,
  );
  const proc = spawnCommand(ctx.placement, binary, ["-c", config], {
    side: "server",
    label: "nats-server",
  });
  try {
    const end = Date.now() + 10_000;
    for (;;) {
      try {
        (await Deno.connect({ hostname: "127.0.0.1", port })).close();
        break;
      } catch (error) {
        if (proc.exited || Date.now() > end) {
          throw new Error(`Cannot start nats-server: ${proc.stderr || (error as Error).message}`);
        }
        await sleep(20);
      }
    }
  } catch (error) {
    await proc.stop();
    throw error;
  } finally {
    await Deno.remove(config).catch(() => {});
  }
  return { proc, port, pid: proc.pid };
}

/**
 * A `worker_nats.ts` responder echoing `NATS_ECHO_SUBJECT` (`deps.ts`) on the
 * nats-server at `port`, on the server core; resolves once it is subscribed.
 */
export async function spawnNatsResponder(ctx: Context, port: number, label: string): Promise<Proc> {
  const responder = spawnWorker(ctx.placement, "worker_nats.ts", [
    ...["--role", "responder", "--port", String(port)],
  ], { side: "server", label });
  await responder.ready("ready");
  return responder;
}

/**
 * Why NATS cannot be measured (no `nats-server`, or npm `nats` not cached),
 * or the server binary when it can.
 */
export async function natsAvailable(): Promise<
  { binary: string; version: string } | { reason: string }
> {
  const server = await findNatsServer();
  if (!server) return { reason: "nats-server is not installed (apt-get install nats-server)" };
  const missing = await natsModuleMissing();
  return missing === null ? { binary: server.path, version: server.version } : { reason: missing };
}

/** Measures NATS, or says why not. */
export async function runNats(ctx: Context, parts: { path: boolean; idle: boolean }) {
  const available = await natsAvailable();
  if ("reason" in available) {
    return { skipped: true, reason: available.reason } satisfies NatsResult;
  }
  const server = { path: available.binary, version: available.version };
  let path: PathResult | null = null;
  if (parts.path) {
    ctx.log("nats: request-reply");
    const procs: Proc[] = [];
    try {
      const { proc, port } = await startNatsServer(ctx, server.path);
      procs.push(proc);
      procs.push(await spawnNatsResponder(ctx, port, "nats responder"));
      const client = spawnWorker(ctx.placement, "worker_nats.ts", [
        "--role",
        "client",
        "--port",
        String(port),
        "--params",
        JSON.stringify({ latency: ctx.plan.latency, throughput: ctx.plan.throughput }),
      ], { side: "client", label: "nats client" });
      procs.push(client);
      path = await client.result<PathResult>(300_000);
    } finally {
      await stopAll(procs);
    }
  }
  const idle = parts.idle
    ? await runIdleLoad(ctx, "nats", () => startNatsServer(ctx, server.path))
    : null;
  return { skipped: false, version: server.version, path, idle } satisfies NatsResult;
}
