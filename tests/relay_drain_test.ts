/**
 * Graceful drain: a relay told to stop (SIGTERM for the command line,
 * `relay.drain()` embedded) tells its nodes, which move new calls to their
 * other relays and keep the link for the answers still due; the relay closes
 * once they have left. A planned restart loses no call.
 *
 * Real relays (processes and in-process) and real sockets, no mocks; waits
 * are bounded only to catch hangs.
 */

import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { Node } from "../mod.ts";
import type { Relay } from "../relay/mod.ts";
import { deadline, HANG_TIMEOUT, sleep, testNetwork, waitFor } from "./_fixtures.ts";
import { meetVia, remoteOptions, spawnRelay, startRelay } from "./_relay_fixtures.ts";

/**
 * A remote-only node on `servers` whose `hop` returns its argument after 50 ms and notes the
 * relay the call came through.
 */
function hopNode(
  net: ReturnType<typeof testNetwork>,
  name: string,
  servers: string[],
  carriers: string[],
): Node {
  return new Node(remoteOptions(net, name, servers, {
    commands: {
      // Each call takes a moment, so calls are still running when a DRAIN arrives.
      hop: async (_n, args, _k, ctx) => {
        carriers.push(ctx.relay ?? ctx.via);
        await sleep(50);
        return args[0];
      },
    },
  }));
}

/**
 * Calls `hop` from each caller to its target, `perPair` calls at a time,
 * until stopped (or `cap` calls in all); records every failure.
 */
class CallStream {
  readonly failures: string[] = [];
  done = 0;
  #stopped = false;
  readonly #workers: Promise<void>[] = [];

  constructor(pairs: Array<[caller: Node, target: string]>, perPair: number, cap: number) {
    let next = 0;
    for (const [caller, target] of pairs) {
      for (let w = 0; w < perPair; w++) {
        this.#workers.push((async () => {
          while (!this.#stopped && next < cap) {
            const value = next++;
            try {
              const got = await caller.command("hop", {
                target,
                args: [value],
                raiseErrors: true,
                timeout: 8000,
              });
              strictEqual(got, value);
            } catch (error) {
              const { name, message } = error as Error;
              this.failures.push(`${caller.name}->${target} #${value}: ${name}: ${message}`);
            }
            this.done++;
          }
        })());
      }
    }
  }

  /** Resolves once `n` more calls have completed than when it was called (a hang guard only). */
  async more(n: number, what: string): Promise<void> {
    const target = this.done + n;
    await waitFor(() => this.done >= target, `${n} more calls ${what}`, 3 * HANG_TIMEOUT);
  }

  /** Stops and waits for the calls in flight. */
  async stop(): Promise<void> {
    this.#stopped = true;
    await deadline(Promise.all(this.#workers), "the calls in flight to finish");
  }
}

/** The relay (of `relays`) that carried most of `carriers`. */
function busiest(carriers: string[], relays: string[]): string {
  const count = (relay: string) => carriers.filter((c) => c === relay).length;
  return relays.reduce((best, relay) => count(relay) > count(best) ? relay : best);
}

Deno.test({
  name:
    "SIGTERM on a relay process during a stream of calls loses no call; it prints 'draining' and exits 0",
  async fn() {
    const net = testNetwork("drain");
    await using r1 = await spawnRelay();
    await using r2 = await spawnRelay();
    const servers = [r1.address, r2.address];
    const carriers: string[] = [];
    await using a = hopNode(net, "a", servers, carriers);
    await using b = hopNode(net, "b", servers, carriers);
    await Promise.all([a.start(), b.start()]);
    await meetVia([a, b], r1.address);
    await meetVia([a, b], r2.address);

    const calls = new CallStream([[a, "b"], [b, "a"]], 2, 100_000);
    await calls.more(40, "before the signal");
    // Stop the relay that carried the calls so far, with calls in flight on it.
    const carrier = busiest(carriers, servers);
    const doomed = carrier === r1.address ? r1 : r2;
    const other = carrier === r1.address ? r2.address : r1.address;
    const signalledAt = carriers.length;
    doomed.process.kill("SIGTERM");
    const status = await deadline(doomed.process.status, "the relay to drain and exit");
    await calls.more(40, "after the relay exited");
    await calls.stop();

    deepStrictEqual(calls.failures, []);
    strictEqual(status.code, 0, doomed.process.stderr);
    await waitFor(
      () => /^peerbase-relay stopped$/m.test(doomed.process.stderr),
      "the relay's stop line",
    );
    ok(/^peerbase-relay draining$/m.test(doomed.process.stderr), doomed.process.stderr);
    ok(carriers.slice(0, signalledAt).includes(carrier), "calls went through it before the signal");
    deepStrictEqual(
      [...new Set(carriers.slice(-40))],
      [other],
      "the last calls went through the other relay",
    );
  },
});

Deno.test({
  name:
    "relay.drain() loses no call of a node that has another relay, and closes once the nodes left, before its grace",
  async fn() {
    const net = testNetwork("drain");
    // Both relays give a minute's grace: drain() resolving within the hang guard means the
    // nodes left, not that the grace ran out.
    await using one = await startRelay({ drainGrace: 60_000 });
    await using two = await startRelay({ drainGrace: 60_000 });
    const servers = [one.address, two.address];
    const carriers: string[] = [];
    await using node = hopNode(net, "node", servers, carriers);
    await using peer = hopNode(net, "peer", servers, carriers);
    await Promise.all([node.start(), peer.start()]);
    await meetVia([node, peer], one.address);
    await meetVia([node, peer], two.address);

    const calls = new CallStream([[node, "peer"]], 4, 100_000);
    await calls.more(40, "before the drain");
    const carrier = busiest(carriers, servers);
    const [draining, other]: [Relay, Relay] = carrier === one.address
      ? [one.relay, two.relay]
      : [two.relay, one.relay];
    const drainedAt = carriers.length;
    await deadline(draining.drain(), "drain() to resolve once the nodes left");
    strictEqual(draining.stats.connections, 0, "every node left the draining relay");
    await calls.more(40, "after the drain");
    await calls.stop();

    deepStrictEqual(calls.failures, []);
    ok(carriers.slice(0, drainedAt).includes(carrier), "calls went through it before the drain");
    deepStrictEqual(
      [...new Set(carriers.slice(-40))],
      [carrier === one.address ? two.address : one.address],
      "the last calls went through the other relay",
    );
    strictEqual(other.stats.nodes, 2);
  },
});

Deno.test({
  name: "calls in flight when their only relay drains still get their answers",
  async fn() {
    const net = testNetwork("drain");
    await using r = await startRelay({ drainGrace: 60_000 });
    const { relay, address } = r;
    const gate = Promise.withResolvers<void>();
    let running = 0;
    await using target = new Node(remoteOptions(net, "target", address, {
      commands: {
        hold: async (_n, args) => {
          running++;
          await gate.promise;
          return args[0];
        },
      },
    }));
    await using caller = new Node(remoteOptions(net, "caller", address));
    await Promise.all([target.start(), caller.start()]);
    await meetVia([target, caller], address);

    const inFlight = 8;
    const answers = Array.from(
      { length: inFlight },
      (_, i) =>
        caller.command("hold", { target: "target", args: [i], raiseErrors: true, timeout: 30_000 })
          .then(
            (value) => ({ value }),
            (error: Error) => ({ error: `${error.name}: ${error.message}` }),
          ),
    );
    await waitFor(() => running === inFlight, "every call to reach the target's handler");

    const drained = relay.drain();
    // Both nodes have taken the DRAIN in once neither chooses the relay for a new call.
    const probe = (from: Node, to: string) =>
      from.command("__echo__", { target: to, raiseErrors: false, timeout: 2000 });
    const end = Date.now() + HANG_TIMEOUT;
    while ((await probe(caller, "target")) !== null || (await probe(target, "caller")) !== null) {
      if (Date.now() > end) throw new Error("Timed out waiting for the nodes to take the DRAIN");
      await sleep(10);
    }
    // The handlers go on working for a while after the DRAIN: a slow handler, not a fast one
    // that happens to answer before the node looks at its links again.
    await sleep(500);
    gate.resolve();

    deepStrictEqual(
      await deadline(Promise.all(answers), "the answers"),
      Array.from({ length: inFlight }, (_, i) => ({ value: i })),
    );
    await deadline(drained, "drain() to resolve once both nodes left");
    strictEqual(relay.stats.connections, 0);
  },
});
