/**
 * Frames that fail for a reason the user can fix raise a `warning` event on
 * the node that received them: a token under another key (`key-mismatch`)
 * or outside the clock allowance (`clock-skew`, with the measured skew).
 */

import { ok, strictEqual } from "node:assert/strict";
import { Node } from "../mod.ts";
import { CloseCode } from "../lib/frame.ts";
import { IN_NETNS, NETNS_REASON, testIf } from "./_env.ts";
import {
  newInstance,
  nextEvent,
  nodeOptions,
  RawClient,
  sealFrame,
  testNetwork,
} from "./_fixtures.ts";

const request = { k: "q" as const, id: 1, p: "__ping__", a: [], kw: {} };

testIf(IN_NETNS, NETNS_REASON, {
  name: "a frame sealed under another key for this network's ids warns key-mismatch",
  async fn() {
    const net = testNetwork("warn");
    await using srv = new Node(nodeOptions(net, "srv"));
    await srv.start();
    const warned = nextEvent(srv, "warning", (w) => w.code === "key-mismatch");
    await using client = await RawClient.connect(srv.address!);
    const other = { ...testNetwork("warn-other"), network: net.network };
    const who = { name: "mallory", instance: newInstance() };
    await client.write(await sealFrame(other, who, "srv", [request], { headerOf: net }));
    const warning = await warned;
    ok(warning.message.includes("another key"), warning.message);
    strictEqual((await client.outcome()).goaway?.code, CloseCode.AUTH);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "a token an hour ahead warns clock-skew with the measured skew",
  async fn() {
    const net = testNetwork("warn");
    await using srv = new Node(nodeOptions(net, "srv"));
    await srv.start();
    const warned = nextEvent(srv, "warning", (w) => w.code === "clock-skew");
    await using client = await RawClient.connect(srv.address!);
    const who = { name: "ahead", instance: newInstance() };
    await client.write(
      await sealFrame(net, who, "srv", [request], { now: Date.now() + 3_600_000 }),
    );
    const warning = await warned;
    ok(Math.abs(warning.skew! - 3_600_000) < 5_000, `skew ${warning.skew}`);
    strictEqual((await client.outcome()).goaway?.code, CloseCode.AUTH);
  },
});
