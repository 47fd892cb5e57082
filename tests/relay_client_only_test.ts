/**
 * Client-only registrations (`c: 1` in REGISTER): the relay forwards frames
 * addressed to such a member but never lists it to others, in REGISTERED or
 * in MEMBERS pushes; names stay unique.
 */

import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { CloseCode, type Frame, FrameType } from "../lib/frame.ts";
import {
  decodeMembers,
  decodeRegistered,
  encodeControl,
  type Member,
  RELAY_PROTOCOL_VERSION,
} from "../lib/relay_protocol.ts";
import type { Stream, Transport } from "../lib/transport.ts";
import { type InboxParts, NodeInbox } from "../lib/inbox.ts";
import { answerError } from "../lib/calls.ts";
import { decodeRecord, type Envelope, type Message } from "../lib/message.ts";
import type { Link } from "../lib/link.ts";
import { tcpTransport } from "../lib/tcp_transport.ts";
import { Node, UnknownCommandError } from "../mod.ts";
import { newInstance, sleep, testNetwork, waitFor } from "./_fixtures.ts";
import {
  codeName,
  dataFrame,
  meetVia,
  reachesVia,
  registerFrame,
  RelayRawClient,
  remoteOptions,
  startRelay,
} from "./_relay_fixtures.ts";

/** A REGISTER frame with the client-only flag `c`. */
function clientOnlyFrame(network: string, name: string, instance: string, c: unknown = 1) {
  return encodeControl(FrameType.REGISTER, network, name, {
    v: RELAY_PROTOCOL_VERSION,
    i: instance,
    tick: 1000,
    c,
  });
}

/** Every member named in the MEMBERS pushes `client` received, joins and leaves. */
function pushed(client: RelayRawClient): { join: Member[]; leave: Member[] } {
  const all = { join: [] as Member[], leave: [] as Member[] };
  for (const frame of client.frames.filter((f: Frame) => f.type === FrameType.MEMBERS)) {
    const body = decodeMembers(frame);
    all.join.push(...body.join);
    all.leave.push(...body.leave);
  }
  return all;
}

Deno.test("A client-only registration is never listed or pushed in MEMBERS, yet receives frames addressed to it", async () => {
  const { relay, address } = await startRelay();
  await using _relay = relay;
  const { network } = testNetwork("clientonly");
  await using a = await RelayRawClient.connect(address);
  const aInstance = newInstance();
  await a.register(network, "a", aInstance);

  await using c = await RelayRawClient.connect(address);
  const cInstance = newInstance();
  await c.write(clientOnlyFrame(network, "cli", cInstance));
  const cRegistered = decodeRegistered(
    await c.frame((f) => f.type === FrameType.REGISTERED, "REGISTERED for cli"),
  );
  deepStrictEqual(cRegistered.members, [["a", aInstance]], "the client-only member sees a");

  await using b = await RelayRawClient.connect(address);
  const bInstance = newInstance();
  const bRegistered = await b.register(network, "b", bInstance);
  deepStrictEqual(bRegistered.members, [["a", aInstance]], "b is not told of cli");

  // The join of b reaches a and cli; nothing ever names cli.
  await a.frame((f) => f.type === FrameType.MEMBERS, "a's MEMBERS push for b");
  await c.frame((f) => f.type === FrameType.MEMBERS, "cli's MEMBERS push for b");
  deepStrictEqual(pushed(c).join, [["b", bInstance]]);

  // Frames addressed to cli reach it; a fan-out to * does not.
  await a.write(dataFrame(network, "cli", "a", new Uint8Array([1, 2, 3]), 7));
  await a.write(dataFrame(network, "*", "a", new Uint8Array([9]), 8));
  const direct = await c.frame((f) => f.type === FrameType.DATA, "the frame a sent to cli");
  strictEqual(direct.sender, "a");
  deepStrictEqual([...direct.body], [1, 2, 3]);
  await b.frame((f) => f.type === FrameType.DATA, "the * frame at b");
  // cli's answers reach a.
  await c.write(dataFrame(network, "a", "cli", new Uint8Array([4]), 9));
  const answer = await a.frame((f) => f.type === FrameType.DATA, "cli's frame at a");
  strictEqual(answer.sender, "cli");

  // The name stays unique: another instance cannot take it.
  await using thief = await RelayRawClient.connect(address);
  await thief.write(clientOnlyFrame(network, "cli", newInstance()));
  const refused = await thief.outcome();
  strictEqual(codeName(refused.goaway?.code), codeName(CloseCode.NAME_TAKEN));

  // cli leaves: no leave is pushed for it.
  await c[Symbol.asyncDispose]();
  await sleep(100);
  strictEqual(relay.stats.nodes, 2);
  ok(!c.frames.some((f) => f.type === FrameType.DATA && f.id === 8), "no * frame reached cli");
  for (const member of [a, b]) {
    const { join, leave } = pushed(member);
    ok(![...join, ...leave].some(([name]) => name === "cli"), JSON.stringify({ join, leave }));
  }
});

Deno.test("A REGISTER whose client-only flag is not 0 or 1 is refused as malformed", async () => {
  const { relay, address } = await startRelay();
  await using _relay = relay;
  const { network } = testNetwork("clientonly");
  await using c = await RelayRawClient.connect(address);
  await c.write(clientOnlyFrame(network, "cli", newInstance(), "yes"));
  const { goaway, closed } = await c.outcome();
  ok(closed);
  strictEqual(codeName(goaway?.code), codeName(CloseCode.MALFORMED));
  strictEqual(relay.stats.nodes, 0);
});

/**
 * The members `client` lists now: the REGISTERED members, then each MEMBERS
 * push applied as a node applies it (its leaves, then its joins).
 */
function listed(client: RelayRawClient): string[] {
  const members = new Map<string, string>();
  for (const frame of client.frames) {
    if (frame.type === FrameType.REGISTERED) {
      for (const [name, instance] of decodeRegistered(frame).members) members.set(name, instance);
    } else if (frame.type === FrameType.MEMBERS) {
      const { join, leave } = decodeMembers(frame);
      for (const [name, instance] of leave) {
        if (members.get(name) === instance) members.delete(name);
      }
      for (const [name, instance] of join) members.set(name, instance);
    }
  }
  return [...members].map(([name, instance]) => `${name}/${instance}`).sort();
}

/**
 * Registers a full member named `marker` and waits until `observer` lists
 * it: every push queued before it has then reached `observer`.
 */
async function settle(
  address: string,
  network: string,
  observer: RelayRawClient,
  marker: string,
): Promise<RelayRawClient> {
  const client = await RelayRawClient.connect(address);
  const instance = newInstance();
  await client.register(network, marker, instance);
  await waitFor(
    () => listed(observer).includes(`${marker}/${instance}`),
    `the observer to list ${marker}`,
  );
  return client;
}

Deno.test("A listed member re-registered as client-only by a copy of its name and instance is pushed as a leave, and no ghost remains", async () => {
  const { relay, address } = await startRelay();
  await using _relay = relay;
  const { network } = testNetwork("clientonly");
  await using observer = await RelayRawClient.connect(address);
  await observer.register(network, "observer");
  await using real = await RelayRawClient.connect(address);
  const instance = newInstance();
  await real.register(network, "a", instance);
  await waitFor(() => listed(observer).includes(`a/${instance}`), "the observer to list a");

  // An outsider copies a's name and instance and registers hidden: a's connection is replaced.
  await using copy = await RelayRawClient.connect(address);
  await copy.write(clientOnlyFrame(network, "a", instance));
  await copy.frame((f) => f.type === FrameType.REGISTERED, "REGISTERED for the copy");
  const replaced = await real.outcome();
  strictEqual(codeName(replaced.goaway?.code), codeName(CloseCode.NORMAL));
  await using _m1 = await settle(address, network, observer, "m1");
  deepStrictEqual(pushed(observer).leave, [["a", instance]], "a's leave was pushed once");
  ok(!listed(observer).some((m) => m.startsWith("a/")), listed(observer).join());

  // The hidden copy goes: nothing more is pushed about a.
  await copy[Symbol.asyncDispose]();
  await waitFor(() => relay.stats.nodes === 2, "the copy to leave the relay");
  await using _m2 = await settle(address, network, observer, "m2");
  deepStrictEqual(pushed(observer).leave, [["a", instance]]);
  deepStrictEqual(pushed(observer).join.filter(([name]) => name === "a"), [["a", instance]]);
});

Deno.test("A listed registration that turns client-only before its join is pushed leaves no ghost", async () => {
  const { relay, address } = await startRelay();
  await using _relay = relay;
  const { network } = testNetwork("clientonly");
  await using observer = await RelayRawClient.connect(address);
  await observer.register(network, "observer");
  const instance = newInstance();
  await using listedOne = await RelayRawClient.connect(address);
  await using hidden = await RelayRawClient.connect(address);
  // The hidden one follows as soon as the (in-process) relay has registered a: its leave
  // meets a's join, still queued for the next push.
  await listedOne.write(registerFrame(network, "a", instance));
  while (relay.stats.nodes < 2) await sleep(0);
  await hidden.write(clientOnlyFrame(network, "a", instance));
  await hidden.frame((f) => f.type === FrameType.REGISTERED, "REGISTERED for the hidden one");
  strictEqual(codeName((await listedOne.outcome()).goaway?.code), codeName(CloseCode.NORMAL));
  await using _m = await settle(address, network, observer, "m");
  ok(!listed(observer).some((m) => m.startsWith("a/")), listed(observer).join());
});

Deno.test("A client-only member re-registered as a full member is pushed as a join, and its close as a leave", async () => {
  const { relay, address } = await startRelay();
  await using _relay = relay;
  const { network } = testNetwork("clientonly");
  await using observer = await RelayRawClient.connect(address);
  await observer.register(network, "observer");
  const instance = newInstance();
  await using hidden = await RelayRawClient.connect(address);
  await hidden.write(clientOnlyFrame(network, "h", instance));
  await hidden.frame((f) => f.type === FrameType.REGISTERED, "REGISTERED for h");

  // The same instance registers again, listed: members must learn of it.
  await using full = await RelayRawClient.connect(address);
  await full.register(network, "h", instance);
  await hidden.outcome();
  await waitFor(() => listed(observer).includes(`h/${instance}`), "the observer to list h");
  deepStrictEqual(pushed(observer).join.filter(([name]) => name === "h"), [["h", instance]]);

  // The listed registration goes: its leave is pushed; the replaced one's close pushed none.
  await full[Symbol.asyncDispose]();
  await waitFor(() => !listed(observer).includes(`h/${instance}`), "the observer to drop h");
  await using _m = await settle(address, network, observer, "m");
  deepStrictEqual(pushed(observer).leave, [["h", instance]]);
  strictEqual(relay.stats.nodes, 2);
});

/**
 * TCP as a relay that predates client-only members sees it: the `"c":1` of
 * each connection's REGISTER (its first read) is blanked to JSON whitespace,
 * so the relay lists a client-only node like any member.
 */
const olderRelayTransport: Transport = {
  dial: (address, signal) => tcpTransport.dial(address, signal),
  async listen(address) {
    const listener = await tcpTransport.listen(address);
    return {
      address: listener.address,
      accept: async () => ignoreClientOnly(await listener.accept()),
      close: () => listener.close(),
    };
  },
};

function ignoreClientOnly(stream: Stream): Stream {
  const flag = new TextEncoder().encode(',"c":1');
  let first = true;
  return {
    remoteAddress: stream.remoteAddress,
    write: (bytes) => stream.write(bytes),
    close: () => stream.close(),
    async read(into) {
      const n = await stream.read(into);
      if (n === null || !first) return n;
      first = false;
      for (let at = 0; at + flag.length <= n; at++) {
        if (flag.every((byte, k) => into[at + k] === byte)) into.fill(0x20, at, at + flag.length);
      }
      return n;
    },
  };
}

Deno.test("NodeInbox with serving false answers each request with a not-serving error and never reaches the responder", () => {
  const served: unknown[] = [];
  const sent: Array<[string, string | undefined, Message]> = [];
  const parts = {
    responder: { serve: (...a: unknown[]) => served.push(a), cancel: () => {} },
    stats: { served: (...a: unknown[]) => served.push(a) },
    pending: { settle: () => false },
    relays: { learn: () => {} },
  } as unknown as InboxParts<unknown>;
  const link = {
    relay: "127.0.0.1:7000",
    send: (target: string, instance: string | undefined, record: Uint8Array) =>
      sent.push([target, instance, decodeRecord(record)]),
  } as unknown as Link;
  const envelope: Envelope = { s: "caller", i: "0123456789abcdef", w: "net", t: "cli" };
  const request = (id: number, p: string): Message => ({ k: "q", id, p, a: [], kw: {} });
  new NodeInbox({ ...parts, serving: false }).deliver(link, envelope, [
    request(1, "math.add"),
    request(2, "__echo__"),
    { k: "ping", id: 3 },
  ]);
  deepStrictEqual(served, [], "neither the responder nor the stats saw a request");
  deepStrictEqual(sent.map(([target, instance, m]) => [target, instance, m.k, m.id]), [
    ["caller", "0123456789abcdef", "e", 1],
    ["caller", "0123456789abcdef", "e", 2],
    ["caller", "0123456789abcdef", "pong", 3],
  ]);
  const answer = sent[0]![2] as Extract<Message, { k: "e" }>;
  const error = answerError("cli", "math.add", answer);
  ok(error instanceof UnknownCommandError, String(error));
  strictEqual(
    error.message,
    "Call 'math.add' on peer 'cli' failed: the peer is a client-only member, which serves nothing",
  );
  // Serving is the default: the responder gets the request.
  new NodeInbox(parts).deliver(link, envelope, [request(4, "math.add")]);
  strictEqual(served.length, 2);
});

Deno.test("A client-only node answers every request with an UnknownCommandError saying it serves nothing, and runs no handler", async () => {
  const net = testNetwork("clientonly-serve");
  // An older relay lists the client-only node, so the caller can address it.
  await using started = await startRelay({ transport: olderRelayTransport });
  const { address } = started;
  await using caller = new Node(remoteOptions(net, "caller", address));
  await using client = new Node(remoteOptions(net, "cli", address, { clientOnly: true }));
  let runs = 0;
  client.registerCommand("math.add", () => ++runs);
  await caller.start();
  await client.start();
  await meetVia([caller, client], address);
  ok(reachesVia(caller, "cli", address), "the older relay listed the client-only node");

  for (const path of ["math.add", "__echo__", "nope"]) {
    const error = await caller.command(path, { target: "cli", args: [1], timeout: 5000 }).then(
      () => null,
      (e: unknown) => e,
    );
    ok(error instanceof UnknownCommandError, String(error));
    strictEqual(error.peer, "cli");
    strictEqual(error.path, path);
    strictEqual(
      error.message,
      `Call '${path}' on peer 'cli' failed: the peer is a client-only member, which serves nothing`,
    );
  }
  strictEqual(runs, 0, "no handler ran");
  strictEqual(client.stats.served, 0);
  // It still calls: the caller serves its built-in echo.
  const echo = await client.command("__echo__", { target: "caller", args: ["hi"] });
  deepStrictEqual((echo as { args: unknown[] }).args, ["hi"]);
});
