// deno-lint-ignore-file no-console
/**
 * A test bed of two LANs behind NAT routers and a WAN, built from network
 * namespaces (root and iproute2 needed; nftables or iptables for the NAT):
 *
 * ```text
 *   lan-a 10.71.1.0/24              wan 203.0.113.0/24               lan-b 10.71.2.0/24
 *   a1 .2  a2 .3  x .4              bridge .1                        b1 .2
 *      │     │     │                relays .10 .11                      │
 *      └── br0 .1 (gw-a) ── wan0 .2 ──── br0 ──── wan0 .3 (gw-b) br0 .1 ──┘
 *           masquerade out of wan0,                  masquerade out of wan0,
 *           nothing new in from it                   nothing new in from it
 * ```
 *
 * Every host, router and the WAN is a namespace named
 * `peerbase-<pid>-<random>-<role>` (so `.ci/run` removes one whose process is
 * gone), joined by veth pairs and bridges. Hosts route `224.0.0.0/4` on their
 * LAN interface, so LAN discovery works inside each LAN; the routers forward
 * no multicast and let no new connection in from the WAN, so a host on one
 * LAN reaches the other only through something on the WAN (a relay), and the
 * WAN sees the routers' addresses, never a LAN address. No packet leaves
 * these namespaces: none of them has a link to any other.
 *
 * ```sh
 * deno run -A tools/lanbed.ts up      # build a bed, print its namespaces, keep it
 * deno run -A tools/lanbed.ts down    # remove every bed whose creator has exited
 * ip netns exec <namespace> <command> # run something in it
 * ```
 *
 * Tests use {@linkcode LanBed.up} and `await using`, which removes the
 * namespaces even when the test fails.
 *
 * @module
 */

/** The WAN's /24: TEST-NET-3 (RFC 5737), never routed on the Internet. */
export const WAN_PREFIX = "203.0.113";

/** LAN `i` (from 1) is `10.71.i.0/24`; its router is `.1`, its hosts `.2` on. */
export const LAN_PREFIX = "10.71";

/** Where the first relay address of the WAN starts (`203.0.113.10`). */
const FIRST_RELAY = 10;

/** Turns br_netfilter off in the namespace that runs it, when the kernel has it. */
const NO_BRIDGE_NF =
  "f=/proc/sys/net/bridge/bridge-nf-call-iptables; if [ -e $f ]; then echo 0 > $f; fi";

/** Host and LAN names: short enough for interface names (15 bytes at most). */
const NAME_PATTERN = /^[a-z][a-z0-9]{0,7}$/;

/** What a bed holds: hosts per LAN, and how many relay addresses the WAN gets. */
export interface LanBedOptions {
  /** Host names on each LAN, by LAN name. @default {{ a: ["a1", "a2", "x"], b: ["b1"] }} */
  lans?: Record<string, readonly string[]>;
  /** Relay addresses on the WAN's bridge (`203.0.113.10` on). @default {2} */
  relays?: number;
  /** Namespace name prefix. @default {`peerbase-${Deno.pid}-${random hex}`} */
  prefix?: string;
}

/** One step of building a bed: a command, run in the tool's namespace, with its stdin. */
export interface BedStep {
  /** The program (`ip`, `nft`, `iptables`, `sh`). */
  cmd: string;
  /** Its arguments. */
  args: string[];
  /** Text written to its stdin, if any. */
  stdin?: string;
}

/** The layout of a bed: namespace names and addresses, from {@linkcode planLanBed}. */
export interface BedLayout {
  /** The namespace name prefix. */
  prefix: string;
  /** Every namespace, in creation order: `wan`, then per LAN its router and hosts. */
  namespaces: string[];
  /** Each host's namespace and LAN address, by host name. */
  hosts: Record<string, { namespace: string; address: string; lan: string }>;
  /** Each LAN's router: namespace, LAN address, WAN address. */
  routers: Record<string, { namespace: string; lan: string; wan: string }>;
  /** The WAN namespace. */
  wan: string;
  /** Addresses on the WAN for relays to listen on. */
  relays: string[];
}

/** The NAT rules of a router, for `nft -f -`. */
export function natRuleset(): string {
  return `table ip peerbase_nat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan0" masquerade
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    oifname "wan0" ip daddr 224.0.0.0/4 drop
    iifname "wan0" ct state established,related accept
    iifname "wan0" drop
  }
}
`;
}

/** The same rules with iptables, for a machine without nft. */
function iptablesSteps(ns: string): BedStep[] {
  const rules = [
    ["-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-j", "MASQUERADE"],
    ["-A", "FORWARD", "-o", "wan0", "-d", "224.0.0.0/4", "-j", "DROP"],
    ["-A", "FORWARD", "-i", "wan0", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j"],
    ["-A", "FORWARD", "-i", "wan0", "-j", "DROP"],
  ];
  rules[2]!.push("ACCEPT");
  return rules.map((rule) => ({ cmd: "ip", args: ["netns", "exec", ns, "iptables", ...rule] }));
}

/**
 * Names, addresses and the commands that build a bed, without running
 * anything: pure, so the layout can be checked anywhere.
 *
 * @example
 * ```ts
 * import { equal } from "node:assert/strict";
 * import { planLanBed } from "./lanbed.ts";
 * const { layout, steps } = planLanBed({ prefix: "peerbase-1-t" }, "nft");
 * equal(layout.hosts.a2?.address, "10.71.1.3");
 * equal(layout.routers.b?.wan, "203.0.113.3");
 * equal(layout.relays.join(" "), "203.0.113.10 203.0.113.11");
 * equal(steps[0]?.args.join(" "), "netns add peerbase-1-t-wan");
 * ```
 */
export function planLanBed(
  options: LanBedOptions,
  nat: "nft" | "iptables",
): { layout: BedLayout; steps: BedStep[] } {
  const lans = options.lans ?? { a: ["a1", "a2", "x"], b: ["b1"] };
  const relayCount = options.relays ?? 2;
  const prefix = options.prefix ??
    `peerbase-${Deno.pid}-${crypto.getRandomValues(new Uint8Array(4)).toHex()}`;
  const lanNames = Object.keys(lans);
  if (lanNames.length < 1 || lanNames.length > 200) {
    throw new RangeError(`Cannot plan a bed: ${lanNames.length} LANs, expected 1 to 200`);
  }
  if (!Number.isInteger(relayCount) || relayCount < 0 || relayCount > 100) {
    throw new RangeError(`Cannot plan a bed: ${relayCount} relays, expected 0 to 100`);
  }
  const seen = new Set<string>(["wan"]);
  for (const name of [...lanNames, ...Object.values(lans).flat()]) {
    if (!NAME_PATTERN.test(name) || seen.has(name) || name.startsWith("gw")) {
      throw new TypeError(
        `Cannot plan a bed: '${name}' is not a new name of 1 to 8 lowercase letters and digits (not 'wan' or 'gw…')`,
      );
    }
    seen.add(name);
  }
  const wan = `${prefix}-wan`;
  const layout: BedLayout = {
    prefix,
    namespaces: [wan],
    hosts: {},
    routers: {},
    wan,
    relays: Array.from({ length: relayCount }, (_, i) => `${WAN_PREFIX}.${FIRST_RELAY + i}`),
  };
  const ip = (ns: string, ...args: string[]): BedStep => ({ cmd: "ip", args: ["-n", ns, ...args] });
  const inNs = (ns: string, script: string): BedStep => ({
    cmd: "ip",
    args: ["netns", "exec", ns, "sh", "-c", script],
  });
  const steps: BedStep[] = [{ cmd: "ip", args: ["netns", "add", wan] }];
  steps.push(
    ip(wan, "link", "set", "lo", "up"),
    ip(wan, "link", "add", "br0", "type", "bridge"),
    ip(wan, "addr", "add", `${WAN_PREFIX}.1/24`, "dev", "br0"),
    ...layout.relays.map((address) => ip(wan, "addr", "add", `${address}/24`, "dev", "br0")),
    ip(wan, "link", "set", "br0", "up"),
    inNs(wan, NO_BRIDGE_NF),
  );
  lanNames.forEach((lan, index) => {
    const subnet = `${LAN_PREFIX}.${index + 1}`;
    const router = `${prefix}-gw-${lan}`;
    const wanAddress = `${WAN_PREFIX}.${2 + index}`;
    layout.namespaces.push(router);
    layout.routers[lan] = { namespace: router, lan: `${subnet}.1`, wan: wanAddress };
    steps.push(
      { cmd: "ip", args: ["netns", "add", router] },
      ip(router, "link", "set", "lo", "up"),
      // The LAN's switch, with no multicast snooping: every host gets every group's traffic.
      ip(router, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"),
      ip(router, "addr", "add", `${subnet}.1/24`, "dev", "br0"),
      ip(router, "link", "set", "br0", "up"),
      ip(router, "link", "add", "wan0", "type", "veth", "peer", "name", `gw-${lan}`, "netns", wan),
      ip(router, "addr", "add", `${wanAddress}/24`, "dev", "wan0"),
      ip(router, "link", "set", "wan0", "up"),
      ip(wan, "link", "set", `gw-${lan}`, "master", "br0"),
      ip(wan, "link", "set", `gw-${lan}`, "up"),
      ip(router, "route", "add", "default", "via", `${WAN_PREFIX}.1`),
      // Forward between LAN and WAN; and keep bridged LAN traffic out of the IP firewall
      // (br_netfilter, when loaded, would pass it through the forward chain).
      inNs(router, `echo 1 > /proc/sys/net/ipv4/ip_forward && ${NO_BRIDGE_NF}`),
      ...(nat === "nft"
        ? [{ cmd: "ip", args: ["netns", "exec", router, "nft", "-f", "-"], stdin: natRuleset() }]
        : iptablesSteps(router)),
    );
    (lans[lan] ?? []).forEach((host, h) => {
      const namespace = `${prefix}-${host}`;
      const address = `${subnet}.${2 + h}`;
      layout.namespaces.push(namespace);
      layout.hosts[host] = { namespace, address, lan };
      steps.push(
        { cmd: "ip", args: ["netns", "add", namespace] },
        ip(namespace, "link", "set", "lo", "up"),
        ip(
          namespace,
          "link",
          "add",
          "eth0",
          "type",
          "veth",
          "peer",
          "name",
          `h-${host}`,
          "netns",
          router,
        ),
        ip(namespace, "addr", "add", `${address}/24`, "dev", "eth0"),
        ip(namespace, "link", "set", "eth0", "up"),
        ip(router, "link", "set", `h-${host}`, "master", "br0"),
        ip(router, "link", "set", `h-${host}`, "up"),
        ip(namespace, "route", "add", "default", "via", `${subnet}.1`),
        ip(namespace, "route", "add", "224.0.0.0/4", "dev", "eth0"),
      );
    });
  });
  return { layout, steps };
}

/** Runs a command to its end; its stderr when it fails, else null. */
async function runStep(step: BedStep): Promise<string | null> {
  try {
    const child = new Deno.Command(step.cmd, {
      args: step.args,
      stdin: step.stdin === undefined ? "null" : "piped",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    if (step.stdin !== undefined) {
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode(step.stdin));
      await writer.close();
    }
    const out = await child.output();
    return out.success ? null : new TextDecoder().decode(out.stderr).trim() || `exit ${out.code}`;
  } catch (error) {
    return String(error);
  }
}

/** Whether `cmd` can be run (found on PATH). */
async function available(cmd: string, args: string[]): Promise<boolean> {
  try {
    await new Deno.Command(cmd, { args, stdin: "null", stdout: "null", stderr: "null" }).output();
    return true;
  } catch {
    return false;
  }
}

/**
 * Why a bed cannot be built here, or null when it can: not Linux, not root
 * (in the machine's own user namespace: a root mapped by `unshare -r`
 * cannot name namespaces), no iproute2, neither nftables nor iptables.
 * Tries `ip netns add` and `del` on a probe namespace to be sure.
 */
export async function lanBedUnavailable(): Promise<string | null> {
  if (Deno.build.os !== "linux") return "network namespaces need Linux";
  if (Deno.uid() !== 0) return "building network namespaces needs root (run with sudo, or in CI)";
  if (!(await available("ip", ["-V"]))) return "iproute2 (ip) is not installed";
  if (!(await available("nft", ["--version"])) && !(await available("iptables", ["-V"]))) {
    return "neither nftables (nft) nor iptables is installed: apt-get install nftables";
  }
  const probe = `peerbase-${Deno.pid}-${crypto.getRandomValues(new Uint8Array(4)).toHex()}-probe`;
  const error = await runStep({ cmd: "ip", args: ["netns", "add", probe] });
  if (error !== null) {
    return `'ip netns add' failed (${error}): run as root on the host, not in a user namespace, or grant CAP_SYS_ADMIN to the container`;
  }
  await deleteNamespaces([probe]);
  return null;
}

/** Deletes namespaces by name; returns the ones that could not be deleted, with why. */
async function deleteNamespaces(names: readonly string[]): Promise<string[]> {
  const failed: string[] = [];
  for (const name of [...names].reverse()) {
    const error = await runStep({ cmd: "ip", args: ["netns", "del", name] });
    if (error !== null) failed.push(`${name}: ${error}`);
  }
  return failed;
}

/** A built bed: run programs in its namespaces; `await using` (or {@linkcode LanBed.down}) removes it. */
export class LanBed implements AsyncDisposable {
  /** Names and addresses. */
  readonly layout: BedLayout;
  #down = false;

  private constructor(layout: BedLayout) {
    this.layout = layout;
  }

  /**
   * Builds a bed; on any failure removes what it made and throws an `Error`
   * naming the command that failed and what it said.
   */
  static async up(options: LanBedOptions = {}): Promise<LanBed> {
    const nat = (await available("nft", ["--version"])) ? "nft" : "iptables";
    const { layout, steps } = planLanBed(options, nat);
    const made: string[] = [];
    for (const step of steps) {
      const error = await runStep(step);
      if (error !== null) {
        await deleteNamespaces(made);
        throw new Error(
          `Cannot build the LAN bed: '${step.cmd} ${step.args.join(" ")}' failed: ${error}`,
        );
      }
      if (step.args[0] === "netns" && step.args[1] === "add") made.push(step.args[2]!);
    }
    return new LanBed(layout);
  }

  /** The namespace of a host (`a1`), a router (`gw-a`) or the WAN (`wan`). */
  namespace(role: string): string {
    const { hosts, routers, wan } = this.layout;
    const found = role === "wan"
      ? wan
      : role.startsWith("gw-")
      ? routers[role.slice(3)]?.namespace
      : hosts[role]?.namespace;
    if (found === undefined) throw new TypeError(`Cannot find '${role}' in the LAN bed`);
    return found;
  }

  /** A host's LAN address. */
  address(host: string): string {
    const found = this.layout.hosts[host]?.address;
    if (found === undefined) throw new TypeError(`Cannot find host '${host}' in the LAN bed`);
    return found;
  }

  /**
   * `cmd args` run inside `role`'s namespace (through `ip netns exec`), not
   * started yet. Its environment gets `DENO_NO_UPDATE_CHECK=1`: nothing in
   * the bed looks for the Internet.
   */
  command(
    role: string,
    cmd: string,
    args: string[],
    options: Deno.CommandOptions = {},
  ): Deno.Command {
    return new Deno.Command("ip", {
      ...options,
      env: { ...options.env, DENO_NO_UPDATE_CHECK: "1" },
      args: ["netns", "exec", this.namespace(role), cmd, ...args],
    });
  }

  /** Removes every namespace (processes still inside keep theirs until they exit). Safe to call twice. */
  async down(): Promise<void> {
    if (this.#down) return;
    this.#down = true;
    const failed = await deleteNamespaces(this.layout.namespaces);
    if (failed.length > 0) {
      throw new Error(
        `Cannot remove the LAN bed: run 'ip netns del NAME' for ${failed.join("; ")}`,
      );
    }
  }

  /** Same as {@linkcode LanBed.down}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.down();
  }
}

/** Namespaces of beds (`peerbase-<pid>-<hex>-wan` and kin) whose creating process has exited. */
async function orphanedBeds(): Promise<string[]> {
  const out = await new Deno.Command("ip", {
    args: ["netns", "list"],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).output();
  const names = new TextDecoder().decode(out.stdout).split("\n").map((line) => line.split(" ")[0]!);
  const beds = new Set(
    names.flatMap((name) => /^(peerbase-[0-9]+-[0-9a-f]+)-wan$/.exec(name)?.slice(1) ?? []),
  );
  return names.filter((name) => {
    const bed = [...beds].find((prefix) => name.startsWith(`${prefix}-`));
    if (bed === undefined) return false;
    const pid = Number(bed.split("-")[1]);
    try {
      Deno.statSync(`/proc/${pid}`);
      return false;
    } catch {
      return true;
    }
  });
}

async function main(args: string[]): Promise<number> {
  const why = await lanBedUnavailable();
  if (why !== null) {
    console.error(`lanbed: ${why}`);
    return 1;
  }
  if (args[0] === "up") {
    const bed = await LanBed.up();
    const { layout } = bed;
    console.log(`wan      ${layout.wan}  relays on ${layout.relays.join(", ")}`);
    for (const [lan, router] of Object.entries(layout.routers)) {
      console.log(`gw-${lan.padEnd(5)} ${router.namespace}  ${router.lan} / ${router.wan}`);
    }
    for (const [host, { namespace, address, lan }] of Object.entries(layout.hosts)) {
      console.log(`${host.padEnd(8)} ${namespace}  ${address} on lan-${lan}`);
    }
    console.log(`run: ip netns exec NAMESPACE COMMAND; remove: deno run -A tools/lanbed.ts down`);
    return 0;
  }
  if (args[0] === "down") {
    const names = await orphanedBeds();
    const failed = await deleteNamespaces(names);
    for (const line of failed) console.error(`lanbed: cannot delete ${line}`);
    console.log(`removed ${names.length - failed.length} namespaces`);
    return failed.length === 0 ? 0 : 1;
  }
  console.error("usage: deno run -A tools/lanbed.ts up|down");
  return 2;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
