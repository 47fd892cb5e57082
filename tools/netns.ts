// deno-lint-ignore-file no-console
/**
 * Runs Deno inside a fresh private network namespace whose only interface is
 * a loopback that is up and carries multicast, so tests and demos can
 * advertise on UDP multicast without a single packet reaching a real network.
 *
 * ```sh
 * deno run -A tools/netns.ts -- test -A --unstable-net tests/
 * ```
 *
 * Everything after `--` is passed to `Deno.execPath()`. The child gets
 * `PEERBASE_NETNS=1`, inherits stdio, and its exit code becomes this tool's.
 *
 * How the namespace is made, first that works:
 *
 * 1. As root with iproute2: `ip netns add peerbase-<pid>-<random>`, set up
 *    with `ip -n`, run with `ip netns exec`, and always `ip netns del`
 *    afterwards (also on SIGINT/SIGTERM, which are forwarded to the child).
 * 2. Otherwise `unshare -rn` (user + network namespace, util-linux) with the
 *    same setup; the namespace dies with the child.
 * 3. Otherwise the child runs directly, WITHOUT `PEERBASE_NETNS`, so tests
 *    that advertise are skipped; with `PEERBASE_REQUIRE_NETNS=1` this tool
 *    exits 1 instead.
 *
 * @module
 */

/** Commands run inside the new namespace before the child. */
const SETUP: readonly (readonly string[])[] = [
  ["link", "set", "lo", "up"],
  ["link", "set", "lo", "multicast", "on"],
  ["route", "add", "224.0.0.0/4", "dev", "lo"],
];

const SETUP_SCRIPT = SETUP.map((args) => `ip ${args.join(" ")}`).join(" && ");

const SIGNALS = ["SIGINT", "SIGTERM"] as const;
const SIGNAL_NUMBERS: Record<(typeof SIGNALS)[number], number> = { SIGINT: 2, SIGTERM: 15 };

/** How the child will be run. */
type Plan =
  | { kind: "ip"; name: string }
  | { kind: "unshare" }
  | { kind: "direct" };

/** Runs a helper command quietly; false when it fails or does not exist. */
async function quiet(cmd: string, args: readonly string[]): Promise<boolean> {
  try {
    const out = await new Deno.Command(cmd, {
      args: [...args],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).output();
    return out.success;
  } catch {
    return false;
  }
}

/** Creates and configures a named namespace with iproute2; null when refused. */
async function createIpNamespace(): Promise<string | null> {
  if (Deno.uid() !== 0) return null;
  const random = crypto.getRandomValues(new Uint8Array(4)).toHex();
  const name = `peerbase-${Deno.pid}-${random}`;
  if (!await quiet("ip", ["netns", "add", name])) return null;
  for (const args of SETUP) {
    if (!await quiet("ip", ["-n", name, ...args])) {
      await deleteIpNamespace(name);
      return null;
    }
  }
  return name;
}

/** Deletes the namespace, reporting (not throwing) when that fails. */
async function deleteIpNamespace(name: string): Promise<void> {
  if (!await quiet("ip", ["netns", "del", name])) {
    console.error(`netns: cannot delete network namespace ${name}: run 'ip netns del ${name}'`);
  }
}

/** Whether `unshare -rn` can make a namespace and run the setup in it. */
function unshareWorks(): Promise<boolean> {
  return quiet("unshare", ["-rn", "sh", "-c", SETUP_SCRIPT]);
}

/** The child's command line and environment for `plan`. */
function commandFor(plan: Plan, args: readonly string[]): { cmd: string; args: string[] } {
  const deno = Deno.execPath();
  switch (plan.kind) {
    case "ip":
      return { cmd: "ip", args: ["netns", "exec", plan.name, deno, ...args] };
    case "unshare":
      return {
        cmd: "unshare",
        args: ["-rn", "sh", "-c", `${SETUP_SCRIPT} && exec "$@"`, "sh", deno, ...args],
      };
    case "direct":
      return { cmd: deno, args: [...args] };
  }
}

/** Picks how to run, printing why when no namespace is possible. */
async function choosePlan(): Promise<Plan> {
  const name = await createIpNamespace();
  if (name !== null) return { kind: "ip", name };
  if (await unshareWorks()) return { kind: "unshare" };
  return { kind: "direct" };
}

async function main(argv: readonly string[]): Promise<number> {
  const args = argv[0] === "--" ? argv.slice(1) : [...argv];
  if (args.length === 0) {
    console.error("usage: deno run -A tools/netns.ts -- <deno args...>");
    return 2;
  }

  let child: Deno.ChildProcess | null = null;
  let received: (typeof SIGNALS)[number] | null = null;
  const handlers = SIGNALS.map((signal) => {
    const handler = () => {
      received ??= signal;
      try {
        child?.kill(signal);
      } catch {
        // The child already exited.
      }
    };
    Deno.addSignalListener(signal, handler);
    return () => Deno.removeSignalListener(signal, handler);
  });

  const plan = await choosePlan();
  try {
    if (plan.kind === "direct") {
      if (Deno.env.get("PEERBASE_REQUIRE_NETNS") === "1") {
        console.error(
          "netns: cannot create a private network namespace: install iproute2 (apt-get install iproute2) and run as root, or install util-linux for unshare",
        );
        return 1;
      }
      console.error(
        "netns: running WITHOUT a private network namespace (no iproute2/unshare or not permitted); tests that advertise on multicast will be skipped",
      );
    }
    if (received !== null) return 128 + SIGNAL_NUMBERS[received];

    const env = Deno.env.toObject();
    delete env.PEERBASE_NETNS;
    if (plan.kind !== "direct") env.PEERBASE_NETNS = "1";
    const { cmd, args: cmdArgs } = commandFor(plan, args);
    child = new Deno.Command(cmd, {
      args: cmdArgs,
      env,
      clearEnv: true,
      stdin: "inherit",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
    const status = await child.status;
    return status.code;
  } finally {
    if (plan.kind === "ip") await deleteIpNamespace(plan.name);
    for (const remove of handlers) remove();
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
