/**
 * Nodes in separate Deno processes: they find and call each other, and a
 * process that dies mid-call fails the call promptly.
 */

import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { ConnectionClosedError, Node } from "../mod.ts";
import { IN_NETNS, NETNS_REASON, testIf } from "./_env.ts";
import { deadline, knows, nodeOptions, spawnPeer, testNetwork, waitFor } from "./_fixtures.ts";

testIf(IN_NETNS, NETNS_REASON, {
  name: "two nodes in two processes call each other",
  async fn() {
    const net = testNetwork();
    await using left = await spawnPeer({ name: "left", net, call: "right" });
    await using right = await spawnPeer({ name: "right", net, call: "left" });
    const [fromLeft, fromRight] = await Promise.all([
      left.process.line("result "),
      right.process.line("result "),
    ]);
    const leftSaw = JSON.parse(fromLeft.slice("result ".length));
    const rightSaw = JSON.parse(fromRight.slice("result ".length));
    strictEqual(leftSaw.name, "right");
    strictEqual(rightSaw.name, "left");
    strictEqual(leftSaw.pid, right.process.child.pid);
    strictEqual(rightSaw.pid, left.process.child.pid);
    // Both close cleanly on SIGTERM.
    for (const peer of [left, right]) {
      const status = await peer.process.stop("SIGTERM");
      strictEqual(status.code, 0, peer.process.stderr);
    }
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a node in this process and one in a subprocess call each other's commands",
  async fn() {
    const net = testNetwork();
    await using local = new Node(nodeOptions(net, "local", {
      commands: { whoami: (node) => ({ name: node.name, instance: node.instance, pid: Deno.pid }) },
    }));
    await local.start();
    await using remote = await spawnPeer({ name: "remote", net, call: "local" });
    await waitFor(() => knows(local, "remote"), "this process to see the subprocess node");
    strictEqual(
      await local.command("add", { target: "remote", args: [40, 2], raiseErrors: true }),
      42,
    );
    const line = await remote.process.line("result ");
    deepStrictEqual(JSON.parse(line.slice("result ".length)), {
      name: "local",
      instance: local.instance,
      pid: Deno.pid,
    });
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "command() rejects with ConnectionClosedError when the peer process is killed mid-call",
  async fn() {
    const net = testNetwork();
    await using caller = new Node(nodeOptions(net, "caller"));
    await caller.start();
    await using victim = await spawnPeer({ name: "victim", net });
    await waitFor(() => knows(caller, "victim"), "the caller to see the victim");
    // A call timeout far beyond the 10 s hang guard: only the lost connection can end it in time.
    const call = caller.command("slow", {
      target: "victim",
      args: [120_000],
      raiseErrors: true,
      timeout: 60_000,
    })
      .catch((e) => e);
    await victim.process.line("slow started");
    victim.process.kill("SIGKILL");
    const error = await deadline(call, "the call to fail");
    ok(error instanceof ConnectionClosedError, String(error));
    strictEqual(error.peer, "victim");
  },
});
