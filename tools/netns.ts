// deno-lint-ignore-file no-console
/**
 * Runs Deno inside a fresh private network namespace whose only interface is
 * a loopback that is up and carries multicast, so tests and demos can
 * advertise on UDP multicast without a single packet reaching a real network.
 * The namespace keeps the default advertiser port out of the kernel's
 * ephemeral ports: a socket bound to port 0 without `SO_REUSEADDR` (a test's
 * probe, a node's sender) could otherwise get it and keep every node that
 * starts meanwhile off it (`PortInUseError`).
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
 *    exits 1 instead. Either way it says what failed and what to do: install
 *    iproute2 or util-linux, run as root (sudo), or enable unprivileged user
 *    namespaces (the sysctl that blocks them is named; Ubuntu 24.04 blocks
 *    them by default with `kernel.apparmor_restrict_unprivileged_userns=1`),
 *    see {@linkcode explainNoNamespace}.
 *
 * @module
 */

import { DEFAULT_ADVERTISER_PORT } from "../lib/lan_defaults.ts";

/** Commands run inside the new namespace before the child. */
const SETUP: readonly (readonly string[])[] = [
  ["link", "set", "lo", "up"],
  ["link", "set", "lo", "multicast", "on"],
  ["route", "add", "224.0.0.0/4", "dev", "lo"],
];

/** Keeps the default advertiser port from being handed out as an ephemeral port (best effort). */
const RESERVE_SCRIPT =
  `(echo ${DEFAULT_ADVERTISER_PORT} > /proc/sys/net/ipv4/ip_local_reserved_ports) 2>/dev/null || true`;

const SETUP_SCRIPT = [...SETUP.map((args) => `ip ${args.join(" ")}`), RESERVE_SCRIPT].join(" && ");

const SIGNALS = ["SIGINT", "SIGTERM"] as const;
const SIGNAL_NUMBERS: Record<(typeof SIGNALS)[number], number> = { SIGINT: 2, SIGTERM: 15 };

/** How the child will be run. */
type Plan =
  | { kind: "ip"; name: string }
  | { kind: "unshare" }
  | { kind: "direct" };

/** Sysctls that decide whether a user without root may create a user namespace. */
export const USERNS_SYSCTLS = [
  "kernel.apparmor_restrict_unprivileged_userns",
  "kernel.unprivileged_userns_clone",
  "user.max_user_namespaces",
] as const;

/** One of {@linkcode USERNS_SYSCTLS}. */
export type UsernsSysctl = (typeof USERNS_SYSCTLS)[number];

/** What was found and tried when no namespace could be made: the input of {@linkcode explainNoNamespace}. */
export interface NamespaceAttempt {
  /** The user id this tool runs as (0 is root). */
  uid: number;
  /** Whether `ip` (iproute2) could be run. */
  hasIp: boolean;
  /** Whether `unshare` (util-linux) could be run. */
  hasUnshare: boolean;
  /** What `ip netns add` (or the setup inside it) wrote to stderr when it failed as root. */
  ipError?: string;
  /** What `unshare -rn` (or the setup inside it) wrote to stderr when it failed. */
  unshareError?: string;
  /** Each sysctl's value, trimmed; absent when this kernel does not have it. */
  sysctls: Partial<Record<UsernsSysctl, string>>;
}

/** How to turn each blocking sysctl off, and the value that blocks. */
const SYSCTL_FIXES: readonly { name: UsernsSysctl; blocks: string; allow: string; who: string }[] =
  [
    {
      name: "kernel.apparmor_restrict_unprivileged_userns",
      blocks: "1",
      allow: "0",
      who: "AppArmor (the default on Ubuntu 24.04)",
    },
    { name: "kernel.unprivileged_userns_clone", blocks: "0", allow: "1", who: "the kernel" },
    { name: "user.max_user_namespaces", blocks: "0", allow: "15000", who: "the kernel" },
  ];

/** ` (what the command said)`, or nothing when it said nothing. */
function said(command: string, stderr: string | undefined): string {
  const text = stderr?.trim().split("\n").filter((line) => line !== "").at(-1);
  return text ? ` (${command}: ${text})` : "";
}

/**
 * Why no private network namespace could be made, and what to do about it,
 * from what was found and tried. Pure: the caller gathers the facts.
 *
 * @example
 * ```ts
 * import { ok } from "node:assert/strict";
 * import { explainNoNamespace } from "./netns.ts";
 * const why = explainNoNamespace({
 *   uid: 1000,
 *   hasIp: true,
 *   hasUnshare: true,
 *   unshareError: "unshare: write failed /proc/self/uid_map: Operation not permitted",
 *   sysctls: { "kernel.apparmor_restrict_unprivileged_userns": "1" },
 * });
 * ok(why.includes("sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"));
 * ```
 */
export function explainNoNamespace(attempt: NamespaceAttempt): string {
  const { uid, hasIp, hasUnshare, ipError, unshareError, sysctls } = attempt;
  if (!hasIp && !hasUnshare) {
    return "neither iproute2 (ip) nor util-linux (unshare) is installed; install both (apt-get install iproute2 util-linux)";
  }
  if (!hasIp) {
    return "iproute2 (ip) is not installed and the namespace's loopback is set up with it; install it (apt-get install iproute2)";
  }
  const unshare = said("unshare -rn", unshareError);
  if (uid === 0) {
    return `running as root, but 'ip netns add' failed${said("ip", ipError)}${
      hasUnshare ? ` and so did 'unshare -rn'${unshare}` : ""
    }; inside a container, grant CAP_SYS_ADMIN (docker run --cap-add SYS_ADMIN, or --privileged)`;
  }
  if (!hasUnshare) {
    return "not running as root and util-linux (unshare) is not installed; run this tool with sudo, or install util-linux (apt-get install util-linux)";
  }
  for (const { name, blocks, allow, who } of SYSCTL_FIXES) {
    if (sysctls[name] === blocks) {
      return `not running as root and ${who} forbids unprivileged user namespaces (${name}=${blocks})${unshare}; run this tool with sudo, or allow them with 'sudo sysctl -w ${name}=${allow}'`;
    }
  }
  return `not running as root and 'unshare -rn' failed${unshare}; run this tool with sudo`;
}

/** The outcome of a helper command: whether it ran at all, succeeded, and its stderr. */
interface Outcome {
  found: boolean;
  ok: boolean;
  stderr: string;
}

/** Runs a helper command, keeping only its stderr. */
async function run(cmd: string, args: readonly string[]): Promise<Outcome> {
  try {
    const out = await new Deno.Command(cmd, {
      args: [...args],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).output();
    return { found: true, ok: out.success, stderr: new TextDecoder().decode(out.stderr) };
  } catch (error) {
    return { found: !(error instanceof Deno.errors.NotFound), ok: false, stderr: String(error) };
  }
}

/** Creates and configures a named namespace with iproute2 (root only). */
async function createIpNamespace(): Promise<{ name: string } | Outcome> {
  const random = crypto.getRandomValues(new Uint8Array(4)).toHex();
  const name = `peerbase-${Deno.pid}-${random}`;
  const added = await run("ip", ["netns", "add", name]);
  if (!added.ok) return added;
  for (const args of SETUP) {
    const step = await run("ip", ["-n", name, ...args]);
    if (!step.ok) {
      await deleteIpNamespace(name);
      return step;
    }
  }
  await run("ip", ["netns", "exec", name, "sh", "-c", RESERVE_SCRIPT]);
  return { name };
}

/** Deletes the namespace, reporting (not throwing) when that fails. */
async function deleteIpNamespace(name: string): Promise<void> {
  if (!(await run("ip", ["netns", "del", name])).ok) {
    console.error(`netns: cannot delete network namespace ${name}: run 'ip netns del ${name}'`);
  }
}

/** Whether `unshare -rn` can make a namespace and run the setup in it. */
function tryUnshare(): Promise<Outcome> {
  return run("unshare", ["-rn", "sh", "-c", SETUP_SCRIPT]);
}

/** Reads a sysctl; undefined when this kernel does not have it. */
function readSysctl(name: UsernsSysctl): string | undefined {
  try {
    return Deno.readTextFileSync(`/proc/sys/${name.replaceAll(".", "/")}`).trim();
  } catch {
    return undefined;
  }
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

/** Picks how to run; when no namespace is possible, says why. */
async function choosePlan(): Promise<Plan | { kind: "direct"; why: string }> {
  const uid = Deno.uid() ?? -1;
  let ipError: string | undefined;
  if (uid === 0) {
    const made = await createIpNamespace();
    if ("name" in made) return { kind: "ip", name: made.name };
    ipError = made.stderr;
  }
  const unshare = await tryUnshare();
  if (unshare.ok) return { kind: "unshare" };
  const attempt: NamespaceAttempt = {
    uid,
    hasIp: (await run("ip", ["-V"])).found,
    hasUnshare: unshare.found,
    sysctls: {},
  };
  if (ipError !== undefined) attempt.ipError = ipError;
  if (unshare.found) attempt.unshareError = unshare.stderr;
  for (const name of USERNS_SYSCTLS) {
    const value = readSysctl(name);
    if (value !== undefined) attempt.sysctls[name] = value;
  }
  return { kind: "direct", why: explainNoNamespace(attempt) };
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
    if ("why" in plan) {
      if (Deno.env.get("PEERBASE_REQUIRE_NETNS") === "1") {
        console.error(`netns: cannot create a private network namespace: ${plan.why}`);
        return 1;
      }
      console.error(
        `netns: running WITHOUT a private network namespace, tests that advertise on multicast will be skipped: ${plan.why}`,
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
