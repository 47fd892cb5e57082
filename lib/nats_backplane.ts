/**
 * The relay cluster's backplane on NATS (lib/backplane.ts): core NATS
 * subjects for frames, JetStream key-value buckets for names and leases,
 * through the npm `nats` client.
 *
 * The client is imported at run time through a variable, so it is in no
 * module graph: a standalone relay needs nothing but Deno, and only a relay
 * started with a cluster loads it (from the npm cache: run it with
 * `--lock=relay/cluster.lock`, see the README's "Relay cluster"). Its types
 * are the few declared here.
 *
 * @module
 */

import type {
  Backplane,
  Bucket,
  BucketChange,
  BucketEntry,
  Subscription,
  Watch,
} from "./backplane.ts";
import { type CheckInfo, DenoNatsTransport } from "./nats_transport.ts";

/** The npm client a clustered relay talks to NATS with. */
export const NATS_MODULE = "npm:nats@2.29.3";
/** Its protocol handler, without its node:net transport. */
export const NATS_INTERNALS: string = `${NATS_MODULE}/lib/nats-base-client/internal_mod.js`;

/**
 * The most bytes queued for a NATS server before publishes are refused (and
 * counted as dropped): a server that reads slower than members send does
 * not grow the relay.
 */
export const MAX_NATS_BACKLOG = 32 * 1024 * 1024;

/** How a relay reaches its cluster's NATS servers. */
export interface NatsBackplaneOptions {
  /** NATS server URLs (`nats://host:port`; `tls://host:port` for TLS). */
  servers: string[];
  /** NATS user (with `password`). */
  user?: string;
  /** NATS password. */
  password?: string;
  /** NATS token. */
  token?: string;
  /** A CA certificate file (PEM) to verify the servers' TLS certificates with. */
  caFile?: string;
  /**
   * Replicas of each bucket (JetStream stream replicas).
   *
   * @default min(3, the number of servers in the NATS cluster)
   */
  replicas?: number;
  /** The connection's name, as NATS monitoring shows it. */
  name?: string;
  /** How long to wait for the first connection, ms. @default 5000 */
  timeout?: number;
}

// The parts of npm `nats` this file uses.
interface NatsMsg {
  readonly subject: string;
  readonly data: Uint8Array;
}
interface NatsSub {
  unsubscribe(): void;
}
interface KvEntry {
  readonly key: string;
  readonly value: Uint8Array;
  readonly revision: number;
  readonly operation: "PUT" | "DEL" | "PURGE";
}
interface KvWatcher extends AsyncIterable<KvEntry> {
  stop(): void;
}
interface Kv {
  get(key: string): Promise<KvEntry | null>;
  create(key: string, value: Uint8Array): Promise<number>;
  update(key: string, value: Uint8Array, version: number): Promise<number>;
  put(key: string, value: Uint8Array): Promise<number>;
  delete(key: string, options: { previousSeq?: number }): Promise<void>;
  keys(): Promise<AsyncIterable<string>>;
  watch(
    options: {
      key: string;
      include?: "updates";
      resumeFromRevision?: number;
      initializedFn: () => void;
    },
  ): Promise<KvWatcher>;
}
interface NatsConnection {
  /** The protocol handler, with the transport it runs on now. */
  readonly protocol?: { transport?: DenoNatsTransport; outbound?: { size(): number } };
  readonly info?: { max_payload: number; connect_urls?: string[] };
  publish(subject: string, data: Uint8Array, options?: { reply: string }): void;
  status(): AsyncIterable<{ type: string }>;
  subscribe(
    subject: string,
    options: { callback: (err: Error | null, msg: NatsMsg) => void },
  ): NatsSub;
  jetstream(options: { timeout: number }): {
    views: { kv(name: string, options: Record<string, unknown>): Promise<Kv> };
  };
  close(): Promise<void>;
}
/** The client's internals: its protocol handler runs on our transport (lib/nats_transport.ts). */
interface NatsInternals {
  setTransportFactory(config: { factory: () => DenoNatsTransport }): void;
  NatsConnectionImpl: { connect(options: Record<string, unknown>): Promise<NatsConnection> };
  checkOptions: CheckInfo;
}

/** A watched entry as a change (a deleted or purged key has no entry). */
function changeOf(entry: KvEntry): BucketChange {
  return {
    key: entry.key,
    entry: entry.operation === "PUT" ? entry : null,
    revision: entry.revision,
  };
}

/**
 * How long a JetStream request (a bucket read or write) may take, ms: a
 * registration waits for its claim, and the node's own registration
 * deadline is 5 s.
 */
const JETSTREAM_TIMEOUT = 2000;

/** How long before a watch that ended on its own starts again, ms. */
const WATCH_RESTART = 1000;

/** A watcher that ends at once (a restart that failed: the next one tries again). */
function emptyWatcher(): KvWatcher {
  return { stop() {}, async *[Symbol.asyncIterator]() {} };
}

/** JetStream's "wrong last sequence": a conditional write lost its race. */
const WRONG_LAST_SEQUENCE = 10071;

function lostRace(error: unknown): boolean {
  const api = (error as { api_error?: { err_code?: number } }).api_error;
  return api?.err_code === WRONG_LAST_SEQUENCE ||
    /wrong last sequence|key exists/i.test(String((error as Error)?.message));
}

/** Runs a conditional write; `null` when it lost its race. */
async function conditional<T>(write: () => Promise<T>): Promise<T | null> {
  try {
    return await write();
  } catch (error) {
    if (lostRace(error)) return null;
    throw error;
  }
}

/** Loads npm `nats`'s internals (a variable keeps it out of every module graph). */
async function importNats(): Promise<NatsInternals> {
  const specifier: string = NATS_INTERNALS;
  try {
    return await import(specifier) as NatsInternals;
  } catch (cause) {
    throw new Error(
      `Cannot load ${NATS_MODULE} for the relay cluster: run the relay with network access once, or with --lock=relay/cluster.lock after caching it (${
        (cause as Error).message
      })`,
      { cause },
    );
  }
}

/**
 * Connects to NATS. Rejects, naming the servers, when none answers within
 * `timeout`.
 *
 * @example A relay cluster's backplane (needs a NATS server with JetStream)
 * ```ts ignore
 * import { connectNats } from "./nats_backplane.ts";
 *
 * const backplane = await connectNats({ servers: ["nats://127.0.0.1:4222"] });
 * const names = await backplane.bucket("peerbase-names");
 * console.log(await names.create("net.a", new Uint8Array([1])));
 * await backplane.close();
 * ```
 */
export async function connectNats(options: NatsBackplaneOptions): Promise<Backplane> {
  const nats = await importNats();
  const timeout = options.timeout ?? 5000;
  let connection: NatsConnection;
  try {
    nats.setTransportFactory({ factory: () => new DenoNatsTransport(nats.checkOptions) });
    connection = await nats.NatsConnectionImpl.connect({
      servers: options.servers,
      noEcho: true,
      name: options.name ?? "peerbase-relay",
      timeout,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      ...(options.user === undefined ? {} : { user: options.user, pass: options.password }),
      ...(options.token === undefined ? {} : { token: options.token }),
      ...tlsOption(options),
    });
  } catch (cause) {
    const code = (cause as { code?: string }).code ?? (cause as Error).message;
    const message = (cause as Error).message;
    const why = /AUTHORIZATION|AUTHENTICATION/i.test(code)
      ? "the NATS servers refused its credentials (user and password, or token)"
      : /certificate|self.signed|verify/i.test(message)
      ? `the NATS server's TLS certificate did not verify (${message}); give the CA that signed it (--cluster-ca, caFile)`
      : `no NATS server answered (${message})`;
    throw new Error(
      `Cannot join the relay cluster at ${options.servers.join(", ")}: ${why}`,
      { cause },
    );
  }
  return new NatsBackplane(connection, options);
}

/**
 * The client's TLS option: asked for (so a server that offers no TLS is
 * refused) when a URL says `tls://` or a CA is given; absent otherwise (TLS
 * is then used when the server offers it).
 */
function tlsOption(options: NatsBackplaneOptions): { tls?: { caFile?: string } } {
  if (options.caFile !== undefined) return { tls: { caFile: options.caFile } };
  return options.servers.some((url) => /^tls:\/\//i.test(url)) ? { tls: {} } : {};
}

class NatsBackplane implements Backplane {
  readonly #connection: NatsConnection;
  readonly #replicas: number;
  #connected = true;
  #closing: Promise<void> | null = null;

  constructor(connection: NatsConnection, options: NatsBackplaneOptions) {
    this.#connection = connection;
    const known = new Set([...options.servers, ...(connection.info?.connect_urls ?? [])]).size;
    this.#replicas = options.replicas ?? Math.min(3, Math.max(1, known));
    void (async () => {
      for await (const { type } of connection.status()) {
        if (type === "disconnect") this.#connected = false;
        else if (type === "reconnect") this.#connected = true;
      }
    })().catch(() => {});
  }

  get maxPayload(): number {
    return this.#connection.info?.max_payload ?? 1024 * 1024;
  }

  /**
   * Sends, unless disconnected (the client would keep every message until it
   * reconnects) or this message would take what waits for the server (in the
   * client's buffer and the transport's queue) over {@linkcode MAX_NATS_BACKLOG}
   * (a message into an empty queue always goes).
   */
  publish(subject: string, bytes: Uint8Array, reply?: string): boolean {
    if (!this.#connected) return false;
    const protocol = this.#connection.protocol;
    const waiting = (protocol?.transport?.backlog ?? 0) + (protocol?.outbound?.size() ?? 0);
    if (waiting > 0 && waiting + bytes.length > MAX_NATS_BACKLOG) return false;
    try {
      this.#connection.publish(subject, bytes, reply === undefined ? undefined : { reply });
      return true;
    } catch {
      return false; // Over the server's max_payload, or closed.
    }
  }

  subscribe(subject: string, message: (subject: string, bytes: Uint8Array) => void): Subscription {
    return this.#connection.subscribe(subject, {
      callback: (error, msg) => {
        if (error) return;
        try {
          message(msg.subject, msg.data);
        } catch {
          // A message the relay cannot handle is dropped; the connection and its reader go on.
        }
      },
    });
  }

  async bucket(name: string, options: { maxAge?: number } = {}): Promise<Bucket> {
    const js = this.#connection.jetstream({ timeout: JETSTREAM_TIMEOUT });
    const kv = await js.views.kv(name, {
      history: 1,
      replicas: this.#replicas,
      ...(options.maxAge === undefined ? {} : { ttl: options.maxAge }),
    });
    return new NatsBucket(kv);
  }

  close(): Promise<void> {
    this.#closing ??= this.#connection.close().catch(() => {});
    return this.#closing;
  }
}

class NatsBucket implements Bucket {
  readonly #kv: Kv;

  constructor(kv: Kv) {
    this.#kv = kv;
  }

  async get(key: string): Promise<BucketEntry | null> {
    const entry = await this.#kv.get(key);
    return entry && entry.operation === "PUT" ? entry : null;
  }

  create(key: string, value: Uint8Array): Promise<number | null> {
    return conditional(() => this.#kv.create(key, value));
  }

  update(key: string, value: Uint8Array, revision: number): Promise<number | null> {
    return conditional(() => this.#kv.update(key, value, revision));
  }

  put(key: string, value: Uint8Array): Promise<number> {
    return this.#kv.put(key, value);
  }

  async delete(key: string, revision?: number): Promise<boolean> {
    const options = revision === undefined ? {} : { previousSeq: revision };
    return (await conditional(async () => (await this.#kv.delete(key, options), true))) !== null;
  }

  async keys(): Promise<string[]> {
    const keys: string[] = [];
    for await (const key of await this.#kv.keys()) keys.push(key);
    return keys;
  }

  /** Reads the current values; fails when no value arrives for the JetStream timeout. */
  async snapshot(filter: string): Promise<BucketChange[]> {
    const changes: BucketChange[] = [];
    const { promise: done, resolve, reject } = Promise.withResolvers<void>();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stalled = () => {
      clearTimeout(timer);
      timer = setTimeout(
        () => reject(new Error(`Cannot read ${filter}: nothing for ${JETSTREAM_TIMEOUT} ms`)),
        JETSTREAM_TIMEOUT,
      );
    };
    stalled();
    const watcher = await this.#kv.watch({ key: filter, initializedFn: resolve });
    const reading = (async () => {
      for await (const entry of watcher) {
        changes.push(changeOf(entry));
        stalled();
      }
    })().catch(() => {});
    try {
      await done;
    } finally {
      clearTimeout(timer);
      watcher.stop();
      await reading;
    }
    return changes;
  }

  /**
   * Watches from now on. A watch that ends without being stopped (its
   * consumer lost with a NATS server) starts again a second later, from the
   * revision after the last one heard, so no change is missed.
   */
  async watch(filter: string, change: (change: BucketChange) => void): Promise<Watch> {
    let stopped = false;
    let now = false;
    let last = 0;
    let watcher = await this.#kv.watch({
      key: filter,
      include: "updates",
      initializedFn: () => {},
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const follow = async (): Promise<void> => {
      while (!stopped) {
        try {
          for await (const entry of watcher) {
            last = Math.max(last, entry.revision);
            change(changeOf(entry));
          }
        } catch {
          // The consumer is gone: start again below.
        }
        if (stopped) return;
        if (!now) await new Promise((resolve) => timer = setTimeout(resolve, WATCH_RESTART));
        now = false;
        if (stopped) return;
        watcher = await this.#kv.watch({
          key: filter,
          ...(last > 0 ? { resumeFromRevision: last + 1 } : { include: "updates" as const }),
          initializedFn: () => {},
        }).catch(() => emptyWatcher()); // The backplane is away: the next round tries again.
      }
    };
    void follow();
    return {
      stop: () => {
        stopped = true;
        clearTimeout(timer);
        watcher.stop();
      },
      restart: () => {
        now = true; // The loop above starts it again, at once.
        watcher.stop();
      },
    };
  }
}
