/**
 * Bounded fuzzing: random, truncated, oversize and bit-flipped frames and
 * adverts, from many connections at once, against a node and a relay (one
 * process, `tests/fixtures/fuzz_target.ts`). Afterwards both serve
 * legitimate calls, the process's resident size after a full collection is
 * within 32 MiB of where it started, and the node ran its handler exactly
 * once per legitimate call.
 *
 * Seeded and time-bounded: `PEERBASE_FUZZ_SEED` replays a run,
 * `PEERBASE_FUZZ_MS` runs longer (default 3000 ms). The seed is printed on
 * failure.
 */

import { ok, strictEqual } from "node:assert/strict";
import { Node } from "../mod.ts";
import { encodeFrame, encodeName, FrameType } from "../lib/frame.ts";
import { IN_NETNS, NETNS_REASON, testIf } from "./_env.ts";
import {
  newInstance,
  nodeOptions,
  sealFrame,
  Spawned,
  type TestNetwork,
  testNetwork,
  waitFor,
} from "./_fixtures.ts";

const FUZZ_TARGET = new URL("./fixtures/fuzz_target.ts", import.meta.url);
const MiB = 1024 * 1024;
const FUZZ_MS = Number(Deno.env.get("PEERBASE_FUZZ_MS") ?? 3000);
const CONNECTIONS = 24;
/** Most frames one fuzzing connection sends before it hangs up. */
const FRAMES_PER_CONNECTION = 8;
const LEGIT_CALLS = 20;

/** mulberry32: a small seeded generator, so a failing run can be replayed. */
function generator(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Valid-looking material to mutate: sealed frames that run nothing, adverts, control frames. */
interface Corpus {
  frames: Uint8Array[];
  adverts: Uint8Array[];
}

async function corpus(net: TestNetwork): Promise<Corpus> {
  const who = { name: "fuzzer", instance: newInstance() };
  const never = { k: "q" as const, id: 1, p: "fuzz.never", a: [], kw: {} };
  const other = testNetwork("fuzz-other");
  const empty = new Uint8Array(0);
  const names = { network: empty, target: empty, sender: empty };
  const frames = [
    // Authentic, but for a command that does not exist: runs no handler.
    await sealFrame(net, who, "srv", [never]),
    // Another key, same names: never authentic.
    await sealFrame({ ...other, network: net.network }, who, "srv", [never]),
    await sealFrame(other, who, "srv", [{ ...never, p: "count" }]),
    encodeFrame(FrameType.PING, 0, names, empty),
    encodeFrame(FrameType.REGISTER, 0, {
      network: encodeName("x".repeat(43), "network"),
      target: empty,
      sender: encodeName("y".repeat(22), "sender"),
    }, new TextEncoder().encode('{"v":2,"tick":1000,"k":"","a":"","card":"","ns":"","is":""}')),
  ];
  const head = new TextEncoder().encode("PBAD");
  const advert = (version: number, kind: number, network: string, token: number) => {
    const name = new TextEncoder().encode(network);
    return new Uint8Array([
      ...head,
      version,
      kind,
      name.length,
      ...name,
      ...crypto.getRandomValues(new Uint8Array(token)),
    ]);
  };
  const adverts = [
    advert(1, 1, net.network, 120),
    advert(2, 1, net.network, 200),
    advert(2, 2, net.network, 90),
    advert(2, 3, net.network, 400),
    advert(2, 1, "other", 150),
  ];
  return { frames, adverts };
}

/** One mutation of `bytes`: flipped bits, cut short, a lying length, random bytes, or as is. */
function mutate(bytes: Uint8Array, random: () => number): Uint8Array {
  const out = bytes.slice();
  const view = new DataView(out.buffer);
  switch (Math.floor(random() * 6)) {
    case 0: // Flip a few bits.
      for (let i = Math.floor(random() * 4) + 1; i > 0; i--) {
        const at = Math.floor(random() * out.length);
        out[at]! ^= 1 << Math.floor(random() * 8);
      }
      return out;
    case 1: // Truncated.
      return out.subarray(0, Math.floor(random() * out.length));
    case 2: // A length field that lies (larger, up to 4 GiB, or smaller).
      if (out.length >= 4) view.setUint32(0, Math.floor(random() * 0xffffffff));
      return out;
    case 3: // Noise.
      return crypto.getRandomValues(new Uint8Array(Math.floor(random() * 2048) + 1));
    case 4: // Oversize: a valid start followed by a large body.
      return new Uint8Array([...out.subarray(0, 16), ...new Uint8Array(64 * 1024)]);
    default:
      return out;
  }
}

function pick<T>(items: T[], random: () => number): T {
  return items[Math.floor(random() * items.length)]!;
}

function hostPort(address: string): { hostname: string; port: number } {
  const at = address.lastIndexOf(":");
  return { hostname: address.slice(0, at), port: Number(address.slice(at + 1)) };
}

/** One fuzzing connection: a few mutated frames, then it hangs up (or the target does). */
async function fuzzConnection(
  address: string,
  items: Uint8Array[],
  random: () => number,
): Promise<void> {
  let conn: Deno.TcpConn;
  try {
    conn = await Deno.connect(hostPort(address));
  } catch {
    return; // A cap or a full backlog: fine.
  }
  const reading = (async () => {
    const buffer = new Uint8Array(16 * 1024);
    try {
      while ((await conn.read(buffer)) !== null) { /* drain */ }
    } catch { /* reset */ }
  })();
  try {
    const frames = Math.floor(random() * FRAMES_PER_CONNECTION) + 1;
    for (let i = 0; i < frames; i++) {
      const bytes = mutate(pick(items, random), random);
      let at = 0;
      while (at < bytes.length) at += await conn.write(bytes.subarray(at));
    }
  } catch {
    // Closed by the target: what it should do to most of these.
  } finally {
    try {
      conn.close();
    } catch { /* already closed */ }
    await reading;
  }
}

testIf(IN_NETNS, NETNS_REASON, {
  name:
    "after seeded fuzzing a node and a relay serve every call, run each once and hold no memory",
  async fn() {
    const seed = Number(Deno.env.get("PEERBASE_FUZZ_SEED") ?? Math.floor(Math.random() * 2 ** 31));
    const random = generator(seed);
    const net = testNetwork("fuzz");
    const advertiserPort = 42_000 + Math.floor(Math.random() * 2000);
    await using target = new Spawned(
      new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          "--unstable-net",
          "--v8-flags=--expose-gc",
          FUZZ_TARGET.href,
          "--network",
          net.network,
          "--port",
          String(advertiserPort),
        ],
        env: { PEERBASE_KEY: net.networkKey },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn(),
    );
    const ready = await target.line("ready ");
    const [, nodeAddress, relayAddress] = ready.split(" ") as [string, string, string];
    await using direct = new Node(nodeOptions(net, "direct", { ports: [0, advertiserPort] }));
    await using remote = new Node(
      nodeOptions(net, "remote", { useLocal: false, servers: [relayAddress] }),
    );
    await direct.start();
    await remote.start();
    await waitFor(() => direct.peers.some((p) => p.name === "srv" && p.local), "srv on the LAN");
    await waitFor(
      () => remote.peers.some((p) => p.name === "srv" && p.relays.length > 0),
      "srv at the relay",
    );
    const memory = () =>
      direct.command("memory", { target: "srv" }) as Promise<{ runs: number; rss: number }>;
    await memory(); // Warm: the first collection and the link.
    const start = await memory();

    const { frames, adverts } = await corpus(net);
    const udp = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    const until = performance.now() + FUZZ_MS;
    let sent = 0;
    try {
      await Promise.all(Array.from({ length: CONNECTIONS }, async (_, lane) => {
        while (performance.now() < until) {
          if (lane === 0) {
            for (let i = 0; i < 32; i++) {
              const bytes = mutate(pick(adverts, random), random).subarray(0, 1500);
              await udp.send(bytes, {
                transport: "udp",
                hostname: "127.0.0.1",
                port: advertiserPort,
              });
            }
            await new Promise((resolve) => setTimeout(resolve, 5));
          } else {
            await fuzzConnection(lane % 2 ? nodeAddress : relayAddress, frames, random);
          }
          sent++;
        }
      }));

      for (let i = 0; i < LEGIT_CALLS; i++) {
        await direct.command("count", { target: "srv" });
        await remote.command("count", { target: "srv" });
      }
      const end = await memory();
      strictEqual(end.runs, 2 * LEGIT_CALLS, "handler runs = legitimate calls");
      const grown = end.rss - start.rss;
      ok(grown < 32 * MiB, `resident size grew by ${(grown / MiB).toFixed(1)} MiB`);
      ok(sent > CONNECTIONS, `only ${sent} fuzzing rounds ran`);
    } catch (error) {
      throw new Error(
        `Fuzzing with PEERBASE_FUZZ_SEED=${seed} failed: ${(error as Error).message}`,
        { cause: error },
      );
    } finally {
      udp.close();
    }
  },
});
