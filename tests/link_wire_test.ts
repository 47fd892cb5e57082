/**
 * What a direct link puts on the wire: frame headers carry the network id
 * and pseudonyms, never a node or network name (docs/PROTOCOL.md,
 * "Frames"); a link that receives under the previous key of a rotation
 * answers under it.
 */

import { ok, strictEqual } from "node:assert/strict";
import { Fernet, generateKey } from "../lib/fernet.ts";
import { Link, type WireKey } from "../lib/link.ts";
import { networkId, Pseudonyms } from "../lib/network_identity.ts";
import { FramedConnection } from "../lib/connection.ts";
import { encodeRecord } from "../lib/message.ts";
import type { Frame } from "../lib/frame.ts";
import { deadline, loopbackStreams, waitFor } from "./_fixtures.ts";

async function wireKey(key: string, network: string): Promise<WireKey> {
  return {
    fernet: new Fernet(key),
    id: await networkId(key, network),
    pseudonyms: Pseudonyms.fromKey(key, network),
  };
}

/** A link of `self` over a real loopback connection, and the raw frames its peer reads. */
async function tappedLink(keys: WireKey[], name: string, network: string) {
  const [stream, other] = await loopbackStreams();
  const frames: Frame[] = [];
  const peer = new FramedConnection(other);
  peer.start((frame) => void frames.push(frame));
  let id = 0;
  const link = new Link(new FramedConnection(stream), {
    keys,
    self: { name, instance: "0123456789abcdef", network },
    maxFrameSize: 1 << 20,
    replayWindow: 60_000,
    nextId: () => ++id,
    onBatch: () => {},
  });
  return {
    link,
    frames,
    async [Symbol.asyncDispose]() {
      await link.close();
      await peer.close();
    },
  };
}

Deno.test("a direct link's frames carry the network id and pseudonyms, never a node or network name", async () => {
  const suffix = crypto.randomUUID().slice(0, 8);
  const [network, sender, target] = [`net-${suffix}`, `alice-${suffix}`, `bob-${suffix}`];
  const key = await wireKey(generateKey(), network);
  await using tap = await tappedLink([key], sender, network);
  tap.link.send(target, undefined, encodeRecord({ k: "q", id: 1, p: "x", a: [], kw: {} }));
  await deadline(waitFor(() => tap.frames.length > 0, "the frame"), "the frame");
  const frame = tap.frames[0]!;
  strictEqual(frame.network, key.id);
  strictEqual(frame.sender, key.pseudonyms.of(sender));
  strictEqual(frame.target, key.pseudonyms.of(target));
  const bytes = new TextDecoder("latin1").decode(frame.raw!);
  for (const name of [network, sender, target]) ok(!bytes.includes(name), `${name} is on the wire`);
});

Deno.test("an inbound link of a node holding two keys answers a peer under the key the peer used", async () => {
  const network = "rot";
  const [current, previous] = [
    await wireKey(generateKey(), network),
    await wireKey(generateKey(), network),
  ];
  const [stream, other] = await loopbackStreams();
  let id = 0;
  const common = { maxFrameSize: 1 << 20, replayWindow: 60_000, nextId: () => ++id };
  const answers: string[] = [];
  // The old node knows only the previous key.
  const old = new Link(new FramedConnection(stream), {
    ...common,
    keys: [previous],
    self: { name: "old", instance: "0123456789abcdef", network },
    onBatch: (_link, envelope) => answers.push(envelope.s),
  });
  // The rotated node accepts both; its inbound link learns the key from the first batch.
  const rotated: Link = new Link(new FramedConnection(other), {
    ...common,
    keys: [current, previous],
    self: { name: "new", instance: "fedcba9876543210", network },
    onBatch: (_link, envelope) =>
      rotated.send(envelope.s, envelope.i, encodeRecord({ k: "r", id: 1, v: "hi" })),
  });
  try {
    old.send("new", undefined, encodeRecord({ k: "q", id: 1, p: "x", a: [], kw: {} }));
    await deadline(waitFor(() => answers.length > 0, "the answer"), "the answer");
    strictEqual(answers[0], "new");
  } finally {
    await old.close();
    await rotated.close();
  }
});
