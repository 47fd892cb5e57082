/**
 * The `peerbase` command line (cli.ts): key generation, usage errors (exit
 * status 2), argument parsing, and real calls through the spawned command
 * line, on the LAN and through a relay, as a client-only member that peers
 * never list.
 */

import { deepStrictEqual, ok, rejects, strictEqual } from "node:assert/strict";
import { generateKey, Node } from "../mod.ts";
import { Relay } from "../relay/mod.ts";
import { isKey } from "../lib/fernet.ts";
import {
  CLI_VERSION,
  type CliEnv,
  main,
  MAX_MILLISECONDS,
  parseArg,
  parseCliArgs,
  UsageError,
} from "../cli.ts";
import { parseRelayArgs, UsageError as RelayUsageError } from "../relay.ts";
import { UsageError as SharedUsageError } from "../lib/validate.ts";
import { tcpTransport } from "../lib/tcp_transport.ts";
import type { Transport } from "../lib/transport.ts";
import {
  HANG_TIMEOUT,
  nodeOptions,
  sleep,
  type TestNetwork,
  testNetwork,
  waitFor,
} from "./_fixtures.ts";
import { meetVia, remoteOptions, startRelay } from "./_relay_fixtures.ts";
import { IN_NETNS, NETNS_REASON, runToEnd, testIf } from "./_env.ts";

const CLI_SCRIPT = new URL("../cli.ts", import.meta.url);
/** The permissions of `deno task cli` (and of the compiled binary). */
const CLI_FLAGS = ["--allow-net", "--allow-read", "--allow-env", "--unstable-net"];

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the command line to completion (10 s cap) with `env` added. */
function runCli(args: string[], env: Record<string, string> = {}): Promise<Outcome> {
  return runToEnd(Deno.execPath(), ["run", ...CLI_FLAGS, CLI_SCRIPT.href, ...args], {
    env: { NO_COLOR: "1", ...env },
    timeout: HANG_TIMEOUT,
  });
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
    [["call", "x", "--timeout", "0"], net, /Invalid --timeout '0'/],
    [["peers", "--wait", "2147483648"], net, /Invalid --wait '2147483648'/],
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

Deno.test("parseCliArgs() takes a --key that starts with '-' (one generated key in 64 does)", async () => {
  const key = `-${generateKey().slice(1)}`;
  const parsed = await parseCliArgs([
    "peers",
    "--network",
    "lab",
    "--key",
    key,
    "--no-lan",
    "--relay",
    "a:1",
  ], fakeEnv({}));
  ok(JSON.stringify(parsed).includes(key), JSON.stringify(parsed));
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

Deno.test("parseCliArgs() takes --timeout and --wait as whole ms from 1 to 2147483647, and --timeout none or Infinity as no limit", async (t) => {
  const env = fakeEnv({ PEERBASE_NETWORK: "office", PEERBASE_KEY: testNetwork().networkKey });
  const parse = (...flags: string[]) => parseCliArgs(["call", "x", ...flags], env);
  await t.step("accepted values", async () => {
    strictEqual((await parse("--timeout", "1")).timeout, 1);
    strictEqual((await parse("--timeout", "2147483647")).timeout, MAX_MILLISECONDS);
    strictEqual((await parse("--timeout", "none")).timeout, Infinity);
    strictEqual((await parse("--timeout", "Infinity")).timeout, Infinity);
    strictEqual((await parse("--wait", "2147483647")).wait, MAX_MILLISECONDS);
    strictEqual((await parse("--wait", "007")).wait, 7);
  });
  const bad: Array<[string, string]> = [
    ["--timeout", "0"],
    ["--timeout", "-5"],
    ["--timeout", "1.5"],
    ["--timeout", "2147483648"],
    ["--timeout", "99999999999"],
    ["--timeout", "infinity"],
    ["--timeout", ""],
    ["--wait", "0"],
    ["--wait", "2147483648"],
    ["--wait", "none"],
    ["--wait", "Infinity"],
    ["--wait", "1e3"],
  ];
  for (const [flag, value] of bad) {
    await t.step(`${flag} '${value}' is a UsageError naming the flag`, async () => {
      await rejects(parse(`${flag}=${value}`), (error: Error) => {
        ok(error instanceof UsageError, error.name);
        ok(
          error.message.startsWith(
            `Invalid ${flag} '${value}': expected whole milliseconds from 1 to 2147483647`,
          ),
          error.message,
        );
        strictEqual(error.message.endsWith("for no limit"), flag === "--timeout", error.message);
        return true;
      });
    });
  }
  await t.step("--help documents none", async () => {
    const out: string[] = [];
    strictEqual(
      await main(["--help"], { out: (l) => out.push(l), err: () => {}, terminal: false }),
      0,
    );
    ok(out.join("\n").includes("--timeout MS|none"), out.join("\n"));
  });
});

Deno.test("main() refuses a bad --timeout or --wait with exit status 2 before joining the network", async () => {
  const net = testNetwork("cli-flags");
  let accepted = 0;
  const counting: Transport = {
    dial: (address, signal) => tcpTransport.dial(address, signal),
    async listen(address) {
      const listener = await tcpTransport.listen(address);
      return {
        address: listener.address,
        accept: async () => {
          const stream = await listener.accept();
          accepted++;
          return stream;
        },
        close: () => listener.close(),
      };
    },
  };
  await using started = await startRelay({ transport: counting });
  const common = ["--network", net.network, "--key", net.networkKey, "--no-lan"];
  for (const flags of [["--timeout", "0"], ["--wait", "0"], ["--wait", "2147483648"]]) {
    const err: string[] = [];
    const io = { out: () => {}, err: (l: string) => err.push(l), terminal: false };
    const code = await main(["peers", ...flags, ...common, "--relay", started.address], io);
    strictEqual(code, 2, err.join("\n"));
    ok(err[0]!.startsWith(`peerbase: Invalid ${flags[0]} '${flags[1]}'`), err.join("\n"));
  }
  await sleep(50);
  strictEqual(accepted, 0, "nothing connected to the relay");
});

Deno.test("main() reports no member found as the real PeerNotFoundError, exit status 1", async () => {
  const net = testNetwork("cli-empty");
  await using started = await startRelay();
  const err: string[] = [];
  const io = { out: () => {}, err: (l: string) => err.push(l), terminal: false };
  const args = ["call", "x", "--wait", "50", "--network", net.network, "--no-lan"];
  const code = await main([...args, "--key", net.networkKey, "--relay", started.address], io);
  strictEqual(code, 1, err.join("\n"));
  const line = err.find((l) => l.includes("PeerNotFoundError")) ?? err.join("\n");
  strictEqual(
    line,
    `peerbase: PeerNotFoundError: Cannot reach peer '*': no member of network '${net.network}' was found within 50 ms; check --network and the key, pass --relay, or raise --wait`,
  );
});

Deno.test("UsageError is one class shared by cli.ts and relay.ts", async () => {
  strictEqual(UsageError, SharedUsageError);
  strictEqual(RelayUsageError, SharedUsageError);
  strictEqual(new UsageError("x").name, "UsageError");
  await rejects(parseCliArgs(["frobnicate"]), RelayUsageError);
  await rejects(parseRelayArgs(["--port", "x"]), UsageError);
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
