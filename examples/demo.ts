// deno-lint-ignore-file no-console
/**
 * A tour of peerbase on one machine: three node processes and a client form
 * a network, find each other, call each other, and one of them dies.
 *
 * Run it with the task, which runs it inside a private network namespace
 * (nothing leaves the machine) and ends by itself in about ten seconds:
 *
 * ```sh
 * deno task demo
 * ```
 *
 * The demo refuses to run outside that namespace, because every node
 * advertises on UDP multicast. To try peerbase on a real LAN, run
 * `examples/chat.ts` or `examples/fanout.ts` on two machines instead; the
 * plain command for a real LAN (not a namespace) is, for example:
 *
 * ```sh
 * # real LAN: every machine runs this with its own --name and the same --key
 * deno run -A --unstable-net examples/chat.ts --name alice --key=<key>
 * ```
 *
 * How it works: this file is both the client and the workers. Without
 * `--role` it is the client; it spawns itself three times with
 * `--role alice|bob|carol` (the network key goes through the environment
 * variable `PEERBASE_KEY`, never the command line).
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  CommandTimeoutError,
  type CommandTree,
  ConnectionClosedError,
  generateKey,
  Node,
  type PeerInfo,
  PeerNotFoundError,
  RemoteError,
  UnknownCommandError,
} from "../mod.ts";

/** Every node of the demo advertises this often, so a dead node is dropped in about 1 s. */
const ADVERTISE_INTERVAL = 250;
/** A worker exits by itself after this long, even if its parent vanished. */
const WORKER_LIFETIME = 60_000;
/** The whole demo gives up after this long (it normally takes about 5 s). */
const DEMO_DEADLINE = 30_000;
/** How long discovery of all three workers may take. */
const DISCOVERY_DEADLINE = 10_000;
/** How long a child may take to exit once asked, before it is killed. */
const EXIT_GRACE = 2_000;

const ROLES: Record<string, CommandTree<Node>> = {
  alice: {
    math: {
      add: (_node, args) => numbers(args).reduce((a, b) => a + b, 0),
      mul: (_node, args) => numbers(args).reduce((a, b) => a * b, 1),
      div: (_node, args) => {
        const [a, b] = numbers(args);
        if (b === 0) throw new RangeError("Division by zero");
        return a! / b!;
      },
    },
    slow: { sleep: (_node, args, _kwargs, ctx) => sleep(numbers(args)[0] ?? 0, ctx.signal) },
  },
  bob: {
    text: { upper: (_node, args) => String(args[0]).toUpperCase() },
    bytes: {
      reverse: (_node, args) => {
        if (!(args[0] instanceof Uint8Array)) {
          throw new TypeError("bytes.reverse takes a Uint8Array");
        }
        return args[0].toReversed();
      },
    },
  },
  carol: {
    slow: { sleep: (_node, args, _kwargs, ctx) => sleep(numbers(args)[0] ?? 0, ctx.signal) },
  },
};

function numbers(args: unknown[]): number[] {
  if (!args.every((arg) => typeof arg === "number")) throw new TypeError("Expected numbers only");
  return args as number[];
}

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
    "demo: refusing to run outside a private network namespace, because its nodes advertise on UDP multicast;\n" +
      "      run `deno task demo` (it needs Linux with iproute2 or unshare)",
  );
  Deno.exit(1);
}

// ---------------------------------------------------------------- worker side

/** Serves `role` until SIGTERM/SIGINT, stdin closing (the parent is gone) or WORKER_LIFETIME. */
async function runWorker(role: string, network: string, networkKey: string): Promise<void> {
  const commands = ROLES[role];
  if (!commands) throw new RangeError(`Unknown role '${role}': use alice, bob or carol`);
  await using node = new Node({
    name: role,
    network,
    networkKey,
    hostname: "127.0.0.1", // inside the namespace; on a real LAN leave the default "0.0.0.0"
    advertiseInterval: ADVERTISE_INTERVAL,
    commands,
  });
  await node.start();

  const stop = Promise.withResolvers<void>();
  const onSignal = () => stop.resolve();
  Deno.addSignalListener("SIGTERM", onSignal);
  Deno.addSignalListener("SIGINT", onSignal);
  const lifetime = setTimeout(onSignal, WORKER_LIFETIME);
  void Deno.stdin.readable.pipeTo(new WritableStream()).finally(onSignal);
  try {
    await stop.promise;
  } finally {
    clearTimeout(lifetime);
    Deno.removeSignalListener("SIGTERM", onSignal);
    Deno.removeSignalListener("SIGINT", onSignal);
  }
}

// ---------------------------------------------------------------- client side

/** The worker processes, killed (gracefully, then for good) when disposed. */
class Workers implements AsyncDisposable {
  readonly #children = new Map<string, Deno.ChildProcess>();

  spawn(role: string, network: string, networkKey: string): void {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--unstable-net", import.meta.url, "--role", role, "--network", network],
      env: { PEERBASE_KEY: networkKey },
      stdin: "piped", // closing it tells the worker to leave; EOF also comes if we die
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
    this.#children.set(role, child);
  }

  /** Sends `signal` to one worker; resolves once it has exited. */
  async kill(role: string, signal: Deno.Signal): Promise<Deno.CommandStatus> {
    const child = this.#children.get(role);
    if (!child) throw new Error(`No worker '${role}'`);
    child.kill(signal);
    return await child.status;
  }

  /** Asks every worker to leave (closes its stdin); kills it if it has not exited in time. */
  async stop(): Promise<void> {
    await Promise.all([...this.#children.values()].map(async (child) => {
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
    }));
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}

const started = performance.now();

/** Milliseconds since the demo started, right-aligned. */
function clock(): string {
  return `+${String(Math.round(performance.now() - started)).padStart(5)} ms`;
}

function heading(title: string): void {
  console.log(`\n── ${title} ${"─".repeat(Math.max(0, 64 - title.length))}`);
}

function line(label: string, value: string): void {
  console.log(`  ${label.padEnd(30)} ${value}`);
}

function expect(condition: unknown, what: string): asserts condition {
  if (!condition) throw new Error(`Unexpected result: ${what}`);
}

/** Rejects with `what` unless `promise` settles within `ms` or `signal` aborts. */
async function within<T>(
  promise: Promise<T>,
  ms: number,
  what: string,
  signal: AbortSignal,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let onAbort: (() => void) | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms: ${what}`)), ms);
        onAbort = () => reject(signal.reason);
        signal.addEventListener("abort", onAbort, { once: true });
      }),
    ]);
  } finally {
    clearTimeout(timer);
    if (onAbort) signal.removeEventListener("abort", onAbort);
  }
}

/** Runs `call` and returns the error it rejects with; fails when it resolves. */
async function failure(call: Promise<unknown>): Promise<{ error: Error; ms: number }> {
  const t = performance.now();
  let value: unknown;
  try {
    value = await call;
  } catch (error) {
    return { error: error as Error, ms: Math.round(performance.now() - t) };
  }
  throw new Error(`Unexpected result: the call succeeded with ${JSON.stringify(value)}`);
}

/** Resolves with the `peerleave` event of `name` (joins are awaited with `node.waitForPeer()`). */
function peerLeft(node: Node, name: string): Promise<PeerInfo> {
  return new Promise((resolve) => {
    const listener = (event: CustomEvent<PeerInfo>) => {
      if (event.detail.name !== name) return;
      node.removeEventListener("peerleave", listener);
      resolve(event.detail);
    };
    node.addEventListener("peerleave", listener);
  });
}

async function runClient(signal: AbortSignal): Promise<void> {
  const networkKey = generateKey();
  const network = `demo-${crypto.randomUUID().slice(0, 8)}`;
  const roles = Object.keys(ROLES);

  heading("1. Discovery");
  line("network", `${network} (fresh key from generateKey())`);
  await using workers = new Workers();
  await using client = new Node({
    name: "client",
    network,
    networkKey,
    hostname: "127.0.0.1",
    advertiseInterval: ADVERTISE_INTERVAL,
  });
  client.addEventListener("peerjoin", (e) => {
    console.log(`  ${clock()}  peerjoin   ${e.detail.name.padEnd(8)} ${e.detail.address}`);
  });
  client.addEventListener("peerleave", (e) => {
    console.log(`  ${clock()}  peerleave  ${e.detail.name}`);
  });
  await client.start();
  console.log(`  ${clock()}  client started on ${client.address}`);
  for (const role of roles) workers.spawn(role, network, networkKey);
  console.log(`  ${clock()}  spawned ${roles.join(", ")} (separate deno processes)`);
  await client.waitForPeer(roles, { timeout: DISCOVERY_DEADLINE, signal });
  line("peers", client.peers.map((p) => p.name).join(", "));

  heading("2. A call to one target");
  let t = performance.now();
  const sum = await client.command<number>("math.add", { target: "alice", args: [2, 3] });
  line(`math.add(2, 3) on alice`, `${sum}   (${Math.round(performance.now() - t)} ms)`);
  expect(sum === 5, `math.add gave ${sum}`);
  const upper = await client.command<string>("text.upper", { target: "bob", args: ["hello"] });
  line(`text.upper("hello") on bob`, JSON.stringify(upper));
  expect(upper === "HELLO", `text.upper gave ${upper}`);

  heading('3. Fan-out: __echo__ to "*"');
  const echoes = await client.command<{ node: string; args: unknown[] }>("__echo__", {
    args: ["ping"],
  });
  for (const [name, echo] of Object.entries(echoes)) {
    line(name, `node=${echo.node} args=${JSON.stringify(echo.args)}`);
  }
  expect(roles.every((role) => echoes[role]?.node === role), "every worker echoes");

  heading("4. getCommands()");
  const commands = await client.getCommands();
  for (const [name, list] of Object.entries(commands)) {
    line(name, list.filter((path) => !path.startsWith("__")).join(", ") + "  (+ built-ins)");
  }
  expect(commands.alice?.includes("math.add"), "alice lists math.add");

  heading("5. Uint8Array round trip");
  const bytes = new Uint8Array(256 * 1024);
  for (let at = 0; at < bytes.length; at += 65536) {
    crypto.getRandomValues(bytes.subarray(at, at + 65536)); // at most 64 KiB per call
  }
  t = performance.now();
  const reversed = await client.command<Uint8Array>("bytes.reverse", {
    target: "bob",
    args: [bytes],
  });
  const ms = Math.round(performance.now() - t);
  const same = reversed instanceof Uint8Array && reversed.length === bytes.length &&
    reversed.every((byte, i) => byte === bytes[bytes.length - 1 - i]);
  line(
    "bytes.reverse on bob",
    `${bytes.length} bytes there and back as raw bytes, ${ms} ms, ${same ? "intact" : "CORRUPT"}`,
  );
  expect(same, "the bytes came back reversed");

  heading("6. The handler throws: RemoteError");
  const divided = await failure(
    client.command("math.div", { target: "alice", args: [1, 0] }),
  );
  expect(divided.error instanceof RemoteError, `got ${divided.error.name}`);
  line("math.div(1, 0) on alice", `${divided.error.name}`);
  line("  .remoteName", divided.error.remoteName);
  line("  .remoteMessage", divided.error.remoteMessage);
  const quiet = await client.command("math.div", {
    target: "alice",
    args: [1, 0],
    raiseErrors: false,
  });
  line("same with raiseErrors: false", String(quiet));

  heading("7. Unknown command");
  const unknown = await failure(
    client.command("math.pow", { target: "alice", args: [2, 8] }),
  );
  expect(unknown.error instanceof UnknownCommandError, `got ${unknown.error.name}`);
  line("math.pow on alice", `${unknown.error.name} (${unknown.ms} ms)`);

  heading("8. Timeout");
  const slow = await failure(
    client.command("slow.sleep", {
      target: "alice",
      args: [5000],
      timeout: 300,
    }),
  );
  expect(slow.error instanceof CommandTimeoutError, `got ${slow.error.name}`);
  line("slow.sleep(5000), timeout 300", `${slow.error.name} after ${slow.ms} ms`);

  heading("9. carol dies (SIGKILL)");
  const inFlight = failure(
    client.command("slow.sleep", {
      target: "carol",
      args: [5000],
      timeout: 8000,
    }),
  );
  await sleep(200, signal); // let the request reach carol
  const left = peerLeft(client, "carol");
  const killedAt = performance.now();
  await workers.kill("carol", "SIGKILL");
  console.log(`  ${clock()}  carol killed while serving slow.sleep(5000)`);
  const cut = await within(inFlight, 5000, "the call in flight to fail", signal);
  const cutMs = Math.round(performance.now() - killedAt);
  line("call in flight", `${cut.error.name} ${cutMs} ms after the kill`);
  expect(cut.error instanceof ConnectionClosedError, `got ${cut.error.name}`);
  const next = await failure(client.command("__echo__", { target: "carol" }));
  line("new call", `${next.error.name} after ${next.ms} ms`);
  expect(
    next.error instanceof ConnectionClosedError || next.error instanceof PeerNotFoundError,
    `got ${next.error.name}`,
  );
  await within(left, 5000, "carol to leave the peer table", signal);
  line(
    "dropped from peers",
    `${
      Math.round(performance.now() - killedAt)
    } ms after the kill (3 missed adverts of ${ADVERTISE_INTERVAL} ms)`,
  );
  const gone = await failure(client.command("__echo__", { target: "carol" }));
  expect(gone.error instanceof PeerNotFoundError, `got ${gone.error.name}`);
  line("call after it left", `${gone.error.name} after ${gone.ms} ms`);
  line("peers", client.peers.map((p) => p.name).join(", "));
  expect(!client.peers.some((p) => p.name === "carol"), "carol is gone");

  heading("10. Close");
  const leaving = Promise.all(["alice", "bob"].map((role) => peerLeft(client, role)));
  await workers.stop(); // each worker closes its node, which sends a bye advert
  await within(leaving, 3000, "alice and bob to say bye", signal);
  await client.close();
  await client.finished;
  console.log(`  ${clock()}  client closed (client.finished resolved)`);
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: { role: { type: "string" }, network: { type: "string" } },
    strict: true,
  });
  requireNamespace();
  if (values.role !== undefined) {
    const key = Deno.env.get("PEERBASE_KEY");
    if (!key || !values.network) throw new TypeError("A worker needs --network and PEERBASE_KEY");
    await runWorker(values.role, values.network, key);
    return 0;
  }

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
  // Once aborted, the steps stop at their next wait and everything is closed;
  // should even that hang, leave anyway (the workers see their stdin close and exit).
  let hardStop: ReturnType<typeof setTimeout> | undefined;
  abort.signal.addEventListener("abort", () => {
    hardStop = setTimeout(() => {
      console.error(`demo: ${abort.signal.reason.message}; could not close cleanly, exiting`);
      Deno.exit(1);
    }, 10_000);
  });
  try {
    await runClient(abort.signal);
    console.log(`  ${clock()}  everything closed; the demo succeeded`);
    return 0;
  } catch (error) {
    console.error(`\ndemo failed: ${error instanceof Error ? error.message : String(error)}`);
    return interrupted ? 130 : 1;
  } finally {
    clearTimeout(deadline);
    clearTimeout(hardStop);
    Deno.removeSignalListener("SIGINT", onSigint);
  }
}

if (import.meta.main) {
  Deno.exit(await main());
}
