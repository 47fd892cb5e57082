import { deepStrictEqual, ok, rejects, strictEqual, throws } from "node:assert/strict";
import {
  type Advert,
  announcedAddress,
  checkAdvert,
  decodeAdvert,
  DEFAULT_ADVERT_TTL,
  encodeAdvert,
  isLoopbackHost,
  MAX_ADVERT_SIZE,
  verifyAdvert,
} from "../lib/advert.ts";
import { InstanceKey } from "../lib/instance_key.ts";
import {
  DEFAULT_MULTICAST_GROUP,
  type DiscoveredPeer,
  Discovery,
  type DiscoveryOptions,
} from "../lib/discovery.ts";
import { NodeClosedError, PortInUseError } from "../lib/errors.ts";
import { textEncoder } from "../lib/encoding.ts";
import { Fernet, generateKey } from "../fernet/mod.ts";
import { IN_NETNS, NETNS_REASON, testIf, uniqueNetwork } from "./_env.ts";
import { sealedDatagram, signedPlaintext } from "./_advert_fixtures.ts";

/** Hard limit for anything a socket test waits for; only catches hangs. */
const HANG_TIMEOUT = 10_000;

/** The instance key the sample adverts are signed with. */
const signer = await InstanceKey.generate();

function sampleAdvert(overrides: Partial<Advert> = {}): Advert {
  return {
    kind: "announce",
    network: "office",
    name: "alice",
    instance: signer.id,
    seq: 1,
    port: 7000,
    interval: 1000,
    ...overrides,
  };
}

/** Opens `datagram` and returns its advert, or null when it was dropped. */
async function openAdvert(
  datagram: Uint8Array,
  fernet: Fernet,
  network: string,
  options: { now?: number } = {},
): Promise<Advert | null> {
  const decoded = await decodeAdvert(datagram, fernet, network, options);
  return decoded.ok ? decoded.advert : null;
}

/** A Fernet that counts decryptions, to prove that some datagrams are dropped before. */
class CountingFernet extends Fernet {
  decryptions = 0;
  override decryptBytes(
    token: Uint8Array,
    options?: { ttl?: number; now?: number },
  ): Promise<Uint8Array> {
    this.decryptions++;
    return super.decryptBytes(token, options);
  }
}

// ---- Pure codec tests: no network, no permissions ----

Deno.test("encodeAdvert() and decodeAdvert() round-trip every kind, with and without host", async (t) => {
  const fernet = new Fernet(generateKey());
  const cases: Advert[] = [
    sampleAdvert(),
    sampleAdvert({ kind: "query", port: 0, seq: 2 }),
    sampleAdvert({ kind: "bye", host: "192.168.1.20", interval: 250, seq: 2 ** 40 }),
    sampleAdvert({ network: "büro ☕", name: "ålice", maxFrameSize: 65536 }),
  ];
  for (const advert of cases) {
    await t.step(`${advert.kind} ${advert.network}`, async () => {
      const datagram = await encodeAdvert(advert, fernet, signer);
      ok(datagram.length <= MAX_ADVERT_SIZE);
      strictEqual(new TextDecoder().decode(datagram.subarray(0, 4)), "PBAD");
      strictEqual(datagram[4], 2, "version byte");
      const decoded = await decodeAdvert(datagram, fernet, advert.network);
      ok(decoded.ok, JSON.stringify(decoded));
      deepStrictEqual(decoded.advert, advert);
      deepStrictEqual(decoded.proof.publicKey, signer.publicKey);
      ok(await verifyAdvert(decoded.advert, decoded.proof), "the signature verifies");
    });
  }
});

Deno.test("signAdvert() refuses a key that is not the advert's instance key", async () => {
  const other = await InstanceKey.generate();
  await rejects(encodeAdvert(sampleAdvert(), new Fernet(generateKey()), other), TypeError);
});

Deno.test("verifyAdvert() rejects an advert signed by another instance than it names", async (t) => {
  const fernet = new Fernet(generateKey());
  const mallory = await InstanceKey.generate();
  // A member's advert that names alice's instance, signed and keyed by mallory.
  const json = textEncoder.encode(JSON.stringify({
    k: 1,
    w: "office",
    n: "alice",
    i: signer.id,
    q: 99,
    p: 6666,
    iv: 1000,
  }));
  await t.step("with its own public key: the hash is not the instance", async () => {
    const decoded = await decodeAdvert(
      await sealedDatagram(fernet, "office", 1, await signedPlaintext(json, mallory)),
      fernet,
      "office",
    );
    ok(decoded.ok);
    strictEqual(await verifyAdvert(decoded.advert, decoded.proof), false);
  });
  await t.step("with alice's public key: the signature does not verify", async () => {
    const plain = await signedPlaintext(json, mallory);
    plain.set(signer.publicKey, 2 + json.length);
    const decoded = await decodeAdvert(
      await sealedDatagram(fernet, "office", 1, plain),
      fernet,
      "office",
    );
    ok(decoded.ok);
    strictEqual(await verifyAdvert(decoded.advert, decoded.proof), false);
  });
});

Deno.test("decodeAdvert() drops another network's advert without decrypting it", async () => {
  const fernet = new CountingFernet(generateKey());
  const datagram = await encodeAdvert(sampleAdvert({ network: "office" }), fernet, signer);
  for (const other of ["home", "offic", "office2", "Office", ""]) {
    deepStrictEqual(await decodeAdvert(datagram, fernet, other), { ok: false, drop: "network" });
  }
  strictEqual(fernet.decryptions, 0);
});

Deno.test("decodeAdvert() reports an advert of this network sealed with another key as 'mac'", async () => {
  const datagram = await encodeAdvert(sampleAdvert(), new Fernet(generateKey()), signer);
  deepStrictEqual(await decodeAdvert(datagram, new Fernet(generateKey()), "office"), {
    ok: false,
    drop: "mac",
  });
});

Deno.test("decodeAdvert() reports a version 1 advert of this network without decrypting it", async () => {
  const fernet = new CountingFernet(generateKey());
  const old = await sealedDatagram(fernet, "office", 1, textEncoder.encode("{}"), 1);
  deepStrictEqual(await decodeAdvert(old, fernet, "office"), {
    ok: false,
    drop: "version",
    version: 1,
  });
  strictEqual(fernet.decryptions, 0);
});

Deno.test("decodeAdvert() drops an advert whose clear header was altered", async (t) => {
  const fernet = new Fernet(generateKey());
  const datagram = await encodeAdvert(sampleAdvert(), fernet, signer);
  const cases: [string, number, number][] = [
    ["kind announce→bye", 5, 3],
    ["kind announce→query", 5, 2],
    ["unknown kind", 5, 9],
    ["version", 4, 1],
    ["magic", 0, 0x51],
    ["network length", 6, 5],
    ["network byte", 7, "O".charCodeAt(0)],
  ];
  for (const [what, offset, value] of cases) {
    await t.step(what, async () => {
      const tampered = datagram.slice();
      tampered[offset] = value;
      strictEqual(await openAdvert(tampered, fernet, "office"), null);
      strictEqual(await openAdvert(tampered, fernet, "Office"), null);
    });
  }
  await t.step("token bit flip", async () => {
    const tampered = datagram.slice();
    tampered[tampered.length - 40]! ^= 1;
    strictEqual(await openAdvert(tampered, fernet, "office"), null);
  });
});

Deno.test("decodeAdvert() drops an advert truncated at every length", async () => {
  const fernet = new Fernet(generateKey());
  const datagram = await encodeAdvert(sampleAdvert({ host: "10.0.0.1" }), fernet, signer);
  for (let length = 0; length < datagram.length; length++) {
    strictEqual(
      await openAdvert(datagram.subarray(0, length), fernet, "office"),
      null,
      `${length}`,
    );
  }
});

Deno.test("decodeAdvert() drops an oversize datagram before decrypting", async () => {
  const fernet = new CountingFernet(generateKey());
  const datagram = await encodeAdvert(sampleAdvert(), fernet, signer);
  const oversize = new Uint8Array(MAX_ADVERT_SIZE + 1);
  oversize.set(datagram);
  strictEqual(await openAdvert(oversize, fernet, "office"), null);
  strictEqual(await openAdvert(new Uint8Array(65_507), fernet, "office"), null);
  strictEqual(fernet.decryptions, 0);
});

Deno.test("decodeAdvert() drops an advert outside the clock allowance and measures the skew", async () => {
  const fernet = new Fernet(generateKey());
  const now = Date.UTC(2030, 0, 1);
  const datagram = await encodeAdvert(sampleAdvert(), fernet, signer, { now });
  ok(await openAdvert(datagram, fernet, "office", { now: now + DEFAULT_ADVERT_TTL - 2000 }));
  ok(await openAdvert(datagram, fernet, "office", { now: now - 59_000 }), "59 s ahead is allowed");
  deepStrictEqual(
    await decodeAdvert(datagram, fernet, "office", { now: now + DEFAULT_ADVERT_TTL + 2000 }),
    { ok: false, drop: "age", skew: -(DEFAULT_ADVERT_TTL + 2000) },
  );
  deepStrictEqual(
    await decodeAdvert(datagram, fernet, "office", { now: now - 3_600_000 }),
    { ok: false, drop: "age", skew: 3_600_000 },
  );
});

Deno.test("decodeAdvert() drops a sealed payload that is not a valid advert", async (t) => {
  const fernet = new Fernet(generateKey());
  const valid = { k: 1, w: "office", n: "alice", i: signer.id, q: 1, p: 7000, iv: 1000 };
  const json = (value: unknown) =>
    signedPlaintext(textEncoder.encode(JSON.stringify(value)), signer);
  const cases: [string, number, Uint8Array | Promise<Uint8Array>][] = [
    ["not JSON", 1, signedPlaintext(textEncoder.encode("{not json"), signer)],
    ["not UTF-8", 1, signedPlaintext(new Uint8Array([0x22, 0xff, 0x22]), signer)],
    ["empty plaintext", 1, new Uint8Array(0)],
    ["no signature", 1, textEncoder.encode(JSON.stringify(valid))],
    ["JSON array", 1, json([1, 2])],
    ["JSON null", 1, json(null)],
    ["sealed kind differs", 3, json(valid)],
    ["sealed network differs", 1, json({ ...valid, w: "home" })],
    ["no sealed network", 1, json({ ...valid, w: undefined })],
    ["empty name", 1, json({ ...valid, n: "" })],
    ["uppercase instance", 1, json({ ...valid, i: signer.id.toUpperCase() })],
    ["short instance", 1, json({ ...valid, i: "0123" })],
    ["no sequence number", 1, json({ ...valid, q: undefined })],
    ["zero sequence number", 1, json({ ...valid, q: 0 })],
    ["port out of range", 1, json({ ...valid, p: 70000 })],
    ["port as string", 1, json({ ...valid, p: "7000" })],
    ["zero interval", 1, json({ ...valid, iv: 0 })],
    ["fractional interval", 1, json({ ...valid, iv: 1.5 })],
    ["empty host", 1, json({ ...valid, h: "" })],
  ];
  for (const [what, kind, payload] of cases) {
    await t.step(what, async () => {
      const datagram = await sealedDatagram(fernet, "office", kind, await payload);
      deepStrictEqual(await decodeAdvert(datagram, fernet, "office"), {
        ok: false,
        drop: "payload",
      });
    });
  }
  await t.step("the same payload, valid, is accepted", async () => {
    const datagram = await sealedDatagram(fernet, "office", 1, await json(valid));
    ok(await openAdvert(datagram, fernet, "office"));
  });
});

Deno.test("encodeAdvert() rejects invalid fields and oversize adverts before encrypting", async (t) => {
  const fernet = new CountingFernet(generateKey());
  const cases: [string, Partial<Advert>, typeof TypeError | typeof RangeError][] = [
    ["unknown kind", { kind: "hello" as Advert["kind"] }, TypeError],
    ["empty network", { network: "" }, TypeError],
    ["empty name", { name: "" }, TypeError],
    ["bad instance", { instance: "xyz" }, TypeError],
    ["zero sequence number", { seq: 0 }, RangeError],
    ["negative port", { port: -1 }, RangeError],
    ["fractional port", { port: 1.5 }, RangeError],
    ["zero interval", { interval: 0 }, RangeError],
    ["empty host", { host: "" }, TypeError],
    ["network over 255 bytes", { network: "n".repeat(256) }, RangeError],
    ["name too long for one datagram", { name: "a".repeat(1100) }, RangeError],
  ];
  for (const [what, overrides, errorClass] of cases) {
    await t.step(what, async () => {
      throws(() => checkAdvert(sampleAdvert(overrides)), errorClass);
      await rejects(encodeAdvert(sampleAdvert(overrides), fernet, signer), errorClass);
    });
  }
  strictEqual(fernet.decryptions, 0);
});

Deno.test("isLoopbackHost() accepts 127.0.0.0/8, ::1 and localhost only", async (t) => {
  const cases: [string, boolean][] = [
    ["127.0.0.1", true],
    ["127.1.2.3", true],
    ["::1", true],
    ["[::1]", true],
    ["::ffff:127.0.0.1", true],
    ["localhost", true],
    ["LocalHost", true],
    ["app.localhost", true],
    ["0.0.0.0", false],
    ["10.0.0.1", false],
    ["128.0.0.1", false],
    ["127.example.com", false],
    ["localhost.example.com", false],
    ["::", false],
    ["fe80::1", false],
  ];
  for (const [host, loopback] of cases) {
    await t.step(host, () => strictEqual(isLoopbackHost(host), loopback));
  }
});

Deno.test("announcedAddress() uses the sealed host, else the datagram's source", () => {
  strictEqual(announcedAddress(undefined, "192.168.1.20"), "192.168.1.20");
  strictEqual(announcedAddress("10.0.0.7", "192.168.1.20"), "10.0.0.7");
  strictEqual(announcedAddress("node.example", "192.168.1.20"), "node.example");
});

Deno.test("announcedAddress() drops a loopback host advertised from another machine", () => {
  strictEqual(announcedAddress("127.0.0.1", "192.168.1.20"), null);
  strictEqual(announcedAddress("localhost", "192.168.1.20"), null);
  strictEqual(announcedAddress("::1", "10.0.0.7"), null);
  strictEqual(announcedAddress("127.0.0.1", "127.0.0.1"), "127.0.0.1");
  strictEqual(announcedAddress("localhost", "127.0.0.5"), "localhost");
});

Deno.test("new Discovery() rejects invalid options", async () => {
  const base = await discoveryOptions("office");
  throws(() => new Discovery({ ...base, port: 0 }), RangeError);
  throws(() => new Discovery({ ...base, group: "10.0.0.1" }), RangeError);
  const notAnInstanceKey = { ...signer, id: "nope", sign: signer.sign.bind(signer) };
  throws(() => new Discovery({ ...base, instanceKey: notAnInstanceKey }), TypeError);
  throws(() => new Discovery({ ...base, interval: -5 }), RangeError);
  throws(() => new Discovery({ ...base, name: "x".repeat(2000) }), RangeError);
});

Deno.test("Discovery.start() names --unstable-net when UDP is unavailable", async () => {
  const script = `
    import { Discovery } from ${JSON.stringify(import.meta.resolve("../lib/discovery.ts"))};
    import { Fernet, generateKey } from ${JSON.stringify(import.meta.resolve("../lib/fernet.ts"))};
    import { InstanceKey } from ${JSON.stringify(import.meta.resolve("../lib/instance_key.ts"))};
    const d = new Discovery({ name: "a", network: "n", instanceKey: await InstanceKey.generate(),
      fernet: new Fernet(generateKey()), rpcPort: 0, onAnnounce() {}, onBye() {} });
    try { await d.start(); console.log("started"); } catch (e) { console.log(e.name + ": " + e.message); }
    await d.close();
  `;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--no-config", script],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const text = new TextDecoder().decode(output.stdout);
  ok(output.success);
  ok(text.startsWith("UnsupportedRuntimeError: "), text);
  ok(text.includes("--unstable-net"), text);
});

Deno.test("Discovery.close() without start() is safe and makes start() reject", async () => {
  const discovery = new Discovery(await discoveryOptions("office"));
  await discovery.close();
  await discovery.close();
  await rejects(discovery.start(), NodeClosedError);
});

// ---- Socket tests: only inside the private network namespace ----

/** A UDP port no other test file uses; discoveries of one test share it. */
let testPort: number | undefined;
function advertiserPort(): number {
  if (testPort === undefined) {
    const probe = Deno.listenDatagram({ transport: "udp", hostname: "0.0.0.0", port: 0 });
    testPort = (probe.addr as Deno.NetAddr).port;
    probe.close();
  }
  return testPort;
}

/** What one discovery saw, with a way to wait for something to be seen. */
class Seen {
  readonly announces: DiscoveredPeer[] = [];
  readonly byes: [string, string][] = [];
  ticks = 0;
  #wake: (() => void)[] = [];

  notify(): void {
    for (const wake of this.#wake.splice(0)) wake();
  }

  /** Resolves once `predicate` holds; rejects after HANG_TIMEOUT (a hang, not a duration check). */
  async until(what: string, predicate: () => boolean): Promise<void> {
    const deadline = Date.now() + HANG_TIMEOUT;
    while (!predicate()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`Timed out waiting for ${what}`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#wake.push(resolve);
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
    }
  }

  sawInstance(instance: string): boolean {
    return this.announces.some((peer) => peer.instance === instance);
  }
}

async function discoveryOptions(
  network: string,
  seen = new Seen(),
  overrides: Partial<DiscoveryOptions> = {},
): Promise<DiscoveryOptions> {
  return {
    name: "node",
    network,
    instanceKey: await InstanceKey.generate(),
    fernet: new Fernet(generateKey()),
    rpcPort: 7000,
    interval: 60_000,
    onAnnounce(peer) {
      seen.announces.push(peer);
      seen.notify();
    },
    onBye(name, instance) {
      seen.byes.push([name, instance]);
      seen.notify();
    },
    onTick() {
      seen.ticks++;
      seen.notify();
    },
    ...overrides,
  };
}

/** Starts a discovery; `await using` closes it. */
async function startNode(
  network: string,
  fernet: Fernet,
  overrides: Partial<DiscoveryOptions> = {},
): Promise<{ discovery: Discovery; seen: Seen; instance: string } & AsyncDisposable> {
  const seen = new Seen();
  const options = await discoveryOptions(network, seen, {
    fernet,
    port: advertiserPort(),
    ...overrides,
  });
  const discovery = new Discovery(options);
  await discovery.start();
  return {
    discovery,
    seen,
    instance: options.instanceKey.id,
    [Symbol.asyncDispose]: () => discovery.close(),
  };
}

/** Sends raw datagrams to the test group and port (loopback inside the namespace only). */
async function sendRaw(datagrams: Uint8Array[], hostname = DEFAULT_MULTICAST_GROUP) {
  const conn = Deno.listenDatagram({
    transport: "udp",
    hostname: "0.0.0.0",
    port: 0,
    loopback: true,
  });
  try {
    for (const datagram of datagrams) {
      await conn.send(datagram, { transport: "udp", hostname, port: advertiserPort() });
    }
  } finally {
    conn.close();
  }
}

testIf(IN_NETNS, NETNS_REASON, {
  name: "Discovery finds another instance at once through query and announce",
  async fn() {
    const network = uniqueNetwork();
    const fernet = new Fernet(generateKey());
    await using a = await startNode(network, fernet, { name: "alice", rpcPort: 7001 });
    await using b = await startNode(network, fernet, { name: "bob", rpcPort: 7002 });
    // Intervals are 60 s: only b's start announce and a's answer to b's query can do this.
    await a.seen.until("alice to see bob", () => a.seen.sawInstance(b.instance));
    await b.seen.until("bob to see alice", () => b.seen.sawInstance(a.instance));
    deepStrictEqual(a.seen.announces.find((p) => p.instance === b.instance), {
      name: "bob",
      instance: b.instance,
      hostname: "127.0.0.1",
      port: 7002,
      interval: 60_000,
    });
    strictEqual(b.seen.announces.find((p) => p.instance === a.instance)?.port, 7001);
    ok(!a.seen.sawInstance(a.instance), "alice saw her own announce");
    ok(!b.seen.sawInstance(b.instance), "bob saw his own announce");
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "Discovery answers a second query inside the reply window with a deferred announce",
  async fn() {
    const network = uniqueNetwork();
    const fernet = new Fernet(generateKey());
    await using a = await startNode(network, fernet, { name: "alice" });
    // Both start within a few ms: alice's answer to bob's query may come before carol
    // listens, and carol's query falls inside alice's 100 ms reply window.
    await using b = await startNode(network, fernet, { name: "bob" });
    await using c = await startNode(network, fernet, { name: "carol" });
    await b.seen.until("bob to see alice", () => b.seen.sawInstance(a.instance));
    await c.seen.until("carol to see alice", () => c.seen.sawInstance(a.instance));
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "Discovery reports another instance with the same name and an explicit host",
  async fn() {
    const network = uniqueNetwork();
    const fernet = new Fernet(generateKey());
    await using a = await startNode(network, fernet, { name: "twin" });
    // A name, not an address: it picks no interface, and peers dial it, not the source.
    await using b = await startNode(network, fernet, { name: "twin", host: "twin.example" });
    await a.seen.until("the other twin", () => a.seen.sawInstance(b.instance));
    const peer = a.seen.announces.find((p) => p.instance === b.instance);
    strictEqual(peer?.name, "twin");
    strictEqual(peer?.hostname, "twin.example");
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "Discovery ignores other networks, forged and malformed datagrams",
  async fn() {
    const network = uniqueNetwork();
    const fernet = new Fernet(generateKey());
    await using a = await startNode(network, fernet);
    // Another network on the same port, with its own key, started first.
    await using other = await startNode(uniqueNetwork("other"), new Fernet(generateKey()));
    // The same network name, forged with the wrong key.
    const forger = await InstanceKey.generate();
    const forged = sampleAdvert({ network, instance: forger.id });
    const garbage = [
      await encodeAdvert(forged, new Fernet(generateKey()), forger),
      new Uint8Array(0),
      textEncoder.encode("PBAD"),
      textEncoder.encode("hello, world"),
      crypto.getRandomValues(new Uint8Array(1000)),
      new Uint8Array(MAX_ADVERT_SIZE + 500),
      (await encodeAdvert(sampleAdvert({ network }), fernet, signer)).subarray(0, 60),
    ];
    await sendRaw(garbage);
    await sendRaw(garbage, "127.0.0.1");
    // Datagrams arrive in order: once bob is seen, everything above was handled.
    await using b = await startNode(network, fernet);
    await a.seen.until("bob", () => a.seen.sawInstance(b.instance));
    ok(!a.seen.sawInstance(other.instance), "saw a node of another network");
    ok(!a.seen.sawInstance(forged.instance), "accepted a forged advert");
    ok(!other.seen.sawInstance(a.instance) && !other.seen.sawInstance(b.instance));
    strictEqual(a.seen.byes.length, 0);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "Discovery.close() sends a bye that reaches the other instance",
  async fn() {
    const network = uniqueNetwork();
    const fernet = new Fernet(generateKey());
    await using a = await startNode(network, fernet);
    const b = await startNode(network, fernet, { name: "bob" });
    await a.seen.until("bob", () => a.seen.sawInstance(b.instance));
    await b.discovery.close();
    await a.seen.until("bob's bye", () => a.seen.byes.length > 0);
    deepStrictEqual(a.seen.byes, [["bob", b.instance]]);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "Discovery announces and ticks every interval",
  async fn() {
    const network = uniqueNetwork();
    const fernet = new Fernet(generateKey());
    await using a = await startNode(network, fernet, { interval: 60_000 });
    await using b = await startNode(network, fernet, { interval: 20 });
    await b.seen.until("three ticks", () => b.seen.ticks >= 3);
    const count = () => a.seen.announces.filter((p) => p.instance === b.instance).length;
    await a.seen.until("repeated announces", () => count() >= 4);
    strictEqual(a.seen.announces.find((p) => p.instance === b.instance)?.interval, 20);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "Discovery.start() and close() are safe twice and leave no resources",
  async fn() {
    const network = uniqueNetwork();
    const fernet = new Fernet(generateKey());
    const seen = new Seen();
    const discovery = new Discovery(
      await discoveryOptions(network, seen, { fernet, port: advertiserPort(), interval: 10 }),
    );
    await Promise.all([discovery.start(), discovery.start()]);
    await discovery.start();
    await seen.until("a tick", () => seen.ticks > 0);
    await discovery.announce();
    await Promise.all([discovery.close(), discovery.close()]);
    await discovery.close();
    await discovery.announce();
    await rejects(discovery.start(), NodeClosedError);
    const ticks = seen.ticks;
    await new Promise((resolve) => setTimeout(resolve, 30));
    strictEqual(seen.ticks, ticks, "ticked after close");
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name:
    "Discovery.start() names ports[1] and the port when a socket that does not share it holds it",
  async fn() {
    // Another program's socket, bound without SO_REUSEADDR: discovery cannot share the port.
    const holder = Deno.listenDatagram({ transport: "udp", hostname: "0.0.0.0", port: 0 });
    const port = (holder.addr as Deno.NetAddr).port;
    const discovery = new Discovery(
      await discoveryOptions(uniqueNetwork(), new Seen(), { port }),
    );
    const error = await discovery.start().catch((e) => e);
    await discovery.close();
    holder.close();
    ok(error instanceof PortInUseError, String(error));
    strictEqual(error.port, port);
    ok(error.cause instanceof Deno.errors.AddrInUse, String(error.cause));
    ok(
      error.message.includes(
        `port ${port} (ports[1]) is already in use; it is the UDP advertiser port`,
      ),
      error.message,
    );
    strictEqual(error.option, "ports[1]");
    ok(error.message.includes("stop the program"), error.message);
    ok(error.message.includes("another ports[1]"), error.message);
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "Discovery.start() shares the advertiser port with other nodes' sockets",
  async fn() {
    const holder = Deno.listenDatagram({
      transport: "udp",
      hostname: "0.0.0.0",
      port: advertiserPort(),
      reuseAddress: true,
    });
    try {
      const discovery = new Discovery(
        await discoveryOptions(uniqueNetwork(), new Seen(), { port: advertiserPort() }),
      );
      await discovery.start();
      await discovery.close();
    } finally {
      holder.close();
    }
  },
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "Discovery.close() right after start() is clean",
  async fn() {
    const fernet = new Fernet(generateKey());
    const discovery = new Discovery(
      await discoveryOptions(uniqueNetwork(), new Seen(), { fernet, port: advertiserPort() }),
    );
    const started = discovery.start();
    await discovery.close();
    await started;
  },
});
