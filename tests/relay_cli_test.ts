/**
 * The relay's command line: help, version, usage errors (exit status 2),
 * `--config` files, and `parseRelayArgs` (seconds on the command line,
 * milliseconds in the options).
 */

import { deepStrictEqual, ok, rejects, strictEqual } from "node:assert/strict";
import { networkId, Node, RelayRefusedError } from "../mod.ts";
import {
  parseRelayArgs,
  RELAY_MALLOC_ENV,
  RELAY_V8_FLAGS,
  RELAY_VERSION,
  type RelayCommandOptions,
  UsageError,
} from "../relay.ts";
import { deadline, HANG_TIMEOUT, testNetwork } from "./_fixtures.ts";
import { type Output, runToEnd } from "./_env.ts";
import { RELAY_SCRIPT, remoteOptions, spawnScript } from "./_relay_fixtures.ts";

/** A network id (any 32-byte Ed25519 public key will do for parsing). */
const ID = "xrqwCHBCS6XeF3_mr0H6pE97NgGQEuX4VCXCq6ob6zs";

/** Runs the relay command line to completion (10 s cap): exit code, stdout, stderr. */
function runRelay(args: string[]): Promise<Output> {
  return runToEnd(Deno.execPath(), ["run", "-A", RELAY_SCRIPT.href, ...args], {
    timeout: HANG_TIMEOUT,
  });
}

/** Writes `value` as JSON to a temporary file; `await using` removes it. */
async function tempConfig(value: unknown): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempFile({ prefix: "relay-config-", suffix: ".json" });
  await Deno.writeTextFile(path, typeof value === "string" ? value : JSON.stringify(value));
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path) };
}

Deno.test({
  name: "relay --help prints the usage, in seconds, and exits 0",
  async fn() {
    for (const flag of ["--help", "-h"]) {
      const { code, stdout, stderr } = await runRelay([flag]);
      strictEqual(code, 0, stderr);
      ok(stdout.includes("Usage:"), stdout);
      ok(stdout.includes("--timeout SECONDS"), stdout);
      ok(/times on the command line are in seconds/i.test(stdout), stdout);
      strictEqual(stderr, "");
    }
  },
});

Deno.test({
  name: "relay --version prints the version and exits 0",
  async fn() {
    for (const flag of ["--version", "-V"]) {
      const { code, stdout, stderr } = await runRelay([flag]);
      strictEqual(code, 0, stderr);
      strictEqual(stdout.trim(), RELAY_VERSION);
    }
  },
});

Deno.test({
  name: "relay exits 2 with a clear message for a bad argument",
  async fn(t) {
    const cases: Array<[string[], RegExp]> = [
      [["--bogus"], /bogus/],
      [["stray"], /stray|positional/i],
      [["--port"], /--port/],
      [["--port", "abc"], /Invalid --port 'abc'/],
      [["--port=-1"], /Invalid --port '-1'/],
      [["--port", "-1"], /--port/],
      [["--port", "70000"], /port must be an integer from 0 to 65535, got 70000/],
      [["--timeout", "0"], /Invalid --timeout '0': expected seconds above 0/],
      [["--timeout", "soon"], /Invalid --timeout 'soon'/],
      [["--timeout", "Infinity"], /Invalid --timeout 'Infinity'/],
      [["--max-nodes", "0"], /Invalid --max-nodes '0'/],
      [
        ["--max-frame", "100"],
        /Invalid --max-frame '100': expected a whole number of at least 1024/,
      ],
      [["--network", "office"], /network 'office' has no network id.*NAME:ID/],
      [["--network", ""], /network '' has no network id/],
      [["--metrics", "nowhere"], /Invalid --metrics 'nowhere': expected host:port/],
      [["--drain=-1"], /Invalid --drain '-1': expected seconds from 0/],
      [["--max-per-address", "0"], /Invalid --max-per-address '0'/],
      [["--config", "/nonexistent/relay.json"], /Cannot read --config \/nonexistent\/relay\.json/],
    ];
    for (const [args, message] of cases) {
      await t.step(`relay ${args.join(" ")}`, async () => {
        const { code, stdout, stderr } = await runRelay(args);
        strictEqual(code, 2, stderr);
        strictEqual(stdout, "");
        ok(stderr.startsWith("peerbase-relay: "), stderr);
        ok(message.test(stderr), stderr);
        ok(!stderr.includes("listening"), stderr);
        ok(!stderr.includes("Cannot create node"), stderr);
      });
    }
  },
});

Deno.test({
  name: "relay exits 2 with a clear message when its port is taken",
  async fn() {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const { code, stderr } = await runRelay([
      "--host",
      "127.0.0.1",
      "--port",
      String(listener.addr.port),
    ]);
    strictEqual(code, 2, stderr);
    ok(stderr.includes(`127.0.0.1:${listener.addr.port}`), stderr);
    ok(stderr.includes("already in use"), stderr);
  },
});

Deno.test({
  name: "relay --config FILE applies its options (times in milliseconds)",
  async fn() {
    const served = testNetwork("cfg");
    const other = testNetwork("cfg");
    const servedId = await networkId(served.networkKey, served.network);
    await using config = await tempConfig({
      hostname: "127.0.0.1",
      port: 0,
      networks: [`${served.network}:${servedId}`],
      timeout: 1500,
      maxNodes: 10,
      maxFrame: 65536,
    });
    await using relay = spawnScript(RELAY_SCRIPT, ["--config", config.path]);
    const listening = /listening on 127\.0\.0\.1:(\d+)/;
    await deadline(
      (async () => {
        while (!listening.test(relay.stderr) && !relay.exited) {
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      })(),
      "the relay's start line",
    );
    const port = listening.exec(relay.stderr)?.[1];
    ok(port !== undefined, relay.stderr);
    const address = `127.0.0.1:${port}`;
    // The networks option came from the file: the served network is let in, another refused.
    await using member = new Node(remoteOptions(served, "member", address));
    await member.start();
    deepStrictEqual(member.relays, [{ address, up: true, maintained: true }]);
    const stranger = new Node(remoteOptions(other, "stranger", address));
    const refused = await stranger.start().then(() => null, (e) => e);
    ok(refused instanceof RelayRefusedError, String(refused));
    await stranger.close();
    await member.close();
    strictEqual((await relay.stop("SIGTERM")).code, 0, relay.stderr);
  },
});

Deno.test({
  name: "relay --config refuses unknown keys, non-object files and mistyped values with exit 2",
  async fn(t) {
    const cases: Array<[string, unknown, RegExp]> = [
      ["unknown keys", { port: 0, colour: "blue", maxnodes: 3 }, /unknown keys colour, maxnodes/],
      ["an array", [1, 2], /expected a JSON object/],
      ["null", "null", /expected a JSON object/],
      ["bad JSON", "{ port: 1 ", /Cannot read --config/],
      [
        "a word for a number",
        { port: "seven" },
        /"port" must be a number, got the string "seven"$/m,
      ],
      [
        "a quoted number",
        { port: "7000" },
        /"port" must be a number, got the string "7000"; write 7000 without quotes$/m,
      ],
      ["a number for a string", { hostname: 7 }, /"hostname" must be a string, got the number 7$/m],
      [
        "one network as a string",
        { networks: "lan" },
        /"networks" must be an array of strings, got the string "lan"; write \["lan"\]$/m,
      ],
      ["null for a number", { timeout: null }, /"timeout" must be a number, got null$/m],
      ["a network without its id", { networks: ["lan"] }, /network 'lan' has no network id/],
      [
        "a number out of range",
        { maxNodes: 0 },
        /Cannot create relay: maxNodes must be an integer/,
      ],
    ];
    for (const [what, value, message] of cases) {
      await t.step(what, async () => {
        await using config = await tempConfig(value);
        const { code, stderr } = await runRelay(["--config", config.path]);
        strictEqual(code, 2, stderr);
        ok(message.test(stderr), stderr);
        ok(!stderr.includes("Cannot create node"), stderr);
      });
    }
  },
});

Deno.test({
  name: "parseRelayArgs() turns command-line seconds into option milliseconds",
  async fn(t) {
    const cases: Array<[string[], RelayCommandOptions | "help" | "version"]> = [
      [[], {}],
      [["--port", "7001", "--timeout", "30"], { port: 7001, timeout: 30_000 }],
      [["--timeout", "0.25"], { timeout: 250 }],
      [["--timeout", "1.0004"], { timeout: 1000 }],
      [["--port", "0"], { port: 0 }],
      [["--host", "::1"], { hostname: "::1" }],
      [["--network", `a:${ID}`, "--network", ID], { networks: [`a:${ID}`, ID] }],
      [["--drain", "0.5", "--metrics", "127.0.0.1:9464"], {
        drainGrace: 500,
        metrics: "127.0.0.1:9464",
      }],
      [["--max-per-address", "3", "--sender-rate", "50", "--fanout-rate", "2"], {
        maxPerAddress: 3,
        senderFrameRate: 50,
        fanoutRate: 2,
      }],
      [["--public-address", "tls://relay.example:443"], {
        publicAddresses: ["tls://relay.example:443"],
      }],
      [["--max-nodes", "5", "--max-frame", "2048"], { maxNodes: 5, maxFrame: 2048 }],
      [["--cluster", "nats://10.0.0.1:4222, tls://nats.example:4222", "--cluster-prefix", "eu"], {
        cluster: { servers: ["nats://10.0.0.1:4222", "tls://nats.example:4222"], prefix: "eu" },
      }],
      [["--help"], "help"],
      [["-h", "--port", "1"], "help"],
      [["-V"], "version"],
    ];
    for (const [args, expected] of cases) {
      await t.step(`[${args.join(" ")}]`, async () => {
        deepStrictEqual(await parseRelayArgs(args), expected);
      });
    }
  },
});

Deno.test({
  name: "parseRelayArgs() throws UsageError for bad arguments",
  async fn(t) {
    const cases: string[][] = [
      ["--nope"],
      ["positional"],
      ["--port", "1.5"],
      ["--timeout", "-1"],
      ["--timeout", "NaN"],
      ["--max-nodes", "two"],
      ["--max-frame", "1023"],
      ["--help=yes"],
      ["--network", "office"],
      ["--network", `ok:${ID}`, "--network", "a*"],
      ["--metrics", "9464"],
      ["--cluster", "10.0.0.1:4222"],
      ["--cluster", "nats://10.0.0.1"],
      ["--cluster", ","],
      ["--cluster-prefix", "eu"],
      ["--cluster", "nats://10.0.0.1:4222", "--cluster-prefix", "e.u"],
      ["--cluster", "nats://10.0.0.1:4222", "--cluster-user", "relay"],
      ["--cluster", "nats://10.0.0.1:4222", "--cluster-token-file", "/nonexistent/token"],
    ];
    for (const args of cases) {
      await t.step(`[${args.join(" ")}]`, async () => {
        await rejects(parseRelayArgs(args), UsageError);
      });
    }
  },
});

Deno.test({
  name: "parseRelayArgs() reads --config in milliseconds and lets the command line override it",
  async fn() {
    await using config = await tempConfig({
      hostname: "127.0.0.1",
      port: 7100,
      timeout: 1500,
      maxBuffered: 4096,
      registerDeadline: 250,
    });
    deepStrictEqual(await parseRelayArgs(["--config", config.path]), {
      hostname: "127.0.0.1",
      port: 7100,
      timeout: 1500,
      maxBuffered: 4096,
      registerDeadline: 250,
    });
    deepStrictEqual(
      await parseRelayArgs(["--config", config.path, "--timeout", "2", "--port", "7200"]),
      {
        hostname: "127.0.0.1",
        port: 7200,
        timeout: 2000,
        maxBuffered: 4096,
        registerDeadline: 250,
      },
    );
    await using unknown = await tempConfig({ timeout: 1, secret: "x" });
    await rejects(parseRelayArgs(["--config", unknown.path]), (error: Error) => {
      ok(error instanceof UsageError);
      ok(error.message.includes("unknown keys secret"), error.message);
      return true;
    });
  },
});

Deno.test({
  name: "parseRelayArgs() throws UsageError for an empty or non-decimal --port",
  async fn(t) {
    for (const args of [["--port", ""], ["--port", " "], ["--port", "0x1f90"], ["--port", "8e3"]]) {
      await t.step(`[${args.join(" ")}]`, async () => {
        await rejects(parseRelayArgs(args), UsageError);
      });
    }
  },
});

/** The words of `deno task relay`'s command line in deno.json. */
async function relayTaskWords(): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  return (config.tasks.relay as string).split(/\s+/);
}

Deno.test("deno task relay runs relay.ts with RELAY_MALLOC_ENV set, so that glibc keeps freed memory for reuse", async () => {
  const words = await relayTaskWords();
  const env = Object.entries(RELAY_MALLOC_ENV).map(([name, value]) => `${name}=${value}`);
  deepStrictEqual(words.slice(0, env.length + 1), [...env, "deno"]);
});

Deno.test("deno task relay runs relay.ts with RELAY_V8_FLAGS, which keep V8's young generation at 1 MiB a semi-space", async () => {
  const words = (await relayTaskWords()).filter((word) => !/^[A-Z_]+=/.test(word));
  deepStrictEqual(words.slice(0, 3), ["deno", "run", `--v8-flags=${RELAY_V8_FLAGS}`]);
  strictEqual(words.at(-1), "relay.ts");
  // Short-lived garbage with a few survivors grows the young generation to 16 MiB by default.
  const script = `
    import v8 from "node:v8";
    const keep = [];
    for (let i = 0; i < 200_000; i++) {
      const garbage = { i, text: "x".repeat(i % 100), list: [i, i + 1, i + 2] };
      if (i % 50 === 0) keep.push(garbage);
    }
    const young = v8.getHeapSpaceStatistics().find((s) => s.space_name === "new_space");
    console.log(JSON.stringify({ size: young.space_size, kept: keep.length }));
  `;
  const run = (flags: string[]) =>
    new Deno.Command(Deno.execPath(), {
      args: ["eval", ...flags, script],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
  const [tuned, plain] = await Promise.all([run([`--v8-flags=${RELAY_V8_FLAGS}`]), run([])]);
  const decode = (out: Deno.CommandOutput) => {
    strictEqual(out.code, 0, new TextDecoder().decode(out.stderr));
    return JSON.parse(new TextDecoder().decode(out.stdout)) as { size: number; kept: number };
  };
  const MiB = 1024 * 1024;
  ok(decode(tuned).size <= 2 * MiB, `young generation of ${decode(tuned).size} bytes`);
  ok(decode(plain).size > 2 * MiB, "the default young generation grew: the script shows the flag");
});

Deno.test("keepaliveInterval() beats every tick but no more often than a third of the relay timeout", async () => {
  const { keepaliveInterval } = await import("../lib/relay_client.ts");
  strictEqual(keepaliveInterval(1000, 10_000), 3333);
  strictEqual(keepaliveInterval(1000, 2000), 1000);
  strictEqual(keepaliveInterval(5000, 10_000), 5000);
});

Deno.test({
  name: "relay --metrics HOST:PORT serves the aggregate counters in Prometheus text format",
  async fn() {
    await using relay = spawnScript(RELAY_SCRIPT, [
      "--host",
      "127.0.0.1",
      "--port",
      "0",
      "--metrics",
      "127.0.0.1:0",
    ]);
    const serving = /serving counters at (http:\/\/127\.0\.0\.1:\d+\/metrics)/;
    await deadline(
      (async () => {
        while (!serving.test(relay.stderr) && !relay.exited) {
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      })(),
      "the relay's metrics line",
    );
    const url = serving.exec(relay.stderr)?.[1];
    ok(url !== undefined, relay.stderr);
    const response = await fetch(url, { signal: AbortSignal.timeout(10_000) });
    const text = await response.text();
    strictEqual(response.status, 200);
    ok(/^peerbase_relay_nodes 0$/m.test(text), text);
    ok(/^peerbase_relay_refusals_total\{reason="proof"\} 0$/m.test(text), text);
    strictEqual((await relay.stop("SIGTERM")).code, 0, relay.stderr);
  },
});
