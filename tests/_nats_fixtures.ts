/**
 * A real nats-server cluster for tests: `servers` processes (n1, n2, …) on
 * 127.0.0.1, each with its own client, route and monitoring port, a full
 * mesh of routes and, by default, JetStream with its own store directory.
 *
 * ```ts ignore
 * await using cluster = await startNatsCluster();
 * cluster.urls; // ["nats://127.0.0.1:<port>", …], one per server
 * await cluster.kill(1); // SIGKILL n2, for fault tests
 * await cluster.restart(1); // n2 again, same ports and store
 * ```
 *
 * Ready means, for every server (polled until {@linkcode NatsClusterOptions.timeout}):
 * its client port accepts a connection; its monitoring endpoint `/healthz`
 * answers 200 (in nats-server 2.9 that checks the client and route
 * listeners and, with JetStream, contact with a JetStream meta leader); `/routez`
 * counts a route to every other server; and with JetStream, `/jsz` names the
 * meta leader and a meta group of `servers` peers. `/healthz?js-enabled-only=true`
 * is not enough: it answers 200 before any meta leader is elected.
 *
 * Server stderr (nats-server logs there) is drained into a bounded tail,
 * quoted when a server fails to start. Closing SIGKILLs every server, waits
 * for each exit and removes the temporary directory (configs and stores).
 *
 * The client library (npm `nats`) never runs in the test process: see
 * `tests/fixtures/nats_kv.ts`.
 *
 * @module
 */

import { findNatsServer } from "../bench/nats.ts";
import { deadline, sleep } from "./_fixtures.ts";

export { findNatsServer };

/** How long a cluster (or a restarted server) may take to become ready, in ms. */
export const DEFAULT_NATS_READY_TIMEOUT = 20_000;

/** How much of a server's stderr is kept for error messages, in characters. */
const STDERR_TAIL = 4_000;

/** Cap on one monitoring request, in ms. */
const HTTP_TIMEOUT = 1_000;

/** Options of {@linkcode startNatsCluster}. */
export interface NatsClusterOptions {
  /** Number of servers. @default 3 */
  servers?: number;
  /** Enable JetStream (each server with its own store directory). @default true */
  jetstream?: boolean;
  /** Deadline for every server to be ready, in ms. @default DEFAULT_NATS_READY_TIMEOUT */
  timeout?: number;
  /**
   * More configuration appended to every server's file, e.g. `max_payload: 8MB`
   * or an `authorization { token: "…" }` block. @default ""
   */
  config?: string;
}

/** One server of a {@linkcode NatsCluster}. */
export interface NatsServer {
  /** `server_name`: n1, n2, … */
  readonly name: string;
  /** `nats://127.0.0.1:<clientPort>`. */
  readonly url: string;
  /** Port for clients. */
  readonly clientPort: number;
  /** Port for routes from the other servers. */
  readonly routePort: number;
  /** HTTP monitoring port (`/healthz`, `/jsz`, `/routez`, …). */
  readonly monitorPort: number;
  /** Path of its configuration file. */
  readonly config: string;
}

/** A running nats-server process with a bounded stderr tail. */
class ServerProcess {
  readonly child: Deno.ChildProcess;
  readonly status: Promise<Deno.CommandStatus>;
  readonly drained: Promise<void>;
  exited = false;
  tail = "";

  constructor(binary: string, config: string) {
    this.child = new Deno.Command(binary, {
      args: ["-c", config],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    this.status = this.child.status.then((status) => {
      this.exited = true;
      return status;
    });
    this.drained = this.#drain();
  }

  async #drain(): Promise<void> {
    const decoder = new TextDecoder();
    for await (const chunk of this.child.stderr) {
      this.tail = (this.tail + decoder.decode(chunk, { stream: true })).slice(-STDERR_TAIL);
    }
  }

  /** SIGKILLs the process (if alive) and waits for its exit and its stderr. */
  async kill(): Promise<void> {
    if (!this.exited) {
      try {
        this.child.kill("SIGKILL");
      } catch {
        // Exited meanwhile.
      }
    }
    await deadline(this.status, "nats-server to exit after SIGKILL");
    await deadline(this.drained, "nats-server stderr to close");
  }
}

/** A cluster started by {@linkcode startNatsCluster}. Dispose of it to stop it. */
export class NatsCluster implements AsyncDisposable {
  /** Client URLs, `nats://127.0.0.1:<port>`, one per server in order. */
  readonly urls: readonly string[];
  /** The servers, n1 first. */
  readonly servers: readonly NatsServer[];
  /** Temporary directory holding configs and stores (gone after close). */
  readonly dir: string;
  /** True when JetStream is enabled. */
  readonly jetstream: boolean;
  readonly #binary: string;
  readonly #procs: (ServerProcess | null)[];
  #closing: Promise<void> | null = null;

  /** Use {@linkcode startNatsCluster}. */
  constructor(binary: string, dir: string, servers: NatsServer[], jetstream: boolean) {
    this.#binary = binary;
    this.dir = dir;
    this.servers = servers;
    this.urls = servers.map((server) => server.url);
    this.jetstream = jetstream;
    this.#procs = servers.map(() => null);
  }

  /** Process id of server `i`, or null when it is not running. */
  pid(i: number): number | null {
    const proc = this.#procs[this.#index(i)];
    return proc && !proc.exited ? proc.child.pid : null;
  }

  /** The last few KB of server `i`'s log (stderr). */
  log(i: number): string {
    return this.#procs[this.#index(i)]?.tail ?? "";
  }

  /** SIGKILLs server `i` (0-based) and waits for its exit. */
  async kill(i: number): Promise<void> {
    await this.#procs[this.#index(i)]?.kill();
  }

  /**
   * Starts server `i` again (after {@linkcode kill}) with the same ports and
   * store, and waits until it is ready as at start.
   */
  async restart(i: number, timeout: number = DEFAULT_NATS_READY_TIMEOUT): Promise<void> {
    const at = this.#index(i);
    if (this.#closing) throw new Error("Cannot restart a NATS server: the cluster is closed");
    await this.#procs[at]?.kill();
    this.#launch(at);
    await this.#ready([at], Date.now() + timeout, timeout);
  }

  /** Launches every server and waits until all are ready; used by {@linkcode startNatsCluster}. */
  async start(timeout: number): Promise<void> {
    for (let at = 0; at < this.servers.length; at++) this.#launch(at);
    await this.#ready(this.servers.map((_, at) => at), Date.now() + timeout, timeout);
  }

  /** SIGKILLs every server, waits for the exits and removes {@linkcode dir}. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await Promise.all(this.#procs.map((proc) => proc?.kill()));
      await Deno.remove(this.dir, { recursive: true }).catch((error) => {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
      });
    })();
    return this.#closing;
  }

  /** Same as {@linkcode close}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #index(i: number): number {
    if (!Number.isInteger(i) || i < 0 || i >= this.servers.length) {
      throw new RangeError(`Cannot pick NATS server ${i}: the cluster has ${this.servers.length}`);
    }
    return i;
  }

  #launch(at: number): void {
    this.#procs[at] = new ServerProcess(this.#binary, this.servers[at]!.config);
  }

  async #ready(indexes: number[], end: number, timeout: number): Promise<void> {
    const pending = new Set(indexes);
    const why = new Map<number, string>();
    while (pending.size > 0) {
      for (const at of [...pending]) {
        const proc = this.#procs[at]!;
        // Read once: a server that exits while #problem probes it is judged on the next pass,
        // by its exit code, not by the refused port the probe saw.
        const exited = proc.exited;
        const problem = exited
          ? `it exited with code ${(await proc.status).code}`
          : await this.#problem(at);
        if (problem === null) pending.delete(at);
        else why.set(at, problem);
        if (exited || (problem !== null && Date.now() > end)) {
          await deadline(proc.drained, "nats-server stderr to close").catch(() => {});
          const server = this.servers[at]!;
          // One that exited during this pass's probe is named by its exit code, here too.
          const why = exited || !proc.exited
            ? exited ? problem : `not ready after ${timeout} ms (${problem})`
            : `it exited with code ${(await proc.status).code}`;
          throw new Error(
            `Cannot start NATS server ${server.name} (${server.url}): ${why}; stderr tail: ${
              proc.tail.trim().slice(-1500) || "(empty)"
            }`,
          );
        }
      }
      if (pending.size > 0) await sleep(50);
    }
  }

  /** Why server `at` is not ready yet, or null when it is. */
  async #problem(at: number): Promise<string | null> {
    const server = this.servers[at]!;
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port: server.clientPort })).close();
    } catch (error) {
      return `client port ${server.clientPort} refuses: ${(error as Error).message}`;
    }
    const health = await monitor(server.monitorPort, "/healthz");
    if (health.status !== 200) return `/healthz: ${health.status} ${health.text}`;
    const peers = this.servers.length - 1;
    const routes = Number((await monitor(server.monitorPort, "/routez")).json?.num_routes ?? 0);
    if (routes < peers) return `/routez: ${routes} of ${peers} routes`;
    if (!this.jetstream) return null;
    const meta = (await monitor(server.monitorPort, "/jsz")).json?.meta_cluster as
      | { leader?: string; cluster_size?: number }
      | undefined;
    if (peers > 0 && !meta?.leader) return "/jsz: no JetStream meta leader yet";
    if (peers > 0 && meta?.cluster_size !== this.servers.length) {
      return `/jsz: meta group of ${meta?.cluster_size} servers`;
    }
    return null;
  }
}

/** The answer of one monitoring request (status 0 when it failed). */
interface MonitorAnswer {
  ok: boolean;
  status: number;
  text: string;
  json: Record<string, unknown> | null;
}

/** GET `path` from the monitoring port, capped at {@linkcode HTTP_TIMEOUT}. */
async function monitor(port: number, path: string): Promise<MonitorAnswer> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), HTTP_TIMEOUT);
  try {
    const response = await fetch(`http://127.0.0.1:${port}${path}`, {
      signal: controller.signal,
    });
    const text = await response.text();
    let json: Record<string, unknown> | null = null;
    try {
      json = JSON.parse(text);
    } catch {
      // Not JSON.
    }
    return { ok: response.ok, status: response.status, text: text.trim().slice(0, 300), json };
  } catch (error) {
    return { ok: false, status: 0, text: (error as Error).message, json: null };
  } finally {
    clearTimeout(timer);
  }
}

/** `count` distinct ports that were free on 127.0.0.1 a moment ago. */
function freePorts(count: number): number[] {
  const ports = new Set<number>();
  while (ports.size < count) {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    ports.add(listener.addr.port);
    listener.close();
  }
  return [...ports];
}

/** The configuration file of server `at` of `servers`. */
function configText(
  at: number,
  servers: NatsServer[],
  dir: string,
  options: NatsClusterOptions,
): string {
  const server = servers[at]!;
  const lines = [
    `server_name: ${server.name}`,
    `listen: "127.0.0.1:${server.clientPort}"`,
    `http: "127.0.0.1:${server.monitorPort}"`,
  ];
  if (options.jetstream ?? true) lines.push(`jetstream { store_dir: "${dir}/${server.name}" }`);
  if (servers.length > 1) {
    const routes = servers.filter((_, j) => j !== at)
      .map((other) => `"nats-route://127.0.0.1:${other.routePort}"`);
    lines.push(
      "cluster {",
      "  name: peerbase-test",
      `  listen: "127.0.0.1:${server.routePort}"`,
      `  routes: [${routes.join(", ")}]`,
      "}",
    );
  }
  if (options.config) lines.push(options.config);
  return lines.join("\n") + "\n";
}

/**
 * Starts a nats-server cluster on 127.0.0.1 and waits until it is ready (see
 * the module doc). Throws, having stopped everything, when nats-server is
 * missing or a server is not ready in time (naming it, with its stderr tail).
 */
export async function startNatsCluster(options: NatsClusterOptions = {}): Promise<NatsCluster> {
  const count = options.servers ?? 3;
  const jetstream = options.jetstream ?? true;
  if (!Number.isInteger(count) || count < 1) {
    throw new RangeError(`Cannot start a NATS cluster of ${count} servers: give 1 or more`);
  }
  const found = await findNatsServer();
  if (found === null) {
    throw new Error(
      "Cannot start a NATS cluster: nats-server is missing (apt-get install nats-server)",
    );
  }
  const dir = await Deno.makeTempDir({ prefix: "peerbase-nats-" });
  const ports = freePorts(3 * count);
  const servers: NatsServer[] = Array.from({ length: count }, (_, at) => ({
    name: `n${at + 1}`,
    url: `nats://127.0.0.1:${ports[3 * at]}`,
    clientPort: ports[3 * at]!,
    routePort: ports[3 * at + 1]!,
    monitorPort: ports[3 * at + 2]!,
    config: `${dir}/n${at + 1}.conf`,
  }));
  const cluster = new NatsCluster(found.path, dir, servers, jetstream);
  try {
    for (let at = 0; at < count; at++) {
      await Deno.writeTextFile(servers[at]!.config, configText(at, servers, dir, options));
    }
    await cluster.start(options.timeout ?? DEFAULT_NATS_READY_TIMEOUT);
  } catch (error) {
    await cluster.close();
    throw error;
  }
  return cluster;
}
