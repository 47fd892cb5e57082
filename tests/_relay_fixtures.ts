/**
 * Helpers for the relay tests: relays in their own processes (started and
 * restarted on a port), remote-only nodes, and raw TCP clients that speak
 * (or deliberately break) the node-to-relay protocol.
 *
 * Every wait is bounded by `HANG_TIMEOUT` from `_fixtures.ts`: it only
 * catches hangs, it never measures how fast something happened.
 *
 * @module
 */

import { Node, type NodeOptions } from "../mod.ts";
import { Relay } from "../lib/relay_server.ts";
import {
  CloseCode,
  decodeGoaway,
  encodeFrame,
  encodeName,
  type Frame,
  FrameDecoder,
  FrameType,
} from "../lib/frame.ts";
import {
  decodeChallenge,
  decodeRegistered,
  encodeBeat,
  encodeControl,
  type RegisterBody,
  type RegisteredBody,
} from "../lib/relay_protocol.ts";
import { signRegistration } from "../lib/admission.ts";
import { type Credentials, makeCredentials } from "../lib/credentials.ts";
import type { InstanceKey } from "../lib/instance_key.ts";
import { Fernet } from "../lib/fernet.ts";
import { fromBase64Url } from "../lib/encoding.ts";
import { networkId, Pseudonyms } from "../lib/network_identity.ts";
import type { Message } from "../lib/message.ts";
import {
  deadline,
  HANG_TIMEOUT,
  nodeOptions,
  receivedMessages,
  sleep,
  Spawned,
  type TestNetwork,
  waitFor,
} from "./_fixtures.ts";

/** The relay's command line script. */
export const RELAY_SCRIPT = new URL("../relay.ts", import.meta.url);

/** A remote-only node in its own process (see its header for arguments). */
export const RELAY_NODE = new URL("./fixtures/relay_node.ts", import.meta.url);

/** The line the relay prints on stderr once it listens. */
const LISTENING = /^peerbase-relay \S+ listening on (\S+):(\d+)$/m;

// ---- Relay processes ----

/** A relay process started by {@linkcode spawnRelay}. */
export interface RelayProcess extends AsyncDisposable {
  /** `127.0.0.1:<port>`, as nodes list it in `servers`. */
  address: string;
  /** The port it listens on. */
  port: number;
  /** The process; its stderr carries the start and stop lines. */
  process: Spawned;
}

/** Options of {@linkcode spawnRelay}. */
export interface SpawnRelayOptions {
  /** Port to listen on. @default 0 (any free port) */
  port?: number;
  /** More command-line arguments (`--network`, `--timeout`, ...). */
  args?: string[];
  /** Deno flags before the script (`--lock=relay/cluster.lock`, ...). */
  denoArgs?: string[];
}

/**
 * Starts `relay.ts` on 127.0.0.1 in its own process and waits for its start
 * line (10 s cap). A port still held by the kernel for a moment after a
 * killed relay is retried until the cap.
 */
export async function spawnRelay(options: SpawnRelayOptions = {}): Promise<RelayProcess> {
  const end = Date.now() + HANG_TIMEOUT;
  while (true) {
    const process = new Spawned(
      new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          ...(options.denoArgs ?? []),
          RELAY_SCRIPT.href,
          "--host",
          "127.0.0.1",
          "--port",
          String(options.port ?? 0),
          ...(options.args ?? []),
        ],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn(),
    );
    try {
      await waitFor(
        () => LISTENING.test(process.stderr) || process.exited,
        "the relay's start line",
      );
    } catch (error) {
      await process.stop("SIGKILL").catch(() => {});
      throw error;
    }
    const match = LISTENING.exec(process.stderr);
    if (match) {
      const port = Number(match[2]);
      return {
        address: `127.0.0.1:${port}`,
        port,
        process,
        [Symbol.asyncDispose]: () => process[Symbol.asyncDispose](),
      };
    }
    const status = await process.stop("SIGKILL");
    const busy = process.stderr.includes("already in use");
    if (!busy || Date.now() > end) {
      throw new Error(`The relay exited with ${status.code}; stderr: ${process.stderr}`);
    }
    await sleep(100);
  }
}

// ---- Nodes ----

/** Options of a remote-only node on `net` that uses `servers`, plus `extra`. */
export function remoteOptions(
  net: TestNetwork,
  name: string,
  servers: string | string[],
  extra: Partial<NodeOptions<Node>> = {},
): NodeOptions<Node> {
  return { name, ...net, useLocal: false, servers, ...extra };
}

/** True when `node` knows `name` through `relay`. */
export function reachesVia(node: Node, name: string, relay: string): boolean {
  return node.peers.some((peer) => peer.name === name && peer.relays.includes(relay));
}

/** Waits until every node knows every other one through `relay` (10 s cap). */
export async function meetVia(nodes: Node[], relay: string): Promise<void> {
  await waitFor(
    () =>
      nodes.every((node) =>
        nodes.every((other) => other === node || reachesVia(node, other.name, relay))
      ),
    `${nodes.map((n) => n.name).join(", ")} to meet through ${relay}`,
  );
}

/** Two started nodes `a` and `b` that answer `echo`; disposing closes both. */
export interface EchoPair extends AsyncDisposable {
  a: Node;
  b: Node;
}

/**
 * Starts nodes `a` and `b` of `net` answering `echo(x)` with `x`, on the LAN,
 * or remote-only through the relay at `relay`, and waits until they see
 * each other that way (10 s cap).
 */
export async function echoPair(net: TestNetwork, relay?: string): Promise<EchoPair> {
  const node = (name: string) =>
    new Node({
      ...nodeOptions(net, name),
      ...(relay ? { servers: [relay], useLocal: false } : {}),
      commands: { echo: (_node, args) => args[0] ?? null },
    });
  const a = node("a");
  const b = node("b");
  const pair = {
    a,
    b,
    async [Symbol.asyncDispose]() {
      await a.close();
      await b.close();
    },
  };
  try {
    await a.start();
    await b.start();
    if (relay) await meetVia([a, b], relay);
    else {
      await waitFor(
        () =>
          a.peers.some((p) => p.name === "b" && p.local) &&
          b.peers.some((p) => p.name === "a" && p.local),
        "a and b to see each other",
      );
    }
  } catch (error) {
    await pair[Symbol.asyncDispose]();
    throw error;
  }
  return pair;
}

/** Spawns a `tests/fixtures/relay_*.ts` style script with `run -A <flags> script args`. */
export function spawnScript(
  script: URL,
  args: string[],
  options: { flags?: string[]; env?: Record<string, string> } = {},
): Spawned {
  return new Spawned(
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", ...(options.flags ?? []), script.href, ...args],
      env: options.env ?? {},
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn(),
  );
}

/** Options of {@linkcode spawnRelayNode}. */
export interface RelayNodeOptions {
  name: string;
  net: TestNetwork;
  /** Relays, `host:port`. */
  servers: string[];
  /** A peer to call `whoami` on once it is present; the process prints `result <json>`. */
  call?: string;
  /** Extra `deno run` flags, such as `--no-config`. */
  flags?: string[];
}

/**
 * Starts `tests/fixtures/relay_node.ts` (a remote-only node) and waits for
 * its `ready <name> <instance>` line (10 s cap). The key travels in the
 * environment.
 */
export async function spawnRelayNode(options: RelayNodeOptions): Promise<Spawned> {
  const args = [
    "--name",
    options.name,
    "--network",
    options.net.network,
    "--servers",
    options.servers.join(","),
  ];
  if (options.call !== undefined) args.push("--call", options.call);
  const process = spawnScript(RELAY_NODE, args, {
    flags: options.flags ?? [],
    env: { PEERBASE_KEY: options.net.networkKey },
  });
  try {
    await process.line("ready ");
  } catch (error) {
    await process.stop("SIGKILL").catch(() => {});
    throw error;
  }
  return process;
}

/** Parses the JSON after `prefix` in a line such as `result {...}`. */
export function lineJson(line: string, prefix: string): Record<string, unknown> {
  return JSON.parse(line.slice(prefix.length));
}

// ---- Raw relay clients ----

/**
 * A member of a test network as a raw client registers it: its name, its
 * credentials (network identity, instance key, card) and the header
 * fields they give (network id, pseudonym).
 */
export interface RawIdentity {
  /** The node name. */
  name: string;
  /** The network name. */
  network: string;
  /** The network id (frame header network field). */
  networkId: string;
  /** The name's pseudonym (frame header sender/target field). */
  pseudonym: string;
  /** What it proves itself with. */
  credentials: Credentials;
}

/**
 * Credentials of `name` in `net`; pass `instance` to register the same
 * instance again (a reconnect) or to impersonate one.
 */
export async function rawIdentity(
  net: TestNetwork,
  name: string,
  instance?: InstanceKey,
): Promise<RawIdentity> {
  const fernet = new Fernet(net.networkKey);
  const credentials = await makeCredentials(net.networkKey, net.network, name, fernet, instance);
  return {
    name,
    network: net.network,
    networkId: credentials.identity.id,
    pseudonym: credentials.identity.pseudonyms.of(name),
    credentials,
  };
}

/** Options of a raw registration. */
export interface RawRegisterOptions {
  /** Keepalive tick, ms. @default 1000 */
  tick?: number;
  /** Register client-only (`c: 1`). */
  clientOnly?: boolean;
  /** The relay address the proof names. @default the address connected to */
  address?: string;
}

/** A signed REGISTER frame of `who` answering `nonce`. */
export async function registerFrame(
  who: RawIdentity,
  nonce: Uint8Array,
  address: string,
  options: RawRegisterOptions = {},
): Promise<Uint8Array> {
  const body: RegisterBody = await signRegistration({
    identity: who.credentials.identity,
    instance: who.credentials.instance,
    name: who.name,
    nonce,
    address: options.address ?? address,
    tick: options.tick ?? 1000,
    clientOnly: options.clientOnly === true,
    card: who.credentials.card,
  });
  return encodeControl(FrameType.REGISTER, who.networkId, who.pseudonym, body);
}

/** The network id of `net`: what relays and frame headers know it by. */
export function networkIdOf(net: TestNetwork): Promise<string> {
  return networkId(net.networkKey, net.network);
}

/** The pseudonym of `name` in `net`: what relays and frame headers know it by. */
export function pseudonymOf(net: TestNetwork, name: string): string {
  return Pseudonyms.fromKey(net.networkKey, net.network).of(name);
}

/** The nonce a CHALLENGE frame carries. */
export function challengeNonce(frame: Frame): Uint8Array {
  return fromBase64Url(decodeChallenge(frame).n);
}

/** A DATA frame with a clear header and an arbitrary (unsealed) body. */
export function dataFrame(
  network: string,
  target: string,
  sender: string,
  body: Uint8Array,
  id = 1,
): Uint8Array {
  return encodeFrame(
    FrameType.DATA,
    id,
    {
      network: encodeName(network, "network"),
      target: encodeName(target, "target"),
      sender: encodeName(sender, "sender"),
    },
    body,
    2 ** 31,
  );
}

/** A PING frame. */
export const PING: Uint8Array = encodeBeat(FrameType.PING);

/** Options of {@linkcode RelayRawClient.connect}. */
export interface RawConnectOptions {
  /** Start reading at once. @default true */
  read?: boolean;
  /** Keep MEMBERS frames in `frames` (else only counted). @default true */
  keepMembers?: boolean;
  /** Bytes read per call (small for many clients). @default 65536 */
  readSize?: number;
}

/**
 * Writes to a connection one write after another, so concurrent writes
 * never interleave; a failed write rejects its caller only.
 */
export class SerialWriter {
  readonly #conn: Deno.Conn;
  #writing: Promise<void> = Promise.resolve();

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  /** Writes all of `bytes` after every earlier write (rejects once the connection is gone). */
  write(bytes: Uint8Array): Promise<void> {
    const next = this.#writing.then(async () => {
      let at = 0;
      while (at < bytes.length) at += await this.#conn.write(bytes.subarray(at));
    });
    this.#writing = next.catch(() => {});
    return next;
  }
}

/** A raw TCP client of a relay: registers by hand and sees every frame. */
export class RelayRawClient implements AsyncDisposable {
  readonly #conn: Deno.TcpConn;
  readonly #decoder = new FrameDecoder(2 ** 31);
  readonly #keepMembers: boolean;
  readonly #readSize: number;
  /** Frames received (MEMBERS only when `keepMembers`). */
  readonly frames: Frame[] = [];
  /** MEMBERS frames received. */
  members = 0;
  /** The GOAWAY received, if any. */
  goaway: { code: number; reason: string } | null = null;
  /** True once the relay closed the connection (EOF or reset). */
  closed = false;
  /** Bytes received. */
  received = 0;
  /** The relay address connected to, as `host:port`. */
  readonly address: string;
  #reading: Promise<void> | null = null;
  readonly #writer: SerialWriter;

  private constructor(conn: Deno.TcpConn, address: string, options: RawConnectOptions) {
    this.#conn = conn;
    this.#writer = new SerialWriter(conn);
    this.address = address;
    this.#keepMembers = options.keepMembers ?? true;
    this.#readSize = options.readSize ?? 65536;
  }

  /** Connects to `address` (`host:port`). */
  static async connect(address: string, options: RawConnectOptions = {}): Promise<RelayRawClient> {
    const at = address.lastIndexOf(":");
    const conn = await Deno.connect({
      hostname: address.slice(0, at),
      port: Number(address.slice(at + 1)),
    });
    const client = new RelayRawClient(conn, address, options);
    if (options.read ?? true) client.startReading();
    return client;
  }

  /** Starts the read loop (once). */
  startReading(): void {
    this.#reading ??= this.#read();
  }

  async #read(): Promise<void> {
    const buffer = new Uint8Array(this.#readSize);
    try {
      while (true) {
        const n = await this.#conn.read(buffer);
        if (n === null) break;
        this.#take(buffer.subarray(0, n));
      }
    } catch {
      // Reset by the relay, or closed by us.
    } finally {
      this.closed = true;
    }
  }

  /** Decodes `chunk` and keeps its frames. */
  #take(chunk: Uint8Array): void {
    this.received += chunk.length;
    for (const frame of this.#decoder.push(chunk)) {
      if (frame.type === FrameType.GOAWAY) this.goaway ??= decodeGoaway(frame.body);
      if (frame.type === FrameType.MEMBERS) {
        this.members++;
        if (!this.#keepMembers) continue;
      }
      // The decoder's frames are views into its own buffers, which it does not reuse.
      this.frames.push(frame);
    }
  }

  /**
   * For a client that does not read (`read: false`): reads just until a
   * frame passes `predicate` (10 s cap), keeping what it read.
   */
  async #readUntil(predicate: (frame: Frame) => boolean, what: string): Promise<void> {
    const buffer = new Uint8Array(this.#readSize);
    const end = Date.now() + HANG_TIMEOUT;
    while (!this.frames.some(predicate) && !this.closed) {
      const n = await deadline(this.#conn.read(buffer), what, Math.max(0, end - Date.now()));
      if (n === null) this.closed = true;
      else this.#take(buffer.subarray(0, n));
    }
  }

  /**
   * Writes `bytes` after every earlier write, so concurrent writes never
   * interleave (rejects once the connection is gone).
   */
  write(bytes: Uint8Array): Promise<void> {
    return this.#writer.write(bytes);
  }

  /** Ends the sending direction (the relay sees EOF). */
  closeWrite(): Promise<void> {
    return this.#conn.closeWrite();
  }

  /** The first frame passing `predicate`, waiting for it (10 s cap; fails early on close). */
  async frame(predicate: (frame: Frame) => boolean, what: string): Promise<Frame> {
    await waitFor(() => this.frames.some(predicate) || this.closed, what);
    const found = this.frames.find(predicate);
    if (!found) {
      throw new Error(
        `The relay closed the connection before ${what}: ${JSON.stringify(this.goaway)}`,
      );
    }
    return found;
  }

  /**
   * The relay's CHALLENGE nonce (waits for the CHALLENGE frame). A client
   * that does not read reads just that far.
   */
  async nonce(): Promise<Uint8Array> {
    const isChallenge = (f: Frame) => f.type === FrameType.CHALLENGE;
    if (!this.#reading) await this.#readUntil(isChallenge, "CHALLENGE");
    return challengeNonce(await this.frame(isChallenge, "CHALLENGE"));
  }

  /**
   * Answers the relay's CHALLENGE with `who`'s signed REGISTER and returns
   * without waiting for the relay's answer (for refusals, and for clients
   * that do not read).
   */
  async sendRegister(who: RawIdentity, options: RawRegisterOptions = {}): Promise<void> {
    await this.write(await registerFrame(who, await this.nonce(), this.address, options));
  }

  /**
   * Answers the relay's CHALLENGE with `who`'s signed REGISTER and resolves
   * with the REGISTERED body; rejects with the GOAWAY reason when refused.
   */
  async register(who: RawIdentity, options: RawRegisterOptions = {}): Promise<RegisteredBody> {
    await this.sendRegister(who, options);
    const frame = await this.frame(
      (f) => f.type === FrameType.REGISTERED,
      `REGISTERED for ${who.name}`,
    );
    return decodeRegistered(frame);
  }

  /**
   * The messages of every DATA frame received, opened with `net`'s key,
   * once there are at least `count` (10 s cap; fails early on close).
   */
  messages(net: TestNetwork, count: number): Promise<Message[]> {
    return receivedMessages(this, net, count, "from the relay");
  }

  /** Resolves once the relay has closed the connection (10 s cap). */
  async outcome(ms: number = HANG_TIMEOUT): Promise<
    { goaway: { code: number; reason: string } | null; closed: boolean }
  > {
    this.startReading();
    await deadline(this.#reading!, "the relay to close the raw connection", ms);
    return { goaway: this.goaway, closed: this.closed };
  }

  /** Closes the connection and waits for the reader. */
  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.#conn.close();
    } catch {
      // Already closed.
    }
    await this.#reading;
  }
}

/** Names of GOAWAY codes, for readable assertion messages. */
export function codeName(code: number | undefined): string {
  const entry = Object.entries(CloseCode).find(([, value]) => value === code);
  return entry ? entry[0] : String(code);
}

/** An in-process relay on a free loopback port and its address; `await using` closes it. */
export async function startRelay(
  options: ConstructorParameters<typeof Relay>[0] = {},
): Promise<{ relay: Relay; address: string } & AsyncDisposable> {
  const relay = new Relay({ hostname: "127.0.0.1", port: 0, ...options });
  await relay.start();
  return {
    relay,
    address: `127.0.0.1:${relay.addr.port}`,
    [Symbol.asyncDispose]: () => relay.close(),
  };
}

/** A registered raw member of `net` at `address`, reading everything it is sent. */
export async function rawMember(
  net: TestNetwork,
  name: string,
  address: string,
  tick?: number,
): Promise<{ id: RawIdentity; client: RelayRawClient }> {
  const id = await rawIdentity(net, name);
  const client = await RelayRawClient.connect(address, { keepMembers: false });
  try {
    await client.register(id, tick === undefined ? {} : { tick });
  } catch (error) {
    await client[Symbol.asyncDispose]();
    throw error;
  }
  return { id, client };
}

/** PONGs `client` has received. */
export function pongs(client: RelayRawClient): number {
  return client.frames.filter((f) => f.type === FrameType.PONG).length;
}

/** A summary of a relay's blame counters, for assertion messages. */
export function blame(relay: Relay): string {
  const { throttles, disconnects, nodes, connections } = relay.stats;
  return JSON.stringify({ throttles, disconnects, nodes, connections });
}
