/**
 * Helpers for the integration tests: nodes that have found each other,
 * hang guards, sleeps that honour a signal, raw TCP clients that speak (or
 * deliberately break) the frame protocol, and node processes.
 *
 * Every wait here is bounded by {@linkcode HANG_TIMEOUT}: it only catches
 * hangs, it never measures how fast something happened.
 *
 * @module
 */

import { generateKey, Node, type NodeEventMap, type NodeOptions } from "../mod.ts";
import {
  decodeGoaway,
  encodeFrame,
  encodeName,
  type Frame,
  FrameDecoder,
  FrameType,
} from "../lib/frame.ts";
import {
  decodeBatch,
  encodeBatch,
  encodeEnvelope,
  encodeRecord,
  type Message,
} from "../lib/message.ts";
import { Fernet } from "../fernet/mod.ts";
import { NetworkIdentity } from "../lib/network_identity.ts";
import { encodeChunk } from "../lib/chunk.ts";
import { tcpTransport } from "../lib/tcp_transport.ts";
import type { Stream } from "../lib/transport.ts";
import { uniqueNetwork } from "./_env.ts";

/** Hard limit for anything a test waits for; only catches hangs. */
export const HANG_TIMEOUT = 10_000;

/** A network name and key shared by the nodes of one test. */
export interface TestNetwork {
  network: string;
  networkKey: string;
}

/** A fresh network: a name no other test uses and a new key. */
export function testNetwork(prefix = "it"): TestNetwork {
  return { network: uniqueNetwork(prefix), networkKey: generateKey() };
}

/** Both ends of a real loopback TCP connection: the dialled one, then the accepted one. */
export async function loopbackStreams(): Promise<[Stream, Stream]> {
  const listener = await tcpTransport.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept();
  const stream = await tcpTransport.dial(listener.address);
  const other = await accepted;
  listener.close();
  return [stream, other];
}

/** Options of a test node: loopback only, on `net`, plus `extra`. */
export function nodeOptions(
  net: TestNetwork,
  name: string,
  extra: Partial<NodeOptions<Node>> = {},
): NodeOptions<Node> {
  return { name, hostname: "127.0.0.1", ...net, ...extra };
}

/** Resolves after `ms`, or rejects with `signal.reason` as soon as it aborts. Leaves no timer. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Settles like `promise`, or rejects naming `what` after `ms` (a hang). Leaves no timer. */
export async function deadline<T>(
  promise: Promise<T>,
  what: string,
  ms: number = HANG_TIMEOUT,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves once `predicate()` holds (polled every 10 ms); rejects after `ms` naming `what`. */
export async function waitFor(
  predicate: () => boolean,
  what: string,
  ms: number = HANG_TIMEOUT,
): Promise<void> {
  const end = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > end) throw new Error(`Timed out after ${ms} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** The next `type` event of `node` whose detail passes `filter`, within `ms`. */
export function nextEvent<K extends keyof NodeEventMap>(
  node: Node,
  type: K,
  filter: (detail: NodeEventMap[K]["detail"]) => boolean = () => true,
  ms: number = HANG_TIMEOUT,
): Promise<NodeEventMap[K]["detail"]> {
  let listener: ((event: NodeEventMap[K]) => void) | undefined;
  const seen = new Promise<NodeEventMap[K]["detail"]>((resolve) => {
    listener = (event) => {
      if (filter(event.detail)) resolve(event.detail);
    };
    node.addEventListener(type, listener);
  });
  return deadline(seen, `a ${type} event on ${node.name}`, ms).finally(() =>
    node.removeEventListener(type, listener!)
  );
}

/** True when `node` lists a peer called `name` (and, if given, of that `instance`). */
export function knows(node: Node, name: string, instance?: string): boolean {
  return node.peers.some((peer) =>
    peer.name === name && (instance === undefined || peer.instance === instance)
  );
}

/** Started nodes that all know each other; `await using` closes them all. */
export class NodeGroup implements AsyncDisposable {
  readonly nodes: Node[];
  readonly net: TestNetwork;

  constructor(nodes: Node[], net: TestNetwork) {
    this.nodes = nodes;
    this.net = net;
  }

  /** The node called `name`. */
  get(name: string): Node {
    const node = this.nodes.find((n) => n.name === name);
    if (!node) throw new Error(`No node '${name}' in this group`);
    return node;
  }

  /** Closes every node. */
  async [Symbol.asyncDispose](): Promise<void> {
    await Promise.all(this.nodes.map((node) => node.close()));
  }
}

/** Options of {@linkcode startNodes}. */
export interface StartNodesOptions {
  /** The network to use. @default a new {@linkcode testNetwork} */
  net?: TestNetwork;
  /** Options of every node. */
  common?: Partial<NodeOptions<Node>>;
  /** Options of one node, by name. */
  each?: Record<string, Partial<NodeOptions<Node>>>;
}

/**
 * Starts nodes named `names` (or `n0..n{k-1}` for a count) and resolves once
 * each lists every other one as a peer (10 s cap). Nodes that started are
 * closed if anything fails.
 */
export async function startNodes(
  names: number | string[],
  options: StartNodesOptions = {},
): Promise<NodeGroup> {
  const list = typeof names === "number" ? Array.from({ length: names }, (_, i) => `n${i}`) : names;
  const net = options.net ?? testNetwork();
  const nodes = list.map((name) =>
    new Node(nodeOptions(net, name, { ...options.common, ...options.each?.[name] }))
  );
  const group = new NodeGroup(nodes, net);
  try {
    await Promise.all(nodes.map((node) => node.start()));
    await waitFor(
      () =>
        nodes.every((node) =>
          nodes.every((other) => other === node || knows(node, other.name, other.instance))
        ),
      `${list.join(", ")} to discover each other`,
    );
  } catch (error) {
    await group[Symbol.asyncDispose]();
    throw error;
  }
  return group;
}

// ---- Raw TCP clients ----

/** What a raw connection saw before the node closed it. */
export interface RawOutcome {
  /** Every frame received (DATA and GOAWAY). */
  frames: Frame[];
  /** The GOAWAY the node sent, if any. */
  goaway: { code: number; reason: string } | null;
  /** True once the node closed the connection (EOF or reset). */
  closed: boolean;
}

/** A raw TCP client of a node's RPC port. */
export class RawClient implements AsyncDisposable {
  readonly #conn: Deno.TcpConn;
  readonly #decoder = new FrameDecoder(64 * 1024 * 1024);
  readonly frames: Frame[] = [];
  closed = false;
  readonly #reading: Promise<void>;

  private constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
    this.#reading = this.#read();
  }

  /** Connects to `address` (`host:port`). */
  static async connect(address: string): Promise<RawClient> {
    const at = address.lastIndexOf(":");
    const conn = await Deno.connect({
      hostname: address.slice(0, at),
      port: Number(address.slice(at + 1)),
    });
    return new RawClient(conn);
  }

  /**
   * Connects to `address` and sends a fresh hello from `who` to `target`,
   * as a dialling node does first: the node then trusts the connection
   * (frames above 4096 bytes, any message).
   */
  static async hello(
    address: string,
    net: TestNetwork,
    who: RawIdentity,
    target = "srv",
  ): Promise<RawClient> {
    const client = await RawClient.connect(address);
    await client.write(await sealFrame(net, who, target, []));
    return client;
  }

  async #read(): Promise<void> {
    const buffer = new Uint8Array(65536);
    try {
      while (true) {
        const n = await this.#conn.read(buffer);
        if (n === null) break;
        this.frames.push(...this.#decoder.push(buffer.slice(0, n)));
      }
    } catch {
      // Reset by the node, or closed by us.
    } finally {
      this.closed = true;
    }
  }

  /** Writes `bytes`. */
  async write(bytes: Uint8Array): Promise<void> {
    let at = 0;
    while (at < bytes.length) at += await this.#conn.write(bytes.subarray(at));
  }

  /** Ends the sending direction (the node sees EOF). */
  closeWrite(): Promise<void> {
    return this.#conn.closeWrite();
  }

  /**
   * Resolves with the messages of every DATA frame received, opened with
   * `net`'s key, once there are at least `count` (10 s cap).
   */
  messages(net: TestNetwork, count: number): Promise<Message[]> {
    return receivedMessages(this, net, count, "on the raw connection");
  }

  /** Resolves once the node has closed the connection (10 s cap). */
  async outcome(): Promise<RawOutcome> {
    await deadline(this.#reading, "the node to close the raw connection");
    const goaway = this.frames.find((f) => f.type === FrameType.GOAWAY);
    return {
      frames: this.frames,
      goaway: goaway ? decodeGoaway(goaway.body) : null,
      closed: this.closed,
    };
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

/** Who a forged or replayed request claims to come from. */
export interface RawIdentity {
  name: string;
  instance: string;
}

/** A random 16-hex-character instance id. */
export function newInstance(): string {
  return crypto.getRandomValues(new Uint8Array(8)).toHex();
}

/**
 * Builds the exact bytes of a DATA frame a node `from` would send to
 * `target` carrying `messages`, sealed under `networkKey` (optionally with
 * a forged creation time `now`).
 */
export async function sealFrame(
  net: TestNetwork,
  from: RawIdentity,
  target: string,
  messages: Message[],
  options: { now?: number; id?: number; headerOf?: TestNetwork } = {},
): Promise<Uint8Array> {
  const fernet = new Fernet(net.networkKey);
  const wire = await wireNames(options.headerOf ?? net);
  const envelope = encodeEnvelope({ s: from.name, i: from.instance, w: net.network, t: target });
  const plain = encodeBatch(envelope, messages.map((message) => encodeRecord(message)));
  const token = await fernet.encryptBytes(
    plain,
    options.now === undefined ? {} : { now: options.now },
  );
  return encodeFrame(FrameType.DATA, options.id ?? 1, {
    network: encodeName(wire.id, "network"),
    target: encodeName(wire.pseudonyms.of(target), "target"),
    sender: encodeName(wire.pseudonyms.of(from.name), "sender"),
  }, token);
}

/**
 * Builds the DATA frame carrying piece `index` of chunked message `id` from
 * `from` to `target` (docs/PROTOCOL.md, "Chunks: large messages"); with
 * `asks`, it asks the receiver for acknowledgements.
 */
export async function sealPiece(
  net: TestNetwork,
  from: RawIdentity,
  target: string,
  piece: { id: number; index: number; last: boolean; bytes: Uint8Array; asks?: boolean },
): Promise<Uint8Array> {
  const fernet = new Fernet(net.networkKey);
  const wire = await wireNames(net);
  const envelope = encodeEnvelope({
    s: from.name,
    i: from.instance,
    w: net.network,
    t: target,
    ...(piece.asks ? { a: 1 as const } : {}),
  });
  const plain = encodeChunk(envelope, piece.id, piece.index, piece.last, piece.bytes);
  return encodeFrame(FrameType.DATA, piece.id, {
    network: encodeName(wire.id, "network"),
    target: encodeName(wire.pseudonyms.of(target), "target"),
    sender: encodeName(wire.pseudonyms.of(from.name), "sender"),
  }, await fernet.encryptBytes(plain));
}

/** What frame headers of `net` carry instead of names: its network id and pseudonyms. */
export async function wireNames(net: TestNetwork): Promise<NetworkIdentity> {
  return await NetworkIdentity.derive(net.networkKey, net.network);
}

/**
 * The messages of every DATA frame `client` received, opened with `net`'s
 * key, once there are at least `count` (10 s cap; fails early on close);
 * `where` names the connection in the error.
 */
export async function receivedMessages(
  client: { readonly frames: Frame[]; readonly closed: boolean },
  net: TestNetwork,
  count: number,
  where: string,
): Promise<Message[]> {
  const end = Date.now() + HANG_TIMEOUT;
  while (true) {
    const messages: Message[] = [];
    for (const frame of client.frames.filter((f) => f.type === FrameType.DATA)) {
      messages.push(...await openFrame(net, frame));
    }
    if (messages.length >= count) return messages;
    if (client.closed || Date.now() > end) {
      throw new Error(`Expected ${count} messages ${where}, got ${messages.length}`);
    }
    await sleep(10);
  }
}

/** Opens a DATA frame received by a raw client: its messages. */
export async function openFrame(net: TestNetwork, frame: Frame): Promise<Message[]> {
  const plain = await new Fernet(net.networkKey).decryptBytes(frame.body);
  return decodeBatch(plain).messages;
}

// ---- Node processes ----

/** The script of a node in its own process (see its header for arguments). */
export const NODE_PROCESS = new URL("./fixtures/node_process.ts", import.meta.url);

/** A child process with its stdout split into lines. */
export class Spawned implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  readonly lines: string[] = [];
  stderr = "";
  #exited = false;
  readonly status: Promise<Deno.CommandStatus>;
  readonly #pumps: Promise<void>;

  constructor(child: Deno.ChildProcess) {
    this.child = child;
    this.status = child.status.then((status) => {
      this.#exited = true;
      return status;
    });
    this.#pumps = Promise.all([
      this.#pump(child.stdout, (line) => this.lines.push(line)),
      this.#pump(child.stderr, (line) => this.stderr += `${line}\n`),
    ]).then(() => {});
  }

  /** True once the process has exited. */
  get exited(): boolean {
    return this.#exited;
  }

  async #pump(stream: ReadableStream<Uint8Array>, onLine: (line: string) => void): Promise<void> {
    const decoder = new TextDecoder();
    let rest = "";
    for await (const chunk of stream) {
      rest += decoder.decode(chunk, { stream: true });
      let at: number;
      while ((at = rest.indexOf("\n")) >= 0) {
        onLine(rest.slice(0, at));
        rest = rest.slice(at + 1);
      }
    }
    rest += decoder.decode();
    if (rest !== "") onLine(rest);
  }

  /** The first stdout line starting with `prefix` (10 s cap; fails early if the process exits). */
  async line(prefix: string, ms: number = HANG_TIMEOUT): Promise<string> {
    const find = () => this.lines.find((line) => line.startsWith(prefix));
    try {
      await waitFor(() => find() !== undefined || this.#exited, `a line '${prefix}…'`, ms);
    } catch (error) {
      throw new Error(
        `${(error as Error).message}; stdout: ${this.lines.join(" | ")}; stderr: ${this.stderr}`,
      );
    }
    if (find() === undefined) await deadline(this.#pumps, "stdout to drain");
    const found = find();
    if (found === undefined) {
      throw new Error(
        `Process exited before printing '${prefix}…'; stdout: ${
          this.lines.join(" | ")
        }; stderr: ${this.stderr}`,
      );
    }
    return found;
  }

  /** Sends `signal` unless the process already exited. */
  kill(signal: Deno.Signal): void {
    if (this.#exited) return;
    try {
      this.child.kill(signal);
    } catch {
      // Exited meanwhile.
    }
  }

  /** Waits for the exit (10 s cap, then SIGKILL) and for stdout and stderr to drain. */
  async stop(signal: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
    this.kill(signal);
    let status: Deno.CommandStatus;
    try {
      status = await deadline(this.status, `the process to exit after ${signal}`);
    } catch (error) {
      this.kill("SIGKILL");
      await this.status;
      await this.#pumps;
      throw error;
    }
    await this.#pumps;
    return status;
  }

  /** Stops the process with SIGTERM (SIGKILL when it hangs). */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop().catch(() => {});
  }
}

/** Spawns `deno run -A --unstable-net <script> ...args` with `env` added. */
export function spawnNode(
  script: string | URL,
  args: string[] = [],
  env: Record<string, string> = {},
): Spawned {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-net", script.toString(), ...args],
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  return new Spawned(child);
}

/** Options of {@linkcode spawnPeer}. */
export interface PeerProcessOptions {
  name: string;
  net: TestNetwork;
  /** Advert interval of the process node, in ms. */
  interval?: number;
  /** A peer to call `whoami` on once it is discovered; the process prints `result <json>`. */
  call?: string;
  /** UDP advertiser port. */
  advertiserPort?: number;
}

/** A started node process: its name, RPC address and process. */
export interface PeerProcess extends AsyncDisposable {
  name: string;
  address: string;
  process: Spawned;
}

/**
 * Starts `tests/fixtures/node_process.ts` as a node and waits for its
 * `ready <name> <address>` line (10 s cap). The key travels in the
 * environment, not on the command line.
 */
export async function spawnPeer(options: PeerProcessOptions): Promise<PeerProcess> {
  const args = ["--name", options.name, "--network", options.net.network];
  if (options.interval !== undefined) args.push("--interval", String(options.interval));
  if (options.call !== undefined) args.push("--call", options.call);
  if (options.advertiserPort !== undefined) args.push("--port", String(options.advertiserPort));
  const process = spawnNode(NODE_PROCESS, args, { PEERBASE_KEY: options.net.networkKey });
  try {
    const ready = await process.line("ready ");
    const [, name, address] = ready.split(" ");
    return {
      name: name!,
      address: address!,
      process,
      [Symbol.asyncDispose]: () => process[Symbol.asyncDispose](),
    };
  } catch (error) {
    await process.stop("SIGKILL").catch(() => {});
    throw error;
  }
}
