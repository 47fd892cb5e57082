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
  type Leaving,
  type Member,
} from "../lib/relay_protocol.ts";
import { signRegistration } from "../lib/admission.ts";
import { type InboxParts, NodeInbox } from "../lib/inbox.ts";
import { answerError } from "../lib/calls.ts";
import { decodeRecord, type Envelope, type Message } from "../lib/message.ts";
import type { Link } from "../lib/link.ts";
import { Node, UnknownCommandError } from "../mod.ts";
import { sealFrame, sleep, type TestNetwork, testNetwork, waitFor } from "./_fixtures.ts";
import {
  codeName,
  dataFrame,
  type RawIdentity,
  rawIdentity,
  reachesVia,
  registerFrame,
  RelayRawClient,
  remoteOptions,
  startRelay,
} from "./_relay_fixtures.ts";

/** How relays list `who` on joining: `[pseudonym, instance, card]`. */
function entry(who: RawIdentity): Member {
  return [who.pseudonym, who.credentials.instance.id, who.credentials.card];
}

/** Every member named in the MEMBERS pushes `client` received, joins and leaves. */
function pushed(client: RelayRawClient): { join: Member[]; leave: Leaving[] } {
  const all = { join: [] as Member[], leave: [] as Leaving[] };
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
  const net = testNetwork("clientonly");
  const [aId, cliId, bId] = [
    await rawIdentity(net, "a"),
    await rawIdentity(net, "cli"),
    await rawIdentity(net, "b"),
  ];
  const network = aId.networkId;
  await using a = await RelayRawClient.connect(address);
  await a.register(aId);

  await using c = await RelayRawClient.connect(address);
  const cRegistered = await c.register(cliId, { clientOnly: true });
  deepStrictEqual(cRegistered.members, [entry(aId)], "the client-only member sees a");

  await using b = await RelayRawClient.connect(address);
  const bRegistered = await b.register(bId);
  deepStrictEqual(bRegistered.members, [entry(aId)], "b is not told of cli");

  // The join of b reaches a and cli; nothing ever names cli.
  await a.frame((f) => f.type === FrameType.MEMBERS, "a's MEMBERS push for b");
  await c.frame((f) => f.type === FrameType.MEMBERS, "cli's MEMBERS push for b");
  deepStrictEqual(pushed(c).join, [entry(bId)]);

  // Frames addressed to cli reach it; a fan-out to * does not.
  await a.write(dataFrame(network, cliId.pseudonym, aId.pseudonym, new Uint8Array([1, 2, 3]), 7));
  await a.write(dataFrame(network, "*", aId.pseudonym, new Uint8Array([9]), 8));
  const direct = await c.frame((f) => f.type === FrameType.DATA, "the frame a sent to cli");
  strictEqual(direct.sender, aId.pseudonym);
  deepStrictEqual([...direct.body], [1, 2, 3]);
  await b.frame((f) => f.type === FrameType.DATA, "the * frame at b");
  // cli's answers reach a.
  await c.write(dataFrame(network, aId.pseudonym, cliId.pseudonym, new Uint8Array([4]), 9));
  const answer = await a.frame((f) => f.type === FrameType.DATA, "cli's frame at a");
  strictEqual(answer.sender, cliId.pseudonym);

  // The name stays unique: another instance cannot take it.
  await using thief = await RelayRawClient.connect(address);
  await thief.sendRegister(await rawIdentity(net, "cli"), { clientOnly: true });
  const refused = await thief.outcome();
  strictEqual(codeName(refused.goaway?.code), codeName(CloseCode.NAME_TAKEN));

  // cli leaves: no leave is pushed for it.
  await c[Symbol.asyncDispose]();
  await sleep(100);
  strictEqual(relay.stats.nodes, 2);
  ok(!c.frames.some((f) => f.type === FrameType.DATA && f.id === 8), "no * frame reached cli");
  for (const member of [a, b]) {
    const { join, leave } = pushed(member);
    ok(
      ![...join, ...leave].some(([pseudonym]) => pseudonym === cliId.pseudonym),
      JSON.stringify({ join, leave }),
    );
  }
});

Deno.test("A REGISTER whose client-only flag is not 0 or 1 is refused: admission proof rejected", async () => {
  const { relay, address } = await startRelay();
  await using _relay = relay;
  const cli = await rawIdentity(testNetwork("clientonly"), "cli");
  await using c = await RelayRawClient.connect(address);
  const body = await signRegistration({
    ...cli.credentials,
    name: cli.name,
    nonce: await c.nonce(),
    address,
    tick: 1000,
    clientOnly: true,
  });
  await c.write(
    encodeControl(FrameType.REGISTER, cli.networkId, cli.pseudonym, { ...body, c: "yes" }),
  );
  const { goaway, closed } = await c.outcome();
  ok(closed);
  strictEqual(codeName(goaway?.code), codeName(CloseCode.AUTH));
  strictEqual(goaway?.reason, "admission proof rejected");
  strictEqual(relay.stats.nodes, 0);
});

/**
 * The members `client` lists now, as `pseudonym/instance`: the REGISTERED
 * members, then each MEMBERS push applied as a node applies it (its leaves,
 * then its joins).
 */
function listed(client: RelayRawClient): string[] {
  const members = new Map<string, string>();
  for (const frame of client.frames) {
    if (frame.type === FrameType.REGISTERED) {
      for (const [pseudonym, instance] of decodeRegistered(frame).members) {
        members.set(pseudonym, instance);
      }
    } else if (frame.type === FrameType.MEMBERS) {
      const { join, leave } = decodeMembers(frame);
      for (const [pseudonym, instance] of leave) {
        if (members.get(pseudonym) === instance) members.delete(pseudonym);
      }
      for (const [pseudonym, instance] of join) members.set(pseudonym, instance);
    }
  }
  return [...members].map(([pseudonym, instance]) => `${pseudonym}/${instance}`).sort();
}

/** How {@linkcode listed} writes `who`. */
function listing(who: RawIdentity): string {
  return `${who.pseudonym}/${who.credentials.instance.id}`;
}

/**
 * Registers a full member named `marker` and waits until `observer` lists
 * it: every push queued before it has then reached `observer`.
 */
async function settle(
  address: string,
  net: TestNetwork,
  observer: RelayRawClient,
  marker: string,
): Promise<RelayRawClient> {
  const client = await RelayRawClient.connect(address);
  const who = await rawIdentity(net, marker);
  await client.register(who);
  await waitFor(() => listed(observer).includes(listing(who)), `the observer to list ${marker}`);
  return client;
}

Deno.test("A listed member re-registered as client-only by the same instance is pushed as a leave, and no ghost remains", async () => {
  const { relay, address } = await startRelay();
  await using _relay = relay;
  const net = testNetwork("clientonly");
  await using observer = await RelayRawClient.connect(address);
  await observer.register(await rawIdentity(net, "observer"));
  const a = await rawIdentity(net, "a");
  const instance = a.credentials.instance.id;
  await using real = await RelayRawClient.connect(address);
  await real.register(a);
  await waitFor(() => listed(observer).includes(listing(a)), "the observer to list a");

  // The same instance (the holder of a's instance key) registers again, hidden: its listed
  // connection is replaced.
  await using copy = await RelayRawClient.connect(address);
  await copy.register(a, { clientOnly: true });
  const replaced = await real.outcome();
  strictEqual(codeName(replaced.goaway?.code), codeName(CloseCode.NORMAL));
  await using _m1 = await settle(address, net, observer, "m1");
  deepStrictEqual(pushed(observer).leave, [[a.pseudonym, instance]], "a's leave was pushed once");
  ok(!listed(observer).some((m) => m.startsWith(`${a.pseudonym}/`)), listed(observer).join());

  // The hidden registration goes: nothing more is pushed about a.
  await copy[Symbol.asyncDispose]();
  await waitFor(() => relay.stats.nodes === 2, "the hidden registration to leave the relay");
  await using _m2 = await settle(address, net, observer, "m2");
  deepStrictEqual(pushed(observer).leave, [[a.pseudonym, instance]]);
  deepStrictEqual(
    pushed(observer).join.filter(([pseudonym]) => pseudonym === a.pseudonym),
    [entry(a)],
  );
});

Deno.test("A listed registration that turns client-only before its join is pushed leaves no ghost", async () => {
  const { relay, address } = await startRelay();
  await using _relay = relay;
  const net = testNetwork("clientonly");
  await using observer = await RelayRawClient.connect(address);
  await observer.register(await rawIdentity(net, "observer"));
  const a = await rawIdentity(net, "a");
  await using listedOne = await RelayRawClient.connect(address);
  await using hidden = await RelayRawClient.connect(address);
  // Signed beforehand, the hidden one follows as soon as the (in-process) relay has
  // registered a: its leave meets a's join, still queued for the next push.
  const hiddenRegister = await registerFrame(a, await hidden.nonce(), address, {
    clientOnly: true,
  });
  await listedOne.sendRegister(a);
  while (relay.stats.nodes < 2) await sleep(0);
  await hidden.write(hiddenRegister);
  await hidden.frame((f) => f.type === FrameType.REGISTERED, "REGISTERED for the hidden one");
  strictEqual(codeName((await listedOne.outcome()).goaway?.code), codeName(CloseCode.NORMAL));
  await using _m = await settle(address, net, observer, "m");
  ok(!listed(observer).some((m) => m.startsWith(`${a.pseudonym}/`)), listed(observer).join());
});

Deno.test("A client-only member re-registered as a full member is pushed as a join, and its close as a leave", async () => {
  const { relay, address } = await startRelay();
  await using _relay = relay;
  const net = testNetwork("clientonly");
  await using observer = await RelayRawClient.connect(address);
  await observer.register(await rawIdentity(net, "observer"));
  const h = await rawIdentity(net, "h");
  const instance = h.credentials.instance.id;
  await using hidden = await RelayRawClient.connect(address);
  await hidden.register(h, { clientOnly: true });

  // The same instance registers again, listed: members must learn of it.
  await using full = await RelayRawClient.connect(address);
  await full.register(h);
  await hidden.outcome();
  await waitFor(() => listed(observer).includes(listing(h)), "the observer to list h");
  deepStrictEqual(
    pushed(observer).join.filter(([pseudonym]) => pseudonym === h.pseudonym),
    [entry(h)],
  );

  // The listed registration goes: its leave is pushed; the replaced one's close pushed none.
  await full[Symbol.asyncDispose]();
  await waitFor(() => !listed(observer).includes(listing(h)), "the observer to drop h");
  await using _m = await settle(address, net, observer, "m");
  deepStrictEqual(pushed(observer).leave, [[h.pseudonym, instance]]);
  strictEqual(relay.stats.nodes, 2);
});

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
  const { relay, address } = await startRelay();
  await using _relay = relay;
  await using caller = new Node(remoteOptions(net, "caller", address));
  await using client = new Node(remoteOptions(net, "cli", address, { clientOnly: true }));
  let runs = 0;
  client.registerCommand("math.add", () => ++runs);
  await caller.start();
  await client.start();
  await waitFor(() => reachesVia(client, "caller", address), "cli to see the caller");
  ok(!reachesVia(caller, "cli", address), "the relay does not list the client-only node");

  // Nobody learns of cli from the relay: a raw member that knows its name addresses it.
  const asker = await rawIdentity(net, "asker");
  await using raw = await RelayRawClient.connect(address);
  await raw.register(asker);
  const paths = ["math.add", "__echo__", "nope"];
  const from = { name: asker.name, instance: asker.credentials.instance.id };
  for (const [i, path] of paths.entries()) {
    const request: Message = { k: "q", id: i + 1, p: path, a: [1], kw: {} };
    await raw.write(await sealFrame(net, from, "cli", [request], { id: i + 1 }));
  }
  await raw.write(await sealFrame(net, from, "cli", [{ k: "ping", id: 9 }], { id: 9 }));
  const got = await raw.messages(net, paths.length + 1);
  deepStrictEqual(got.map((m) => [m.k, m.id]).sort(), [["e", 1], ["e", 2], ["e", 3], ["pong", 9]]);
  for (const [i, path] of paths.entries()) {
    const answer = got.find((m) => m.id === i + 1) as Extract<Message, { k: "e" }>;
    const error = answerError("cli", path, answer);
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
