import assert from "node:assert/strict";
import { type LocalRoute, PeerTable } from "../lib/peers.ts";

function route(instance: string, lastSeen = 0, port = 1000): LocalRoute {
  return { instance, hostname: "127.0.0.1", port, interval: 1000, lastSeen };
}

function table(alive: boolean) {
  const log: string[] = [];
  const peers = new PeerTable({
    onJoin: (p) => log.push(`join ${p.name} ${p.instance}`),
    onLeave: (p) => log.push(`leave ${p.name} ${p.instance}`),
    onConflict: (c) => log.push(`conflict ${c.name} ${c.instances.join(",")}`),
    probe: () => Promise.resolve(alive),
  });
  return { peers, log };
}

Deno.test("PeerTable reports a new peer once and refreshes it silently", () => {
  const { peers, log } = table(false);
  peers.seen("bob", route("i1"));
  peers.seen("bob", route("i1", 500));
  assert.deepEqual(log, ["join bob i1"]);
  assert.equal(peers.get("bob")?.address, "127.0.0.1:1000");
});

Deno.test("PeerTable replaces an instance that no longer answers (a restart)", async () => {
  const { peers, log } = table(false);
  peers.seen("bob", route("i1"));
  peers.seen("bob", route("i2", 0, 2000));
  await new Promise((r) => setTimeout(r, 0));
  assert.deepEqual(log, ["join bob i1", "leave bob i1", "join bob i2"]);
  assert.equal(peers.route("bob")?.route.port, 2000);
});

Deno.test("PeerTable marks a conflict when both instances answer", async () => {
  const { peers, log } = table(true);
  peers.seen("bob", route("i1"));
  peers.seen("bob", route("i2"));
  await new Promise((r) => setTimeout(r, 0));
  assert.deepEqual(log, ["join bob i1", "conflict bob i1,i2"]);
  assert.equal(peers.get("bob")?.conflict, true);
  peers.drop("bob", "i2");
  assert.equal(peers.get("bob")?.conflict, false);
});

Deno.test("PeerTable expires a peer after three missed adverts", () => {
  const { peers, log } = table(false);
  peers.seen("bob", route("i1", 0));
  peers.expire(3000);
  assert.equal(peers.list().length, 1);
  peers.expire(3600);
  assert.deepEqual(log, ["join bob i1", "leave bob i1"]);
  assert.equal(peers.list().length, 0);
});

Deno.test("PeerTable.list() is sorted by name", () => {
  const { peers } = table(false);
  for (const name of ["carol", "alice", "bob"]) peers.seen(name, route(name));
  assert.deepEqual(peers.list().map((p) => p.name), ["alice", "bob", "carol"]);
});
