/**
 * The relay server: forwards sealed frames between nodes of a network that
 * cannot reach each other directly. It reads only the clear routing header,
 * never holds the network key, forwards each frame the moment it arrives,
 * and records nothing about peers or traffic.
 *
 * @module
 */

import { CloseCode, DEFAULT_MAX_FRAME_SIZE, encodeName, type Frame, FrameType } from "./frame.ts";
import { FramedConnection } from "./connection.ts";
import {
  decodeRegister,
  encodeBeat,
  encodeControl,
  type Member as MemberPair,
} from "./relay_protocol.ts";
import { checkInteger, checkName } from "./validate.ts";
import { formatHostPort, type HostPort } from "./address.ts";
import { acceptLoop, type Listener, type Stream, type Transport } from "./transport.ts";
import { tcpTransport } from "./tcp_transport.ts";
import { encodeFrame } from "./frame.ts";

/** Default relay port. */
export const DEFAULT_RELAY_PORT = 7000;
/** Default silence timeout: a node silent this long (or 3 ticks, if longer) is dropped. */
export const DEFAULT_RELAY_TIMEOUT = 10_000;
/** Default maximum number of registered nodes. */
export const DEFAULT_MAX_NODES = 100_000;
/** Default deadline for a new connection to register, ms. */
export const DEFAULT_REGISTER_DEADLINE = 5000;
/** Bytes read per call on a relay connection; large frame bodies are read in place. */
const RELAY_READ_SIZE = 1024;
/** How often silent nodes are looked for, ms. */
const SWEEP_INTERVAL = 1000;
/** Membership changes are pushed in batches at most this often, ms. */
const MEMBERS_FLUSH_DELAY = 5;

/** Options of {@linkcode Relay}. Times in milliseconds, sizes in bytes. */
export interface RelayOptions {
  /** Address to listen on. @default "0.0.0.0" */
  hostname?: string;
  /** Port to listen on (0: any free port). @default 7000 */
  port?: number;
  /** Networks served; empty or unset: any. */
  networks?: string[];
  /** Silence after which a node is dropped (or 3 of its ticks, if longer). @default 10000 */
  timeout?: number;
  /** Most nodes registered at once. @default 100000 */
  maxNodes?: number;
  /** Largest frame forwarded, length field included. @default 16 MiB */
  maxFrame?: number;
  /** Most bytes queued for one slow reader before it is disconnected. @default 2 × maxFrame */
  maxBuffered?: number;
  /** Time a new connection has to register. @default 5000 */
  registerDeadline?: number;
  /** How connections are accepted. @default plain TCP */
  transport?: Transport;
}

/** Aggregate counters, offered on request and never logged. */
export interface RelayStats {
  /** Registered nodes. */
  nodes: number;
  /** Networks with at least one node. */
  networks: number;
  /** Open connections, registered or not. */
  connections: number;
}

interface Member {
  network: string;
  name: string;
  instance: string;
  tick: number;
  sender: Uint8Array;
  /** Registered with `c: 1`: frames reach it, but it is never listed to others. */
  clientOnly: boolean;
}

interface Client {
  connection: FramedConnection;
  member: Member | null;
  lastSeen: number;
  queued: number;
  deadline: ReturnType<typeof setTimeout> | undefined;
}

interface Network {
  members: Map<string, Client>;
  join: MemberPair[];
  leave: MemberPair[];
  flush: ReturnType<typeof setTimeout> | undefined;
}

/**
 * A relay server.
 *
 * @example Start a relay on a free port and stop it
 * ```ts
 * import { Relay } from "@peerbase/peerbase/relay";
 * import assert from "node:assert/strict";
 *
 * await using relay = new Relay({ hostname: "127.0.0.1", port: 0 });
 * await relay.start();
 * assert.ok(relay.addr.port > 0);
 * assert.deepEqual(relay.stats, { nodes: 0, networks: 0, connections: 0 });
 * ```
 */
export class Relay {
  readonly #options: Required<Omit<RelayOptions, "transport">>;
  readonly #transport: Transport;
  readonly #lifetime = new AbortController();
  readonly #networks = new Map<string, Network>();
  readonly #clients = new Set<Client>();
  #nodes = 0;
  #listener: Listener | null = null;
  #starting: Promise<void> | null = null;
  #accepting: Promise<void> | null = null;
  #sweeper: ReturnType<typeof setInterval> | undefined;
  #closing: Promise<void> | null = null;

  /** Validates `options`; throws `TypeError`/`RangeError`. */
  constructor(options: RelayOptions = {}) {
    const maxFrame = options.maxFrame ?? DEFAULT_MAX_FRAME_SIZE;
    this.#transport = options.transport ?? tcpTransport;
    this.#options = {
      hostname: options.hostname ?? "0.0.0.0",
      port: checkInt(options.port ?? DEFAULT_RELAY_PORT, "port", 0, 65535),
      networks: (options.networks ?? []).map((n) => checkName(n, "network", "relay")),
      timeout: checkInt(options.timeout ?? DEFAULT_RELAY_TIMEOUT, "timeout", 10, 86_400_000),
      maxNodes: checkInt(options.maxNodes ?? DEFAULT_MAX_NODES, "maxNodes", 1, 10_000_000),
      maxFrame: checkInt(maxFrame, "maxFrame", 1024, 2 ** 31),
      maxBuffered: checkInt(options.maxBuffered ?? 2 * maxFrame, "maxBuffered", 1024, 2 ** 40),
      registerDeadline: checkInt(
        options.registerDeadline ?? DEFAULT_REGISTER_DEADLINE,
        "registerDeadline",
        10,
        600_000,
      ),
    };
  }

  /** The address the relay listens on; throws before `start()`. */
  get addr(): HostPort {
    if (!this.#listener) throw new Error("Cannot read relay address: call start() first");
    return this.#listener.address;
  }

  /** Aggregate counters (never logged). */
  get stats(): RelayStats {
    return { nodes: this.#nodes, networks: this.#networks.size, connections: this.#clients.size };
  }

  /** Starts listening. Rejects when the port is taken. Safe to call twice. */
  start(): Promise<void> {
    if (this.#closing) return Promise.reject(new Error("Cannot start relay: it was closed"));
    this.#starting ??= this.#start();
    return this.#starting;
  }

  async #start(): Promise<void> {
    const { hostname, port } = this.#options;
    try {
      this.#listener = await this.#transport.listen({ hostname, port });
    } catch (cause) {
      const where = formatHostPort({ hostname, port });
      const why =
        cause instanceof Deno.errors.AddrInUse || (cause as { code?: string }).code === "EADDRINUSE"
          ? "the port is already in use"
          : String(cause);
      throw new Error(`Cannot start relay on ${where}: ${why}`, { cause });
    }
    this.#accepting = acceptLoop(
      this.#listener,
      (stream) => this.#adopt(stream),
      this.#lifetime.signal,
    );
    this.#sweeper = setInterval(() => this.#sweep(), SWEEP_INTERVAL);
  }

  /** Stops listening and closes every connection. Safe to call twice. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    await this.#starting?.catch(() => {});
    clearInterval(this.#sweeper);
    this.#lifetime.abort();
    this.#listener?.close();
    await this.#accepting;
    for (const network of this.#networks.values()) clearTimeout(network.flush);
    await Promise.all(
      [...this.#clients].map((c) => c.connection.close(CloseCode.NORMAL, "relay shutting down")),
    );
  }

  /** Closes the relay (for `await using`). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #adopt(stream: Stream): void {
    const client: Client = {
      connection: null as unknown as FramedConnection,
      member: null,
      lastSeen: Date.now(),
      queued: 0,
      deadline: undefined,
    };
    client.connection = new FramedConnection(stream, {
      maxFrameSize: this.#options.maxFrame,
      readSize: RELAY_READ_SIZE,
    });
    client.connection.start((frame) => this.#onFrame(client, frame));
    client.deadline = setTimeout(() => {
      if (!client.member) {
        void client.connection.close(CloseCode.POLICY, "did not register in time");
      }
    }, this.#options.registerDeadline);
    this.#clients.add(client);
    void client.connection.closed.then(() => this.#forget(client));
  }

  #onFrame(client: Client, frame: Frame): void {
    client.lastSeen = Date.now();
    if (!client.member) {
      if (frame.type === FrameType.REGISTER) this.#register(client, frame);
      else void client.connection.close(CloseCode.POLICY, "register before sending anything else");
      return;
    }
    switch (frame.type) {
      case FrameType.DATA:
        this.#forward(client, frame);
        return;
      case FrameType.PING:
        this.#send(client, encodeBeat(FrameType.PONG));
        return;
      case FrameType.PONG:
        return;
      default:
        void client.connection.close(CloseCode.MALFORMED, `unexpected frame type ${frame.type}`);
    }
  }

  #register(client: Client, frame: Frame): void {
    const body = decodeRegister(frame);
    const { network: networkName, sender: name } = frame;
    try {
      checkName(name, "name");
      checkName(networkName, "network");
    } catch (error) {
      void client.connection.close(CloseCode.ROUTING, (error as Error).message);
      return;
    }
    const served = this.#options.networks;
    if (served.length > 0 && !served.includes(networkName)) {
      void client.connection.close(
        CloseCode.NETWORK_REFUSED,
        `this relay does not serve network '${networkName}'`,
      );
      return;
    }
    const network = this.#networks.get(networkName);
    const existing = network?.members.get(name);
    if (existing && existing.member!.instance !== body.i) {
      void client.connection.close(
        CloseCode.NAME_TAKEN,
        `name '${name}' is registered by another live node of network '${networkName}'`,
      );
      return;
    }
    const previous = existing?.member ?? undefined;
    if (existing) {
      // The same instance reconnecting: the new connection replaces the old one.
      this.#unregister(existing, false);
      void existing.connection.close(CloseCode.NORMAL, "replaced by a new connection");
    } else if (this.#nodes >= this.#options.maxNodes) {
      void client.connection.close(CloseCode.FULL, "this relay is full; try another relay");
      return;
    }
    clearTimeout(client.deadline);
    const net = this.#networks.get(networkName) ?? this.#network(networkName);
    client.member = {
      network: networkName,
      name,
      instance: body.i,
      tick: body.tick,
      sender: encodeName(name, "name"),
      clientOnly: body.c === 1,
    };
    const members: MemberPair[] = [];
    for (const [other, c] of net.members) {
      if (!c.member!.clientOnly) members.push([other, c.member!.instance]);
    }
    this.#send(
      client,
      encodeControl(FrameType.REGISTERED, networkName, "", {
        maxFrameSize: this.#options.maxFrame,
        timeout: this.#options.timeout,
        members,
      }),
    );
    net.members.set(name, client);
    this.#nodes++;
    this.#reconcile(net, networkName, previous, client.member);
  }

  /**
   * Announces what members see change when `next` registers in place of
   * `previous` (the same instance's earlier registration, if any): a join
   * when it becomes listed, a leave when it becomes hidden (client-only),
   * nothing when its visibility stays. The replaced connection's close
   * then announces nothing: it is no longer registered.
   */
  #reconcile(net: Network, networkName: string, previous: Member | undefined, next: Member): void {
    const wasListed = previous !== undefined && !previous.clientOnly;
    if (wasListed === !next.clientOnly) return;
    this.#announce(net, networkName, wasListed ? "leave" : "join", [next.name, next.instance]);
  }

  #network(name: string): Network {
    const network: Network = { members: new Map(), join: [], leave: [], flush: undefined };
    this.#networks.set(name, network);
    return network;
  }

  /**
   * Queues a membership change and schedules one push for the batch.
   * Nodes apply a batch's leaves before its joins, so a leave of a member
   * whose join is still queued first pushes the queued batch (else the
   * member would stay listed: a ghost).
   */
  #announce(network: Network, name: string, kind: "join" | "leave", member: MemberPair): void {
    if (kind === "leave" && network.join.some(([n, i]) => n === member[0] && i === member[1])) {
      this.#push(network, name);
    }
    network[kind].push(member);
    network.flush ??= setTimeout(() => {
      this.#push(network, name);
      if (network.members.size === 0) this.#networks.delete(name);
    }, MEMBERS_FLUSH_DELAY);
  }

  /** Pushes the queued membership changes of `network` (named `name`) to its members. */
  #push(network: Network, name: string): void {
    clearTimeout(network.flush);
    network.flush = undefined;
    const body = { join: network.join, leave: network.leave };
    network.join = [];
    network.leave = [];
    const bytes = encodeControl(FrameType.MEMBERS, name, "", body);
    for (const client of network.members.values()) this.#send(client, bytes);
  }

  #forward(client: Client, frame: Frame): void {
    const member = client.member!;
    if (frame.network !== member.network) {
      void client.connection.close(CloseCode.ROUTING, "frames must stay in the registered network");
      return;
    }
    const network = this.#networks.get(member.network);
    if (!network) return;
    // Stamp the sender from the registration; honest nodes already wrote it.
    const bytes = frame.sender === member.name && frame.raw ? frame.raw : encodeFrame(
      frame.type,
      frame.id,
      {
        network: encodeName(frame.network, "network"),
        target: encodeName(frame.target, "target"),
        sender: member.sender,
      },
      frame.body,
      this.#options.maxFrame,
    );
    if (frame.target === "*") {
      for (const other of network.members.values()) {
        if (other !== client && !other.member!.clientOnly) this.#send(other, bytes);
      }
      return;
    }
    const target = network.members.get(frame.target);
    if (target) this.#send(target, bytes);
  }

  /** Writes to a client, disconnecting it when it reads too slowly. */
  #send(client: Client, bytes: Uint8Array): void {
    if (client.connection.isClosed) return;
    if (client.queued + bytes.length > this.#options.maxBuffered) {
      void client.connection.close(
        CloseCode.POLICY,
        "reading too slowly; disconnected by the relay",
      );
      return;
    }
    client.queued += bytes.length;
    client.connection.write(bytes).then(
      () => client.queued -= bytes.length,
      () => {},
    );
  }

  #sweep(): void {
    const now = Date.now();
    for (const client of this.#clients) {
      const member = client.member;
      if (!member) continue;
      const limit = Math.max(3 * member.tick, this.#options.timeout);
      if (now - client.lastSeen > limit) {
        void client.connection.close(CloseCode.POLICY, "silent for too long");
      }
    }
  }

  #forget(client: Client): void {
    clearTimeout(client.deadline);
    this.#clients.delete(client);
    this.#unregister(client, true);
  }

  #unregister(client: Client, announce: boolean): void {
    const member = client.member;
    if (!member) return;
    client.member = null;
    const network = this.#networks.get(member.network);
    if (!network || network.members.get(member.name) !== client) return;
    network.members.delete(member.name);
    this.#nodes--;
    if (announce && !this.#closing && !member.clientOnly) {
      this.#announce(network, member.network, "leave", [member.name, member.instance]);
    } else if (network.members.size === 0 && !network.flush) {
      this.#networks.delete(member.network);
    }
  }
}

function checkInt(value: unknown, what: string, min: number, max: number): number {
  return checkInteger(value, what, min, max, "relay");
}
