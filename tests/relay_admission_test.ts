/**
 * Relay trust (docs/PROTOCOL.md, "Network identity and pseudonyms" and
 * "Relays"): a relay admits a node only with a proof that it holds the
 * network key, and a registration only with a proof that it holds the
 * instance key; nothing before the proof reveals whether a network or a
 * name exists; members list only members whose cards open; and the bytes a
 * relay reads carry no node or network name.
 *
 * Real relays (processes and in-process), real sockets, no mocks. Every
 * wait is bounded by `HANG_TIMEOUT` only to catch hangs: nothing here
 * measures how fast something happens. "Nobody saw it" is checked after a
 * barrier: a fresh member registers and the observer waits to list it;
 * relays push membership in order, so by then the observer has applied
 * everything the relay told it before.
 */

import { deepStrictEqual, match, ok, strictEqual, throws } from "node:assert/strict";
import {
  type CallContext,
  generateKey,
  networkId,
  Node,
  PeerNotFoundError,
  RelayRefusedError,
} from "../mod.ts";
import { Relay } from "../relay/mod.ts";
import {
  CloseCode,
  decodeGoaway,
  encodeFrame,
  encodeName,
  type Frame,
  FrameDecoder,
  FrameType,
} from "../lib/frame.ts";
import { decodeMembers, encodeControl, type Member } from "../lib/relay_protocol.ts";
import { signRegistration } from "../lib/admission.ts";
import { InstanceKey } from "../lib/instance_key.ts";
import { NetworkIdentity } from "../lib/network_identity.ts";
import { Fernet, isKey } from "../lib/fernet.ts";
import { textEncoder, toBase64Url } from "../lib/encoding.ts";
import {
  deadline,
  HANG_TIMEOUT,
  knows,
  type TestNetwork,
  testNetwork,
  waitFor,
} from "./_fixtures.ts";
import { type Output, runToEnd } from "./_env.ts";
import {
  codeName,
  dataFrame,
  meetVia,
  type RawIdentity,
  rawIdentity,
  reachesVia,
  registerFrame,
  RelayRawClient,
  remoteOptions,
  spawnRelay,
  startRelay,
} from "./_relay_fixtures.ts";

/** The one answer to every proof that fails, whatever failed. */
const REJECTED = { code: CloseCode.AUTH, reason: "admission proof rejected" };

/** A short random suffix for names no other test uses. */
function suffix(): string {
  return crypto.randomUUID().slice(0, 8);
}

// ---- Forged registrations ----

/**
 * `who`, except that its network signature is made with another key while
 * the header and the signed fields still claim `who`'s network id and
 * pseudonym: an outsider that copied a member's card and ids off the wire.
 */
async function withWrongNetworkKey(who: RawIdentity): Promise<RawIdentity> {
  const wrong = await NetworkIdentity.derive(generateKey(), who.network);
  const real = who.credentials.identity;
  const forger = {
    network: real.network,
    id: real.id,
    pseudonyms: real.pseudonyms,
    sign: (message: Uint8Array<ArrayBuffer>) => wrong.sign(message),
  } as unknown as NetworkIdentity;
  return { ...who, credentials: { ...who.credentials, identity: forger } };
}

/**
 * An instance key that claims `claimed`'s public key (so its id) but signs
 * with `signer`'s secret: someone who knows an instance, not its secret.
 */
function posingAs(claimed: InstanceKey, signer: InstanceKey): InstanceKey {
  return {
    id: claimed.id,
    publicKey: claimed.publicKey,
    sign: (message: Uint8Array<ArrayBuffer>) => signer.sign(message),
  } as unknown as InstanceKey;
}

/** `who` with its member card replaced by `card`. */
function withCard(who: RawIdentity, card: string): RawIdentity {
  return { ...who, credentials: { ...who.credentials, card } };
}

/** A member card sealing `{"n": name, "i": instance}` under `key`. */
async function sealCard(key: string, name: string, instance: string): Promise<string> {
  const plain = textEncoder.encode(JSON.stringify({ n: name, i: instance }));
  return toBase64Url(await new Fernet(key).encryptBytes(plain));
}

// ---- What a refused client saw ----

/**
 * Waits for the relay to close `client` and checks it learned nothing: it
 * received CHALLENGE, then GOAWAY, and no other frame (no REGISTERED, no
 * MEMBERS). Returns the GOAWAY frame.
 */
async function refusedBlind(client: RelayRawClient): Promise<Frame> {
  const { closed } = await client.outcome();
  ok(closed, "the relay closed the connection");
  deepStrictEqual(
    client.frames.map((f) => f.type),
    [FrameType.CHALLENGE, FrameType.GOAWAY],
    "a refused client receives CHALLENGE and GOAWAY, nothing else",
  );
  strictEqual(client.members, 0);
  return client.frames[1]!;
}

/** The GOAWAY of `frame` as code and reason. */
function goawayOf(frame: Frame): { code: number; reason: string } {
  return decodeGoaway(frame.body);
}

// ---- Barriers ----

/**
 * Registers a fresh raw member of `net` at `relay` and waits until `node`
 * lists it; returns its name. Relays push membership in order, so once the
 * node lists it, it has applied every earlier push of that relay.
 */
async function nodeBarrier(node: Node, relay: string, net: TestNetwork): Promise<string> {
  const who = await rawIdentity(net, `barrier-${suffix()}`);
  await using client = await RelayRawClient.connect(relay);
  await client.register(who);
  await waitFor(() => reachesVia(node, who.name, relay), `${node.name} to list ${who.name}`);
  return who.name;
}

/** Every join and leave of the MEMBERS pushes `client` received. */
function pushed(client: RelayRawClient): { join: Member[]; leave: [string, string][] } {
  const all = { join: [] as Member[], leave: [] as [string, string][] };
  for (const frame of client.frames.filter((f) => f.type === FrameType.MEMBERS)) {
    const body = decodeMembers(frame);
    all.join.push(...body.join);
    all.leave.push(...body.leave);
  }
  return all;
}

/**
 * Registers a fresh raw member of `net` at `relay` and waits until the raw
 * member `observer` is pushed its join (every earlier push came first).
 */
async function rawBarrier(
  observer: RelayRawClient,
  relay: string,
  net: TestNetwork,
): Promise<void> {
  const who = await rawIdentity(net, `barrier-${suffix()}`);
  await using client = await RelayRawClient.connect(relay);
  await client.register(who);
  await waitFor(
    () => pushed(observer).join.some(([pseudonym]) => pseudonym === who.pseudonym),
    `the observer to be pushed ${who.name}'s join`,
  );
}

// ---- A tapping TCP forwarder ----

/** Closes `conn`, ignoring that it may be closed already. */
function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}

/** Concatenates `chunks`. */
function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, chunk) => n + chunk.length, 0));
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

/** True when `needle` occurs in `haystack` as a byte sequence. */
function containsBytes(haystack: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) {
      if (haystack[i + j] !== needle[j]) continue outer;
    }
    return true;
  }
  return false;
}

/** One forwarded connection: everything each side sent, as read. */
class Tap {
  /** Chunks the client sent towards the relay. */
  readonly up: Uint8Array[] = [];
  /** Chunks the relay sent towards the client. */
  readonly down: Uint8Array[] = [];
  /** Resolves once the relay's side has ended (the relay closed it, or the tap did). */
  readonly relayEnded: Promise<void>;
  readonly #client: Deno.TcpConn;
  readonly #relay: Deno.TcpConn;
  readonly #clientEnded: Promise<void>;
  #cut = false;

  constructor(client: Deno.TcpConn, relay: Deno.TcpConn) {
    this.#client = client;
    this.#relay = relay;
    this.#clientEnded = this.#pump(client, relay, this.up).then(() => {
      if (!this.#cut) this.#closeBoth();
    });
    this.relayEnded = this.#pump(relay, client, this.down).then(() => this.#closeBoth());
  }

  /**
   * Cuts the link as a network blip would for the client: its side is
   * closed, while the relay's side stays open (the relay notices nothing)
   * and whatever the relay still sends is recorded.
   */
  cut(): void {
    this.#cut = true;
    closeQuietly(this.#client);
  }

  /** Closes both sides and waits for both directions to end. */
  async close(): Promise<void> {
    this.#closeBoth();
    await Promise.all([this.#clientEnded, this.relayEnded]);
  }

  #closeBoth(): void {
    closeQuietly(this.#client);
    closeQuietly(this.#relay);
  }

  /** Copies `from` to `to` (only `from` after a cut of `to`), recording every chunk. */
  async #pump(from: Deno.TcpConn, to: Deno.TcpConn, record: Uint8Array[]): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    while (true) {
      let n: number | null;
      try {
        n = await from.read(buffer);
      } catch {
        return; // Closed by the tap, or reset.
      }
      if (n === null) return;
      const chunk = buffer.slice(0, n);
      record.push(chunk);
      if (this.#cut && to === this.#client) continue;
      try {
        let at = 0;
        while (at < chunk.length) at += await to.write(chunk.subarray(at));
      } catch {
        return;
      }
    }
  }
}

/**
 * A TCP forwarder on 127.0.0.1 between nodes and a relay that records every
 * byte both ways: what the relay reads, and what an on-path observer sees.
 */
class TapProxy implements AsyncDisposable {
  /** `127.0.0.1:<port>`: nodes dial this instead of the relay. */
  readonly address: string;
  /** Every forwarded connection, in accept order. */
  readonly taps: Tap[] = [];
  readonly #listener: Deno.TcpListener;
  readonly #accepting: Promise<void>;
  #relay: { hostname: string; port: number } | null = null;
  #closed = false;

  /**
   * Listens on a free loopback port; connections are forwarded to `relay`
   * (`host:port`), which may be given later with {@linkcode forwardTo}
   * (a relay that names this address must start after it).
   */
  constructor(relay?: string) {
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.address = `127.0.0.1:${this.#listener.addr.port}`;
    if (relay !== undefined) this.forwardTo(relay);
    this.#accepting = this.#accept();
  }

  /** Forwards connections accepted from now on to `relay` (`host:port`). */
  forwardTo(relay: string): void {
    const at = relay.lastIndexOf(":");
    this.#relay = { hostname: relay.slice(0, at), port: Number(relay.slice(at + 1)) };
  }

  async #accept(): Promise<void> {
    while (true) {
      let client: Deno.TcpConn;
      try {
        client = await this.#listener.accept();
      } catch {
        return; // The listener was closed.
      }
      let relay: Deno.TcpConn;
      try {
        if (!this.#relay) throw new Error("No relay to forward to yet");
        relay = await Deno.connect(this.#relay);
      } catch {
        closeQuietly(client);
        continue;
      }
      if (this.#closed) {
        closeQuietly(client);
        closeQuietly(relay);
        return;
      }
      this.taps.push(new Tap(client, relay));
    }
  }

  /** Every recorded stream, one per connection and direction. */
  streams(): Uint8Array[] {
    return this.taps.flatMap((tap) => [concat(tap.up), concat(tap.down)]);
  }

  /** Stops listening, closes every forwarded connection and waits for them. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.#closed = true;
    try {
      this.#listener.close();
    } catch {
      // Already closed.
    }
    await this.#accepting;
    await Promise.all(this.taps.map((tap) => tap.close()));
  }
}

// ---- The command line ----

const CLI_SCRIPT = new URL("../cli.ts", import.meta.url);

/** Runs `peerbase ARGS` to completion (10 s cap) with `env` added. */
function runCli(args: string[], env: Record<string, string> = {}): Promise<Output> {
  return runToEnd(Deno.execPath(), ["run", "-A", CLI_SCRIPT.href, ...args], {
    env: { NO_COLOR: "1", ...env },
    timeout: HANG_TIMEOUT,
  });
}

// ---- Tests ----

Deno.test({
  name:
    "an impostor with another key under the same network and node name, registered first, neither blocks the real node nor sees or reaches its network",
  async fn() {
    const net = testNetwork("admission");
    const impostorNet: TestNetwork = { network: net.network, networkKey: generateKey() };
    await using relay = await spawnRelay();
    const address = relay.address;
    const who = (answer: string) => ({
      who: (_n: Node, _a: unknown[], _k: unknown, ctx: CallContext) => ({
        answer,
        via: ctx.via,
        relay: ctx.relay,
      }),
    });

    await using impostor = new Node(remoteOptions(impostorNet, "alice", address, {
      commands: who("impostor"),
    }));
    await impostor.start();
    await waitFor(() => impostor.relays[0]?.up === true, "the impostor to register first");

    await using alice = new Node(remoteOptions(net, "alice", address, { commands: who("real") }));
    await using bob = new Node(remoteOptions(net, "bob", address));
    await alice.start(); // No NameTakenError: the impostor holds "alice" in another network.
    await bob.start();
    await waitFor(() => alice.relays[0]?.up === true, "the real alice to register");
    deepStrictEqual(alice.relays, [{ address, up: true, maintained: true }]);
    await meetVia([alice, bob], address);

    const seen = await deadline(bob.command("who", { target: "alice" }), "bob's call to alice");
    deepStrictEqual(seen, { answer: "real", via: "relay", relay: address });
    deepStrictEqual(bob.peers.map((p) => [p.name, p.instance]), [["alice", alice.instance]]);

    // The impostor sees no member, and reaches no one.
    deepStrictEqual(impostor.peers.map((p) => p.name), []);
    const notFound = await deadline(
      impostor.command("who", { target: "bob" }).then(() => null, (e) => e),
      "the impostor's call to bob",
    );
    ok(notFound instanceof PeerNotFoundError, String(notFound));
    deepStrictEqual(
      await deadline(impostor.command("who", { target: "*" }), "the impostor's call to *"),
      {},
    );

    // Its relay link works: a member of its own network does reach it, and still
    // nothing of the real network came before.
    await using accomplice = new Node(remoteOptions(impostorNet, "accomplice", address));
    await accomplice.start();
    await waitFor(
      () => knows(impostor, "accomplice"),
      "the impostor to list a member of its own network",
    );
    deepStrictEqual(impostor.peers.map((p) => p.name), ["accomplice"]);
    deepStrictEqual(bob.peers.map((p) => p.name), ["alice"]);
    deepStrictEqual(alice.peers.map((p) => p.name), ["bob"]);
  },
});

Deno.test({
  name:
    "a raw client without a valid proof is refused, receives nothing but CHALLENGE and GOAWAY, and no member sees it",
  async fn(t) {
    const net = testNetwork("admission");
    // A long registration deadline: a connection kept open across a step is not timed out.
    await using relay = await startRelay({ registerDeadline: 600_000 });
    const address = relay.address;
    await using watcher = new Node(remoteOptions(net, "watcher", address));
    const joined: string[] = [];
    watcher.addEventListener("peerjoin", (e) => joined.push(e.detail.name));
    await watcher.start();

    /** Names this test admitted on purpose. */
    const admitted: string[] = [];
    /** After a barrier: the watcher never listed `name`, nor anyone but barriers and `admitted`. */
    const unseen = async (name: string) => {
      const barrier = await nodeBarrier(watcher, address, net);
      ok(!joined.includes(name), `the watcher saw ${name} join`);
      ok(!knows(watcher, name), `the watcher lists ${name}`);
      ok(joined.includes(barrier));
      deepStrictEqual(
        joined.filter((n) => !n.startsWith("barrier-") && !admitted.includes(n)),
        [],
      );
    };

    await t.step("a network signature by another key under the network's real id", async () => {
      const who = await withWrongNetworkKey(await rawIdentity(net, "mallory-key"));
      await using client = await RelayRawClient.connect(address);
      await client.sendRegister(who);
      deepStrictEqual(goawayOf(await refusedBlind(client)), REJECTED);
      await unseen(who.name);
    });

    await t.step("a valid proof replayed on another connection (another nonce)", async () => {
      const who = await rawIdentity(net, "mallory-replay");
      await using first = await RelayRawClient.connect(address);
      const proof = await registerFrame(who, await first.nonce(), address);
      await using second = await RelayRawClient.connect(address);
      await second.nonce();
      await second.write(proof);
      deepStrictEqual(goawayOf(await refusedBlind(second)), REJECTED);
      await unseen(who.name);
      // The proof was valid for the connection whose nonce it signed.
      admitted.push(who.name);
      await first.write(proof);
      await first.frame((f) => f.type === FrameType.REGISTERED, "REGISTERED with the proof");
    });

    await t.step("a proof naming another relay's address", async () => {
      await using other = await startRelay();
      const who = await rawIdentity(net, "mallory-address");
      await using client = await RelayRawClient.connect(address);
      await client.sendRegister(who, { address: other.address });
      // A key holder's proof, made for another relay: refused, saying what to configure.
      const goaway = goawayOf(await refusedBlind(client));
      strictEqual(goaway?.code, CloseCode.AUTH);
      ok(goaway.reason.includes(`admission proof names ${other.address}`), goaway.reason);
      ok(goaway.reason.includes("--public-address"), goaway.reason);
      await unseen(who.name);
    });

    await t.step(
      "a proof naming a host this relay cannot tell is its own, on its port",
      async () => {
        const port = address.slice(address.lastIndexOf(":") + 1);
        const who = await rawIdentity(net, "mallory-hostile");
        await using client = await RelayRawClient.connect(address);
        await client.sendRegister(who, { address: `hostile-relay.example:${port}` });
        strictEqual(goawayOf(await refusedBlind(client))?.code, CloseCode.AUTH);
        await unseen(who.name);
      },
    );

    await t.step("a REGISTER whose body is garbage", async () => {
      const who = await rawIdentity(net, "mallory-garbage");
      await using client = await RelayRawClient.connect(address);
      await client.nonce();
      await client.write(encodeFrame(
        FrameType.REGISTER,
        0,
        {
          network: encodeName(who.networkId, "network"),
          target: new Uint8Array(0),
          sender: encodeName(who.pseudonym, "sender"),
        },
        crypto.getRandomValues(new Uint8Array(300)),
      ));
      deepStrictEqual(goawayOf(await refusedBlind(client)), REJECTED);
      await unseen(who.name);
    });

    await t.step("a REGISTER of registration version 1 gets GOAWAY 3 naming both", async () => {
      const who = await rawIdentity(net, "mallory-v1");
      await using client = await RelayRawClient.connect(address);
      const body = await signRegistration({
        identity: who.credentials.identity,
        instance: who.credentials.instance,
        name: who.name,
        nonce: await client.nonce(),
        address,
        tick: 1000,
        clientOnly: false,
        card: who.credentials.card,
      });
      await client.write(
        encodeControl(FrameType.REGISTER, who.networkId, who.pseudonym, { ...body, v: 1 }),
      );
      const goaway = goawayOf(await refusedBlind(client));
      strictEqual(codeName(goaway.code), codeName(CloseCode.VERSION));
      match(goaway.reason, /version 1 .*version 2/);
      await unseen(who.name);
    });

    strictEqual(relay.relay.stats.refusals.proof, 5);
    strictEqual(relay.relay.stats.refusals.version, 1);
  },
});

Deno.test({
  name:
    "every refusal before the proof is the same GOAWAY, whether or not the network or the name exists",
  async fn() {
    const net = testNetwork("admission");
    const nobodys = testNetwork("admission"); // Never registered anywhere.
    await using relay = await spawnRelay();
    const address = relay.address;
    const bob = await rawIdentity(net, "bob");
    await using member = await RelayRawClient.connect(address);
    await member.register(bob);

    /** The GOAWAY bytes a client gets for `frame(nonce)`. */
    const refusal = async (frame: (nonce: Uint8Array) => Promise<Uint8Array>) => {
      await using client = await RelayRawClient.connect(address);
      await client.write(await frame(await client.nonce()));
      return [...(await refusedBlind(client)).raw!];
    };
    const forged = (who: RawIdentity) => async (nonce: Uint8Array) =>
      await registerFrame(await withWrongNetworkKey(who), nonce, address);

    const existingName = await refusal(forged(bob));
    const unknownName = await refusal(forged(await rawIdentity(net, "nobody")));
    const unknownNetwork = await refusal(forged(await rawIdentity(nobodys, "bob")));
    const noNetworkId = await refusal(async (nonce) => {
      // A proof signed with a real key, sent under a header network id that is no key at all.
      const who = await rawIdentity(nobodys, "bob");
      const body = await signRegistration({
        identity: who.credentials.identity,
        instance: who.credentials.instance,
        name: who.name,
        nonce,
        address,
        tick: 1000,
        clientOnly: false,
        card: who.credentials.card,
      });
      return encodeControl(FrameType.REGISTER, "not-a-network-id", who.pseudonym, body);
    });

    // A GOAWAY header has no names: 4 length, version, type, 2 flags, 8 id, 3 empty lengths.
    const body = new Uint8Array(existingName.slice(4 + 1 + 1 + 2 + 8 + 3));
    deepStrictEqual(decodeGoaway(body), REJECTED);
    deepStrictEqual(unknownName, existingName, "an unknown name is refused alike");
    deepStrictEqual(unknownNetwork, existingName, "a network nobody registered is refused alike");
    deepStrictEqual(noNetworkId, existingName, "a network id that is no key is refused alike");
    strictEqual(member.goaway, null);
  },
});

Deno.test({
  name:
    "a member that knows another instance's id cannot take over its registration: GOAWAY 7, and the holder stays connected",
  async fn(t) {
    const net = testNetwork("admission");
    await using relay = await spawnRelay();
    const address = relay.address;
    const bob = await rawIdentity(net, "bob");
    const a = bob.credentials.instance;
    await using bobClient = await RelayRawClient.connect(address);
    await bobClient.register(bob);
    const carol = await rawIdentity(net, "carol");
    await using carolClient = await RelayRawClient.connect(address);
    await carolClient.register(carol);

    await t.step("its own instance key, with bob's card and instance id", async () => {
      const thief = withCard(await rawIdentity(net, "bob"), bob.credentials.card);
      await using client = await RelayRawClient.connect(address);
      await client.sendRegister(thief);
      const goaway = goawayOf(await refusedBlind(client));
      strictEqual(codeName(goaway.code), codeName(CloseCode.NAME_TAKEN));
    });

    await t.step("bob's instance public key, signed without its secret", async () => {
      const thief = await rawIdentity(net, "bob", posingAs(a, await InstanceKey.generate()));
      await using client = await RelayRawClient.connect(address);
      await client.sendRegister(thief);
      deepStrictEqual(goawayOf(await refusedBlind(client)), REJECTED);
    });

    await t.step("bob's connection stays up and keeps receiving frames", async () => {
      await carolClient.write(
        dataFrame(bob.networkId, bob.pseudonym, carol.pseudonym, new Uint8Array([7, 7]), 42),
      );
      const frame = await bobClient.frame(
        (f) => f.type === FrameType.DATA && f.id === 42,
        "carol's frame at bob",
      );
      strictEqual(frame.sender, carol.pseudonym);
      strictEqual(bobClient.goaway, null);
      ok(!bobClient.closed);
      await rawBarrier(carolClient, address, net);
      deepStrictEqual(
        pushed(carolClient).leave.filter(([pseudonym]) => pseudonym === bob.pseudonym),
        [],
        "no member saw bob leave",
      );
    });
  },
});

Deno.test({
  name:
    "the real instance reclaims its name at once after its connection is cut, and the relay closes the old connection as replaced",
  async fn() {
    const net = testNetwork("admission");
    // A relay that would keep the stale registration for a minute: the reclaim cannot
    // be the relay timing the old connection out.
    await using relay = await spawnRelay({ args: ["--timeout", "60"] });
    await using proxy = new TapProxy(relay.address);
    const bob = await rawIdentity(net, "bob");

    await using old = await RelayRawClient.connect(proxy.address);
    await old.register(bob, { address: relay.address });
    strictEqual(proxy.taps.length, 1);
    const tap = proxy.taps[0]!;
    tap.cut();
    await waitFor(() => old.closed, "the old connection to be cut on bob's side");

    const again = await rawIdentity(net, "bob", bob.credentials.instance);
    await using fresh = await RelayRawClient.connect(relay.address);
    const registered = await fresh.register(again);
    deepStrictEqual(registered.members, []);

    await deadline(tap.relayEnded, "the relay to close the old connection");
    const frames = new FrameDecoder(2 ** 31).push(concat(tap.down));
    const last = frames.at(-1)!;
    strictEqual(last.type, FrameType.GOAWAY);
    const goaway = goawayOf(last);
    strictEqual(codeName(goaway.code), codeName(CloseCode.NORMAL));
    match(goaway.reason, /replaced/);
    strictEqual(fresh.goaway, null);
  },
});

Deno.test({
  name:
    "with TLS off, the bytes a relay reads and its stats carry no node or network name, yet calls work",
  async fn() {
    const net: TestNetwork = { network: `net-${crypto.randomUUID()}`, networkKey: generateKey() };
    const aliceName = `alice-${crypto.randomUUID()}`;
    const bobName = `bob-${crypto.randomUUID()}`;
    const names = [aliceName, bobName, net.network];
    // The relay sits behind the tap: proofs name the address nodes dial, the tap's.
    await using proxy = new TapProxy();
    await using relay = await startRelay({ publicAddresses: [proxy.address] });
    proxy.forwardTo(relay.address);

    const commands = {
      echo: (_n: Node, args: unknown[]) => args,
      where: (_n: Node, _a: unknown[], _k: unknown, ctx: CallContext) => ctx.relay,
    };
    const alice = new Node(remoteOptions(net, aliceName, proxy.address, { commands }));
    const bob = new Node(remoteOptions(net, bobName, proxy.address, { commands }));
    try {
      await alice.start();
      await bob.start();
      await meetVia([alice, bob], proxy.address);
      for (let i = 0; i < 3; i++) {
        // The names travel as call arguments too: sealed, they never show.
        deepStrictEqual(
          await deadline(bob.command("echo", { target: aliceName, args: names }), "bob → alice"),
          names,
        );
        deepStrictEqual(
          await deadline(alice.command("echo", { target: bobName, args: names }), "alice → bob"),
          names,
        );
      }
      strictEqual(
        await deadline(bob.command("where", { target: aliceName }), "where"),
        proxy.address,
      );
      deepStrictEqual(
        await deadline(bob.command("echo", { target: "*", args: [1] }), "bob → *"),
        { [aliceName]: [1] },
      );
    } finally {
      await alice.close();
      await bob.close();
    }

    const streams = proxy.streams();
    ok(streams.some((s) => s.length > 0), "the tap recorded the relay links");
    const all = new TextDecoder().decode(concat(streams));
    // The tap did see the routing header: the network id and the pseudonyms.
    ok(all.includes(await networkId(net.networkKey, net.network)), "the network id is on the wire");
    for (const name of names) {
      const bytes = textEncoder.encode(name);
      for (const stream of streams) {
        ok(!new TextDecoder().decode(stream).includes(name), `'${name}' read as UTF-8 text`);
        ok(!containsBytes(stream, bytes), `'${name}' found as UTF-8 bytes`);
      }
    }
    const stats = JSON.stringify(relay.relay.stats);
    ok(relay.relay.stats.framesForwarded > 0, stats);
    for (const name of names) ok(!stats.includes(name), `'${name}' in the relay's stats`);
  },
});

Deno.test({
  name:
    "a relay restricted to a network id admits that network's nodes and refuses another network with GOAWAY 8, after the proof",
  async fn(t) {
    const office: TestNetwork = { network: "office", networkKey: generateKey() };
    const id = await networkId(office.networkKey, "office");
    await using relay = await startRelay({ networks: [`office:${id}`] });
    const address = relay.address;

    await t.step("nodes of the served network register and call each other", async () => {
      const commands = { hello: (_n: Node, args: unknown[]) => `hello ${args[0]}` };
      await using alice = new Node(remoteOptions(office, "alice", address, { commands }));
      await using bob = new Node(remoteOptions(office, "bob", address, { commands }));
      await alice.start();
      await bob.start();
      await meetVia([alice, bob], address);
      strictEqual(
        await deadline(bob.command("hello", { target: "alice", args: ["bob"] }), "the call"),
        "hello bob",
      );
    });

    await t.step("a node of another network gets a relayrefused event with code 8", async () => {
      // The same name under another key: another network id, whatever the name.
      const other: TestNetwork = { network: "office", networkKey: generateKey() };
      await using stranger = new Node(remoteOptions(other, "carol", address));
      const refusals: { relay: string; code: number | null; reason: string }[] = [];
      stranger.addEventListener("relayrefused", (e) => refusals.push(e.detail));
      const error = await deadline(stranger.start().then(() => null, (e) => e), "start()");
      ok(error instanceof RelayRefusedError, String(error));
      strictEqual(error.relay, address);
      await waitFor(() => refusals.length > 0, "the relayrefused event");
      strictEqual(refusals.length, 1);
      strictEqual(refusals[0]!.relay, address);
      strictEqual(codeName(refusals[0]!.code ?? undefined), codeName(CloseCode.NETWORK_REFUSED));
      match(refusals[0]!.reason, /does not serve that network/);
    });

    await t.step(
      "a raw client of another network: GOAWAY 4 without a proof, 8 with one",
      async () => {
        const who = await rawIdentity(testNetwork("admission"), "dave");
        await using forged = await RelayRawClient.connect(address);
        await forged.sendRegister(await withWrongNetworkKey(who));
        deepStrictEqual(goawayOf(await refusedBlind(forged)), REJECTED);
        await using proven = await RelayRawClient.connect(address);
        await proven.sendRegister(who);
        const goaway = goawayOf(await refusedBlind(proven));
        strictEqual(codeName(goaway.code), codeName(CloseCode.NETWORK_REFUSED));
      },
    );

    await t.step("a network given by name alone is a TypeError that says to use NAME:ID", () => {
      throws(
        () => new Relay({ networks: ["office"] }),
        (error) => error instanceof TypeError && /NAME:ID/.test(error.message),
      );
    });
  },
});

Deno.test({
  name:
    "members list only members whose card opens under the network key and names the listed pseudonym and instance",
  async fn() {
    const net = testNetwork("admission");
    await using relay = await startRelay();
    const address = relay.address;
    const observerId = await rawIdentity(net, "observer");
    await using observer = await RelayRawClient.connect(address);
    await observer.register(observerId);
    await using alice = new Node(remoteOptions(net, "alice", address));
    const joined: string[] = [];
    alice.addEventListener("peerjoin", (e) => joined.push(e.detail.name));
    await alice.start();

    const cases: [string, (who: RawIdentity) => Promise<string>][] = [
      [
        "a card sealed under another key",
        (who) => sealCard(generateKey(), who.name, who.credentials.instance.id),
      ],
      [
        "a card naming another node",
        (who) => sealCard(net.networkKey, "someone-else", who.credentials.instance.id),
      ],
      [
        "a card naming another instance",
        async (who) => sealCard(net.networkKey, who.name, (await InstanceKey.generate()).id),
      ],
    ];
    const liars: RelayRawClient[] = [];
    try {
      for (const [i, [what, card]] of cases.entries()) {
        const plain = await rawIdentity(net, `mallory-${i}`);
        const who = withCard(plain, await card(plain));
        const client = await RelayRawClient.connect(address);
        liars.push(client);
        await client.register(who); // The relay cannot read cards: it registers the member.
        await waitFor(
          () => pushed(observer).join.some(([pseudonym]) => pseudonym === who.pseudonym),
          `the relay to list ${what} to members`,
        );
        await nodeBarrier(alice, address, net);
        ok(!joined.includes(who.name), `alice saw ${what} join`);
        ok(!knows(alice, who.name) && !knows(alice, "someone-else"), `alice lists ${what}`);
      }

      // A node starting now is told of them all in REGISTERED, and lists none.
      await using bob = new Node(remoteOptions(net, "bob", address));
      await bob.start();
      await waitFor(
        () => knows(bob, "alice") && knows(bob, "observer"),
        "bob to list the members with good cards",
      );
      deepStrictEqual(bob.peers.map((p) => p.name), ["alice", "observer"]);
      await waitFor(() => joined.includes("bob"), "alice to hear bob join");
      deepStrictEqual(
        joined.filter((name) => !name.startsWith("barrier-")),
        ["observer", "bob"],
      );
      strictEqual(relay.relay.stats.nodes, 3 + cases.length);
    } finally {
      for (const client of liars) await client[Symbol.asyncDispose]();
    }
  },
});

Deno.test({
  name:
    "peerbase keygen --network office prints a key and office:<id>, and peerbase id prints the same id as networkId()",
  async fn() {
    const keygen = await runCli(["keygen", "--network", "office"]);
    strictEqual(keygen.code, 0, keygen.stderr);
    const lines = keygen.stdout.trimEnd().split("\n");
    strictEqual(lines.length, 2, keygen.stdout);
    const [key, named] = lines as [string, string];
    ok(isKey(key), `a network key: ${key}`);
    match(named, /^office:[A-Za-z0-9_-]{43}$/);
    strictEqual(named, `office:${await networkId(key, "office")}`);

    const id = await runCli(["id", "--network", "office"], { PEERBASE_KEY: key });
    strictEqual(id.code, 0, id.stderr);
    strictEqual(id.stdout, `${named}\n`);
  },
});
