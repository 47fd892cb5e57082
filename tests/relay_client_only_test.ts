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
import { newInstance, sleep, testNetwork } from "./_fixtures.ts";
import { codeName, dataFrame, RelayRawClient, startRelay } from "./_relay_fixtures.ts";

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
