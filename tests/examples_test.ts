/**
 * The three examples, run the way `deno task demo|chat|fanout` runs them:
 * each as a subprocess that spawns its own node processes. They advertise
 * on UDP multicast, so they run only inside the private network namespace.
 */

import { match, ok, strictEqual } from "node:assert/strict";
import { IN_NETNS, NETNS_REASON, testIf } from "./_env.ts";

/** An example that runs longer than this is killed: only catches hangs (they take 2-5 s). */
const HANG_TIMEOUT = 60_000;

const EXAMPLES = new URL("../examples/", import.meta.url);

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `examples/<file>` with `args`, killing it after HANG_TIMEOUT. */
async function runExample(
  file: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<Run> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-net", new URL(file, EXAMPLES).href, ...args],
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), HANG_TIMEOUT);
  try {
    const output = await child.output();
    const decoder = new TextDecoder();
    return {
      code: output.code,
      stdout: decoder.decode(output.stdout),
      stderr: decoder.decode(output.stderr),
    };
  } finally {
    clearTimeout(timer);
  }
}

/** Asserts a clean run, showing the output when it was not. */
function assertSuccess(run: Run): void {
  strictEqual(
    run.code,
    0,
    `exit code ${run.code}\n--- stdout\n${run.stdout}\n--- stderr\n${run.stderr}`,
  );
}

testIf(IN_NETNS, NETNS_REASON, {
  name: "examples/demo.ts tours calls, errors and a dying node, then exits 0 by itself",
  async fn() {
    const run = await runExample("demo.ts", []);
    assertSuccess(run);
    const out = run.stdout;
    for (const role of ["alice", "bob", "carol"]) match(out, new RegExp(`peerjoin +${role} `));
    match(out, /math\.add\(2, 3\) on alice +5 /);
    match(out, /bytes\.reverse on bob +262144 bytes .* intact/);
    match(out, /\.remoteMessage +Division by zero/);
    match(out, /math\.pow on alice +UnknownCommandError/);
    match(out, /CommandTimeoutError after \d+ ms/);
    match(out, /call in flight +ConnectionClosedError/);
    match(out, /call after it left +PeerNotFoundError/);
    match(out, /peerleave +carol/);
    ok(out.includes("the demo succeeded"), out);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "examples/chat.ts --demo exchanges scripted messages with two bots and exits 0",
  async fn() {
    const run = await runExample("chat.ts", ["--demo"]);
    assertSuccess(run);
    const lines = run.stdout.split("\n");
    for (
      const line of [
        "* bob joined",
        "* carol joined",
        "alice> hi everyone!",
        "[bob] hey alice!",
        "[carol] hello from carol",
        "[bob] a parser that reads one byte at a time",
        "[carol] the tests; all green now",
        "* bob left",
        "* carol left",
        "* bye",
      ]
    ) {
      ok(lines.includes(line), `missing line '${line}' in:\n${run.stdout}`);
    }
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "examples/fanout.ts --demo prints one row per worker, errors included, and exits 0",
  async fn() {
    const run = await runExample("fanout.ts", ["--demo"]);
    assertSuccess(run);
    const out = run.stdout;
    for (const worker of ["w1", "w2", "w3"]) match(out, new RegExp(`^ +${worker} +49 +\\d+$`, "m"));
    match(out, /^ +w4 +RemoteError \(Error: w4 is out of order\) +\d+$/m);
    match(out, /^ +w5 +CommandTimeoutError \(no answer in 1000 ms\) +\d+$/m);
    match(out, /5 peers, 3 answered, 2 failed/);
    match(out, /CommandError: 2 of 5 failed \(w4, w5\)/);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "examples refuse to run their demos outside a private network namespace",
  async fn(t) {
    // Run inside the namespace anyway, so a broken guard cannot reach a real LAN.
    for (
      const [file, args] of [
        ["demo.ts", []],
        ["chat.ts", ["--demo"]],
        ["fanout.ts", ["--demo"]],
      ] as const
    ) {
      await t.step(`${file} ${args.join(" ")}`, async () => {
        const run = await runExample(file, [...args], { PEERBASE_NETNS: "0" });
        strictEqual(run.code, 1, run.stdout + run.stderr);
        match(run.stderr, /refusing to run .*outside a private network namespace/);
        strictEqual(run.stdout, "");
      });
    }
  },
});
