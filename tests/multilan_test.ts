/**
 * The multi-LAN bed (`tools/lanbed.ts`): two LANs behind NAT routers and a
 * WAN with two relays, all network namespaces this test makes and removes.
 * lan-a holds nodes a1 and a2 and a stranger x (another key); lan-b holds
 * node b1. Every node and relay is a real process in its namespace, driven
 * over stdio (`fixtures/lan_host.ts`, `relay.ts`); the test asserts only from
 * outside them: what the nodes answer, the relays' Prometheus counters, and
 * a tcpdump capture on the WAN.
 *
 * One bed serves every step, in order: each step leaves the bed as the next
 * expects it (the last ones kill and restart relays). Every wait has a
 * deadline that only catches hangs; nothing asserts a duration.
 */

import { deepStrictEqual, notStrictEqual, ok, strictEqual } from "node:assert/strict";
import type { PeerInfo } from "../mod.ts";
import { generateKey } from "../lib/fernet.ts";
import { networkId } from "../lib/network_identity.ts";
import { LanBed, lanBedUnavailable } from "../tools/lanbed.ts";
import { testIf } from "./_env.ts";
import { deadline, sleep, Spawned } from "./_fixtures.ts";

const HOST_SCRIPT = new URL("./fixtures/lan_host.ts", import.meta.url).pathname;
const RELAY_SCRIPT = new URL("./fixtures/lan_relay.ts", import.meta.url).pathname;

/** The longest a capture may run: it ends by itself even if the test is killed (seconds). */
const CAPTURE_LIFETIME = 120;

/** Longest wait for anything here (discovery, a relay coming back); only catches hangs. */
const HANG = 20_000;

/** The relays' port on the WAN addresses. */
const RELAY_PORT = 7000;

/** Where relay `i` serves its counters, inside the WAN namespace. */
const metricsAddress = (i: number) => `127.0.0.1:${9401 + i}`;

/** What `whoami` answers: who served the call, and how the call reached it. */
interface Whoami {
  name: string;
  instance: string;
  via: "local" | "relay";
  relay: string | null;
}

/** The part of a node's `stats` this test reads. */
interface Stats {
  retries: number;
  failovers: number;
  routes: Record<string, { sent: number }>;
}

/** An answer of the host fixture. */
type Answer =
  | { id: number; ok: true; value: unknown }
  | { id: number; ok: false; error: { name: string; message: string } };

/** A `fixtures/lan_host.ts` process in a namespace of the bed, driven over stdio. */
class Host implements AsyncDisposable {
  readonly role: string;
  readonly process: Spawned;
  name = "";
  instance = "";
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #next = 0;

  private constructor(role: string, child: Deno.ChildProcess) {
    this.role = role;
    this.#stdin = child.stdin.getWriter();
    this.process = new Spawned(child);
  }

  /** Starts the fixture in `role`'s namespace with `config`; resolves once it is ready. */
  static async start(
    bed: LanBed,
    role: string,
    config: Record<string, unknown>,
    key: string,
  ): Promise<Host> {
    const child = bed.command(role, Deno.execPath(), [
      "run",
      "-A",
      "--unstable-net",
      HOST_SCRIPT,
      JSON.stringify(config),
    ], {
      env: { PEERBASE_KEY: key },
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const host = new Host(role, child);
    try {
      const ready = JSON.parse(await host.process.line('{"event":"ready"', HANG));
      host.name = ready.name ?? "";
      host.instance = ready.instance ?? "";
    } catch (error) {
      await host[Symbol.asyncDispose]();
      throw error;
    }
    return host;
  }

  /** Sends a request; its answer, or throws with the error the fixture reported. */
  async request<T>(op: string, fields: Record<string, unknown> = {}, ms = HANG): Promise<T> {
    const answer = await this.#ask(op, fields, ms);
    if (!answer.ok) {
      const error = new Error(`${this.role}: ${op}: ${answer.error.message}`);
      error.name = answer.error.name;
      throw error;
    }
    return answer.value as T;
  }

  /** Sends a request; resolves with the fixture's error `{ name, message }` (never throws it). */
  async failure(op: string, fields: Record<string, unknown> = {}, ms = HANG) {
    const answer = await this.#ask(op, fields, ms);
    return answer.ok ? null : answer.error;
  }

  /** Waits for the line `{ id, progress }` of request `id`. */
  progress(id: number): Promise<string> {
    return this.process.line(`{"id":${id},"progress"`, HANG);
  }

  /** The id the next request gets. */
  get nextId(): number {
    return this.#next;
  }

  async #ask(op: string, fields: Record<string, unknown>, ms: number): Promise<Answer> {
    const id = this.#next++;
    await this.#stdin.write(new TextEncoder().encode(`${JSON.stringify({ id, op, ...fields })}\n`));
    const line = await deadline(
      this.process.line(`{"id":${id},"ok"`, ms),
      `${this.role}: ${op}`,
      ms,
    );
    return JSON.parse(line);
  }

  /** The peers this host's node lists. */
  peers(): Promise<PeerInfo[]> {
    return this.request<PeerInfo[]>("peers");
  }

  /** Calls `whoami` on `target`. */
  whoami(target: Host): Promise<Whoami> {
    return this.request<Whoami>("call", { target: target.name, path: "whoami", timeout: 10_000 });
  }

  /** Closes stdin (the fixture closes its node and exits), SIGKILL after 5 s. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.#stdin.close().catch(() => {});
    await deadline(this.process.status, `${this.role} to exit`, 5000).catch(() => {});
    await this.process.stop("SIGKILL").catch(() => {});
  }
}

/**
 * A relay process (`relay.ts`, through `fixtures/lan_relay.ts`, which ends
 * it when its stdin closes) on WAN address `bed.layout.relays[index]`.
 */
class RelayHost implements AsyncDisposable {
  readonly address: string;
  #running: { process: Spawned; stdin: WritableStream<Uint8Array> } | null = null;

  constructor(readonly bed: LanBed, readonly index: number) {
    this.address = `${bed.layout.relays[index]}:${RELAY_PORT}`;
  }

  /** Starts it (again) and waits for its start line. */
  async start(): Promise<void> {
    const child = this.bed.command("wan", Deno.execPath(), [
      "run",
      "--allow-net",
      "--allow-read",
      "--allow-sys=networkInterfaces",
      RELAY_SCRIPT,
      "--host",
      this.bed.layout.relays[this.index]!,
      "--port",
      String(RELAY_PORT),
      "--public-address",
      this.address,
      "--metrics",
      metricsAddress(this.index),
      "--drain",
      "0",
    ], { stdin: "piped", stdout: "piped", stderr: "piped" }).spawn();
    const process = new Spawned(child);
    this.#running = { process, stdin: child.stdin };
    const end = Date.now() + HANG;
    while (!/serving counters at/.test(process.stderr)) {
      if (process.exited || Date.now() > end) {
        const { stderr } = process;
        await this.#stop("SIGKILL");
        throw new Error(`Relay ${this.address} did not start; stderr: ${stderr}`);
      }
      await sleep(20);
    }
  }

  /** Kills it at once, as a crash would: no drain, no goodbye. */
  kill(): Promise<void> {
    return this.#stop("SIGKILL");
  }

  async #stop(signal: Deno.Signal): Promise<void> {
    const running = this.#running;
    this.#running = null;
    if (running === null) return;
    try {
      await running.process.stop(signal);
    } finally {
      await running.stdin.close().catch(() => {});
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.#stop("SIGTERM").catch(() => {});
  }
}

/**
 * tcpdump on every interface of the WAN namespace, writing `file` packet by
 * packet, with a kernel buffer (64 MiB) far above what the test sends.
 */
class Capture implements AsyncDisposable {
  readonly file: string;
  #process: Spawned | null;

  private constructor(process: Spawned, file: string) {
    this.#process = process;
    this.file = file;
  }

  static async start(bed: LanBed, file: string): Promise<Capture> {
    // deno-fmt-ignore
    const args = [String(CAPTURE_LIFETIME), "tcpdump", "-i", "any", "-n", "--immediate-mode", "-B", "65536", "-U", "-Z", "root", "-w", file];
    const process = new Spawned(
      bed.command("wan", "timeout", args, { stdin: "null", stdout: "piped", stderr: "piped" })
        .spawn(),
    );
    const end = Date.now() + HANG;
    while (!/listening on/.test(process.stderr)) {
      if (process.exited || Date.now() > end) {
        await process.stop("SIGKILL").catch(() => {});
        throw new Error(`tcpdump did not start; stderr: ${process.stderr}`);
      }
      await sleep(20);
    }
    return new Capture(process, file);
  }

  /**
   * Sends a request with a fresh sentinel in clear on the WAN (`wan` fetches
   * `url?sentinel`), waits until the file holds it, so that every packet
   * before it is written too, then stops. Resolves with the file's bytes
   * and what tcpdump said it dropped.
   */
  async finish(wan: Host, url: string): Promise<{ pcap: Uint8Array; dropped: number }> {
    const sentinel = `sentinel-${crypto.randomUUID()}`;
    await wan.request("metrics", { url: `${url}?${sentinel}` });
    await until("the capture to hold the sentinel", async () => {
      const text = new TextDecoder("latin1").decode(await Deno.readFile(this.file));
      return text.includes(sentinel) || "not yet";
    });
    const process = this.#process!;
    await this.stop();
    const dropped = Number(/(\d+) packets? dropped by kernel/.exec(process.stderr)?.[1] ?? NaN);
    return { pcap: await Deno.readFile(this.file), dropped };
  }

  /** Stops the capture. Safe to call twice. */
  async stop(): Promise<void> {
    await this.#process?.stop("SIGINT");
    this.#process = null;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop().catch(() => {});
  }
}

/** `peerbase_relay_forwarded_frames_total` (and kin) read through the WAN agent. */
async function counters(wan: Host, index: number): Promise<Record<string, number>> {
  const text = await wan.request<string>("metrics", {
    url: `http://${metricsAddress(index)}/metrics`,
  });
  const read = (name: string) => Number(new RegExp(`^${name} (\\d+)$`, "m").exec(text)?.[1] ?? NaN);
  return {
    frames: read("peerbase_relay_forwarded_frames_total"),
    nodes: read("peerbase_relay_nodes"),
    connections: read("peerbase_relay_connections"),
  };
}

/** Frames forwarded by each relay (a dead relay counts as NaN). */
async function frames(wan: Host, relays: readonly RelayHost[]): Promise<number[]> {
  return await Promise.all(
    relays.map((relay) => counters(wan, relay.index).then((c) => c.frames ?? NaN, () => NaN)),
  );
}

/**
 * Polls `check` (every 100 ms) until it returns true; after `ms` throws
 * naming `what` and the last reason `check` gave (a string) or threw.
 */
async function until(
  what: string,
  check: () => Promise<true | string>,
  ms = HANG,
): Promise<void> {
  const end = Date.now() + ms;
  let why: unknown = null;
  for (;;) {
    try {
      const result = await check();
      if (result === true) return;
      why = result;
    } catch (error) {
      why = error;
    }
    if (Date.now() > end) throw new Error(`Timed out waiting for ${what}: ${why}`);
    await sleep(100);
  }
}

/**
 * True when every node lists exactly the others, with their instances and
 * no conflict: a node of its own LAN on the LAN at its LAN address, a node
 * of the other LAN through every relay of `servers` and not on the LAN;
 * else what differs.
 */
async function peerTables(bed: LanBed, nodes: Host[], servers: string[]): Promise<true | string> {
  const tables = await Promise.all(nodes.map((node) => node.peers()));
  for (const [i, node] of nodes.entries()) {
    const peers = tables[i]!;
    const others = nodes.filter((other) => other !== node);
    const differs = (what: string) => `${node.role} ${what}; it lists ${JSON.stringify(peers)}`;
    if (peers.length !== others.length) return differs(`lists ${peers.length} peers`);
    for (const other of others) {
      const seen = entry(peers, other.name);
      if (seen?.instance !== other.instance) return differs(`does not list ${other.role}`);
      if (seen.conflict) return differs(`sees a conflict on ${other.role}`);
      const lanOf = (host: Host) => bed.layout.hosts[host.role]?.lan;
      if (lanOf(node) === lanOf(other)) {
        if (seen.address?.startsWith(`${bed.address(other.role)}:`) !== true) {
          return differs(`does not reach ${other.role} on the LAN`);
        }
      } else if (seen.local || [...seen.relays].sort().join() !== [...servers].sort().join()) {
        return differs(`does not reach ${other.role} through every relay only`);
      }
    }
  }
  return true;
}

/** The entry of `name` in `peers`. */
function entry(peers: PeerInfo[], name: string): PeerInfo | undefined {
  return peers.find((peer) => peer.name === name);
}

/** Why the bed cannot run here (not root, no iproute2, nftables or tcpdump), or null. */
async function whyUnavailable(): Promise<string | null> {
  const why = await lanBedUnavailable();
  if (why !== null) return why;
  try {
    await new Deno.Command("tcpdump", { args: ["--version"], stdout: "null", stderr: "null" })
      .output();
    return null;
  } catch {
    return "tcpdump is not installed: apt-get install tcpdump";
  }
}

const unavailable = await whyUnavailable();

testIf(unavailable === null, unavailable ?? "", {
  name:
    "multi-LAN bed: LAN calls go direct, cross-LAN calls go through a relay, sealed, and survive relay loss and hostile input",
  async fn(t) {
    const tag = crypto.getRandomValues(new Uint8Array(4)).toHex();
    const network = `multilan-${tag}`;
    const key = generateKey();
    const strangerKey = generateKey();
    const marker = `marker-${crypto.randomUUID()}`;
    const dir = await Deno.makeTempDir({ prefix: "peerbase-multilan-" });
    try {
      await using bed = await LanBed.up();
      await using capture = await Capture.start(bed, `${dir}/wan.pcap`);
      await using relay0 = new RelayHost(bed, 0);
      await using relay1 = new RelayHost(bed, 1);
      const relays = [relay0, relay1];
      await Promise.all(relays.map((relay) => relay.start()));
      const servers = relays.map((relay) => relay.address);
      const nodeConfig = (name: string) => ({ node: { name, network, servers } });
      const [wanAgent, a1, a2, b1, x] = await Promise.all([
        Host.start(bed, "wan", {}, key),
        Host.start(bed, "a1", nodeConfig(`a1-${tag}`), key),
        Host.start(bed, "a2", nodeConfig(`a2-${tag}`), key),
        Host.start(bed, "b1", nodeConfig(`b1-${tag}`), key),
        // The stranger claims a1's name, on the same network name, with another key.
        Host.start(bed, "x", nodeConfig(`a1-${tag}`), strangerKey),
      ]);
      await using _wan = wanAgent;
      await using _a1 = a1;
      await using _a2 = a2;
      await using _b1 = b1;
      await using _x = x;
      const nodes = [a1, a2, b1];

      /** Every node lists exactly the other two, a1 and a2 each other on the LAN, b1 through both relays. */
      const tables = () => peerTables(bed, nodes, servers);
      await until("a1 and a2 to meet on lan-a, and b1 through both relays", tables);

      await t.step(
        "lan-b's node sees no advert of lan-a: it knows a1 and a2 only through relays",
        async () => {
          const peers = await b1.peers();
          deepStrictEqual(peers.filter((peer) => peer.local), [], JSON.stringify(peers));
          for (const peer of peers) deepStrictEqual([...peer.relays].sort(), [...servers].sort());
        },
      );

      await t.step("same-LAN calls go direct and the relays' counters do not move", async () => {
        const before = await frames(wanAgent, relays);
        for (const [from, to] of [[a1, a2], [a2, a1], [a1, a2], [a2, a1]] as const) {
          const seen = await from.whoami(to);
          deepStrictEqual(seen, {
            name: to.name,
            instance: to.instance,
            via: "local",
            relay: null,
          });
          strictEqual(
            await from.request("call", { target: to.name, path: "echo", args: [marker] }),
            marker,
          );
        }
        deepStrictEqual(await frames(wanAgent, relays), before, "no frame went through a relay");
        const stats = await a1.request<Stats>("stats");
        ok((stats.routes.direct?.sent ?? 0) >= 4, JSON.stringify(stats.routes));
      });

      await t.step("cross-LAN calls go through a relay, both ways, through the NATs", async () => {
        const before = await frames(wanAgent, relays);
        for (const [from, to] of [[a1, b1], [b1, a1], [a2, b1], [b1, a2]] as const) {
          const seen = await from.whoami(to);
          strictEqual(seen.instance, to.instance);
          strictEqual(seen.via, "relay", JSON.stringify(seen));
          ok(servers.includes(seen.relay ?? ""), JSON.stringify(seen));
          strictEqual(
            await from.request("call", { target: to.name, path: "echo", args: [marker] }),
            marker,
          );
        }
        const after = await frames(wanAgent, relays);
        const moved = after.reduce((sum, n, i) => sum + n - before[i]!, 0);
        // Each call is a request and an answer: 8 calls, 16 frames at least.
        ok(moved >= 16, `relays forwarded ${moved} frames: ${before} -> ${after}`);
      });

      await t.step(
        "a capture on the WAN holds no plaintext of the calls, only router addresses",
        async () => {
          const { pcap, dropped } = await capture.finish(
            wanAgent,
            `http://${metricsAddress(0)}/metrics`,
          );
          strictEqual(dropped, 0, "tcpdump dropped packets: the capture cannot show an absence");
          const text = new TextDecoder("latin1").decode(pcap);
          // The routing header is in clear: seeing the network id proves the capture saw the calls.
          const id = await networkId(key, network);
          ok(text.includes(id), `the capture (${pcap.length} bytes) holds no relayed frame`);
          for (const secret of [marker, network, a1.name, a2.name, b1.name]) {
            ok(!text.includes(secret), `the WAN capture holds '${secret}' in clear`);
          }
          const dump = await bed.command("wan", "tcpdump", ["-n", "-r", capture.file], {
            stdin: "null",
            stdout: "piped",
            stderr: "piped",
          }).output();
          const packets = new TextDecoder().decode(dump.stdout);
          ok(dump.success, `tcpdump -r: ${new TextDecoder().decode(dump.stderr)}`);
          const { routers } = bed.layout;
          for (const router of Object.values(routers)) {
            ok(
              packets.includes(`${router.wan}.`) && packets.includes(`.${RELAY_PORT}:`),
              `no packet between router ${router.wan} and a relay`,
            );
          }
          ok(!packets.includes("10.71."), "a LAN address reached the WAN");
          ok(!packets.includes("239.255.80.66"), "a LAN advert reached the WAN");
        },
      );

      await t.step(
        "a stranger on lan-a with another key sees nothing and is seen by no one",
        async () => {
          strictEqual(await tables(), true, "the nodes' peer tables changed");
          deepStrictEqual(await x.peers(), [], "the stranger lists peers");
          const failure = await x.failure("call", {
            target: b1.name,
            path: "whoami",
            timeout: 3000,
          });
          strictEqual(failure?.name, "PeerNotFoundError", JSON.stringify(failure));
          // Calls to the name it claims still reach the real a1.
          strictEqual((await a2.whoami(a1)).instance, a1.instance);
          strictEqual((await b1.whoami(a1)).instance, a1.instance);
        },
      );

      /** a2 reaches the real a1 on the LAN, b1 reaches it through a relay, and a1 reaches b1. */
      const a1Serves = async () => {
        strictEqual(await tables(), true, "the nodes' peer tables changed");
        for (let i = 0; i < 3; i++) {
          deepStrictEqual(await a2.whoami(a1), {
            name: a1.name,
            instance: a1.instance,
            via: "local",
            relay: null,
          });
          strictEqual((await b1.whoami(a1)).instance, a1.instance);
          strictEqual((await a1.whoami(b1)).via, "relay");
        }
      };
      const a1Port = Number(entry(await a2.peers(), a1.name)?.address?.split(":")[1]);
      const group = { host: "239.255.80.66", port: 41993 };

      await t.step("forged and replayed adverts change nothing", async () => {
        // depends on advert binding: a replayed advert must not move a1 to the replayer's address.
        ok(a1Port > 0, "a2 has no LAN address for a1");
        // The stranger takes a1's port on its own address and answers nothing there, then replays
        // an authentic advert of a1 (which it cannot read) from its own address, to the group and
        // to a2, and sends forged ones: a1's advert with its MAC broken, and its own adverts
        // claiming a1's name under another key (its node does that all along).
        await x.request("blackhole", { port: a1Port });
        const advert = await x.request<string>("captureAdvert", { from: bed.address("a1") });
        const flipped = Uint8Array.fromHex(advert);
        flipped[flipped.length - 1]! ^= 0x01;
        const replaying = Promise.all([
          x.request("sendUdp", { hex: advert, ...group, count: 40, gap: 50 }),
          x.request("sendUdp", {
            hex: advert,
            host: bed.address("a2"),
            port: 41993,
            count: 40,
            gap: 50,
          }),
          x.request("sendUdp", { hex: flipped.toHex(), ...group, count: 20, gap: 50 }),
        ]);
        try {
          // Checked while the replays go on (2 s), and once more after.
          await sleep(200);
          await a1Serves();
        } finally {
          await replaying;
        }
        const seen = entry(await a2.peers(), a1.name);
        ok(seen?.address?.startsWith(`${bed.address("a1")}:`), `a2 calls a1 at ${seen?.address}`);
        await a1Serves();
      });

      await t.step(
        "garbage datagrams and frames to a node and to the relays change nothing",
        async () => {
          const randomHex = (size: number) => crypto.getRandomValues(new Uint8Array(size)).toHex();
          await Promise.all([
            x.request("sendUdp", { hex: randomHex(300), ...group, count: 10, gap: 20 }),
            x.request("sendUdp", {
              hex: `50424144${randomHex(200)}`,
              ...group,
              count: 10,
              gap: 20,
            }),
          ]);
          const targets = [
            { host: bed.address("a1"), port: a1Port },
            ...bed.layout.relays.map((host) => ({ host, port: RELAY_PORT })),
          ];
          const shaped = await Promise.all(
            targets.map((target) =>
              x.request<{ closed: number }>("garbageTcp", { ...target, count: 10, shaped: true })
            ),
          );
          await Promise.all(
            targets.map((target) => x.request("garbageTcp", { ...target, count: 10 })),
          );
          // A whole frame of garbage is refused and its connection closed, by the node and the relays.
          deepStrictEqual(shaped.map(({ closed }) => closed), targets.map(() => 10));
          await a1Serves();
        },
      );

      await t.step("killing one relay during cross-LAN traffic loses no call", async () => {
        const count = 200;
        const load = { path: "slow", args: [25], count, concurrency: 4, progressAt: 20 };
        const baseline = await frames(wanAgent, relays);
        const retries = async () => {
          const stats = await Promise.all([a1, b1].map((node) => node.request<Stats>("stats")));
          return stats.reduce((sum, { retries }) => sum + retries, 0);
        };
        const retriesBefore = await retries();
        const idA = a1.nextId;
        const idB = b1.nextId;
        const fromA = a1.request<{ ok: number; errors: unknown[] }>("calls", {
          ...load,
          target: b1.name,
        });
        const fromB = b1.request<{ ok: number; errors: unknown[] }>("calls", {
          ...load,
          target: a1.name,
        });
        await Promise.all([a1.progress(idA), b1.progress(idB)]);
        // Kill the relay that carries the traffic now.
        const now = await frames(wanAgent, relays);
        const busy = now[0]! - baseline[0]! >= now[1]! - baseline[1]! ? 0 : 1;
        const survivor = relays[1 - busy]!;
        ok(now[busy]! - baseline[busy]! > 0, `no relay carried the traffic: ${baseline} -> ${now}`);
        await relays[busy]!.kill();
        const [doneA, doneB] = await Promise.all([fromA, fromB]);
        deepStrictEqual(doneA, { ok: count, errors: [] });
        deepStrictEqual(doneB, { ok: count, errors: [] });
        // Calls were in flight through the killed relay: they were sent again, and succeeded.
        const retried = await retries() - retriesBefore;
        ok(retried >= 1, `no call was retried: the kill hit no call in flight`);
        const survived = (await frames(wanAgent, [survivor]))[0]! - now[1 - busy]!;
        ok(survived > 0, "the surviving relay carried nothing after the kill");
        // Cross-LAN calls go on through the survivor.
        const seen = await a1.whoami(b1);
        deepStrictEqual([seen.via, seen.relay], ["relay", survivor.address]);
        // Put the killed relay back, so the next step starts with two.
        await relays[busy]!.start();
        await until("every node to be back on both relays", tables);
      });

      await t.step(
        "killing both relays makes cross-LAN calls fail fast while LAN calls go on",
        async () => {
          await Promise.all(relays.map((relay) => relay.kill()));
          // Right after the kill, a call with a long timeout fails on its own, before it.
          const [atOnceA, atOnceB] = await Promise.all([
            a1.failure("call", { target: b1.name, path: "whoami", timeout: 15_000 }),
            b1.failure("call", { target: a1.name, path: "whoami", timeout: 15_000 }),
          ]);
          for (const failure of [atOnceA, atOnceB]) {
            ok(failure !== null, "a cross-LAN call succeeded with both relays dead");
            notStrictEqual(failure.name, "CommandTimeoutError", JSON.stringify(failure));
          }
          await until("a1 and b1 to lose each other", async () => {
            const [fromA, fromB] = await Promise.all([a1.peers(), b1.peers()]);
            const gone = entry(fromA, b1.name) === undefined && entry(fromB, a1.name) === undefined;
            return gone || `a1 lists ${JSON.stringify(fromA)}, b1 lists ${JSON.stringify(fromB)}`;
          });
          // Once they know, calls fail at once as for any unknown peer.
          for (const [from, to] of [[a1, b1], [b1, a1], [a2, b1]] as const) {
            const failure = await from.failure("call", {
              target: to.name,
              path: "whoami",
              timeout: 15_000,
            });
            strictEqual(failure?.name, "PeerNotFoundError", JSON.stringify(failure));
          }
          for (const [from, to] of [[a1, a2], [a2, a1]] as const) {
            deepStrictEqual(await from.whoami(to), {
              name: to.name,
              instance: to.instance,
              via: "local",
              relay: null,
            });
          }
        },
      );

      await t.step("restarting one relay restores cross-LAN calls by itself", async () => {
        await relay1.start();
        // Every pair called below must have met again, not only a1 and b1.
        const pairs = [[a1, b1], [b1, a1], [a2, b1], [b1, a2]] as const;
        await until("a1, a2 and b1 to meet again through the restarted relay", async () => {
          for (const [from, to] of pairs) {
            const listed = await from.peers();
            if (entry(listed, to.name)?.relays.includes(relay1.address) !== true) {
              return `${from.name} lists ${JSON.stringify(listed)}`;
            }
          }
          return true;
        });
        for (const [from, to] of pairs) {
          const seen = await from.whoami(to);
          deepStrictEqual(
            [seen.instance, seen.via, seen.relay],
            [to.instance, "relay", relay1.address],
          );
        }
        notStrictEqual((await counters(wanAgent, relay1.index)).nodes, 0);
      });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
