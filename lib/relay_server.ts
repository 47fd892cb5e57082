/**
 * The relay server: forwards sealed frames between nodes of a network that
 * cannot reach each other directly. It admits a node only with a proof that
 * it holds the network key (without ever holding it), routes on network ids
 * and pseudonyms (never names), charges every limit to the sender that
 * causes the work, forwards each frame the moment it arrives, and records
 * nothing about peers or traffic (docs/PROTOCOL.md, "Relays").
 *
 * @module
 */

import { CloseCode, encodeFrame, encodeName, type Frame, FrameType } from "./frame.ts";
import {
  FramedConnection,
  type FramedConnectionOptions,
  MAX_UNTRUSTED_FRAME,
} from "./connection.ts";
import { BufferBudget } from "./buffer_budget.ts";
import {
  decodeRegister,
  encodeBeat,
  encodeControl,
  NONCE_BYTES,
  type RegisterBody,
  RELAY_PROTOCOL_VERSION,
} from "./relay_protocol.ts";
import { toBase64UrlBare } from "./encoding.ts";
import { RelayAdmission } from "./relay_admission.ts";
import { ProtocolVersionError } from "./errors.ts";
import { formatHostPort, type HostPort } from "./address.ts";
import { acceptLoop, type Listener, type Stream, type Transport } from "./transport.ts";
import type { WebSocketLink } from "./websocket_link.ts";
import { webSocketListener } from "./websocket_server.ts";
import { tcpTransport } from "./tcp_transport.ts";
import { ConnectionGate } from "./connection_gate.ts";
import { delay } from "./delay.ts";
import { FlowControl, type SenderFlow } from "./relay_flow.ts";
import {
  ownHosts,
  type RelayOptions,
  type RelayPlace,
  type ResolvedRelayOptions,
  resolveRelayOptions,
  sourceOf,
} from "./relay_options.ts";
import { newCounters, type RefusalReason, type RelayCounters } from "./relay_metrics.ts";
import { Outbox } from "./relay_outbox.ts";
import type { Claim, Registration, Switchboard, SwitchboardHost } from "./switchboard.ts";
import { LocalSwitchboard } from "./local_switchboard.ts";

export {
  DEFAULT_DRAIN_GRACE,
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
  DEFAULT_MAX_NODES,
  DEFAULT_REGISTER_DEADLINE,
  DEFAULT_RELAY_PORT,
  DEFAULT_RELAY_TIMEOUT,
  type RelayOptions,
} from "./relay_options.ts";

/** Bytes read per call on a relay connection; large frame bodies are read in place. */
const RELAY_READ_SIZE = 1024;
/**
 * First size of a relay connection's read buffer, bytes: an idle member
 * only sends PINGs (19 bytes), and the buffer doubles for a member whose
 * read fills half of it (a REGISTER's body is read in place).
 */
const RELAY_FIRST_READ_SIZE = 128;
/** How often silent nodes and stalled readers are looked for, ms. */
const SWEEP_INTERVAL = 1000;
/** Connections that have not registered yet, from every source together. */
const MAX_UNPROVEN_TOTAL = 8192;
/** How long the relay trusts its list of its own hosts (interfaces change), ms. */
const OWN_HOSTS_TTL = 5000;
/** The PONG the relay answers every PING with. */
const PONG = encodeBeat(FrameType.PONG);

/**
 * Aggregate counters, offered on request and never logged: gauges
 * (connections, nodes, networks) and totals since start (frames and bytes
 * forwarded, refusals by reason, throttles, disconnects). Nothing per node.
 */
export type RelayStats = RelayCounters;

interface Member extends Registration {
  /** Its keepalive interval, ms: silence is judged against it. */
  tick: number;
}

/**
 * A sender on another relay of the cluster: its frames take their own turn
 * in each receiver's outbox, and its bytes queued here are counted.
 */
interface RemoteLane {
  /** `<origin relay>.<network>.<pseudonym>`. */
  readonly key: string;
  /** Its bytes queued here, every receiver together. */
  queued: number;
}

/** Whose frames an outbox queues: a connection of this relay, or another relay. */
type Sender = Client | RemoteLane;

/** Most remote senders whose lanes are kept; past it, idle lanes are let go. */
const MAX_REMOTE_LANES = 1024;

interface Client {
  connection: FramedConnection;
  outbox: Outbox<Sender, Client>;
  member: Member | null;
  /** Where its limits are charged: IPv4 address or IPv6 /64. */
  source: string;
  /** The CHALLENGE nonce sent to this connection; dropped once its REGISTER is verified. */
  nonce: Uint8Array | null;
  /** Set while its REGISTER is being verified. */
  admitting: boolean;
  /** PINGs it sent before registering. */
  earlyPings: number;
  /** Holds one of its source's unproven slots. */
  unproven: boolean;
  lastSeen: number;
  deadline: ReturnType<typeof setTimeout> | undefined;
  /** Its buckets and holds (lib/relay_flow.ts). */
  flow: SenderFlow;
  /** Not read before this time (performance.now()): another relay dropped its frames. */
  holdUntil: number;
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
 * assert.equal(relay.stats.nodes, 0);
 * assert.equal(relay.stats.refusals.proof, 0);
 * ```
 */
export class Relay {
  readonly #options: ResolvedRelayOptions;
  readonly #transport: Transport;
  readonly #lifetime = new AbortController();
  readonly #switchboard: Switchboard<Client>;
  readonly #clients = new Set<Client>();
  readonly #counters = newCounters();
  readonly #flows: FlowControl<Client>;
  readonly #admission: RelayAdmission;
  readonly #gate: ConnectionGate;
  readonly #budget: BufferBudget;
  /** One options object for every connection (each would otherwise keep its own). */
  readonly #connectionOptions: Readonly<FramedConnectionOptions>;
  /** Hears every frame an outbox wrote: one function for every connection. */
  readonly #written = (to: Client, bytes: number, from: Sender | null): void => {
    const client = from && "connection" in from ? from : null;
    if (from && !client) (from as RemoteLane).queued -= bytes;
    client?.connection.account?.addQueued(-bytes);
    this.#flows.written(to, bytes, client);
  };
  readonly #remoteLanes = new Map<string, RemoteLane>();
  /** The largest frame admitted nodes may send: the option, or less in a cluster. */
  #maxFrame: number;
  #nodes = 0;
  #unprovenTotal = 0;
  #listener: Listener | null = null;
  /** The WebSocket listener (`wsPort`), when there is one. */
  #wsListener: Listener | null = null;
  /** This machine's hosts, as admission proofs may name them, and when they were read. */
  #hosts: { hosts: Set<string>; at: number } | null = null;
  #starting: Promise<void> | null = null;
  #accepting: Promise<void> | null = null;
  #acceptingWs: Promise<void> | null = null;
  #sweeper: ReturnType<typeof setInterval> | undefined;
  #lastSweep = performance.now();
  #draining: Promise<void> | null = null;
  #closing: Promise<void> | null = null;

  /** Validates `options`; throws `TypeError`/`RangeError` naming the option. */
  constructor(options: RelayOptions = {}) {
    const o = this.#options = resolveRelayOptions(options);
    this.#transport = options.transport ?? tcpTransport;
    this.#flows = new FlowControl(o, this.#counters, (client) => {
      this.#cut(client, CloseCode.POLICY, "sending too fast for too long");
    });
    const host = this.#switchboardHost();
    this.#switchboard = options.switchboard?.(host) ?? new LocalSwitchboard<Client>(host);
    this.#maxFrame = o.maxFrame;
    this.#admission = new RelayAdmission(o);
    this.#gate = new ConnectionGate(o);
    this.#budget = new BufferBudget(o.bufferBudget);
    this.#connectionOptions = Object.freeze({
      maxFrameSize: MAX_UNTRUSTED_FRAME, // Raised to maxFrame once admitted.
      readSize: RELAY_READ_SIZE,
      initialReadSize: RELAY_FIRST_READ_SIZE,
      budget: this.#budget,
    });
  }

  /** The address the relay listens on; throws before `start()`. */
  get addr(): HostPort {
    if (!this.#listener) throw new Error("Cannot read relay address: call start() first");
    return this.#listener.address;
  }

  /** The address the WebSocket listener (`wsPort`) is bound to, or null without one; throws before `start()`. */
  get wsAddr(): HostPort | null {
    if (!this.#listener) throw new Error("Cannot read relay address: call start() first");
    return this.#wsListener?.address ?? null;
  }

  /** Aggregate counters (never logged; see {@linkcode RelayStats}). */
  get stats(): RelayStats {
    const c = this.#counters;
    return {
      ...c,
      connections: this.#clients.size,
      nodes: this.#nodes,
      networks: this.#switchboard.networks,
      clusterUnrouted: this.#switchboard.unrouted,
      buffered: this.#budget.used,
      refusals: { ...c.refusals },
      disconnects: { ...c.disconnects, budget: this.#budget.cuts },
      acceptFailures: this.#gate.counts.acceptFailures,
      connectionsRefused: { ...this.#gate.counts.refused },
    };
  }

  /** Starts listening. Rejects when the port is taken. Safe to call twice. */
  start(): Promise<void> {
    if (this.#closing) return Promise.reject(new Error("Cannot start relay: it was closed"));
    this.#starting ??= this.#start();
    return this.#starting;
  }

  async #start(): Promise<void> {
    const { port, wsPort } = this.#options;
    await this.#switchboard.start();
    this.#maxFrame = Math.min(this.#options.maxFrame, this.#switchboard.maxFrame);
    this.#listener = await this.#listen(port);
    if (wsPort !== null) {
      try {
        this.#wsListener = webSocketListener(await this.#listen(wsPort, "wsPort"));
      } catch (error) {
        this.#listener.close();
        throw error;
      }
    }
    const signal = this.#lifetime.signal;
    const adopt = (stream: Stream) => this.#adopt(stream);
    this.#accepting = acceptLoop(this.#listener, adopt, signal, this.#gate);
    if (this.#wsListener) {
      this.#acceptingWs = acceptLoop(this.#wsListener, adopt, signal, this.#gate);
    }
    this.#sweeper = setInterval(() => this.#sweep(), SWEEP_INTERVAL);
  }

  /** Binds `port` with the relay's transport; a taken port rejects naming `option`. */
  async #listen(port: number, option = "port"): Promise<Listener> {
    const { hostname } = this.#options;
    try {
      return await this.#transport.listen({ hostname, port }, { gate: this.#gate });
    } catch (cause) {
      const where = formatHostPort({ hostname, port });
      const why =
        cause instanceof Deno.errors.AddrInUse || (cause as { code?: string }).code === "EADDRINUSE"
          ? `the port is already in use (${option})`
          : String(cause);
      throw new Error(`Cannot start relay on ${where}: ${why}`, { cause });
    }
  }

  /**
   * Goes away gracefully: stops accepting, tells every node (DRAIN) to move
   * its calls to other relays within `grace` ms, keeps forwarding meanwhile,
   * and closes once every node has left or the grace has passed. Safe to
   * call twice.
   */
  drain(grace: number = this.#options.drainGrace): Promise<void> {
    this.#draining ??= this.#drain(grace);
    return this.#draining;
  }

  async #drain(grace: number): Promise<void> {
    await this.#starting?.catch(() => {});
    this.#lifetime.abort();
    this.#stopListening();
    await this.#accepting;
    await this.#acceptingWs;
    const bytes = encodeControl(FrameType.DRAIN, "", "", { ms: grace });
    for (const client of this.#clients) {
      if (client.member) client.outbox.control(bytes);
      else this.#cut(client, CloseCode.NORMAL, "relay going away");
    }
    const until = performance.now() + grace;
    const stop = new AbortController();
    while (this.#clients.size > 0 && performance.now() < until && !this.#closing) {
      await delay(Math.min(50, until - performance.now()), stop.signal);
    }
    await this.close();
  }

  /** Stops listening and closes every connection at once. Safe to call twice. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    await this.#starting?.catch(() => {});
    clearInterval(this.#sweeper);
    this.#lifetime.abort();
    this.#stopListening();
    await this.#accepting;
    await this.#acceptingWs;
    await Promise.all(
      [...this.#clients].map((c) => this.#cut(c, CloseCode.NORMAL, "relay shutting down")),
    );
    await this.#switchboard.close();
  }

  #stopListening(): void {
    this.#listener?.close();
    this.#wsListener?.close();
  }

  /** Closes the relay (for `await using`). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #adopt(stream: Stream): void {
    const o = this.#options;
    const nonce = crypto.getRandomValues(new Uint8Array(NONCE_BYTES));
    const connection = new FramedConnection(stream, this.#connectionOptions);
    const client: Client = {
      connection,
      outbox: null!, // Set below: it names the client.
      member: null,
      source: sourceOf(stream.remoteAddress),
      nonce,
      admitting: false,
      earlyPings: 0,
      unproven: false,
      lastSeen: Date.now(),
      deadline: undefined,
      flow: this.#flows.open(),
      holdUntil: 0,
    };
    client.outbox = new Outbox(connection, client, this.#written);
    if ("onPing" in stream) {
      (stream as WebSocketLink).onPing = (retry) => this.#flows.ping(client, retry);
    }
    this.#clients.add(client);
    void connection.closed.then(() => this.#forget(client));
    client.unproven = this.#unprovenTotal < MAX_UNPROVEN_TOTAL &&
      this.#admission.openUnproven(client.source);
    if (client.unproven) this.#unprovenTotal++;
    else {
      this.#refuse(client, CloseCode.POLICY, "too many unregistered connections", "rate");
      connection.start(() => {});
      return;
    }
    connection.start((frame) => this.#onFrame(client, frame));
    client.outbox.control(
      encodeControl(FrameType.CHALLENGE, "", "", {
        v: RELAY_PROTOCOL_VERSION,
        n: toBase64UrlBare(nonce),
      }),
    );
    client.deadline = setTimeout(() => {
      if (!client.member) {
        this.#refuse(client, CloseCode.POLICY, "did not register in time", "deadline");
      }
    }, o.registerDeadline);
  }

  #onFrame(client: Client, frame: Frame): void | Promise<void> {
    if (client.connection.isClosed) return; // Cut while the rest of its read was being handled.
    client.lastSeen = Date.now();
    if (!client.member) {
      if (frame.type === FrameType.REGISTER && !client.admitting) {
        return this.#register(client, frame);
      }
      // A node's first frame is a PING (see docs/PROTOCOL.md); a few are let through.
      if (frame.type === FrameType.PING && !client.admitting && ++client.earlyPings <= 4) return;
      this.#cut(client, CloseCode.POLICY, "register before sending anything else");
      return;
    }
    if (client.holdUntil > 0) {
      const wait = client.holdUntil - performance.now();
      client.holdUntil = 0;
      if (wait > 0) {
        return this.#flows.holdFor(client, wait).then(() =>
          client.connection.isClosed ? undefined : this.#onFrame(client, frame)
        );
      }
    }
    if (client.flow.overShared) {
      // Held for someone else's receiver (or its own): this frame waits too.
      return this.#flows.untilWithinShare(client).then(() =>
        client.connection.isClosed ? undefined : this.#onFrame(client, frame)
      );
    }
    const fanout = frame.type === FrameType.DATA && frame.target === "*";
    const wait = this.#flows.take(client, fanout);
    if (wait > 0) {
      return this.#flows.slowThen(client, wait, fanout, () => this.#handle(client, frame));
    }
    return this.#handle(client, frame);
  }

  #handle(client: Client, frame: Frame): void | Promise<void> {
    switch (frame.type) {
      case FrameType.DATA:
        this.#forward(client, frame);
        return client.flow.overShared ? this.#flows.untilWithinShare(client) : undefined;
      case FrameType.PING:
        client.outbox.control(PONG, "pong"); // One PONG waits at a time, however many PINGs come.
        return;
      case FrameType.PONG:
        return;
      default:
        this.#cut(client, CloseCode.MALFORMED, `unexpected frame type ${frame.type}`);
    }
  }

  /**
   * Cuts a connection with GOAWAY `code`: whatever holds its reads lets go
   * first, so its read loop ends and it is forgotten at once.
   */
  #cut(client: Client, code: number, reason: string): Promise<unknown> {
    client.flow.abort();
    return client.connection.close(code, reason);
  }

  /**
   * Admits a node: checks its proof (it holds the network key and the
   * instance key), then the network, the quotas and the name. The read
   * loop waits for this, so nothing else from the connection is handled
   * meanwhile. Before the proof, every refusal is the same.
   */
  async #register(client: Client, frame: Frame): Promise<void> {
    client.admitting = true;
    if (!this.#admission.mayVerify(client.source)) {
      this.#refuse(client, CloseCode.POLICY, "too many registrations; retry later", "rate");
      return;
    }
    let body: RegisterBody;
    try {
      body = decodeRegister(frame);
    } catch (error) {
      if (error instanceof ProtocolVersionError) {
        this.#refuse(client, CloseCode.VERSION, error.message, "version");
      } else this.#refuse(client, CloseCode.AUTH, "admission proof rejected", "proof");
      return;
    }
    const verdict = await this.#admission.verify(client.nonce!, frame, body, this.#place());
    client.nonce = null; // One REGISTER per connection: it is never needed again.
    if (client.connection.isClosed) return;
    if ("refused" in verdict) {
      const reason = verdict.refused === "proof"
        ? "admission proof rejected"
        : `admission proof names ${verdict.address}, which this relay cannot tell is its own; if nodes reach it by that address, start it with --public-address ${verdict.address} (publicAddresses)`;
      this.#refuse(client, CloseCode.AUTH, reason, "proof");
      return;
    }
    this.#admit(client, frame, body, verdict.instance);
  }

  /** Admits a proven node unless its network, its name or a quota says no. */
  async #admit(client: Client, frame: Frame, body: RegisterBody, instance: string): Promise<void> {
    const { network, sender: name } = frame;
    const served = this.#options.networks;
    if (served.length > 0 && !served.includes(network)) {
      const why = "this relay does not serve that network";
      this.#refuse(client, CloseCode.NETWORK_REFUSED, why, "network");
      return;
    }
    const member: Member = {
      network,
      name,
      instance,
      instanceKey: body.k,
      card: body.card,
      tick: body.tick,
      clientOnly: body.c === 1,
    };
    let claim: Claim;
    try {
      claim = await this.#switchboard.claim(member, client, {
        take: () => this.#takeQuotas(client, network),
        giveBack: () => {
          this.#admission.releaseSlots(client.source, network);
          this.#nodes--;
        },
      });
    } catch {
      // The cluster's backplane failed: the node tries again, or its other relays.
      const why = "this relay cannot register nodes now (its cluster is unavailable); retry";
      this.#refuse(client, CloseCode.FULL, why, "unavailable");
      return;
    }
    if (claim.status !== "claimed") {
      const why = "the name is registered by another live instance of this network";
      if (claim.status === "taken") this.#refuse(client, CloseCode.NAME_TAKEN, why, "name-taken");
      return; // Refused: #takeQuotas said why.
    }
    client.member = member;
    if (client.connection.isClosed) {
      this.#unregister(client, true); // It left while its claim was made.
      return;
    }
    this.#releaseUnproven(client);
    client.connection.trust(this.#maxFrame);
    clearTimeout(client.deadline);
    client.deadline = undefined; // A cleared timer kept would cost every member ~0.4 KiB.
    client.outbox.control(
      encodeControl(FrameType.REGISTERED, network, "", {
        maxFrameSize: this.#maxFrame,
        timeout: this.#options.timeout,
        members: claim.members,
        ...(this.#switchboard.clustered ? { cluster: 1 } : {}),
      }),
    );
  }

  /** How the switchboard reaches this relay's connections. */
  #switchboardHost(): SwitchboardHost<Client> {
    return {
      send: (to, bytes, from) => this.#send(to, bytes, from),
      deliver: (to, bytes, sender) => this.#deliver(to, bytes, sender),
      hold: (sender, ms) => {
        sender.holdUntil = Math.max(sender.holdUntil, performance.now() + ms);
      },
      control: (to, bytes) => to.outbox.control(bytes),
      replaced: (holder) => {
        this.#unregister(holder, false);
        this.#cut(holder, CloseCode.NORMAL, "replaced by a new connection");
      },
    };
  }

  /** Takes a registration slot of the client's source and of the network, or refuses. */
  #takeQuotas(client: Client, networkId: string): boolean {
    if (client.connection.isClosed) return false; // Gone while proven: nothing to claim for.
    if (this.#nodes >= this.#options.maxNodes) {
      this.#refuse(client, CloseCode.FULL, "this relay is full; try another relay", "full");
      return false;
    }
    const full = this.#admission.takeSlots(client.source, networkId);
    if (full === null) {
      this.#nodes++;
      return true;
    }
    const why = full === "address-quota"
      ? `quota: at most ${this.#options.maxPerAddress} registrations per source address`
      : `quota: at most ${this.#options.maxPerNetwork} registrations per network`;
    this.#refuse(client, CloseCode.QUOTA, why, full);
    return false;
  }

  /** Where this relay is, as a proof must name it (its own hosts re-read every few seconds). */
  #place(): RelayPlace {
    const now = performance.now();
    if (!this.#hosts || now - this.#hosts.at > OWN_HOSTS_TTL) {
      this.#hosts = { hosts: ownHosts(this.#options.hostname), at: now };
    }
    return {
      publicAddresses: this.#options.publicAddresses,
      ownHosts: this.#hosts.hosts,
      port: this.#listener?.address.port ?? -1,
      tls: this.#transport.scheme === "tls",
      wsPort: this.#wsListener?.address.port ?? null,
    };
  }

  /** Closes a connection that was not admitted, counting why. */
  #refuse(client: Client, code: number, reason: string, why: RefusalReason): void {
    this.#counters.refusals[why]++;
    this.#cut(client, code, reason);
  }

  #releaseUnproven(client: Client): void {
    if (!client.unproven) return;
    client.unproven = false;
    this.#unprovenTotal--;
    this.#admission.closeUnproven(client.source);
  }

  #forward(client: Client, frame: Frame): void {
    const member = client.member!;
    if (frame.network !== member.network) {
      this.#cut(client, CloseCode.ROUTING, "frames must stay in the registered network");
      return;
    }
    // Stamp the sender from the registration; honest nodes already wrote it.
    const bytes = frame.sender === member.name && frame.raw ? frame.raw : encodeFrame(
      frame.type,
      frame.id,
      {
        network: encodeName(frame.network, "network"),
        target: encodeName(frame.target, "target"),
        sender: encodeName(member.name, "sender"),
      },
      frame.body,
      this.#maxFrame,
    );
    this.#switchboard.route(member, client, frame.target, bytes);
  }

  /**
   * Queues a frame from `from` for `to`; its bytes are charged to `from`,
   * never `to`. False when `to`'s connection is closed.
   */
  #send(to: Client, bytes: Uint8Array, from: Client): boolean {
    if (to.connection.isClosed) return false;
    to.outbox.data(bytes, from);
    this.#counters.framesForwarded++;
    this.#counters.bytesForwarded += bytes.length;
    from.connection.account?.addQueued(bytes.length); // Counted against the sender's budget.
    this.#flows.queued(to, from, bytes.length);
    return true;
  }

  /**
   * Queues a frame from a sender on another relay of the cluster (`sender`:
   * `<origin relay>.<network>.<pseudonym>`) for `to`, unless that sender
   * already has its share queued here or `to`'s whole queue is full: then
   * the frame is dropped and counted, and `to` is never cut for it.
   */
  #deliver(to: Client, bytes: Uint8Array, sender: string): boolean {
    if (to.connection.isClosed) return true;
    const lane = this.#remoteLane(sender);
    if (
      lane.queued + bytes.length > this.#options.senderShare ||
      to.outbox.queued + bytes.length > this.#options.maxBuffered
    ) {
      this.#counters.clusterDropped++;
      return false;
    }
    lane.queued += bytes.length;
    to.outbox.data(bytes, lane);
    this.#counters.framesForwarded++;
    this.#counters.bytesForwarded += bytes.length;
    return true;
  }

  #remoteLane(key: string): RemoteLane {
    let lane = this.#remoteLanes.get(key);
    if (lane) return lane;
    if (this.#remoteLanes.size >= MAX_REMOTE_LANES) {
      for (const [k, idle] of this.#remoteLanes) if (idle.queued <= 0) this.#remoteLanes.delete(k);
    }
    this.#remoteLanes.set(key, lane = { key, queued: 0 });
    return lane;
  }

  /**
   * Drops nodes silent for too long, and receivers whose queued bytes have
   * not moved for a silence timeout (a receiver that reads at any pace is
   * never cut; a flood slows its sender instead).
   */
  #sweep(): void {
    const now = Date.now();
    const mono = performance.now();
    // A late sweep (the event loop was blocked) judges no stalled frame: its bytes may wait unread.
    const late = mono - this.#lastSweep > 2 * SWEEP_INTERVAL;
    this.#lastSweep = mono;
    for (const client of this.#clients) {
      const member = client.member;
      if (!member || client.connection.isClosed) continue;
      if (!late && client.connection.stalledMidFrame(mono) > this.#options.timeout) {
        this.#counters.disconnects.stalledFrame++;
        this.#cut(client, CloseCode.POLICY, "stalled in the middle of a frame");
        continue;
      }
      if (client.outbox.stalledFor(mono) > this.#options.timeout) {
        this.#counters.disconnects.slowReader++;
        this.#cut(client, CloseCode.POLICY, "reading too slowly; disconnected by the relay");
        continue;
      }
      const limit = Math.max(3 * member.tick, this.#options.timeout);
      if (!client.flow.held && now - client.lastSeen > limit) {
        this.#cut(client, CloseCode.POLICY, "silent for too long");
      }
    }
  }

  #forget(client: Client): void {
    clearTimeout(client.deadline);
    client.flow.abort();
    client.outbox.clear((bytes, from) => {
      if ("connection" in from) from.connection.account?.addQueued(-bytes);
      else from.queued -= bytes;
    });
    this.#clients.delete(client);
    this.#releaseUnproven(client);
    this.#flows.forget(client);
    this.#unregister(client, true);
  }

  #unregister(client: Client, announce: boolean): void {
    const member = client.member;
    if (!member) return;
    client.member = null;
    this.#admission.releaseSlots(client.source, member.network);
    if (this.#switchboard.release(member, client, announce && !this.#closing)) this.#nodes--;
  }
}
