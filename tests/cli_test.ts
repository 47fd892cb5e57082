/**
 * The `peerbase` command line (cli.ts): key generation, usage errors (exit
 * status 2), argument parsing, and real calls through the spawned command
 * line, on the LAN and through a relay, as a client-only member that peers
 * never list.
 */

import { deepStrictEqual, ok, rejects, strictEqual } from "node:assert/strict";
import { Node } from "../mod.ts";
import { Relay } from "../relay/mod.ts";
import { isKey } from "../lib/fernet.ts";
import { CLI_VERSION, type CliEnv, main, parseArg, parseCliArgs, UsageError } from "../cli.ts";
import {
  deadline,
  nodeOptions,
  sleep,
  type TestNetwork,
  testNetwork,
  waitFor,
} from "./_fixtures.ts";
import { meetVia, remoteOptions } from "./_relay_fixtures.ts";
import { IN_NETNS, NETNS_REASON, testIf } from "./_env.ts";

const CLI_SCRIPT = new URL("../cli.ts", import.meta.url);
/** The permissions of `deno task cli` (and of the compiled binary). */
const CLI_FLAGS = ["--allow-net", "--allow-read", "--allow-env", "--unstable-net"];

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the command line to completion (10 s cap) with `env` added. */
async function runCli(args: string[], env: Record<string, string> = {}): Promise<Outcome> {
  const output = await deadline(
    new Deno.Command(Deno.execPath(), {
      args: ["run", ...CLI_FLAGS, CLI_SCRIPT.href, ...args],
      env: { NO_COLOR: "1", ...env },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output(),
    `peerbase ${args.join(" ")} to exit`,
  );
  const text = new TextDecoder();
  return {
    code: output.code,
    stdout: text.decode(output.stdout),
    stderr: text.decode(output.stderr),
  };
}

/** The environment that points the command line at `net`. */
function netEnv(net: TestNetwork): Record<string, string> {
  return { PEERBASE_NETWORK: net.network, PEERBASE_KEY: net.networkKey };
}

/** A fake environment for {@linkcode parseCliArgs}. */
function fakeEnv(vars: Record<string, string>, files: Record<string, string> = {}): CliEnv {
  return {
    get: (name) => vars[name],
    readTextFile: (path) =>
      path in files ? Promise.resolve(files[path]!) : Promise.reject(new Error("No such file")),
  };
}

/** Samples `node.peers` every 5 ms until `promise` settles; returns every name seen. */
async function namesSeenDuring<T>(node: Node, promise: Promise<T>): Promise<[T, Set<string>]> {
  const seen = new Set<string>();
  let done = false;
  const sampling = (async () => {
    while (!done) {
      for (const peer of node.peers) seen.add(peer.name);
      await sleep(5);
    }
  })();
  try {
    return [await promise, seen];
  } finally {
    done = true;
    await sampling;
  }
}

const COMMANDS = {
  math: { add: (_n: unknown, args: unknown[]) => (args as number[]).reduce((a, b) => a + b, 0) },
  fail: () => {
    throw new RangeError("Cannot divide: the divisor is 0");
  },
  greet: (_n: unknown, args: unknown[], kwargs: Record<string, unknown>) =>
    `${kwargs.greeting ?? "hello"} ${args[0]}`,
};

Deno.test("peerbase keygen prints a valid network key and exits 0", async () => {
  const { code, stdout, stderr } = await runCli(["keygen"]);
  strictEqual(code, 0, stderr);
  ok(isKey(stdout.trim()), stdout);
  strictEqual(stdout.trim().split("\n").length, 1);
});

Deno.test("peerbase --help prints the usage and --version one line", async () => {
  const help = await runCli(["--help"]);
  strictEqual(help.code, 0, help.stderr);
  ok(help.stdout.includes("Usage:"), help.stdout);
  const version = await runCli(["-V"]);
  strictEqual(version.code, 0, version.stderr);
  strictEqual(version.stdout, `${CLI_VERSION}\n`);
});

Deno.test("peerbase exits 2 with a message and the usage for a bad command line", async (t) => {
  const net = netEnv(testNetwork("cli"));
  const cases: Array<[string[], Record<string, string>, RegExp]> = [
    [["--bogus"], {}, /bogus/],
    [[], {}, /Missing command/],
    [["frobnicate"], {}, /Unknown command 'frobnicate'/],
    [["call"], net, /call needs a PATH/],
    [["peers", "extra"], net, /no positional arguments/],
    [["call", "x", "--kwargs", "[1]"], net, /--kwargs '\[1\]': expected a JSON object/],
    [["call", "x", "--timeout", "soon"], net, /Invalid --timeout 'soon'/],
    [["peers"], {}, /Missing network/],
    [["peers", "--network", "n"], {}, /Missing key/],
    [["peers", "--no-lan"], net, /--no-lan needs a relay/],
    [["peers", "--network", "n", "--key", "short"], {}, /networkKey/],
    [["peers", "--network", "a.b"], net, /network 'a\.b'/],
    [["peers", "--key-file", "/nonexistent/key"], net, /Cannot read --key-file/],
  ];
  for (const [args, env, message] of cases) {
    await t.step(args.join(" ") || "(nothing)", async () => {
      const { code, stdout, stderr } = await runCli(args, env);
      strictEqual(code, 2, stderr);
      ok(message.test(stderr), stderr);
      ok(stderr.includes("Usage:"), stderr);
      strictEqual(stdout, "");
    });
  }
});

Deno.test("parseCliArgs reads flags before the environment, ARGs as JSON or strings, relays as a list", async () => {
  const key = testNetwork().networkKey;
  const env = fakeEnv({
    PEERBASE_NETWORK: "office",
    PEERBASE_KEY: key,
    PEERBASE_RELAYS: "r1:7000, r2:7000",
  });
  const cli = await parseCliArgs(
    ["call", "math.add", "2", "x", '{"a":1}', "--target", "bob", "--kwargs", '{"k":true}'],
    env,
  );
  deepStrictEqual(
    [cli.command, cli.path, cli.args, cli.kwargs, cli.target, cli.named, cli.network, cli.key],
    ["call", "math.add", [2, "x", { a: 1 }], { k: true }, "bob", true, "office", key],
  );
  deepStrictEqual(cli.relays, ["r1:7000", "r2:7000"]);
  strictEqual(cli.lan, true);
  deepStrictEqual(cli.warnings, []);
  const flags = await parseCliArgs(
    ["peers", "--network", "lab", "--relay", "a:1,b:2", "--relay", "c:3", "--no-lan", "--key", key],
    env,
  );
  deepStrictEqual([flags.network, flags.relays, flags.lan], ["lab", ["a:1", "b:2", "c:3"], false]);
  ok(/process list/.test(flags.warnings.join()), "--key warns that others can see it");
  const fromFile = await parseCliArgs(
    ["commands", "--key-file", "k"],
    fakeEnv({ PEERBASE_NETWORK: "n" }, { k: `${key}\n` }),
  );
  strictEqual(fromFile.key, key);
  strictEqual(fromFile.target, "*");
  deepStrictEqual([parseArg("5"), parseArg("hi"), parseArg("null"), parseArg('"5"')], [
    5,
    "hi",
    null,
    "5",
  ]);
  await rejects(parseCliArgs(["peers", "--target", "x"], env), UsageError);
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "peerbase calls a node on the LAN as a client-only member that the node never lists",
  async fn(t) {
    const net = testNetwork("cli-lan");
    await using server = new Node(
      nodeOptions(net, "server", { commands: COMMANDS, advertiseInterval: 200 }),
    );
    await server.start();
    const env = netEnv(net);

    await t.step("call with a named target prints 5 as JSON and exits 0", async () => {
      const [out, seen] = await namesSeenDuring(
        server,
        runCli(["call", "math.add", "2", "3", "--target", "server"], env),
      );
      strictEqual(out.code, 0, out.stderr);
      strictEqual(out.stdout, "5\n");
      deepStrictEqual([...seen], [], "the server never listed the command line");
    });

    await t.step("call without a target calls every member and prints a record", async () => {
      const out = await runCli(["call", "greet", "ann", "--kwargs", '{"greeting":"hi"}'], env);
      strictEqual(out.code, 0, out.stderr);
      deepStrictEqual(JSON.parse(out.stdout), { server: "hi ann" });
    });

    await t.step("a remote error exits 1 and names the error on stderr", async () => {
      const out = await runCli(["call", "fail", "--target", "server"], env);
      strictEqual(out.code, 1, out.stderr);
      ok(out.stderr.includes("RemoteError"), out.stderr);
      ok(out.stderr.includes("RangeError"), out.stderr);
      strictEqual(out.stdout, "");
      const unknown = await runCli(["call", "nope", "--target", "server"], env);
      strictEqual(unknown.code, 1);
      ok(unknown.stderr.includes("UnknownCommandError"), unknown.stderr);
      const missing = await runCli(["call", "x", "--target", "ghost", "--wait", "300"], env);
      strictEqual(missing.code, 1);
      ok(missing.stderr.includes("PeerNotFoundError"), missing.stderr);
    });

    await t.step("peers lists the node; the node's peers never list the command line", async () => {
      const [out, seen] = await namesSeenDuring(server, runCli(["peers"], env));
      strictEqual(out.code, 0, out.stderr);
      const peers = JSON.parse(out.stdout) as Array<{ name: string; address: string }>;
      deepStrictEqual(peers.map((p) => p.name), ["server"]);
      ok(peers[0]!.address.startsWith("127.0.0.1:"), out.stdout);
      deepStrictEqual([...seen], []);
      // About one advert interval later (and a bye that was never sent): still nobody.
      await sleep(300);
      deepStrictEqual(server.peers, []);
    });

    await t.step("commands lists the node's commands", async () => {
      const out = await runCli(["commands", "--target", "server"], env);
      strictEqual(out.code, 0, out.stderr);
      const commands = JSON.parse(out.stdout) as string[];
      ok(commands.includes("math.add") && commands.includes("fail"), out.stdout);
    });

    await t.step("a client-only Node has no address and is never listed", async () => {
      await using client = new Node(nodeOptions(net, "client", { clientOnly: true }));
      await client.start();
      await client.waitForPeer("server");
      strictEqual(client.address, null);
      strictEqual(await client.command("math.add", { target: "server", args: [1, 1] }), 2);
      await sleep(300);
      deepStrictEqual(server.peers, []);
    });
  },
});

Deno.test("peerbase calls a node through a relay that never lists the command line to members", async (t) => {
  const net = testNetwork("cli-relay");
  await using relay = new Relay({ hostname: "127.0.0.1", port: 0 });
  await relay.start();
  const address = `127.0.0.1:${relay.addr.port}`;
  await using server = new Node(remoteOptions(net, "server", address, { commands: COMMANDS }));
  await using watcher = new Node(remoteOptions(net, "watcher", address));
  await server.start();
  await watcher.start();
  await meetVia([server, watcher], address);
  const env = netEnv(net);
  const others = (): string[] => [...server.peers, ...watcher.peers].map((p) => p.name);

  await t.step("call prints 5 and exits 0", async () => {
    const args = ["call", "math.add", "2", "3", "--target", "server", "--no-lan"];
    const [out, seen] = await namesSeenDuring(
      watcher,
      runCli([...args, "--relay", address], env),
    );
    strictEqual(out.code, 0, out.stderr);
    strictEqual(out.stdout, "5\n");
    deepStrictEqual([...seen], ["server"], "the watcher never saw the command line");
    deepStrictEqual(others().sort(), ["server", "watcher"]);
  });

  await t.step("PEERBASE_RELAYS, a call to every member, and a remote error", async () => {
    const relayEnv = { ...env, PEERBASE_RELAYS: address };
    const echo = await runCli(["call", "__echo__", "hi", "--no-lan"], relayEnv);
    strictEqual(echo.code, 0, echo.stderr);
    deepStrictEqual(Object.keys(JSON.parse(echo.stdout)).sort(), ["server", "watcher"]);
    // The watcher has no math.add: the call to every member fails there.
    const all = await runCli(["call", "math.add", "1", "1", "--no-lan"], relayEnv);
    strictEqual(all.code, 1, all.stderr);
    ok(all.stderr.includes("CommandError"), all.stderr);
    ok(all.stderr.includes("watcher: UnknownCommandError"), all.stderr);
    const fail = await runCli(["call", "fail", "--target", "server", "--no-lan"], relayEnv);
    strictEqual(fail.code, 1);
    ok(fail.stderr.includes("RemoteError"), fail.stderr);
  });

  await t.step("peers through the relay lists both members", async () => {
    const out = await runCli(["peers", "--no-lan", "--relay", address], env);
    strictEqual(out.code, 0, out.stderr);
    deepStrictEqual(
      (JSON.parse(out.stdout) as Array<{ name: string }>).map((p) => p.name),
      ["server", "watcher"],
    );
    await waitFor(() => relay.stats.nodes === 2, "the command line to leave the relay");
    deepStrictEqual(others().sort(), ["server", "watcher"]);
  });
});

Deno.test("main() prints tables on a terminal and warns about --key, in process", async () => {
  const net = testNetwork("cli-tty");
  await using relay = new Relay({ hostname: "127.0.0.1", port: 0 });
  await relay.start();
  const address = `127.0.0.1:${relay.addr.port}`;
  await using server = new Node(remoteOptions(net, "server", address, { commands: COMMANDS }));
  await server.start();
  const run = async (args: string[]) => {
    const out: string[] = [];
    const err: string[] = [];
    const io = { out: (l: string) => out.push(l), err: (l: string) => err.push(l), terminal: true };
    const common = ["--network", net.network, "--key", net.networkKey, "--no-lan"];
    const code = await main([...args, ...common, "--relay", address], io);
    return { code, out: out.join("\n"), err: err.join("\n") };
  };
  const peers = await run(["peers"]);
  strictEqual(peers.code, 0, peers.err);
  ok(
    /^NAME\s+INSTANCE\s+ADDRESS\s+RELAYS\nserver\s+[0-9a-f]{16}\s+-\s+127\.0\.0\.1:/.test(
      peers.out,
    ),
    peers.out,
  );
  ok(/--key shows the network key/.test(peers.err), peers.err);
  const all = await run(["call", "math.add", "2", "3"]);
  strictEqual(all.code, 0, all.err);
  ok(/^MEMBER\s+RESULT\nserver\s+5$/.test(all.out), all.out);
  const commands = await run(["commands", "--target", "server"]);
  strictEqual(commands.code, 0, commands.err);
  ok(commands.out.split("\n").includes("math.add"), commands.out);
  await waitFor(() => relay.stats.nodes === 1, "every command line node to leave the relay");
});
