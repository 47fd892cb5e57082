/** The node's lifecycle state machine: start and close once each, in order, without deadlock. */

import { deepStrictEqual, ok, rejects, strictEqual } from "node:assert/strict";
import { Lifecycle } from "../lib/lifecycle.ts";
import { NodeClosedError, NodeNotStartedError } from "../lib/errors.ts";

function steps(open: () => Promise<void>) {
  const calls: string[] = [];
  return {
    calls,
    steps: {
      open: async () => {
        calls.push("open");
        await open();
      },
      shut: () => {
        calls.push("shut");
        return Promise.resolve();
      },
    },
  };
}

const after = (ms: number, fail?: Error) =>
  new Promise<void>((resolve, reject) => setTimeout(() => fail ? reject(fail) : resolve(), ms));

Deno.test("close() during a start() whose open step fails settles both (no deadlock)", async () => {
  const { calls, steps: s } = steps(() => after(50, new Error("boom")));
  const life = new Lifecycle("a", s);
  const started = life.start().then(() => "started", (e: Error) => e.message);
  const closed = life.close().then(() => "closed");
  deepStrictEqual(await Promise.all([started, closed]), ["boom", "closed"]);
  strictEqual(life.state, "closed");
  deepStrictEqual(calls, ["open", "shut"]);
});

Deno.test("close() during a start() whose open step succeeds rejects start with NodeClosedError", async () => {
  const { calls, steps: s } = steps(() => after(50));
  const life = new Lifecycle("a", s);
  const started = life.start();
  await life.close();
  await rejects(started, NodeClosedError);
  deepStrictEqual(calls, ["open", "shut"]);
  await life.finished;
});

Deno.test("a failed start closes the lifecycle once and start() after close() rejects", async () => {
  const { calls, steps: s } = steps(() => Promise.reject(new Error("no")));
  const life = new Lifecycle("a", s);
  await rejects(life.start(), /no/);
  await life.close();
  await rejects(life.start(), NodeClosedError);
  deepStrictEqual(calls, ["open", "shut"]);
});

Deno.test("the closing signal aborts with NodeClosedError when close() begins", async () => {
  const { steps: s } = steps(() => Promise.resolve());
  const life = new Lifecycle("a", s);
  await life.start();
  ok(!life.closing.aborted);
  await life.close();
  ok(life.closing.reason instanceof NodeClosedError);
});

Deno.test("assertRunning() names the state: not started, then closed", async () => {
  const { steps: s } = steps(() => Promise.resolve());
  const life = new Lifecycle("a", s);
  let error: unknown = null;
  try {
    life.assertRunning();
  } catch (e) {
    error = e;
  }
  ok(error instanceof NodeNotStartedError);
  await life.start();
  life.assertRunning();
  await life.close();
  try {
    life.assertRunning();
  } catch (e) {
    error = e;
  }
  ok(error instanceof NodeClosedError);
});
