/**
 * Memory before trust (docs/PROTOCOL.md, "Memory: bytes received, never
 * bytes declared"): what a stranger, or a peer that only declares large
 * frames, can make a node hold. Memory figures are the node process's own
 * resident size (`/proc/<pid>/status`), asserted as bounds.
 */

import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { Node } from "../mod.ts";
import { CloseCode } from "../lib/frame.ts";
import { IN_NETNS, NETNS_REASON, testIf } from "./_env.ts";
import {
  deadline,
  newInstance,
  nodeOptions,
  RawClient,
  sealFrame,
  sleep,
  spawnPeer,
  testNetwork,
  waitFor,
} from "./_fixtures.ts";
import { rawMember, type RelayRawClient, startRelay } from "./_relay_fixtures.ts";

const MiB = 1024 * 1024;

/** A figure of process `pid` from `/proc/<pid>/status` (`VmRSS` resident, `VmSize` address space), bytes. */
async function memory(pid: number, field: "VmRSS" | "VmSize"): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const kib = Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1]);
  ok(Number.isFinite(kib), `no ${field} in /proc/<pid>/status`);
  return kib * 1024;
}

/** The resident size of process `pid`, bytes. */
function rss(pid: number): Promise<number> {
  return memory(pid, "VmRSS");
}

/** A length field declaring a frame of `bytes` (length field included), then a DATA header's first bytes. */
function declaring(bytes: number): Uint8Array {
  const head = new Uint8Array(16);
  new DataView(head.buffer).setUint32(0, bytes - 4);
  head[4] = 2; // version
  head[5] = 1; // DATA
  return head;
}

/** Opens `count` raw connections to `address`, each set up by `send`. */
async function attackers(
  count: number,
  address: string,
  send: (client: RawClient) => Promise<void>,
): Promise<RawClient[]> {
  const clients: RawClient[] = [];
  for (let i = 0; i < count; i++) {
    const client = await RawClient.connect(address);
    clients.push(client);
    await send(client);
  }
  return clients;
}

async function closeAll(clients: RawClient[]): Promise<void> {
  for (const client of clients) await client[Symbol.asyncDispose]();
}

testIf(IN_NETNS, NETNS_REASON, {
  name: "a stranger's frame above 4096 bytes is refused before the node allocates it",
  async fn() {
    const net = testNetwork("pretrust");
    await using peer = await spawnPeer({ name: "srv", net });
    const pid = peer.process.child.pid;
    const before = await rss(pid);
    const junk = new Uint8Array(MiB);
    const clients = await attackers(48, peer.address, async (client) => {
      await client.write(declaring(16 * MiB));
      await client.write(junk).catch(() => {}); // The node may have closed it already.
    });
    try {
      for (const client of clients) {
        const outcome = await client.outcome();
        strictEqual(outcome.goaway?.code, CloseCode.TOO_LARGE, outcome.goaway?.reason);
      }
      const grown = (await rss(pid)) - before;
      ok(grown < 32 * MiB, `48 strangers declaring 16 MiB grew the node by ${grown / MiB} MiB`);
    } finally {
      await closeAll(clients);
    }
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a trusted connection's partial frame costs what it sent, not what it declared",
  async fn() {
    const net = testNetwork("pretrust");
    await using peer = await spawnPeer({ name: "srv", net });
    const pid = peer.process.child.pid;
    // Pages never written are not resident, so what a declared length reserves shows in the
    // address space (and in V8's external memory, which drives its collector), not in VmRSS.
    const before = await memory(pid, "VmSize");
    const sent = new Uint8Array(200 * 1024);
    const clients = await attackers(40, peer.address, async (client) => {
      const who = { name: `raw${newInstance().slice(0, 6)}`, instance: newInstance() };
      await client.write(await sealFrame(net, who, "srv", [])); // An authentic hello.
      await client.write(declaring(16 * MiB));
      await client.write(sent);
    });
    try {
      // Every connection stays open (the hello made it trusted) while it holds its partial frame.
      await sleep(500); // Let the node read what was sent (loopback: well under this).
      ok(clients.every((client) => !client.closed), "a trusted connection was closed");
      const grown = (await memory(pid, "VmSize")) - before;
      // 40 × 256 KiB buffers = 10 MiB; declared, it would be 640 MiB.
      ok(
        grown < 128 * MiB,
        `40 partial 16 MiB frames of 200 KiB grew the node by ${grown / MiB} MiB`,
      );
    } finally {
      await closeAll(clients);
    }
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a connection that sends no hello is closed at the trust deadline",
  async fn() {
    const net = testNetwork("pretrust");
    await using peer = await spawnPeer({ name: "srv", net });
    const clients = await attackers(20, peer.address, async () => {});
    try {
      for (const client of clients) {
        const outcome = await deadline(client.outcome(), "the deadline to close it", 15_000);
        strictEqual(outcome.goaway?.code, CloseCode.POLICY, outcome.goaway?.reason);
      }
    } finally {
      await closeAll(clients);
    }
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a first call of 1 MiB on a new direct link goes through behind the hello",
  async fn() {
    const net = testNetwork("pretrust");
    await using a = new Node(nodeOptions(net, "a"));
    await using b = new Node({
      ...nodeOptions(net, "b"),
      commands: { size: (_node, args) => (args[0] as Uint8Array).length },
    });
    await a.start();
    await b.start();
    await waitFor(() => a.peers.some((p) => p.name === "b" && p.local), "a to see b");
    const size = await a.command("size", { args: [new Uint8Array(MiB)], target: "b" });
    strictEqual(size, MiB);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name:
    "past its budget a node cuts the connection holding most of what it declared and never sent, not the last to ask",
  async fn() {
    const net = testNetwork("pretrust");
    await using srv = new Node({ ...nodeOptions(net, "srv"), bufferBudget: 1.5 * MiB });
    await srv.start();
    const address = srv.address!;
    const trusted = async (sent: number) => {
      const client = await RawClient.connect(address);
      const who = { name: `raw${newInstance().slice(0, 6)}`, instance: newInstance() };
      await client.write(await sealFrame(net, who, "srv", []));
      await client.write(declaring(16 * MiB));
      await client.write(new Uint8Array(sent));
      return client;
    };
    // Buffers grow 16 → 64 → 256 KiB → 1 MiB: the largest holds 1 MiB, two hold 256 KiB (1.5 MiB).
    const largest = await trusted(600 * 1024);
    const second = await trusted(200 * 1024);
    const third = await trusted(200 * 1024);
    await sleep(300); // The node reads what loopback holds (well under this) before the last one.
    const last = await trusted(10 * 1024); // 16 KiB more: past the budget.
    const clients = [largest, second, third, last];
    try {
      const outcome = await largest.outcome();
      strictEqual(outcome.goaway?.code, CloseCode.POLICY, outcome.goaway?.reason);
      deepStrictEqual([second, third, last].map((c) => c.closed), [false, false, false]);
    } finally {
      await closeAll(clients);
    }
  },
});

Deno.test({
  name:
    "past its budget a relay cuts the member holding most of what it declared and never sent, and counts it",
  async fn() {
    await using r = await startRelay({ bufferBudget: 1.5 * MiB, maxPerAddress: 100 });
    const net = testNetwork("pretrust");
    const members = [];
    for (const name of ["largest", "second", "third", "last"]) {
      members.push((await rawMember(net, name, r.address)).client);
    }
    const [largest, second, third, last] = members as [
      RelayRawClient,
      RelayRawClient,
      RelayRawClient,
      RelayRawClient,
    ];
    try {
      const partial = async (client: RelayRawClient, sent: number) => {
        await client.write(declaring(16 * MiB));
        await client.write(new Uint8Array(sent));
      };
      await partial(largest, 600 * 1024); // Buffer of 1 MiB.
      await partial(second, 200 * 1024); // 256 KiB.
      await partial(third, 200 * 1024); // 256 KiB: 1.5 MiB in all.
      await waitFor(() => r.relay.stats.buffered === 1.5 * MiB, "the relay to read it all");
      strictEqual(r.relay.stats.disconnects.budget, 0);
      await partial(last, 10 * 1024); // 16 KiB more: past the budget.
      const outcome = await largest.outcome();
      strictEqual(outcome.goaway?.code, CloseCode.POLICY, outcome.goaway?.reason);
      strictEqual(r.relay.stats.disconnects.budget, 1);
      deepStrictEqual([second, third, last].map((c) => c.closed), [false, false, false]);
    } finally {
      for (const member of members) await member[Symbol.asyncDispose]();
    }
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a hello sent again on another connection opens nothing",
  async fn() {
    const net = testNetwork("pretrust");
    await using srv = new Node(nodeOptions(net, "srv"));
    await srv.start();
    const who = { name: "raw", instance: newInstance() };
    const hello = await sealFrame(net, who, "srv", []);
    await using first = await RawClient.connect(srv.address!);
    await first.write(hello);
    await first.write(await sealFrame(net, who, "srv", [{ k: "ping", id: 1 }]));
    deepStrictEqual(await first.messages(net, 1), [{ k: "pong", id: 1 }]);
    await using replay = await RawClient.connect(srv.address!);
    await replay.write(hello);
    const outcome = await replay.outcome();
    strictEqual(outcome.goaway?.code, CloseCode.POLICY, outcome.goaway?.reason);
    ok(outcome.goaway.reason.includes("fresh hello"), outcome.goaway.reason);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a direct connection whose first frame is a call, not a hello, is refused and runs nothing",
  async fn() {
    const net = testNetwork("pretrust");
    let runs = 0;
    await using srv = new Node({ ...nodeOptions(net, "srv"), commands: { count: () => ++runs } });
    await srv.start();
    await using client = await RawClient.connect(srv.address!);
    const who = { name: "raw", instance: newInstance() };
    await client.write(
      await sealFrame(net, who, "srv", [{ k: "q", id: 1, p: "count", a: [], kw: {} }]),
    );
    const outcome = await client.outcome();
    strictEqual(outcome.goaway?.code, CloseCode.POLICY, outcome.goaway?.reason);
    strictEqual(runs, 0);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a trusted connection that declares a frame and stops sending it is cut after 10 s",
  async fn() {
    const net = testNetwork("pretrust");
    await using srv = new Node(nodeOptions(net, "srv"));
    await srv.start();
    await using client = await RawClient.hello(srv.address!, net, {
      name: "raw",
      instance: newInstance(),
    });
    await client.write(declaring(16 * MiB));
    await client.write(new Uint8Array(1024));
    await waitFor(() => client.closed, "the node to cut the stalled frame", 20_000);
    const outcome = await client.outcome();
    strictEqual(outcome.goaway?.code, CloseCode.POLICY, outcome.goaway?.reason);
    ok(outcome.goaway.reason.includes("stalled"), outcome.goaway.reason);
  },
});

Deno.test({
  name: "a relay cuts a member that declares a frame and stops sending it, after its timeout",
  async fn() {
    await using r = await startRelay({ timeout: 1000 });
    const net = testNetwork("pretrust");
    const { client } = await rawMember(net, "stall", r.address);
    try {
      await client.write(declaring(16 * MiB));
      await client.write(new Uint8Array(1024));
      const outcome = await client.outcome(15_000);
      strictEqual(outcome.goaway?.code, CloseCode.POLICY, outcome.goaway?.reason);
      strictEqual(r.relay.stats.disconnects.stalledFrame, 1);
    } finally {
      await client[Symbol.asyncDispose]();
    }
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "answers a caller never reads count against the node's budget, and the caller is cut",
  async fn() {
    const net = testNetwork("pretrust");
    await using srv = new Node({
      ...nodeOptions(net, "srv"),
      bufferBudget: 8 * MiB,
      commands: { big: () => new Uint8Array(MiB) },
    });
    await srv.start();
    const [hostname, port] = srv.address!.split(":") as [string, string];
    const conn = await Deno.connect({ hostname, port: Number(port) });
    try {
      const who = { name: "raw", instance: newInstance() };
      const requests = Array.from({ length: 40 }, (_, i) => ({
        k: "q" as const,
        id: i + 1,
        p: "big",
        a: [],
        kw: {},
      }));
      for (
        const bytes of [
          await sealFrame(net, who, "srv", []),
          await sealFrame(net, who, "srv", requests),
        ]
      ) {
        let at = 0;
        while (at < bytes.length) at += await conn.write(bytes.subarray(at));
      }
      // 40 MiB of answers for a reader that never reads: the node cuts it past its 8 MiB budget.
      await waitFor(() => srv.stats.connections.open === 0, "the node to cut the connection");
    } finally {
      conn.close();
    }
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a burst of its own large calls never makes a node cut its own link, even past its budget",
  async fn() {
    const net = testNetwork("pretrust");
    await using a = new Node({ ...nodeOptions(net, "a"), bufferBudget: 8 * MiB });
    await using b = new Node({
      ...nodeOptions(net, "b"),
      commands: { size: (_node, args) => (args[0] as Uint8Array).length },
    });
    await a.start();
    await b.start();
    await waitFor(() => a.peers.some((p) => p.name === "b" && p.local), "a to see b");
    const sizes = await Promise.all(
      Array.from(
        { length: 12 },
        () => a.command("size", { args: [new Uint8Array(MiB)], target: "b" }),
      ),
    );
    deepStrictEqual(sizes, Array(12).fill(MiB));
  },
});
