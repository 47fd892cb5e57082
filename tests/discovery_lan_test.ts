/**
 * LAN discovery against real network setups that a single loopback cannot
 * show: a host with no multicast route, and two hosts joined by a veth pair.
 * Each "host" is a fixture process (`fixtures/discovery_host.ts`) in a fresh
 * network namespace that this file makes with `unshare -n` and destroys
 * when the process ends; no packet leaves those namespaces.
 */

import { ok, strictEqual } from "node:assert/strict";
import type { DiscoveredPeer } from "../lib/discovery.ts";
import type { WarningInput } from "../lib/warnings.ts";
import { generateKey } from "../lib/fernet.ts";
import { IN_NETNS, NETNS_REASON, testIf, uniqueNetwork } from "./_env.ts";

/** Hard limit for anything these tests wait for; only catches hangs. */
const HANG_TIMEOUT = 10_000;

const FIXTURE = new URL("./fixtures/discovery_host.ts", import.meta.url).pathname;

/** What the fixture prints. */
type HostEvent =
  | { event: "started"; name: string }
  | { event: "error"; name: string; error: { name: string; message: string; cause: string } }
  | { event: "announce"; by: string; peer: DiscoveredPeer }
  | { event: "warning"; by: string; warning: WarningInput }
  | { event: "route-dropped"; success: boolean };

/** The fixture's config (see `fixtures/discovery_host.ts`). */
interface HostConfig {
  key: string;
  network: string;
  port: number;
  interval: number;
  nodes: { name: string; host?: string }[];
  legacy?: { name: string; host: string }[];
  dropRoute?: boolean;
}

/** A fresh network, advertised every 50 ms on the default port: each namespace is private. */
function hostConfig(overrides: Partial<HostConfig> = {}): HostConfig {
  return {
    key: generateKey(),
    network: uniqueNetwork("lan"),
    port: 41993,
    interval: 50,
    nodes: [],
    ...overrides,
  };
}

/** A fixture process in a network namespace of its own; `await using` ends both. */
class Host implements AsyncDisposable {
  readonly events: HostEvent[] = [];
  readonly #child: Deno.ChildProcess;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  readonly #lines: ReadableStreamDefaultReader<string>;
  #reading: Promise<void> = Promise.resolve();
  #wake: (() => void)[] = [];

  private constructor(child: Deno.ChildProcess) {
    this.#child = child;
    this.#stdin = child.stdin.getWriter();
    this.#lines = child.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(lineSplitter())
      .getReader();
  }

  /**
   * Starts the process in a new network namespace; it waits for
   * {@linkcode Host.go} and then runs `setup` (shell commands) before Deno
   * with `args`, by default the fixture with `config`.
   */
  static async spawn(
    setup: string,
    config: HostConfig,
    args = ["run", "-A", "--unstable-net", FIXTURE, JSON.stringify(config)],
  ): Promise<Host> {
    const script = `echo ready; read -r _ && ${setup} && exec "$@"`;
    const child = new Deno.Command("unshare", {
      args: [
        "-n",
        "sh",
        "-c",
        script,
        "sh",
        Deno.execPath(),
        ...args,
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const host = new Host(child);
    const first = await host.#lines.read();
    if (first.value !== "ready") {
      await host[Symbol.asyncDispose]();
      throw new Error(`unshare -n did not start: ${first.value}`);
    }
    return host;
  }

  /** The process id: its network namespace is /proc/<pid>/ns/net. */
  get pid(): number {
    return this.#child.pid;
  }

  /** Lets the process set up its namespace and start the fixture. */
  async go(): Promise<void> {
    await this.#stdin.write(new TextEncoder().encode("go\n"));
    this.#reading = this.#read();
  }

  async #read(): Promise<void> {
    for (;;) {
      const { value, done } = await this.#lines.read();
      if (done) break;
      this.events.push(JSON.parse(value));
      for (const wake of this.#wake.splice(0)) wake();
    }
    for (const wake of this.#wake.splice(0)) wake();
  }

  /** Resolves once `predicate` holds for the events seen; rejects after HANG_TIMEOUT. */
  async until(what: string, predicate: (events: HostEvent[]) => boolean): Promise<void> {
    const deadline = Date.now() + HANG_TIMEOUT;
    while (!predicate(this.events)) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`Timed out waiting for ${what}: ${JSON.stringify(this.events)}`);
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#wake.push(resolve);
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
    }
  }

  /** Announces of `name` that `by` saw. */
  announces(by: string, name: string): DiscoveredPeer[] {
    return this.events.flatMap((e) =>
      e.event === "announce" && e.by === by && e.peer.name === name ? [e.peer] : []
    );
  }

  /** Closes stdin (the fixture closes its discoveries and exits), killing it after HANG_TIMEOUT. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.#stdin.close().catch(() => {});
    const timer = setTimeout(() => this.#child.kill("SIGKILL"), HANG_TIMEOUT);
    await this.#child.status;
    clearTimeout(timer);
    await this.#reading;
    await this.#lines.cancel().catch(() => {});
  }
}

function lineSplitter(): TransformStream<string, string> {
  let rest = "";
  return new TransformStream({
    transform(chunk, controller) {
      const lines = (rest + chunk).split("\n");
      rest = lines.pop()!;
      for (const line of lines) if (line !== "") controller.enqueue(line);
    },
    flush(controller) {
      if (rest !== "") controller.enqueue(rest);
    },
  });
}

/** Runs a command, throwing with its stderr when it fails. */
async function run(cmd: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stdin: "null", stdout: "null", stderr: "piped" })
    .output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/**
 * Two hosts, 10.77.0.1 and 10.77.0.2, joined by a veth pair that carries
 * the multicast route, each with its loopback up: a two-machine LAN.
 */
async function twoHosts(
  configA: HostConfig,
  configB: HostConfig,
): Promise<{ a: Host; b: Host } & AsyncDisposable> {
  const suffix = crypto.getRandomValues(new Uint8Array(4)).toHex();
  const [ifA, ifB] = [`pb${suffix}a`, `pb${suffix}b`];
  const setup = (iface: string, address: string) =>
    `ip link set lo up && ip addr add ${address}/24 dev ${iface} && ip link set ${iface} up && ip route add 224.0.0.0/4 dev ${iface}`;
  const a = await Host.spawn(setup(ifA, "10.77.0.1"), configA);
  let b: Host | undefined;
  try {
    b = await Host.spawn(setup(ifB, "10.77.0.2"), configB);
    // deno-fmt-ignore
    await run("ip", ["link", "add", ifA, "netns", `${a.pid}`, "type", "veth",
      "peer", "name", ifB, "netns", `${b.pid}`]);
    await a.go();
    await b.go();
  } catch (error) {
    await a[Symbol.asyncDispose]();
    await b?.[Symbol.asyncDispose]();
    throw error;
  }
  const hostB = b;
  return {
    a,
    b: hostB,
    async [Symbol.asyncDispose]() {
      await Promise.all([a[Symbol.asyncDispose](), hostB[Symbol.asyncDispose]()]);
    },
  };
}

/** One host whose namespace runs `setup` (e.g. brings loopback up), started at once. */
async function oneHost(setup: string, config: HostConfig, args?: string[]): Promise<Host> {
  const host = await Host.spawn(setup, config, args);
  await host.go();
  return host;
}

function errorOf(events: HostEvent[], name: string) {
  const found = events.find((e) =>
    (e.event === "started" || e.event === "error") && e.name === name
  );
  if (found?.event !== "error") throw new Error(`${name} did not fail: ${JSON.stringify(found)}`);
  return found.error;
}

function settled(name: string) {
  return (events: HostEvent[]) =>
    events.some((e) => (e.event === "started" || e.event === "error") && e.name === name);
}

// ---- No multicast-capable interface ----

for (
  const [what, setup] of ([
    ["a host whose loopback is down (a fresh namespace)", "true"],
    ["an offline host: loopback up, no multicast route", "ip link set lo up"],
  ] as const)
) {
  testIf(IN_NETNS, NETNS_REASON, {
    name: `Discovery.start() on ${what} rejects with NoMulticastError naming the ways out`,
    async fn() {
      await using host = await oneHost(setup, hostConfig({ nodes: [{ name: "alone" }] }));
      await host.until("alone to start or fail", settled("alone"));
      const error = errorOf(host.events, "alone");
      strictEqual(error.name, "NoMulticastError", error.message);
      ok(error.message.startsWith("Cannot start LAN discovery: "), error.message);
      ok(error.message.includes("239.255.80.66"), error.message);
      ok(error.message.includes("connect a network"), error.message);
      ok(error.message.includes("useLocal: false with servers"), error.message);
      ok(error.message.includes('hostname: "127.0.0.1"'), error.message);
      ok(error.message.includes("ip route add 224.0.0.0/4 dev lo"), error.message);
      ok(error.cause.includes("os error 19"), error.cause);
    },
  });
}

testIf(IN_NETNS, NETNS_REASON, {
  name: "Node.start() on an offline host rejects with NoMulticastError from discovery",
  async fn() {
    const config = hostConfig();
    const script = `
      import { Node } from ${JSON.stringify(import.meta.resolve("../mod.ts"))};
      const node = new Node({ name: "alone", network: ${JSON.stringify(config.network)},
        networkKey: ${JSON.stringify(config.key)} });
      try {
        await node.start();
        console.log(JSON.stringify({ event: "started", name: "alone" }));
      } catch (e) {
        console.log(JSON.stringify({ event: "error", name: "alone",
          error: { name: e.name, message: e.message, cause: String(e.cause) } }));
      }
      await node.close();
    `;
    await using host = await oneHost("ip link set lo up", config, [
      "eval",
      "--unstable-net",
      script,
    ]);
    await host.until("alone to start or fail", settled("alone"));
    const error = errorOf(host.events, "alone");
    strictEqual(error.name, "NoMulticastError", error.message);
    ok(error.message.includes("useLocal: false with servers"), error.message);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "Discovery bound to 127.0.0.1 finds a node of the same host without a multicast route",
  async fn() {
    const config = hostConfig({
      nodes: [{ name: "first", host: "127.0.0.1" }, { name: "second", host: "127.0.0.1" }],
    });
    await using host = await oneHost("ip link set lo up", config);
    await host.until("first to see second", () => host.announces("first", "second").length > 0);
    await host.until("second to see first", () => host.announces("second", "first").length > 0);
    strictEqual(host.announces("first", "second")[0]?.hostname, "127.0.0.1");
  },
});

// ---- A node bound to loopback, on a two-host LAN ----

testIf(IN_NETNS, NETNS_REASON, {
  name: "Discovery bound to 127.0.0.1 advertises on loopback only, never to another host",
  async fn() {
    const config = hostConfig();
    await using lan = await twoHosts(
      {
        ...config,
        nodes: [{ name: "wild" }, { name: "loopy", host: "127.0.0.1" }, { name: "local" }],
      },
      { ...config, nodes: [{ name: "watcher" }] },
    );
    // The same host still finds the loopback node, at its loopback address.
    await lan.a.until("local to see loopy", () => lan.a.announces("local", "loopy").length > 0);
    strictEqual(lan.a.announces("local", "loopy")[0]?.hostname, "127.0.0.1");
    await lan.a.until("loopy to see local", () => lan.a.announces("loopy", "local").length > 0);
    // Ten adverts of the wildcard node crossed the link; loopy sent as many at the same pace.
    await lan.b.until(
      "ten announces of wild",
      () => lan.b.announces("watcher", "wild").length >= 10,
    );
    strictEqual(lan.b.announces("watcher", "wild")[0]?.hostname, "10.77.0.1");
    strictEqual(lan.b.announces("watcher", "loopy").length, 0, "loopy reached the other host");
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "Discovery drops an announce of a loopback host that comes from another host",
  async fn() {
    const config = hostConfig();
    await using lan = await twoHosts(
      { ...config, nodes: [{ name: "wild" }], legacy: [{ name: "old", host: "127.0.0.1" }] },
      { ...config, nodes: [{ name: "watcher" }] },
    );
    await lan.b.until(
      "ten announces of wild",
      () => lan.b.announces("watcher", "wild").length >= 10,
    );
    strictEqual(lan.b.announces("watcher", "old").length, 0, "accepted 127.0.0.1 from 10.77.0.1");
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "Discovery bound to a LAN address advertises it on that interface",
  async fn() {
    const config = hostConfig();
    await using lan = await twoHosts(
      { ...config, nodes: [{ name: "bound", host: "10.77.0.1" }] },
      { ...config, nodes: [{ name: "watcher" }] },
    );
    await lan.b.until("bound's announce", () => lan.b.announces("watcher", "bound").length > 0);
    strictEqual(lan.b.announces("watcher", "bound")[0]?.hostname, "10.77.0.1");
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "Discovery warns multicast-lost when its multicast route goes away after start",
  async fn() {
    const config = hostConfig({ nodes: [{ name: "lonely" }], dropRoute: true });
    await using host = await oneHost(
      "ip link set lo up && ip route add 224.0.0.0/4 dev lo",
      config,
    );
    await host.until(
      "the route to be dropped",
      (events) => events.some((e) => e.event === "route-dropped"),
    );
    ok(host.events.some((e) => e.event === "started" && e.name === "lonely"));
    ok(host.events.some((e) => e.event === "route-dropped" && e.success), "ip route del failed");
    await host.until("a warning", (events) => events.some((e) => e.event === "warning"));
    const found = host.events.find((e) => e.event === "warning");
    if (found?.event !== "warning") throw new Error("no warning");
    strictEqual(found.warning.code, "multicast-lost");
    ok(
      found.warning.message.startsWith("cannot send LAN adverts to 239.255.80.66: "),
      found.warning.message,
    );
    ok(found.warning.message.includes("multicast route"), found.warning.message);
  },
});
