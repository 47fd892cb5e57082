// deno-lint-ignore-file no-console
/**
 * Fan-out: one node calls `work.square` on every peer at once and prints a
 * table of the answers: each peer's value or error, and how long it took.
 *
 * On a real LAN (NOT a private namespace: the nodes advertise on your LAN),
 * start workers on any machines, then a caller, all with the same key:
 *
 * ```sh
 * # real LAN: a worker (without --key it prints a new key to use everywhere)
 * deno run -A --unstable-net examples/fanout.ts --role worker --name w1 --key=<key>
 * # real LAN: the caller
 * deno run -A --unstable-net examples/fanout.ts --role caller --key=<key> --value 7
 * ```
 *
 * Options: `--network N` (default `fanout`), `--key KEY` (default: the
 * `PEERBASE_KEY` environment variable); worker: `--name NAME` (default
 * `worker-<random>`); caller: `--value X` (default 7), `--timeout MS`
 * per peer (default 2000), `--wait MS` to let discovery find the workers
 * (default 3000).
 *
 * To try it on one machine without touching the LAN:
 *
 * ```sh
 * deno task fanout   # = fanout.ts --demo inside a private network namespace
 * ```
 *
 * `--demo` spawns five workers (this file with `--role worker --child`):
 * three answer after a small random delay, one throws, one is too slow and
 * times out. It prints the table and exits by itself. It refuses to run
 * outside the private namespace.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  type CallContext,
  CommandError,
  CommandTimeoutError,
  generateKey,
  Node,
  RemoteError,
} from "../mod.ts";

/** How a worker behaves: answer, throw, or answer too late. */
type Behaviour = "ok" | "fail" | "slow";

/** The demo's workers and how each behaves. */
const DEMO_WORKERS: Record<string, Behaviour> = {
  w1: "ok",
  w2: "ok",
  w3: "ok",
  w4: "fail",
  w5: "slow",
};
/** Per-peer timeout in the demo; `w5` takes longer. */
const DEMO_TIMEOUT = 1000;
/** How long a slow worker takes (it stops early when the caller gives up). */
const SLOW_DELAY = 10_000;
/** A child worker exits by itself after this long, even if its parent vanished. */
const CHILD_LIFETIME = 60_000;
/** The whole --demo gives up after this long (it normally takes about 3 s). */
const DEMO_DEADLINE = 30_000;
/** How long a child may take to exit once asked, before it is killed. */
const EXIT_GRACE = 2_000;

/** Resolves after `ms`, or rejects with the signal's reason once it aborts. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

function requireNamespace(): void {
  if (Deno.env.get("PEERBASE_NETNS") === "1") return;
  console.error(
    "fanout: refusing to run --demo/--child outside a private network namespace, because its nodes advertise on UDP multicast;\n" +
      "      run `deno task fanout` (it needs Linux with iproute2 or unshare), or use --role on a real LAN",
  );
  Deno.exit(1);
}

// ---------------------------------------------------------------- worker

/** The `work.square` handler of a worker that behaves as `behaviour`. */
function square(behaviour: Behaviour) {
  return async (node: Node, args: unknown[], _kwargs: unknown, ctx: CallContext) => {
    const [x] = args;
    if (typeof x !== "number") throw new TypeError("work.square takes one number");
    await sleep(10 + Math.floor(Math.random() * 90), ctx.signal);
    if (behaviour === "fail") throw new Error(`${node.name} is out of order`);
    if (behaviour === "slow") await sleep(SLOW_DELAY, ctx.signal);
    return x * x;
  };
}

/**
 * Serves `work.square` until Ctrl-C. A `child` (spawned by --demo) binds to
 * 127.0.0.1 and also leaves when its stdin closes or after CHILD_LIFETIME.
 */
async function runWorker(
  name: string,
  network: string,
  networkKey: string,
  behaviour: Behaviour,
  child: boolean,
): Promise<void> {
  await using node = new Node({
    name,
    network,
    networkKey,
    ...(child ? { hostname: "127.0.0.1", advertiseInterval: 250 } : {}),
    commands: { work: { square: square(behaviour) } },
  });
  await node.start();
  if (!child) console.log(`worker ${name} serves work.square on ${node.address}; Ctrl-C stops it`);

  const stop = Promise.withResolvers<void>();
  const onSignal = () => stop.resolve();
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  let lifetime: ReturnType<typeof setTimeout> | undefined;
  if (child) {
    lifetime = setTimeout(onSignal, CHILD_LIFETIME);
    void Deno.stdin.readable.pipeTo(new WritableStream()).finally(onSignal);
  }
  try {
    await stop.promise;
  } finally {
    clearTimeout(lifetime);
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }
}

// ---------------------------------------------------------------- caller

/** One row of the table. */
interface Row {
  name: string;
  ok: boolean;
  text: string;
  ms: number;
}

/** Describes a failed call in a few words. */
function describe(error: unknown): string {
  if (error instanceof RemoteError) {
    return `RemoteError (${error.remoteName}: ${error.remoteMessage})`;
  }
  if (error instanceof CommandTimeoutError) {
    return `CommandTimeoutError (no answer in ${error.timeout} ms)`;
  }
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}

/**
 * Calls `work.square(value)` on every known peer at once, each call timed on
 * its own, and returns one row per peer.
 */
async function fanOut(node: Node, value: number, timeout: number): Promise<Row[]> {
  const names = node.peers.map((peer) => peer.name);
  return await Promise.all(names.map(async (name): Promise<Row> => {
    const started = performance.now();
    try {
      const result = await node.command<number>("work.square", {
        target: name,
        args: [value],
        timeout,
      });
      return { name, ok: true, text: String(result), ms: Math.round(performance.now() - started) };
    } catch (error) {
      return {
        name,
        ok: false,
        text: describe(error),
        ms: Math.round(performance.now() - started),
      };
    }
  }));
}

function printTable(rows: Row[]): void {
  const width = Math.max(4, ...rows.map((row) => row.name.length));
  const textWidth = Math.max(14, ...rows.map((row) => row.text.length));
  console.log(
    `  ${"peer".padEnd(width)}  ${"value or error".padEnd(textWidth)}  ${"ms".padStart(5)}`,
  );
  console.log(`  ${"-".repeat(width)}  ${"-".repeat(textWidth)}  ${"-".repeat(5)}`);
  for (const row of rows) {
    console.log(
      `  ${row.name.padEnd(width)}  ${row.text.padEnd(textWidth)}  ${String(row.ms).padStart(5)}`,
    );
  }
  const failed = rows.filter((row) => !row.ok).length;
  console.log(`  ${rows.length} peers, ${rows.length - failed} answered, ${failed} failed`);
}

/** Shows the same call as one `command()` to `"*"`, which rejects with `CommandError`. */
async function fanOutAtOnce(node: Node, value: number, timeout: number): Promise<void> {
  console.log(`\nThe same as one call: command("work.square", { args: [${value}] })`);
  try {
    const results = await node.command<number>("work.square", { args: [value], timeout });
    console.log(`  every peer answered: ${JSON.stringify(results)}`);
  } catch (error) {
    if (!(error instanceof CommandError)) throw error;
    const failed = Object.entries(error.results).sort(([a], [b]) => a.localeCompare(b)).filter((
      [, v],
    ) => v instanceof Error).map(([k]) => k);
    const answered = Object.entries(error.results).sort(([a], [b]) => a.localeCompare(b)).filter((
      [, v],
    ) => !(v instanceof Error));
    console.log(
      `  CommandError: ${failed.length} of ${Object.keys(error.results).length} failed (${
        failed.join(", ")
      })`,
    );
    console.log(
      `  error.results keeps the answers: ${answered.map(([k, v]) => `${k}=${v}`).join(", ")}`,
    );
  }
}

async function runCaller(
  network: string,
  networkKey: string,
  value: number,
  timeout: number,
  wait: number,
) {
  await using node = new Node({
    name: `caller-${crypto.randomUUID().slice(0, 6)}`,
    network,
    networkKey,
  });
  await node.start();
  console.log(`Looking for workers on network ${network} for ${wait} ms...`);
  await sleep(wait); // how many workers there are is not known: take whoever shows up
  if (node.peers.length === 0) {
    console.log("No workers found: check that they run with the same --network and --key");
    return 1;
  }
  console.log(`\nwork.square(${value}) on every peer, timeout ${timeout} ms each:`);
  printTable(await fanOut(node, value, timeout));
  return 0;
}

// ---------------------------------------------------------------- demo

async function runDemo(signal: AbortSignal): Promise<void> {
  const networkKey = generateKey();
  const network = `fanout-demo-${crypto.randomUUID().slice(0, 8)}`;
  const names = Object.keys(DEMO_WORKERS);
  console.log(
    `Fan-out demo on network ${network} (private namespace, nothing leaves this machine)`,
  );
  await using node = new Node({
    name: "caller",
    network,
    networkKey,
    hostname: "127.0.0.1",
    advertiseInterval: 250,
  });
  await node.start();

  const children = names.map((name) =>
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--unstable-net",
        import.meta.url,
        "--role",
        "worker",
        "--child",
        "--name",
        name,
        "--network",
        network,
        "--behaviour",
        DEMO_WORKERS[name]!,
      ],
      env: { PEERBASE_KEY: networkKey },
      stdin: "piped", // closing it tells the worker to leave; EOF also comes if we die
      stdout: "inherit",
      stderr: "inherit",
    }).spawn()
  );
  try {
    const started = performance.now();
    await node.waitForPeer(names, { timeout: 10_000, signal });
    const found = node.peers.map((peer) => peer.name);
    console.log(`Discovered ${found.join(", ")} in ${Math.round(performance.now() - started)} ms`);

    console.log(`\nwork.square(7) on every peer, timeout ${DEMO_TIMEOUT} ms each:`);
    const rows = await fanOut(node, 7, DEMO_TIMEOUT);
    printTable(rows);
    const byName = Object.fromEntries(rows.map((row) => [row.name, row]));
    const expected = ["w1", "w2", "w3"].every((name) => byName[name]?.text === "49") &&
      byName.w4?.text.startsWith("RemoteError") &&
      byName.w5?.text.startsWith("CommandTimeoutError");
    if (!expected) {
      throw new Error("Unexpected table: w1-w3 should answer 49, w4 throw, w5 time out");
    }

    await fanOutAtOnce(node, 7, DEMO_TIMEOUT);
  } finally {
    await Promise.all(children.map((child) => stopChild(child)));
  }
}

/** Closes the child's stdin (it leaves), then kills it if it has not exited in time. */
async function stopChild(child: Deno.ChildProcess): Promise<void> {
  await child.stdin.close().catch(() => {});
  let timer: ReturnType<typeof setTimeout> | undefined;
  const exited = await Promise.race([
    child.status.then(() => true),
    new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), EXIT_GRACE)),
  ]);
  clearTimeout(timer);
  if (!exited) {
    try {
      child.kill("SIGKILL");
    } catch {
      // It exited in the meantime.
    }
    await child.status;
  }
}

function positiveNumber(text: string, what: string): number {
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) {
    throw new RangeError(`${what} must be a positive number, got '${text}'`);
  }
  return value;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      demo: { type: "boolean", default: false },
      role: { type: "string" },
      name: { type: "string" },
      network: { type: "string", default: "fanout" },
      key: { type: "string" },
      value: { type: "string", default: "7" },
      timeout: { type: "string", default: "2000" },
      wait: { type: "string", default: "3000" },
      behaviour: { type: "string", default: "ok" },
      child: { type: "boolean", default: false },
    },
    strict: true,
  });
  const key = values.key ?? Deno.env.get("PEERBASE_KEY");

  if (values.demo) {
    requireNamespace();
    const abort = new AbortController();
    let interrupted = false;
    const onSigint = () => {
      interrupted = true;
      abort.abort(new Error("Interrupted"));
    };
    Deno.addSignalListener("SIGINT", onSigint);
    const deadline = setTimeout(
      () => abort.abort(new Error(`The demo took longer than ${DEMO_DEADLINE} ms`)),
      DEMO_DEADLINE,
    );
    try {
      await runDemo(abort.signal);
      return 0;
    } catch (error) {
      console.error(
        `fanout demo failed: ${error instanceof Error ? error.message : String(error)}`,
      );
      return interrupted ? 130 : 1;
    } finally {
      clearTimeout(deadline);
      Deno.removeSignalListener("SIGINT", onSigint);
    }
  }

  if (values.role === "worker") {
    if (values.child) requireNamespace();
    const behaviour = values.behaviour as Behaviour;
    if (!["ok", "fail", "slow"].includes(behaviour)) {
      throw new RangeError("--behaviour must be ok, fail or slow");
    }
    let networkKey = key;
    if (networkKey === undefined) {
      networkKey = generateKey();
      console.log(
        `No --key given, so this worker uses a new key; pass it to every other node:\n  --key=${networkKey}`,
      );
    }
    const name = values.name ?? `worker-${crypto.randomUUID().slice(0, 6)}`;
    await runWorker(name, values.network, networkKey, behaviour, values.child);
    return 0;
  }

  if (values.role === "caller") {
    if (!key) {
      console.error("The caller needs the workers' key: --key KEY (or PEERBASE_KEY)");
      return 2;
    }
    const value = Number(values.value);
    if (!Number.isFinite(value)) {
      throw new RangeError(`--value must be a number, got '${values.value}'`);
    }
    return await runCaller(
      values.network,
      key,
      value,
      positiveNumber(values.timeout, "--timeout"),
      positiveNumber(values.wait, "--wait"),
    );
  }

  console.error(
    "usage: deno run -A --unstable-net examples/fanout.ts --role worker|caller --key KEY [options]",
  );
  console.error("       deno task fanout   (a demo inside a private network namespace)");
  return 2;
}

if (import.meta.main) {
  Deno.exit(await main());
}
