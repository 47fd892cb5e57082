import { ok, strictEqual } from "node:assert/strict";
import { explainNoNamespace, type NamespaceAttempt } from "../tools/netns.ts";
import { IN_NETNS, NETNS_REASON, testIf } from "./_env.ts";
import { DEFAULT_ADVERTISER_PORT } from "../lib/lan_defaults.ts";

const TOOL = new URL("../tools/netns.ts", import.meta.url).pathname;
const CAN_NEST = "needs the namespace tools that made this suite's namespace";

function tool(script: string, env: Record<string, string> = {}): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", TOOL, "--", "eval", script],
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
}

function namespaces(): string {
  try {
    const out = new Deno.Command("ip", { args: ["netns", "list"], stdin: "null" }).outputSync();
    return new TextDecoder().decode(out.stdout);
  } catch {
    return "";
  }
}

testIf(IN_NETNS, `${NETNS_REASON}; ${CAN_NEST}`, {
  name:
    "tools/netns.ts runs the child in a namespace with multicast on loopback and returns its exit code",
  async fn() {
    const script = `
      const names = Deno.networkInterfaces().map((i) => i.name);
      const routes = new TextDecoder().decode(
        new Deno.Command("ip", { args: ["route", "show"] }).outputSync().stdout);
      console.log(JSON.stringify({ netns: Deno.env.get("PEERBASE_NETNS"), names, routes }));
      Deno.exit(7);
    `;
    const out = await tool(script).output();
    strictEqual(out.code, 7);
    const seen = JSON.parse(new TextDecoder().decode(out.stdout));
    strictEqual(seen.netns, "1");
    ok(seen.names.every((name: string) => name === "lo"), `interfaces: ${seen.names}`);
    ok(seen.routes.includes("224.0.0.0/4 dev lo"), seen.routes);
  },
});

testIf(IN_NETNS, `${NETNS_REASON}; ${CAN_NEST}`, {
  name: "tools/netns.ts forwards SIGTERM to the child and deletes its namespace",
  async fn() {
    const child = tool(
      'console.log("ready"); await new Promise((resolve) => setTimeout(resolve, 30_000));',
    ).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!text.includes("ready")) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
    }
    ok(text.includes("ready"), text);
    const prefix = `peerbase-${child.pid}-`;
    const named = namespaces().includes(prefix); // false with the unshare fallback
    child.kill("SIGTERM");
    const status = await child.status;
    while (!(await reader.read()).done) { /* drain */ }
    await child.stderr.cancel();
    strictEqual(status.code, 128 + 15);
    if (named) ok(!namespaces().includes(prefix), namespaces());
  },
});

Deno.test("tools/netns.ts without namespace tools runs the child directly, without PEERBASE_NETNS", async () => {
  const script = 'console.log(Deno.env.get("PEERBASE_NETNS") ?? "unset")';
  const out = await tool(script, { PATH: "/nonexistent", PEERBASE_NETNS: "1" }).output();
  strictEqual(out.code, 0);
  strictEqual(new TextDecoder().decode(out.stdout).trim(), "unset");
  ok(new TextDecoder().decode(out.stderr).includes("WITHOUT a private network namespace"));
});

Deno.test("tools/netns.ts with PEERBASE_REQUIRE_NETNS=1 and no namespace tools exits 1 naming iproute2", async () => {
  const out = await tool('console.log("ran")', {
    PATH: "/nonexistent",
    PEERBASE_REQUIRE_NETNS: "1",
  }).output();
  strictEqual(out.code, 1);
  strictEqual(new TextDecoder().decode(out.stdout), "");
  ok(new TextDecoder().decode(out.stderr).includes("iproute2"));
});

// ---- explainNoNamespace(): the message when no namespace can be made (pure) ----

const BLOCKED_BY_APPARMOR = "unshare: write failed /proc/self/uid_map: Operation not permitted";
const BLOCKED_BY_KERNEL = "unshare: unshare failed: Operation not permitted";

function attempt(overrides: Partial<NamespaceAttempt> = {}): NamespaceAttempt {
  return { uid: 1000, hasIp: true, hasUnshare: true, sysctls: {}, ...overrides };
}

Deno.test("explainNoNamespace() names sudo and the AppArmor sysctl when Ubuntu 24.04 blocks user namespaces", () => {
  const why = explainNoNamespace(attempt({
    unshareError: BLOCKED_BY_APPARMOR,
    sysctls: {
      "kernel.apparmor_restrict_unprivileged_userns": "1",
      "user.max_user_namespaces": "63000",
    },
  }));
  ok(why.includes("kernel.apparmor_restrict_unprivileged_userns=1"), why);
  ok(why.includes("sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"), why);
  ok(why.includes("sudo"), why);
  ok(why.includes(BLOCKED_BY_APPARMOR), why);
  ok(!why.includes("install"), why);
});

Deno.test("explainNoNamespace() names kernel.unprivileged_userns_clone when it is 0", () => {
  const why = explainNoNamespace(attempt({
    unshareError: BLOCKED_BY_KERNEL,
    sysctls: { "kernel.unprivileged_userns_clone": "0" },
  }));
  ok(why.includes("sudo sysctl -w kernel.unprivileged_userns_clone=1"), why);
  ok(!why.includes("install"), why);
});

Deno.test("explainNoNamespace() names user.max_user_namespaces when it is 0", () => {
  const why = explainNoNamespace(attempt({
    unshareError: "unshare: unshare failed: No space left on device",
    sysctls: { "user.max_user_namespaces": "0" },
  }));
  ok(why.includes("sudo sysctl -w user.max_user_namespaces="), why);
});

Deno.test("explainNoNamespace() ignores sysctls that allow user namespaces and quotes unshare", () => {
  const why = explainNoNamespace(attempt({
    unshareError: "sh: 1: ip: Operation not permitted\n",
    sysctls: {
      "kernel.apparmor_restrict_unprivileged_userns": "0",
      "kernel.unprivileged_userns_clone": "1",
    },
  }));
  ok(why.includes("unshare -rn: sh: 1: ip: Operation not permitted"), why);
  ok(why.includes("sudo"), why);
  ok(!why.includes("sysctl"), why);
});

Deno.test("explainNoNamespace() asks to install iproute2 and util-linux only when both are missing", () => {
  const why = explainNoNamespace(attempt({ hasIp: false, hasUnshare: false }));
  ok(why.includes("apt-get install iproute2 util-linux"), why);
});

Deno.test("explainNoNamespace() asks to install iproute2 when only unshare is present", () => {
  const why = explainNoNamespace(attempt({ hasIp: false, unshareError: "sh: ip: not found" }));
  ok(why.includes("apt-get install iproute2"), why);
  ok(!why.includes("util-linux"), why);
});

Deno.test("explainNoNamespace() offers sudo or util-linux to a user without unshare", () => {
  const why = explainNoNamespace(attempt({ hasUnshare: false }));
  ok(why.includes("sudo") && why.includes("util-linux"), why);
});

Deno.test("explainNoNamespace() as root names the failing ip command and CAP_SYS_ADMIN", () => {
  const why = explainNoNamespace(attempt({
    uid: 0,
    ipError: "mount --make-shared /run/netns failed: Operation not permitted",
    unshareError: BLOCKED_BY_KERNEL,
    sysctls: { "kernel.apparmor_restrict_unprivileged_userns": "1" },
  }));
  ok(why.includes("Operation not permitted"), why);
  ok(why.includes("CAP_SYS_ADMIN"), why);
  ok(!why.includes("sudo"), why);
  ok(!why.includes("install"), why);
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "the test namespace keeps the default advertiser port out of the ephemeral ports",
  fn() {
    const reserved = Deno.readTextFileSync("/proc/sys/net/ipv4/ip_local_reserved_ports").trim();
    ok(reserved.split(",").includes(String(DEFAULT_ADVERTISER_PORT)), `reserved: '${reserved}'`);
  },
});
