// deno-lint-ignore-file no-console
/**
 * A terminal chat: every line you type is a call to `chat.recv` on every
 * peer of the network (target `"*"`); receivers show it as `[sender] text`,
 * with the sender's authenticated name from `ctx.caller`.
 *
 * On a real LAN (every machine on the same network segment; this is NOT a
 * private namespace, the nodes advertise on your LAN), the first person runs
 * it without a key, which prints a fresh one to share:
 *
 * ```sh
 * # real LAN
 * deno run -A --unstable-net examples/chat.ts --name alice
 * # real LAN, everyone else, with the key alice shared (or set PEERBASE_KEY)
 * deno run -A --unstable-net examples/chat.ts --name bob --key=<key>
 * ```
 *
 * Options: `--name NAME` (required), `--network N` (default `peerchat`),
 * `--key KEY` (default: the `PEERBASE_KEY` environment variable, else a new
 * key is generated and printed). In the chat, `/peers` lists who is there,
 * `/quit` (or Ctrl-C, or Ctrl-D) leaves.
 *
 * To try it on one machine without touching the LAN:
 *
 * ```sh
 * deno task chat    # = chat.ts --demo inside a private network namespace
 * ```
 *
 * `--demo` is non-interactive: it spawns two bot peers (this file with
 * `--bot`), exchanges a few scripted messages, prints the conversation and
 * exits by itself. It refuses to run outside the private namespace.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type CallContext, generateKey, Node, type PeerInfo } from "../mod.ts";

/** Longest message accepted, in characters. */
const MAX_MESSAGE = 2000;
/** How long a message may take to reach each peer. */
const SEND_TIMEOUT = 3000;
/** A bot leaves by itself after this long, even if its parent vanished. */
const BOT_LIFETIME = 60_000;
/** The whole --demo gives up after this long (it normally takes about 2 s). */
const DEMO_DEADLINE = 30_000;
/** How long a bot may take to leave once asked, before it is killed. */
const EXIT_GRACE = 2_000;

/** What each bot answers to the demo's lines, in order. */
const BOT_SCRIPTS: Record<string, string[]> = {
  bob: ["hey alice!", "a parser that reads one byte at a time"],
  carol: ["hello from carol", "the tests; all green now"],
};
/** The lines the demo "types", as a user would. */
const DEMO_LINES = ["/peers", "hi everyone!", "what are you working on?", "/quit"];

/** Replaces control characters, so a peer cannot drive the terminal with escape codes. */
function clean(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, "?");
}

/** Sleeps `ms`; resolves early when `signal` aborts. */
function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** Options of {@linkcode createChatNode}. */
interface ChatOptions {
  name: string;
  network: string;
  networkKey: string;
  /** Bind to 127.0.0.1 (inside the demo's namespace); on a real LAN the default 0.0.0.0. */
  loopback: boolean;
  /** Where received messages and join/leave notices go. */
  print: (text: string) => void;
  /** Called after each received message is printed. */
  onMessage?: (sender: string, text: string) => void;
}

/** A node that serves `chat.recv` and reports peers joining and leaving. */
function createChatNode(options: ChatOptions): Node {
  const { print, onMessage } = options;
  const recv = (_node: Node, args: unknown[], _kwargs: unknown, ctx: CallContext) => {
    const [text] = args;
    if (typeof text !== "string" || text.length > MAX_MESSAGE) {
      throw new TypeError(`chat.recv takes one string of at most ${MAX_MESSAGE} characters`);
    }
    print(`[${clean(ctx.caller)}] ${clean(text)}`);
    onMessage?.(ctx.caller, text);
    return true;
  };
  const node = new Node({
    name: options.name,
    network: options.network,
    networkKey: options.networkKey,
    // In the demo's namespace: loopback only, and quick adverts so joins and
    // leaves show at once. On a real LAN: the defaults (0.0.0.0, 1000 ms).
    ...(options.loopback ? { hostname: "127.0.0.1", advertiseInterval: 250 } : {}),
    commands: { chat: { recv } },
  });
  node.addEventListener("peerjoin", (e) => print(`* ${clean(e.detail.name)} joined`));
  node.addEventListener("peerleave", (e) => print(`* ${clean(e.detail.name)} left`));
  node.addEventListener("conflict", (e) => {
    print(
      `! two nodes are called '${
        clean(e.detail.name)
      }'; calls to that name are refused until one leaves`,
    );
  });
  return node;
}

/** Sends `text` to every peer; returns the peers it did not reach. */
async function say(node: Node, text: string): Promise<{ reached: string[]; missed: string[] }> {
  const results = await node.command<boolean>("chat.recv", {
    args: [text],
    timeout: SEND_TIMEOUT, // no target: the default "*" is every known peer
    raiseErrors: false, // a peer that missed it gets null instead of failing the whole call
  });
  const names = Object.keys(results);
  return {
    reached: names.filter((name) => results[name] === true),
    missed: names.filter((name) => results[name] !== true),
  };
}

/** Handles one typed line; returns false once the user wants to leave. */
async function handleLine(
  node: Node,
  line: string,
  print: (text: string) => void,
): Promise<boolean> {
  const text = line.trim();
  if (text === "") return true;
  if (text === "/quit") return false;
  if (text === "/peers") {
    const peers = node.peers;
    if (peers.length === 0) print("  (nobody else is here yet)");
    for (const peer of peers) print(`  ${clean(peer.name).padEnd(16)} ${peer.address ?? "-"}`);
    return true;
  }
  if (text.startsWith("/")) {
    print("  commands: /peers lists who is here, /quit leaves; anything else is sent to everyone");
    return true;
  }
  if (text.length > MAX_MESSAGE) {
    print(`  (not sent: at most ${MAX_MESSAGE} characters)`);
    return true;
  }
  const { reached, missed } = await say(node, text);
  if (reached.length === 0 && missed.length === 0) print("  (nobody else is here yet)");
  if (missed.length > 0) print(`  (not delivered to: ${missed.map(clean).join(", ")})`);
  return true;
}

/** Yields the lines of a byte stream. */
async function* lines(readable: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let rest = "";
  for await (const chunk of readable.pipeThrough(new TextDecoderStream())) {
    const parts = (rest + chunk).split("\n");
    rest = parts.pop()!;
    yield* parts;
  }
  if (rest !== "") yield rest;
}

/** Resolves on SIGINT; `remove()` stops listening. */
function onInterrupt(): { interrupted: Promise<void>; remove: () => void } {
  const { promise, resolve } = Promise.withResolvers<void>();
  const handler = () => resolve();
  Deno.addSignalListener("SIGINT", handler);
  return { interrupted: promise, remove: () => Deno.removeSignalListener("SIGINT", handler) };
}

function requireNamespace(): void {
  if (Deno.env.get("PEERBASE_NETNS") === "1") return;
  console.error(
    "chat: refusing to run --demo/--bot outside a private network namespace, because its nodes advertise on UDP multicast;\n" +
      "      run `deno task chat` (it needs Linux with iproute2 or unshare), or chat on a real LAN with --name and --key",
  );
  Deno.exit(1);
}

// ---------------------------------------------------------------- interactive

async function runInteractive(
  name: string,
  network: string,
  key: string | undefined,
): Promise<void> {
  let networkKey = key;
  if (networkKey === undefined) {
    networkKey = generateKey();
    console.log(`No --key given, so this chat uses a new key:\n\n  ${networkKey}\n`);
    console.log("Share it (privately) with everyone who should join, who then run:");
    console.log(
      `  deno run -A --unstable-net examples/chat.ts --name <their name> --key=${networkKey}\n`,
    );
  }
  await using node = createChatNode({
    name,
    network,
    networkKey,
    loopback: false,
    print: (text) => console.log(text),
  });
  await node.start();
  console.log(`* you are ${name} on network ${network}; /peers lists who is here, /quit leaves`);

  const { interrupted, remove } = onInterrupt();
  const input = lines(Deno.stdin.readable)[Symbol.asyncIterator]();
  try {
    while (true) {
      const next = await Promise.race([input.next(), interrupted.then(() => null)]);
      if (next === null || next.done) break;
      if (!await handleLine(node, next.value, (text) => console.log(text))) break;
    }
  } finally {
    remove();
  }
  console.log("* bye");
}

// ---------------------------------------------------------------- demo

/** A scripted peer: answers each message from `driver` with the next line of its script. */
async function runBot(
  name: string,
  network: string,
  networkKey: string,
  driver: string,
): Promise<void> {
  const script = [...(BOT_SCRIPTS[name] ?? [])];
  const leave = Promise.withResolvers<void>();
  // Carol answers a little after Bob, so the conversation reads the same every time.
  const delay = name === "carol" ? 150 : 0;
  await using node = createChatNode({
    name,
    network,
    networkKey,
    loopback: true,
    print: (text) => console.log(text),
    onMessage: (sender) => {
      if (sender !== driver) return;
      const reply = script.shift();
      if (reply === undefined) return;
      void pause(delay).then(() => say(node, reply)).then(() => {
        if (script.length === 0) leave.resolve(); // the script is done: leave
      }, leave.resolve);
    },
  });
  await node.start();
  const lifetime = setTimeout(leave.resolve, BOT_LIFETIME);
  const onSignal = () => leave.resolve();
  Deno.addSignalListener("SIGTERM", onSignal);
  Deno.addSignalListener("SIGINT", onSignal);
  void Deno.stdin.readable.pipeTo(new WritableStream()).finally(leave.resolve);
  try {
    await leave.promise;
    await pause(200); // let the last answers travel before saying bye
  } finally {
    clearTimeout(lifetime);
    Deno.removeSignalListener("SIGTERM", onSignal);
    Deno.removeSignalListener("SIGINT", onSignal);
  }
}

/** Spawns the bots, plays `DEMO_LINES` as alice, and waits for every answer. */
async function runDemo(signal: AbortSignal): Promise<void> {
  const networkKey = generateKey();
  const network = `chat-demo-${crypto.randomUUID().slice(0, 8)}`;
  const bots = Object.keys(BOT_SCRIPTS);
  const me = "alice";
  const received: string[] = [];
  console.log(
    `* chat demo: you are ${me} on network ${network} (private namespace, nothing leaves this machine)`,
  );

  const left = new Set<string>();
  await using node = createChatNode({
    name: me,
    network,
    networkKey,
    loopback: true,
    print: (text) => console.log(text),
    onMessage: (sender) => void received.push(sender),
  });
  node.addEventListener("peerleave", (e) => void left.add(e.detail.name));
  await node.start();

  const children = bots.map((bot) =>
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--unstable-net",
        import.meta.url,
        "--bot",
        "--name",
        bot,
        "--network",
        network,
        "--driver",
        me,
      ],
      env: { PEERBASE_KEY: networkKey },
      stdin: "piped", // closing it tells the bot to leave; EOF also comes if we die
      stdout: "null", // the bots print the same conversation; we show ours
      stderr: "inherit",
    }).spawn()
  );
  try {
    await node.waitForPeer(bots, { timeout: 10_000, signal });
    await everyoneSeesEveryone(node, bots, signal);
    for (const line of DEMO_LINES) {
      if (line === "/quit") {
        // The bots leave once their script is done; wait to see them go, then quit.
        await until(() => bots.every((bot) => left.has(bot)), 5_000, "the bots to leave", signal);
      }
      console.log(`${me}> ${line}`);
      const before = received.length;
      if (!await handleLine(node, line, (text) => console.log(text))) break;
      if (!line.startsWith("/")) {
        await until(
          () => received.length >= before + bots.length,
          5_000,
          "every bot to answer",
          signal,
        );
      }
    }
  } finally {
    await Promise.all(children.map((child) => stopChild(child)));
  }
  console.log("* bye");
}

/**
 * Waits until every bot has discovered every other member too (asking each
 * for its peer table with the built-in `__peers__`), so no answer to `"*"`
 * misses anyone.
 */
async function everyoneSeesEveryone(
  node: Node,
  bots: string[],
  signal: AbortSignal,
): Promise<void> {
  const members = [node.name, ...bots];
  const end = performance.now() + 10_000;
  while (performance.now() < end) {
    signal.throwIfAborted();
    const views = await node.command<PeerInfo[]>("__peers__", {
      target: bots,
      timeout: 1000,
      raiseErrors: false, // a bot that does not answer yet is asked again
    });
    const complete = bots.every((bot) => {
      const seen = new Set((views[bot] ?? []).map((peer) => peer.name));
      return members.every((member) => member === bot || seen.has(member));
    });
    if (complete) return;
    await pause(50, signal);
  }
  throw new Error("Timed out after 10000 ms waiting for the bots to discover each other");
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

/** Polls `condition` every 20 ms; rejects after `ms` or when `signal` aborts. */
async function until(
  condition: () => boolean,
  ms: number,
  what: string,
  signal: AbortSignal,
): Promise<void> {
  const end = performance.now() + ms;
  while (!condition()) {
    signal.throwIfAborted();
    if (performance.now() > end) throw new Error(`Timed out after ${ms} ms waiting for ${what}`);
    await pause(20, signal);
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      name: { type: "string" },
      network: { type: "string", default: "peerchat" },
      key: { type: "string" },
      demo: { type: "boolean", default: false },
      bot: { type: "boolean", default: false },
      driver: { type: "string", default: "alice" },
    },
    strict: true,
  });
  const key = values.key ?? Deno.env.get("PEERBASE_KEY");

  if (values.bot) {
    requireNamespace();
    if (!values.name || !key) throw new TypeError("A bot needs --name and PEERBASE_KEY");
    await runBot(values.name, values.network, key, values.driver);
    return 0;
  }
  if (values.demo) {
    requireNamespace();
    const abort = new AbortController();
    const { interrupted, remove } = onInterrupt();
    let wasInterrupted = false;
    void interrupted.then(() => {
      wasInterrupted = true;
      abort.abort(new Error("Interrupted"));
    });
    const deadline = setTimeout(
      () => abort.abort(new Error(`The demo took longer than ${DEMO_DEADLINE} ms`)),
      DEMO_DEADLINE,
    );
    try {
      await runDemo(abort.signal);
      return 0;
    } catch (error) {
      console.error(`chat demo failed: ${error instanceof Error ? error.message : String(error)}`);
      return wasInterrupted ? 130 : 1;
    } finally {
      clearTimeout(deadline);
      remove();
    }
  }
  if (!values.name) {
    console.error(
      "usage: deno run -A --unstable-net examples/chat.ts --name NAME [--network N] [--key KEY]",
    );
    console.error("       deno task chat   (a scripted demo inside a private network namespace)");
    return 2;
  }
  await runInteractive(values.name, values.network, key);
  return 0;
}

if (import.meta.main) {
  // Exit explicitly: a read of the terminal may still be pending after /quit.
  Deno.exit(await main());
}
