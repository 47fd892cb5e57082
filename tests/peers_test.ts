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

Deno.test("PeerTable keeps a known instance at its address until a probe of the new one is answered", async (t) => {
  const probes: string[] = [];
  let answer = false;
  const peers = new PeerTable({
    onJoin: () => {},
    onLeave: () => {},
    onConflict: () => {},
    probe: (_name, r) => {
      probes.push(`${r.instance}@${r.hostname}:${r.port}`);
      return Promise.resolve(answer);
    },
  });
  peers.seen("bob", route("i1", 0));
  // A 20 ms advert interval: the next probe may start 20 ms after the last one ended.
  const elsewhere = { ...route("i1", 100), hostname: "10.0.0.66", interval: 20 };
  await t.step(
    "a copy of its advert from elsewhere does not move it, but is a sign of life",
    async () => {
      peers.seen("bob", elsewhere);
      await new Promise((r) => setTimeout(r, 0));
      assert.deepEqual(probes, ["i1@10.0.0.66:1000"]);
      assert.equal(peers.get("bob")?.address, "127.0.0.1:1000");
      assert.equal(peers.route("bob")?.route.lastSeen, 100);
    },
  );
  await t.step("no second probe within its advert interval", async () => {
    peers.seen("bob", { ...elsewhere, lastSeen: 200 });
    await new Promise((r) => setTimeout(r, 0));
    assert.equal(probes.length, 1);
  });
  await t.step("it moves once the instance answers there", async () => {
    answer = true;
    await new Promise((r) => setTimeout(r, 40));
    peers.seen("bob", { ...elsewhere, lastSeen: 2000 });
    await new Promise((r) => setTimeout(r, 0));
    assert.equal(probes.length, 2);
    assert.equal(peers.get("bob")?.address, "10.0.0.66:1000");
  });
});
