/**
 * At most once whatever the clocks, and bounded insider costs
 * (docs/PROTOCOL.md, "At most once"): raw clients that hold the key seal
 * requests with chosen clocks, replay them, cancel them before they arrive,
 * and flood one node, which runs each request at most once, never after its
 * caller's deadline, and keeps serving.
 *
 * @module
 */

import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import type { NodeOptions } from "../mod.ts";
import type { Node } from "../lib/node.ts";
import { CloseCode } from "../lib/frame.ts";
import { DEFAULT_MAX_BATCH_MESSAGES, ErrorCode, type Message } from "../lib/message.ts";
import { DEFAULT_MAX_CALLER_IN_FLIGHT } from "../lib/responder.ts";
import {
  newInstance,
  RawClient,
  type RawIdentity,
  sealFrame,
  sleep,
  startNodes,
  type TestNetwork,
  waitFor,
} from "./_fixtures.ts";
import { IN_NETNS, NETNS_REASON, testIf } from "./_env.ts";

/** A serving node `srv` (counting runs, and holding runs of `hold`) and a node `client`. */
async function server(extra: Partial<NodeOptions<Node>> = {}) {
  let runs = 0;
  let holding = 0;
  let release!: () => void;
  const released = new Promise<void>((resolve) => release = resolve);
  const group = await startNodes(["client", "srv"], {
    each: {
      srv: {
        ...extra,
        commands: {
          count: () => ++runs,
          hold: async () => {
            holding++;
            await released;
            return holding;
          },
        },
      },
    },
  });
  const srv = group.get("srv");
  return {
    group,
    net: group.net,
    address: srv.address!,
    runs: () => runs,
    holding: () => holding,
    release,
    /** Calls `count` from the client node: the server still serves. */
    stillServes: async () => {
      const before = runs;
      strictEqual(await group.get("client").command("count", { target: "srv" }), before + 1);
    },
  };
}

function request(id: number, p = "count", timing: { t?: number; dl?: number } = {}): Message {
  return { k: "q", id, p, a: [], kw: {}, ...timing };
}

/**
 * Connects a raw client as `raw` and proves it with a ping (a connection's
 * frames are capped at 4096 bytes until its first authentic one).
 */
async function trustedClient(
  env: { address: string; net: TestNetwork },
  raw: RawIdentity,
): Promise<RawClient> {
  const client = await RawClient.hello(env.address, env.net, raw);
  await client.write(await sealFrame(env.net, raw, "srv", [{ k: "ping", id: 1 }]));
  deepStrictEqual(await client.messages(env.net, 1), [{ k: "pong", id: 1 }]);
  client.frames.length = 0;
  return client;
}

/** The error code of an answer, or "r" for a result. */
function outcome(message: Message | undefined): string {
  if (message?.k === "e") return message.c;
  return message?.k ?? "none";
}

testIf(IN_NETNS, NETNS_REASON, {
  name:
    "a request from a caller clock 45 s ahead, replayed after the replay window, runs once and the copy gets its answer",
  async fn() {
    const env = await server({ replayWindow: 1000 });
    await using _group = env.group;
    const raw: RawIdentity = { name: "raw", instance: newInstance() };
    // Sealed on a clock 45 s ahead: valid here until 46 s from now, though the window is 1 s.
    const frame = await sealFrame(env.net, raw, "srv", [request(1)], { now: Date.now() + 45_000 });
    {
      await using first = await RawClient.hello(env.address, env.net, raw);
      await first.write(frame);
      deepStrictEqual(await first.messages(env.net, 1), [{ k: "r", id: 1, v: 1 }]);
    }
    // Longer than the replay window (and the once-a-second sweep): its caller must not be forgotten.
    await sleep(2500);
    await using second = await RawClient.hello(env.address, env.net, raw);
    await second.write(frame);
    deepStrictEqual(await second.messages(env.net, 1), [{ k: "r", id: 1, v: 1 }]);
    strictEqual(env.runs(), 1);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name:
    "a request replayed after its caller stopped waiting is not run again: its answer is dropped, the copy told so",
  async fn() {
    const env = await server();
    await using _group = env.group;
    const raw: RawIdentity = { name: "raw", instance: newInstance() };
    const now = Date.now();
    const frame = await sealFrame(env.net, raw, "srv", [request(1, "count", { t: now, dl: 500 })], {
      now,
    });
    await using client = await RawClient.hello(env.address, env.net, raw);
    await client.write(frame);
    deepStrictEqual(await client.messages(env.net, 1), [{ k: "r", id: 1, v: 1 }]);
    // Past the caller's deadline and the once-a-second sweep, well inside the replay window.
    await sleep(2500);
    await client.write(frame);
    const [, copy] = await client.messages(env.net, 2); // every message so far: the answer, then the copy's
    strictEqual(outcome(copy), ErrorCode.FORGOTTEN);
    strictEqual(env.runs(), 1);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name:
    "a request held on its way past its caller's deadline does not run, with the caller's clock 45 s ahead",
  async fn() {
    const env = await server();
    await using _group = env.group;
    const raw: RawIdentity = { name: "raw", instance: newInstance() };
    const callerNow = Date.now() + 45_000;
    await using client = await RawClient.hello(env.address, env.net, raw);
    // A request that arrives at once tells the target how the clocks differ.
    await client.write(
      await sealFrame(env.net, raw, "srv", [request(1, "count", { t: callerNow, dl: 5000 })], {
        now: callerNow,
      }),
    );
    // Sealed 20 s ago with 5 s to live: its deadline passed 15 s ago, though on the
    // target's clock that moment is still 30 s ahead.
    const held = callerNow - 20_000;
    await client.write(
      await sealFrame(env.net, raw, "srv", [request(2, "count", { t: held, dl: 5000 })], {
        now: held,
      }),
    );
    const answers = await client.messages(env.net, 2);
    const byId = new Map(answers.map((m) => [m.id, m]));
    deepStrictEqual(byId.get(1), { k: "r", id: 1, v: 1 });
    strictEqual(outcome(byId.get(2)), ErrorCode.EXPIRED);
    strictEqual(env.runs(), 1);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a request whose deadline passes while it waits for a handler slot never runs",
  async fn() {
    const env = await server({ maxInboundConcurrency: 1 });
    await using _group = env.group;
    const raw: RawIdentity = { name: "raw", instance: newInstance() };
    await using client = await RawClient.hello(env.address, env.net, raw);
    const now = Date.now();
    await client.write(
      await sealFrame(env.net, raw, "srv", [
        request(1, "hold", { t: now }),
        request(2, "count", { t: now, dl: 200 }),
      ], { now }),
    );
    const answers = await client.messages(env.net, 1);
    deepStrictEqual(answers.map((m) => [m.id, outcome(m)]), [[2, ErrorCode.EXPIRED]]);
    env.release();
    await client.messages(env.net, 2);
    strictEqual(env.runs(), 0);
    strictEqual(env.holding(), 1);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a cancel that overtook its request wins: the request never runs",
  async fn() {
    const env = await server();
    await using _group = env.group;
    const raw: RawIdentity = { name: "raw", instance: newInstance() };
    await using client = await RawClient.hello(env.address, env.net, raw);
    await client.write(await sealFrame(env.net, raw, "srv", [{ k: "x", id: 5 }]));
    await client.write(await sealFrame(env.net, raw, "srv", [request(5)]));
    const [answer] = await client.messages(env.net, 1);
    strictEqual(outcome(answer), ErrorCode.CANCELLED);
    strictEqual(env.runs(), 0);
    // Later copies of the request do not run either.
    await client.write(await sealFrame(env.net, raw, "srv", [request(5)]));
    const answers = await client.messages(env.net, 2);
    strictEqual(outcome(answers[1]), ErrorCode.CANCELLED);
    strictEqual(env.runs(), 0);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "requests with ids below 1 are refused as malformed and run nothing",
  async fn(t) {
    const env = await server();
    await using _group = env.group;
    for (const id of [0, -1, -65_536]) {
      await t.step(`id ${id}`, async () => {
        const raw: RawIdentity = { name: "raw", instance: newInstance() };
        await using client = await RawClient.hello(env.address, env.net, raw);
        await client.write(await sealFrame(env.net, raw, "srv", [request(id), request(id)]));
        const result = await client.outcome();
        strictEqual(result.goaway?.code, CloseCode.MALFORMED, result.goaway?.reason);
        strictEqual(env.runs(), 0);
      });
    }
    await env.stillServes();
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "one sealed batch of 100,000 tiny requests runs none of them, and the node keeps serving",
  async fn() {
    const env = await server();
    await using _group = env.group;
    const raw: RawIdentity = { name: "raw", instance: newInstance() };
    const flood = Array.from({ length: 100_000 }, (_, i) => request(i + 1));
    await using client = await trustedClient(env, raw);
    await client.write(await sealFrame(env.net, raw, "srv", flood));
    const result = await client.outcome();
    strictEqual(result.goaway?.code, CloseCode.MALFORMED, result.goaway?.reason);
    ok(result.goaway.reason.includes(`more than ${DEFAULT_MAX_BATCH_MESSAGES}`));
    strictEqual(env.runs(), 0);
    await env.stillServes();
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a caller's requests past its in-flight cap are answered busy and never run",
  async fn() {
    const env = await server();
    await using _group = env.group;
    const raw: RawIdentity = { name: "raw", instance: newInstance() };
    const cap = DEFAULT_MAX_CALLER_IN_FLIGHT;
    const ids = (from: number, count: number) =>
      Array.from({ length: count }, (_, i) => request(from + i, "hold"));
    await using client = await trustedClient(env, raw);
    for (let sent = 0; sent < cap; sent += DEFAULT_MAX_BATCH_MESSAGES) {
      await client.write(
        await sealFrame(
          env.net,
          raw,
          "srv",
          ids(
            sent + 1,
            Math.min(
              DEFAULT_MAX_BATCH_MESSAGES,
              cap - sent,
            ),
          ),
        ),
      );
    }
    await waitFor(() => env.holding() > 0, "the first requests to start");
    await client.write(await sealFrame(env.net, raw, "srv", ids(cap + 1, 8)));
    const busy = await client.messages(env.net, 8);
    deepStrictEqual(
      busy.map((m) => [m.id, outcome(m)]),
      ids(cap + 1, 8).map((m) => [m.id, ErrorCode.BUSY]),
    );
    env.release();
    const all = await client.messages(env.net, cap + 8);
    strictEqual(all.filter((m) => m.k === "r").length, cap);
    strictEqual(env.holding(), cap);
    await env.stillServes();
  },
});
