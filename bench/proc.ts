// deno-lint-ignore-file no-console
/**
 * Child processes for the bench: every Deno child through `Deno.execPath()`,
 * pinned with `taskset` when it exists, its stdout read line by line, its
 * stderr kept for error messages, and always stopped in `finally` (stdin
 * closed, then SIGKILL after a grace period). Also `/proc` readers (RSS,
 * CPU ticks) and the worker side of the protocol (`lifeline`, `reply`).
 *
 * Protocol: a worker prints `ready <detail>` once serving and, for a
 * measuring worker, `result <json>` at the end; it exits when its stdin
 * closes or after its lifetime.
 *
 * @module
 */

import { LOCK_ARGS } from "./deps.ts";
import type { Context } from "./plan.ts";

/** Where processes run. `null` cores mean unpinned (no taskset or one core). */
export interface Placement {
  /** True when `taskset` pins the processes. */
  pinned: boolean;
  /** Core of the measuring clients (and idle clients), or null. */
  client: number | null;
  /** Core of servers, relays, hops and nats-server, or null. */
  server: number | null;
  /** Why the processes are not pinned, when they are not. */
  note: string;
}

/** Decides the placement: client on core 0, everything serving on core 1. */
export async function choosePlacement(): Promise<Placement> {
  const cores = navigator.hardwareConcurrency;
  if (cores < 2) {
    return { pinned: false, client: null, server: null, note: `only ${cores} core: unpinned` };
  }
  try {
    const probe = await new Deno.Command("taskset", {
      args: ["-c", "1", "true"],
      stdout: "null",
      stderr: "null",
    }).output();
    if (probe.success) {
      return {
        pinned: true,
        client: 0,
        server: 1,
        note: "taskset: clients on core 0; servers, relays, hops and nats-server on core 1",
      };
    }
  } catch {
    // No taskset.
  }
  return {
    pinned: false,
    client: null,
    server: null,
    note: "taskset is missing (apt-get install util-linux): processes run unpinned",
  };
}

/** Which side a process belongs to, for pinning. */
export type Side = "client" | "server";

/** A URL of a script in bench/. */
export function benchScript(name: string): string {
  return new URL(name, import.meta.url).pathname;
}

/** Options of {@linkcode spawn}. */
export interface SpawnOptions {
  /** Pinning side; omitted: unpinned. */
  side?: Side;
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Short name for error messages. */
  label?: string;
}

/** A running child process. Dispose of it (`await using`) to stop it. */
export class Proc implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  readonly label: string;
  readonly lines: string[] = [];
  #stderr = "";
  #exited = false;
  #waiters: (() => void)[] = [];
  #stdin: WritableStreamDefaultWriter<Uint8Array> | null;
  readonly status: Promise<Deno.CommandStatus>;

  constructor(child: Deno.ChildProcess, label: string) {
    this.child = child;
    this.label = label;
    this.#stdin = child.stdin.getWriter();
    this.status = child.status.then((status) => {
      this.#exited = true;
      this.#wake();
      return status;
    });
    void this.#pump(child.stdout, (line) => {
      this.lines.push(line);
      this.#wake();
    });
    void this.#pump(child.stderr, (line) => {
      this.#stderr = (this.#stderr + line + "\n").slice(-4000);
    });
  }

  /** The process id (taskset execs the program, so this is the program's pid). */
  get pid(): number {
    return this.child.pid;
  }

  /** The last few KB of stderr. */
  get stderr(): string {
    return this.#stderr;
  }

  /** True once the process has exited. */
  get exited(): boolean {
    return this.#exited;
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }

  async #pump(stream: ReadableStream<Uint8Array>, onLine: (line: string) => void): Promise<void> {
    const decoder = new TextDecoder();
    let rest = "";
    try {
      for await (const chunk of stream) {
        rest += decoder.decode(chunk, { stream: true });
        let at: number;
        while ((at = rest.indexOf("\n")) >= 0) {
          onLine(rest.slice(0, at));
          rest = rest.slice(at + 1);
        }
      }
    } catch {
      // The stream broke with the process.
    }
    if (rest !== "") onLine(rest);
  }

  /**
   * The first stdout line starting with `prefix` (without the prefix), once
   * it appears; rejects after `ms` or when the process exits first.
   */
  async line(prefix: string, ms = 15_000): Promise<string> {
    const end = Date.now() + ms;
    for (;;) {
      const found = this.lines.find((line) => line.startsWith(prefix));
      if (found !== undefined) return found.slice(prefix.length).trim();
      if (this.#exited) await sleep(50); // let stdout drain
      const again = this.lines.find((line) => line.startsWith(prefix));
      if (again !== undefined) return again.slice(prefix.length).trim();
      if (this.#exited || Date.now() >= end) {
        const why = this.#exited ? "exited" : `took over ${ms} ms`;
        throw new Error(
          `Cannot get '${prefix.trim()}' from ${this.label}: it ${why}; stderr: ${
            this.#stderr.trim().slice(-1500) || "(empty)"
          }`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, end - Date.now()));
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /**
   * As {@linkcode line}, for a process that must say it is ready: one that
   * never prints the line is stopped before the error is thrown.
   */
  async ready(prefix: string, ms?: number): Promise<string> {
    try {
      return await this.line(prefix, ms);
    } catch (error) {
      await this.stop();
      throw error;
    }
  }

  /** The JSON after `result ` on stdout. */
  async result<T>(ms: number): Promise<T> {
    return JSON.parse(await this.line("result ", ms)) as T;
  }

  /** Sends `signal` unless the process already exited. */
  kill(signal: Deno.Signal = "SIGKILL"): void {
    if (this.#exited) return;
    try {
      this.child.kill(signal);
    } catch {
      // Exited meanwhile.
    }
  }

  /** Closes stdin (the worker then exits), waits up to `grace` ms, then SIGKILLs. */
  async stop(grace = 1500): Promise<void> {
    try {
      await this.#stdin?.close();
    } catch {
      // Already gone.
    }
    this.#stdin = null;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<"late">((resolve) => timer = setTimeout(() => resolve("late"), grace));
    const outcome = await Promise.race([this.status, late]);
    clearTimeout(timer);
    if (outcome === "late") this.kill("SIGKILL");
    await this.status;
  }

  /** Stops the process (for `await using`). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}

/** Spawns `cmd args` pinned to `side`'s core when the placement pins. */
export function spawnCommand(
  placement: Placement,
  cmd: string,
  args: string[],
  options: SpawnOptions = {},
): Proc {
  const core = options.side ? placement[options.side] : null;
  const [program, programArgs] = placement.pinned && core !== null
    ? ["taskset", ["-c", String(core), cmd, ...args]]
    : [cmd, args];
  const child = new Deno.Command(program, {
    args: programArgs,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    ...(options.env ? { env: options.env } : {}),
  }).spawn();
  return new Proc(child, options.label ?? `${cmd} ${args.join(" ")}`.slice(0, 120));
}

/**
 * Spawns the bench script `script` (e.g. `worker_echo.ts`) with
 * `Deno.execPath()` and the bench lock ({@linkcode LOCK_ARGS}).
 */
export function spawnWorker(
  placement: Placement,
  script: string,
  args: string[],
  options: SpawnOptions = {},
): Proc {
  return spawnCommand(
    placement,
    Deno.execPath(),
    ["run", "-A", "--unstable-net", ...LOCK_ARGS, benchScript(script), ...args],
    { label: `${script} ${args.join(" ")}`.slice(0, 120), ...options },
  );
}

/** Spawns the measuring caller with `task` and `params`; resolves with its result. */
export async function runClient<T>(
  ctx: Context,
  task: string,
  params: unknown,
  ms = 300_000,
): Promise<T> {
  await using client = spawnWorker(
    ctx.placement,
    "worker_client.ts",
    ["--task", task, "--params", JSON.stringify(params)],
    { side: "client", env: { PEERBASE_KEY: ctx.key }, label: `client ${task}` },
  );
  return await client.result<T>(ms);
}

/** Stops every process, in parallel, ignoring failures. */
export async function stopAll(procs: Iterable<Proc | null | undefined>): Promise<void> {
  await Promise.all([...procs].map((p) => p?.stop().catch(() => {})));
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resident set size of process `pid`, bytes (VmRSS from /proc/<pid>/status). */
export async function readRss(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  if (!match) throw new Error(`Cannot read VmRSS of process ${pid}`);
  return Number(match[1]) * 1024;
}

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ, 100 on Linux). */
export const CLOCK_TICKS = 100;

/** CPU time of process `pid` so far (utime + stime of all its threads), seconds. */
export async function readCpuSeconds(pid: number | "self"): Promise<number> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

/** Waits until RSS of `pid` stops moving (3 samples within 1%), at most `ms`; returns it. */
export async function settledRss(pid: number, ms: number): Promise<number> {
  const end = Date.now() + ms;
  const samples: number[] = [await readRss(pid)];
  while (Date.now() < end) {
    await sleep(400);
    samples.push(await readRss(pid));
    const last = samples.slice(-3);
    if (last.length === 3 && Math.max(...last) - Math.min(...last) <= 0.01 * Math.max(...last)) {
      break;
    }
  }
  return samples.at(-1)!;
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

/** The machine the bench ran on. */
export interface Machine {
  cpu: string;
  cores: number;
  deno: string;
  v8: string;
  typescript: string;
  os: string;
  kernel: string;
  date: string;
  /** /proc/loadavg (1, 5, 15 minutes) when the run began: other work makes figures noisy. */
  loadBefore: string;
}

/** The 1, 5 and 15 minute load averages, or "unknown". */
export async function loadAverage(): Promise<string> {
  try {
    return (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
  } catch {
    return "unknown";
  }
}

/** Describes this machine. */
export async function machineInfo(): Promise<Machine> {
  let cpu = "unknown";
  try {
    const info = await Deno.readTextFile("/proc/cpuinfo");
    cpu = /^model name\s*:\s*(.+)$/m.exec(info)?.[1]?.trim() ?? cpu;
  } catch {
    // Not Linux.
  }
  return {
    cpu,
    cores: navigator.hardwareConcurrency,
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    typescript: Deno.version.typescript,
    os: `${Deno.build.os} ${Deno.build.arch}`,
    kernel: Deno.osRelease(),
    date: new Date().toISOString(),
    loadBefore: await loadAverage(),
  };
}

// ---- Worker side ----

/**
 * For a worker: exits when stdin closes (the bench stopped it or died) or
 * after `lifetime` ms, whichever comes first.
 */
export function lifeline(lifetime = 600_000): void {
  const timer = setTimeout(() => {
    console.error(`worker ${Deno.pid}: lifetime of ${lifetime} ms is over`);
    Deno.exit(3);
  }, lifetime);
  Deno.unrefTimer(timer);
  void (async () => {
    const buffer = new Uint8Array(256);
    try {
      while ((await Deno.stdin.read(buffer)) !== null) {
        // Nothing is sent on stdin; only its end matters.
      }
    } catch {
      // Treated as closed.
    }
    Deno.exit(0);
  })();
}

/** Prints the worker's result line and exits. */
export function reply(value: unknown): never {
  console.log(`result ${JSON.stringify(value)}`);
  Deno.exit(0);
}

/** Reads `--name value` options of a worker. */
export function workerArgs(args: string[] = Deno.args): Map<string, string> {
  const out = new Map<string, string>();
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg.startsWith("--")) out.set(arg.slice(2), args[i + 1] ?? "");
    if (arg.startsWith("--")) i++;
  }
  return out;
}

/** A required worker option. */
export function required(options: Map<string, string>, name: string): string {
  const value = options.get(name);
  if (value === undefined) throw new Error(`Cannot start worker: missing --${name}`);
  return value;
}
