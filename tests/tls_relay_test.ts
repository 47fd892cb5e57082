/**
 * TLS on relay links: `tls://` relay addresses, the node's `caCerts`
 * option, nodes calling each other through a TLS relay, the typed error for
 * a certificate a node does not trust, the relay command line's `--cert` and
 * `--key` with a certificate reload on SIGHUP, and what an on-path observer
 * reads of a TLS relay link.
 *
 * Certificates are made for each test with `openssl` (see
 * `_tls_fixtures.ts`).
 */

import { deepStrictEqual, ok, rejects, strictEqual, throws } from "node:assert/strict";
import { Node, NodeEvent, RelayTlsError } from "../mod.ts";
import { Relay, type Stream, TlsTransport } from "../relay/mod.ts";
import { formatRelayAddress, parseRelayAddress, type RelayAddress } from "../lib/address.ts";
import { TlsDialer, tlsDialError } from "../lib/tls_dial.ts";
import { RelayClient, type RelayClientOptions } from "../lib/relay_client.ts";
import { parseRelayArgs, UsageError } from "../relay.ts";
import { deadline, HANG_TIMEOUT, type TestNetwork, testNetwork, waitFor } from "./_fixtures.ts";
import { meetVia, RELAY_SCRIPT, remoteOptions, spawnRelay, startRelay } from "./_relay_fixtures.ts";
import { CertificateFactory, type Pem } from "./_tls_fixtures.ts";

const LOOPBACK = { hostname: "127.0.0.1", port: 0 };

/** A command for the nodes of these tests. */
const commands = {
  math: { add: (_node: Node, args: unknown) => (args as number[]).reduce((a, b) => a + b, 0) },
};

/** A remote-only node on `net` that serves `math.add` and trusts `caCerts` for TLS relays. */
function tlsNode(
  net: TestNetwork,
  name: string,
  relay: string | string[],
  caCerts: string[],
): Node {
  return new Node(remoteOptions(net, name, relay, { commands, caCerts }));
}

/**
 * An in-process relay serving TLS with `server` on a free loopback port;
 * `publicAddresses` are the addresses nodes dial it by, when not its own.
 */
async function startTlsRelay(
  server: Pem,
  publicAddresses?: string[],
): Promise<{ relay: Relay; address: string } & AsyncDisposable> {
  const transport = new TlsTransport({ cert: server.cert, key: server.key });
  const relay = new Relay({
    ...LOOPBACK,
    transport,
    ...(publicAddresses ? { publicAddresses } : {}),
  });
  await relay.start();
  return {
    relay,
    address: `tls://127.0.0.1:${relay.addr.port}`,
    [Symbol.asyncDispose]: () => relay.close(),
  };
}

/** True once `node` is registered at every relay it lists. */
function registered(node: Node): boolean {
  return node.relays.length > 0 && node.relays.every((relay) => relay.up);
}

/** What `dial` rejects with; throws if it connects. */
async function dialFailure(dial: Promise<Stream>): Promise<unknown> {
  try {
    (await dial).close();
  } catch (error) {
    return error;
  }
  throw new Error("The dial succeeded");
}

/** Dials `address` over TLS trusting `caCerts` only: "ok", or the error's message. */
async function tlsHandshake(address: string, caCerts: string[]): Promise<string> {
  try {
    (await new TlsDialer({ caCerts }).dial(parseRelayAddress(address))).close();
    return "ok";
  } catch (error) {
    return (error as Error).message;
  }
}

// ---- Addresses and options ----

Deno.test("parseRelayAddress() reads host:port, [v6]:port and their tls:// forms; formatRelayAddress() writes them canonically", async (t) => {
  const cases: Array<[string, RelayAddress, string]> = [
    [
      "relay.example:7000",
      { hostname: "relay.example", port: 7000, tls: false },
      "relay.example:7000",
    ],
    ["127.0.0.1:7000", { hostname: "127.0.0.1", port: 7000, tls: false }, "127.0.0.1:7000"],
    ["[::1]:7000", { hostname: "::1", port: 7000, tls: false }, "[::1]:7000"],
    [
      "tcp://relay.example:7000",
      { hostname: "relay.example", port: 7000, tls: false },
      "relay.example:7000",
    ],
    [
      "tls://relay.example:443",
      { hostname: "relay.example", port: 443, tls: true },
      "tls://relay.example:443",
    ],
    ["tls://[::1]:7000", { hostname: "::1", port: 7000, tls: true }, "tls://[::1]:7000"],
    [
      "TLS://Relay.example:7000",
      { hostname: "Relay.example", port: 7000, tls: true },
      "tls://Relay.example:7000",
    ],
    [
      " tls://relay.example:7000 ",
      { hostname: "relay.example", port: 7000, tls: true },
      "tls://relay.example:7000",
    ],
  ];
  for (const [text, parsed, canonical] of cases) {
    await t.step(text, () => {
      deepStrictEqual(parseRelayAddress(text), parsed);
      strictEqual(formatRelayAddress(parsed), canonical);
    });
  }
});

Deno.test("parseRelayAddress() refuses other schemes and malformed addresses with a TypeError naming the accepted forms", async (t) => {
  const bad = [
    "https://relay.example:443",
    "tls://relay.example",
    "tls://relay.example:0",
    "tls://relay.example:70000",
    "tls://tls://relay.example:7000",
    "udp://relay.example:7000",
    "relay.example",
    "",
  ];
  for (const text of bad) {
    await t.step(JSON.stringify(text), () => {
      throws(() => parseRelayAddress(text), (error: Error) => {
        ok(error instanceof TypeError, String(error));
        ok(error.message.includes(`'${text}'`), error.message);
        ok(error.message.includes("host:port"), error.message);
        ok(error.message.includes("tls://host:port"), error.message);
        return true;
      });
    });
  }
});

Deno.test("new Node() refuses a servers entry that is not a relay address, with a TypeError naming servers", () => {
  const net = testNetwork("tls");
  throws(
    () => new Node(remoteOptions(net, "a", ["127.0.0.1:7000", "https://relay.example:443"])),
    (error: Error) => {
      ok(error instanceof TypeError, String(error));
      ok(error.message.includes("servers[1] 'https://relay.example:443'"), error.message);
      ok(error.message.includes("tls://host:port"), error.message);
      return true;
    },
  );
});

Deno.test("new Node() refuses caCerts that are not PEM certificates, with a TypeError naming caCerts", async (t) => {
  const net = testNetwork("tls");
  const cases: Array<[string, unknown, RegExp]> = [
    ["one PEM string, not an array", "-----BEGIN CERTIFICATE-----", /caCerts must be an array/],
    ["a file name", ["/etc/ssl/ca.pem"], /caCerts\[0\] must be a PEM certificate.*file name/],
    ["a number", [42], /caCerts\[0\] must be a PEM certificate.*the number 42/],
    ["a private key", ["-----BEGIN PRIVATE KEY-----\n"], /caCerts\[0\] must be a PEM certificate/],
  ];
  for (const [what, caCerts, message] of cases) {
    await t.step(what, () => {
      throws(
        () =>
          new Node(
            remoteOptions(net, "a", "tls://127.0.0.1:7000", { caCerts: caCerts as string[] }),
          ),
        (error: Error) => error instanceof TypeError && message.test(error.message),
      );
    });
  }
});

// ---- Nodes and an in-process TLS relay ----

Deno.test("two nodes that trust the relay's CA through caCerts call each other through a TLS relay", async () => {
  await using certificates = await CertificateFactory.create();
  const ca = await certificates.ca();
  await using tls = await startTlsRelay(await certificates.server(ca));
  const net = testNetwork("tls");
  await using alice = tlsNode(net, "alice", tls.address, [ca.cert]);
  await using bob = tlsNode(net, "bob", tls.address, [ca.cert]);
  await alice.start();
  await bob.start();
  await meetVia([alice, bob], tls.address);
  deepStrictEqual(alice.relays, [{ address: tls.address, up: true, maintained: true }]);
  strictEqual(await alice.command<number>("math.add", { target: "bob", args: [2, 3] }), 5);
  strictEqual(await bob.command<number>("math.add", { target: "alice", args: [4, 5] }), 9);
});

Deno.test("a relay learned from a peer's sealed report keeps its tls:// scheme and is dialled over TLS", async () => {
  await using certificates = await CertificateFactory.create();
  const ca = await certificates.ca();
  await using tls = await startTlsRelay(await certificates.server(ca));
  await using plain = await startRelay();
  const net = testNetwork("tls");
  // alice knows both relays; bob only the plain one, and learns the TLS one from alice.
  await using alice = tlsNode(net, "alice", [plain.address, tls.address], [ca.cert]);
  await using bob = tlsNode(net, "bob", plain.address, [ca.cert]);
  await alice.start();
  await bob.start();
  await waitFor(
    () => bob.relays.some((r) => r.address === tls.address && r.up && !r.maintained),
    "bob to learn and register at the TLS relay",
  );
  strictEqual(tls.relay.stats.nodes, 2);
});

Deno.test("a node without the relay's CA never registers at a TLS relay, and the node with it is unaffected", async () => {
  await using certificates = await CertificateFactory.create();
  const ca = await certificates.ca();
  await using tls = await startTlsRelay(await certificates.server(ca));
  const net = testNetwork("tls");
  await using trusted = tlsNode(net, "trusted", tls.address, [ca.cert]);
  await using stranger = tlsNode(net, "stranger", tls.address, []);
  await trusted.start();
  await stranger.start(); // Waits for the relay's answer, which never comes.
  deepStrictEqual(stranger.relays, [{ address: tls.address, up: false, maintained: true }]);
  ok(registered(trusted));
  strictEqual(tls.relay.stats.nodes, 1);
  deepStrictEqual(trusted.peers.map((peer) => peer.name), []);
});

Deno.test("a relay client reports a relay certificate it does not trust as a RelayTlsError naming the relay and caCerts", async () => {
  await using certificates = await CertificateFactory.create();
  const ca = await certificates.ca();
  await using tls = await startTlsRelay(await certificates.server(ca));
  const errors: Error[] = [];
  // Only the dial runs (it fails before registration), so only its options are given.
  const options: Pick<
    RelayClientOptions,
    "address" | "maintained" | "connectTimeout" | "transport" | "backoff" | "onDialError"
  > = {
    address: tls.address,
    maintained: true,
    connectTimeout: HANG_TIMEOUT,
    transport: new TlsDialer(),
    backoff: () => 20,
    onDialError: (_client, error) => errors.push(error),
  };
  const client = new RelayClient(options as RelayClientOptions);
  void client.start(0);
  try {
    await waitFor(() => errors.length >= 2, "two failed dials (it keeps retrying)");
  } finally {
    await client.close();
  }
  const error = errors[0];
  ok(error instanceof RelayTlsError, String(error));
  strictEqual(error.name, "RelayTlsError");
  strictEqual(error.relay, tls.address);
  ok(error.message.startsWith(`Cannot reach relay ${tls.address} over TLS: `), error.message);
  ok(error.message.includes("UnknownIssuer"), error.message);
  ok(error.message.includes("caCerts"), error.message);
  strictEqual(client.link, null);
  strictEqual(tls.relay.stats.nodes, 0);
});

Deno.test("a relay client reports no TLS error when a tls:// relay is simply down", async () => {
  const closed = Deno.listen(LOOPBACK);
  const address = `tls://127.0.0.1:${closed.addr.port}`;
  closed.close();
  const errors: Error[] = [];
  let gaveUp = false;
  const options: Pick<
    RelayClientOptions,
    "address" | "maintained" | "connectTimeout" | "transport" | "onDialError" | "onGiveUp"
  > = {
    address,
    maintained: false,
    connectTimeout: HANG_TIMEOUT,
    transport: new TlsDialer(),
    onDialError: (_client, error) => errors.push(error),
    onGiveUp: () => gaveUp = true,
  };
  const client = new RelayClient(options as RelayClientOptions);
  await client.start(HANG_TIMEOUT);
  await client.close();
  ok(gaveUp, "a learned relay that cannot be reached is given up");
  deepStrictEqual(errors, []);
});

Deno.test("tlsDialError() names the relay's certificate problem, and a relay that does not speak TLS", async (t) => {
  await using certificates = await CertificateFactory.create();
  const ca = await certificates.ca();
  await using tls = await startTlsRelay(await certificates.server(ca));
  const at = parseRelayAddress(tls.address);

  await t.step("a certificate from an unknown CA", async () => {
    const error = tlsDialError(tls.address, await dialFailure(new TlsDialer().dial(at)));
    ok(error instanceof RelayTlsError, String(error));
    strictEqual(error.reason, "invalid peer certificate (UnknownIssuer)");
    ok(error.message.includes("caCerts"), error.message);
  });

  await t.step("a certificate for another name", async () => {
    const misnamed = new TlsDialer({ caCerts: [ca.cert], serverName: "elsewhere.example" });
    const error = tlsDialError(tls.address, await dialFailure(misnamed.dial(at)));
    ok(error instanceof RelayTlsError, String(error));
    ok(/not valid for name "elsewhere\.example"/.test(error.reason), error.reason);
    ok(error.message.includes("a name its certificate holds"), error.message);
  });

  await t.step("a relay that answers in plain TCP", async () => {
    await using plain = new Relay(LOOPBACK);
    await plain.start();
    const address = `tls://127.0.0.1:${plain.addr.port}`;
    const dialler = new TlsDialer({ caCerts: [ca.cert] });
    const error = tlsDialError(
      address,
      await dialFailure(dialler.dial(parseRelayAddress(address))),
    );
    ok(error instanceof RelayTlsError, String(error));
    ok(error.message.includes("check that the relay serves TLS"), error.message);
  });

  await t.step("a closed port is no TLS error", async () => {
    const closed = Deno.listen(LOOPBACK);
    const port = closed.addr.port;
    closed.close();
    const refused = await dialFailure(new TlsDialer().dial({ hostname: "127.0.0.1", port }));
    ok(refused instanceof Deno.errors.ConnectionRefused, String(refused));
    strictEqual(tlsDialError(`tls://127.0.0.1:${port}`, refused), null);
  });
});

// ---- What an on-path observer sees ----

/**
 * A loopback TCP forwarder that keeps a copy of every byte it carries, both
 * ways; it listens at once and forwards to the port given to
 * {@linkcode TapProxy.forwardTo}. `await using` closes it and its
 * connections.
 */
class TapProxy implements AsyncDisposable {
  readonly #listener: Deno.TcpListener;
  #target = 0;
  readonly #conns = new Set<Deno.TcpConn>();
  readonly #pumps: Promise<void>[] = [];
  readonly #accepting: Promise<void>;
  readonly #seen: Uint8Array[] = [];

  constructor() {
    this.#listener = Deno.listen(LOOPBACK);
    this.#accepting = this.#accept();
  }

  /** Forwards the connections accepted from now on to `port` on loopback. */
  forwardTo(port: number): void {
    this.#target = port;
  }

  /** The port to dial instead of the relay's. */
  get port(): number {
    return this.#listener.addr.port;
  }

  /** Bytes carried so far. */
  get bytes(): number {
    return this.#seen.reduce((sum, chunk) => sum + chunk.length, 0);
  }

  /** The first bytes carried (a node's first write: it speaks first). */
  get first(): Uint8Array {
    return this.#seen[0] ?? new Uint8Array();
  }

  /** True when `text` (UTF-8) appears in what was carried in either direction. */
  saw(text: string): boolean {
    const needle = new TextEncoder().encode(text);
    const all = new Uint8Array(this.bytes);
    let at = 0;
    for (const chunk of this.#seen) {
      all.set(chunk, at);
      at += chunk.length;
    }
    outer: for (let i = 0; i + needle.length <= all.length; i++) {
      for (let j = 0; j < needle.length; j++) if (all[i + j] !== needle[j]) continue outer;
      return true;
    }
    return false;
  }

  async #accept(): Promise<void> {
    try {
      for await (const client of this.#listener) {
        this.#conns.add(client);
        try {
          const upstream = await Deno.connect({ hostname: "127.0.0.1", port: this.#target });
          this.#conns.add(upstream);
          this.#pumps.push(this.#pump(client, upstream), this.#pump(upstream, client));
        } catch {
          this.#close(client);
        }
      }
    } catch {
      // The listener was closed.
    }
  }

  async #pump(from: Deno.TcpConn, to: Deno.TcpConn): Promise<void> {
    const buffer = new Uint8Array(65536);
    try {
      while (true) {
        const n = await from.read(buffer);
        if (n === null) break;
        this.#seen.push(buffer.slice(0, n));
        let written = 0;
        while (written < n) written += await to.write(buffer.subarray(written, n));
      }
    } catch {
      // One side went away.
    } finally {
      this.#close(from);
      this.#close(to);
    }
  }

  #close(conn: Deno.TcpConn): void {
    if (!this.#conns.delete(conn)) return;
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener.close();
    for (const conn of [...this.#conns]) this.#close(conn);
    await this.#accepting;
    await Promise.all(this.#pumps);
  }
}

Deno.test("a tapping proxy between nodes and a TLS relay reads neither node names nor the network name", async () => {
  await using certificates = await CertificateFactory.create();
  const ca = await certificates.ca();
  await using tap = new TapProxy();
  const tapped = `tls://127.0.0.1:${tap.port}`;
  // The nodes' admission proofs name the address they dial: the relay is told it is its own.
  await using tls = await startTlsRelay(await certificates.server(ca), [tapped]);
  tap.forwardTo(tls.relay.addr.port);
  const net = testNetwork("tlstap");
  const suffix = crypto.randomUUID().slice(0, 8);
  const names = [`tapalice${suffix}`, `tapbob${suffix}`];
  {
    await using alice = tlsNode(net, names[0]!, tapped, [ca.cert]);
    await using bob = tlsNode(net, names[1]!, tapped, [ca.cert]);
    await alice.start();
    await bob.start();
    await meetVia([alice, bob], tapped);
    strictEqual(await alice.command<number>("math.add", { target: names[1]!, args: [1, 2] }), 3);
    strictEqual(await bob.command<number>("math.add", { target: names[0]!, args: [3, 4] }), 7);
  }
  ok(tap.bytes > 1000, `the proxy carried the relay links (${tap.bytes} bytes)`);
  // A TLS handshake record (content type 22, version 3.x): the link was TLS from its first byte.
  deepStrictEqual([...tap.first.subarray(0, 2)], [0x16, 0x03]);
  for (const secret of [...names, net.network]) {
    strictEqual(tap.saw(secret), false, `'${secret}' crossed the proxy in clear`);
  }
});

// ---- The relay command line ----

/** The line a TLS relay prints once it reloaded its certificate. */
const RELOADED = "peerbase-relay reloaded its TLS certificate";

/** Starts `relay.ts --cert --key` with `server`'s files; its address as nodes list it. */
async function spawnTlsRelay(server: Pem) {
  const relay = await spawnRelay({ args: ["--cert", server.certFile, "--key", server.keyFile] });
  return Object.assign(relay, { address: `tls://${relay.address}` });
}

/** Puts `from`'s certificate and key in `to`'s files (each replaced in one rename). */
async function replaceFiles(to: Pem, from: { cert: string; key: string }): Promise<void> {
  const files: Array<[string, string]> = [[to.certFile, from.cert], [to.keyFile, from.key]];
  for (const [file, text] of files) {
    await Deno.writeTextFile(`${file}.new`, text);
    await Deno.rename(`${file}.new`, file);
  }
}

Deno.test("parseRelayArgs() takes --cert and --key (or cert and key from --config), both or neither", async () => {
  deepStrictEqual(await parseRelayArgs(["--cert", "c.pem", "--key", "k.pem"]), {
    cert: "c.pem",
    key: "k.pem",
  });
  const config = await Deno.makeTempFile({ suffix: ".json" });
  try {
    await Deno.writeTextFile(config, JSON.stringify({ port: 0, cert: "c.pem", key: "k.pem" }));
    deepStrictEqual(await parseRelayArgs(["--config", config, "--key", "other.pem"]), {
      port: 0,
      cert: "c.pem",
      key: "other.pem",
    });
    await Deno.writeTextFile(config, JSON.stringify({ cert: 1 }));
    await rejects(parseRelayArgs(["--config", config]), /"cert" must be a string/);
  } finally {
    await Deno.remove(config);
  }
  for (const args of [["--cert", "c.pem"], ["--key", "k.pem"]]) {
    await rejects(parseRelayArgs(args), (error: Error) => {
      ok(error instanceof UsageError, String(error));
      ok(error.message.includes("both --cert and --key"), error.message);
      return true;
    });
  }
});

Deno.test("relay --cert --key exits 2 naming the files when they hold no usable certificate", async () => {
  await using certificates = await CertificateFactory.create();
  const server = await certificates.server(await certificates.ca());
  const other = await certificates.selfSigned();
  const cases: Array<[string, string, string, RegExp]> = [
    ["a missing file", `${certificates.dir}/missing.pem`, server.keyFile, /missing\.pem/],
    ["a key as the certificate", server.keyFile, server.keyFile, /No certificates found/],
    ["another certificate's key", server.certFile, other.keyFile, /KeyMismatch|not be consistent/],
  ];
  for (const [what, cert, key, detail] of cases) {
    const output = await deadline(
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", RELAY_SCRIPT.href, "--host", "127.0.0.1", "--port", "0"]
          .concat(["--cert", cert, "--key", key]),
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).output(),
      `the relay to exit (${what})`,
    );
    const stderr = new TextDecoder().decode(output.stderr);
    strictEqual(output.code, 2, `${what}: ${stderr}`);
    ok(stderr.includes(`Cannot load TLS certificate --cert ${cert} --key ${key}`), stderr);
    ok(detail.test(stderr), `${what}: ${stderr}`);
    ok(!stderr.includes("listening"), stderr);
  }
});

Deno.test("relay --cert --key serves TLS, says tls:// in its start line, and carries calls", async () => {
  await using certificates = await CertificateFactory.create();
  const ca = await certificates.ca();
  await using relay = await spawnTlsRelay(await certificates.server(ca));
  ok(
    relay.process.stderr.includes(`listening on tls://127.0.0.1:${relay.port}`),
    relay.process.stderr,
  );
  const net = testNetwork("tlscli");
  await using alice = tlsNode(net, "alice", relay.address, [ca.cert]);
  await using bob = tlsNode(net, "bob", relay.address, [ca.cert]);
  await alice.start();
  await bob.start();
  await meetVia([alice, bob], relay.address);
  strictEqual(await alice.command<number>("math.add", { target: "bob", args: [20, 22] }), 42);
  strictEqual(await tlsHandshake(relay.address, [ca.cert]), "ok");
});

Deno.test("SIGHUP reloads the relay's certificate: open node connections stay up, new connections get the new one", async () => {
  await using certificates = await CertificateFactory.create();
  const oldCa = await certificates.ca("old CA");
  const newCa = await certificates.ca("new CA");
  const served = await certificates.server(oldCa);
  await using relay = await spawnTlsRelay(served);
  const net = testNetwork("tlshup");
  await using alice = tlsNode(net, "alice", relay.address, [oldCa.cert]);
  await using bob = tlsNode(net, "bob", relay.address, [oldCa.cert]);
  const drops: unknown[] = [];
  for (const node of [alice, bob]) {
    node.addEventListener(NodeEvent.RELAY_DOWN, (event) => drops.push(event.detail));
  }
  await alice.start();
  await bob.start();
  await meetVia([alice, bob], relay.address);
  strictEqual(await tlsHandshake(relay.address, [oldCa.cert]), "ok");

  await replaceFiles(served, await certificates.server(newCa));
  relay.process.kill("SIGHUP");
  await waitFor(() => relay.process.stderr.includes(RELOADED), "the relay's reload line");

  strictEqual(await tlsHandshake(relay.address, [newCa.cert]), "ok");
  ok(/UnknownIssuer/.test(await tlsHandshake(relay.address, [oldCa.cert])));
  // The nodes trust the old CA only: their calls still pass, so their connections are the old ones.
  strictEqual(await alice.command<number>("math.add", { target: "bob", args: [1, 1] }), 2);
  strictEqual(await bob.command<number>("math.add", { target: "alice", args: [2, 2] }), 4);
  ok(registered(alice) && registered(bob));
  deepStrictEqual(drops, []);
  ok(!relay.process.exited);
});

Deno.test("SIGHUP with a bad certificate file keeps the old certificate, prints one error line, and the relay runs on", async () => {
  await using certificates = await CertificateFactory.create();
  const ca = await certificates.ca();
  const served = await certificates.server(ca);
  await using relay = await spawnTlsRelay(served);
  await Deno.writeTextFile(served.certFile, "not a certificate\n");
  relay.process.kill("SIGHUP");
  await waitFor(
    () => relay.process.stderr.includes("keeping the old certificate"),
    "the relay's reload error",
  );
  const errors = relay.process.stderr.split("\n").filter((line) => line.includes("reload"));
  strictEqual(errors.length, 1, relay.process.stderr);
  ok(errors[0]!.startsWith("peerbase-relay: Cannot reload TLS certificate --cert "), errors[0]);
  ok(errors[0]!.includes(served.certFile), errors[0]);
  strictEqual(await tlsHandshake(relay.address, [ca.cert]), "ok");
  ok(!relay.process.exited);
  // A good file on the next SIGHUP is taken.
  const newCa = await certificates.ca("new CA");
  await replaceFiles(served, await certificates.server(newCa));
  relay.process.kill("SIGHUP");
  await waitFor(() => relay.process.stderr.includes(RELOADED), "the relay's reload line");
  strictEqual(await tlsHandshake(relay.address, [newCa.cert]), "ok");
});
