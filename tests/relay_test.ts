/**
 * Relays: nodes on different LANs call each other through them, end to end
 * encrypted; relays keep their limits, refuse impostors, fail over and log
 * nothing about peers.
 *
 * Remote-only nodes (`useLocal: false`) and relays never advertise on UDP,
 * so tests that use only them run anywhere; a test that also starts a LAN
 * node needs the private network namespace (`testIf(IN_NETNS, ...)`).
 */

import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { Node } from "../mod.ts";
import { Relay } from "../relay.ts";
import { deadline, testNetwork } from "./_fixtures.ts";
import { lineJson, meetVia, remoteOptions, spawnRelay, spawnRelayNode } from "./_relay_fixtures.ts";

Deno.test({
  name: "two remote-only nodes in two processes call each other through a relay process",
  async fn() {
    const net = testNetwork("relay");
    await using relay = await spawnRelay();
    const servers = [relay.address];
    await using left = await spawnRelayNode({ name: "left", net, servers, call: "right" });
    await using right = await spawnRelayNode({ name: "right", net, servers, call: "left" });
    const [fromLeft, fromRight] = await Promise.all([left.line("result "), right.line("result ")]);
    const leftSaw = lineJson(fromLeft, "result ");
    const rightSaw = lineJson(fromRight, "result ");
    deepStrictEqual(leftSaw, {
      name: "right",
      pid: right.child.pid,
      caller: "left",
      via: "relay",
      relay: relay.address,
    });
    deepStrictEqual(rightSaw, {
      name: "left",
      pid: left.child.pid,
      caller: "right",
      via: "relay",
      relay: relay.address,
    });
    for (const node of [left, right]) {
      const status = await node.stop("SIGTERM");
      strictEqual(status.code, 0, node.stderr);
    }
  },
});

Deno.test({
  name: "a call through an in-process relay reports via 'relay' and the relay's address",
  async fn() {
    const net = testNetwork("relay");
    await using relay = new Relay({ hostname: "127.0.0.1", port: 0 });
    await relay.start();
    const address = `127.0.0.1:${relay.addr.port}`;
    await using a = new Node(remoteOptions(net, "a", address, {
      commands: {
        who: (_n, _a, _k, ctx) => ({ caller: ctx.caller, via: ctx.via, relay: ctx.relay }),
      },
    }));
    await using b = new Node(remoteOptions(net, "b", address));
    await a.start();
    await b.start();
    await meetVia([a, b], address);
    const seen = await deadline(b.command("who", { target: "a", raiseErrors: true }), "the call");
    deepStrictEqual(seen, { caller: "b", via: "relay", relay: address });
    ok(a.address === null, "a remote-only node has no listener");
  },
});

Deno.test({
  name:
    "calls fail over to another relay when the relay carrying them is killed, and each runs at most once",
  async fn() {
    const net = testNetwork("relay");
    await using r1 = await spawnRelay();
    await using r2 = await spawnRelay();
    const servers = [r1.address, r2.address];
    const runs = new Map<number, number>();
    const carriers = new Set<string>();
    await using target = new Node(remoteOptions(net, "target", servers, {
      commands: {
        count: (_n, args, _k, ctx) => {
          const value = args[0] as number;
          runs.set(value, (runs.get(value) ?? 0) + 1);
          carriers.add(ctx.relay!);
          return value;
        },
      },
    }));
    await using caller = new Node(remoteOptions(net, "caller", servers));
    await target.start();
    await caller.start();
    await meetVia([target, caller], r1.address);
    await meetVia([target, caller], r2.address);
    const total = 300;
    const inFlight = 4;
    let next = 0;
    let done = 0;
    const failures: string[] = [];
    let killed: string | null = null;
    const worker = async () => {
      while (next < total) {
        const value = next++;
        try {
          const got = await caller.command("count", {
            target: "target",
            args: [value],
            raiseErrors: true,
            timeout: 8000,
          });
          strictEqual(got, value);
        } catch (error) {
          failures.push(`${value}: ${(error as Error).name}: ${(error as Error).message}`);
        }
        done++;
        if (done === 50 && killed === null) {
          // Kill the relay that carried the calls so far, with calls in flight.
          killed = [...carriers][0]!;
          (killed === r1.address ? r1 : r2).process.kill("SIGKILL");
        }
      }
    };
    await deadline(
      Promise.all(Array.from({ length: inFlight }, worker)),
      "the stream of calls",
      30_000,
    );
    deepStrictEqual(failures, []);
    ok(killed !== null);
    strictEqual(runs.size, total);
    const repeated = [...runs].filter(([, n]) => n !== 1);
    deepStrictEqual(repeated, [], "each request ran exactly once");
    ok(carriers.size === 2, `calls went through both relays: ${[...carriers]}`);
  },
});
