/**
 * Idle load on a server: thousands of lightweight raw clients that only
 * register and keep alive, and the server's memory (VmRSS growth per
 * client, once settled) and CPU (utime + stime, % of one core) under them.
 *
 * Two kinds of idle client, both one TCP connection each:
 *
 * - `peerbase`: answers the relay's CHALLENGE with a REGISTER carrying a real
 *   admission proof (network and instance signatures over the nonce, a
 *   sealed member card) and the default keepalive tick (1000 ms), as a node
 *   would, then beats as a node does: a PING every
 *   `keepaliveInterval(tick, relay timeout)` (3.3 s with the relay's default
 *   10 s timeout); answers the relay's PINGs. Nodes are grouped
 *   `IDLE_GROUP` to a network.
 * - `nats`: reads INFO, sends CONNECT and PING, then a PING at the same
 *   interval, answers the server's PINGs.
 * - `echo` (the floor): sends a frame as long as a relay PING at the same
 *   interval to a bare Deno echo server that reads 1 KiB at a time.
 *
 * Clients of every kind dial TLS (`Deno.connectTls`) when given the CA of a
 * TLS server. The bare echo servers, the floors, run with the relays' V8
 * flags and `malloc` settings.
 *
 * Relays run as `deno task relay` runs them, with {@linkcode RELAY_V8_FLAGS}
 * (`PEERBASE_RELAY_V8_FLAGS` overrides them, empty for none, to compare)
 * and {@linkcode RELAY_MALLOC_ENV} (`PEERBASE_RELAY_MALLOC_ENV=0`: without).
 *
 * @module
 */

import { type Frame, FrameDecoder, FrameType } from "../lib/frame.ts";
import {
  decodeChallenge,
  decodeRegistered,
  encodeBeat,
  encodeControl,
} from "../lib/relay_protocol.ts";
import { signRegistration } from "../lib/admission.ts";
import { makeCredentials } from "../lib/credentials.ts";
import { fromBase64Url } from "../lib/encoding.ts";
import { Fernet, generateKey } from "../lib/fernet.ts";
import { keepaliveInterval } from "../lib/relay_client.ts";
import { DEFAULT_RELAY_TIMEOUT } from "../lib/relay_server.ts";
import { DEFAULT_KEEPALIVE_TICK } from "../lib/options.ts";
import { RELAY_MALLOC_ENV, RELAY_V8_FLAGS } from "../relay.ts";
import { LOCK_ARGS } from "./deps.ts";
import { prefixed } from "./floor.ts";
import { type Context, IDLE_GROUP } from "./plan.ts";
import {
  benchScript,
  type Proc,
  readCpuSeconds,
  readRss,
  settledRss,
  sleep,
  spawnCommand,
  type SpawnOptions,
  spawnWorker,
  stopAll,
} from "./proc.ts";
import type { TlsFiles } from "./tls.ts";

/** The kind of idle client. */
export type IdleKind = "peerbase" | "nats" | "echo";

/** Connections opened at once by one idle-client process. */
const CONNECT_CONCURRENCY = 64;

/** Time one idle-client process has to register all its clients, ms (TLS handshakes are slow). */
export const IDLE_REGISTER_MS = 180_000;

const encoder = new TextEncoder();

// ---- Idle clients (inside worker_idle.ts) ----

/** Parameters of {@linkcode openIdleClients}. */
export interface IdleParams {
  kind: IdleKind;
  port: number;
  /** Spread the clients over these ports instead (client `i` dials `ports[i % n]`). */
  ports?: number[];
  count: number;
  /** Distinguishes the names of this process's nodes from other processes'. */
  prefix: string;
  /** Keepalive tick, ms. */
  tick: number;
  /** Dial with TLS, trusting this CA (PEM text); plain TCP without it. */
  ca?: string;
}

/** Opens `count` idle clients; resolves with how many registered (or connected, for NATS). */
export async function openIdleClients(
  params: IdleParams,
  ms = IDLE_REGISTER_MS,
): Promise<number> {
  const end = Date.now() + ms;
  let next = 0;
  let ok = 0;
  const lane = async () => {
    while (next < params.count && Date.now() < end) {
      const index = next++;
      const port = params.ports?.[index % params.ports.length] ?? params.port;
      try {
        const conn = params.ca === undefined
          ? await Deno.connect({ hostname: "127.0.0.1", port })
          : await Deno.connectTls({
            hostname: "127.0.0.1",
            port,
            caCerts: [params.ca],
          });
        if ("setNoDelay" in conn) conn.setNoDelay(true);
        const up = params.kind === "peerbase"
          ? idlePeerbase(conn, { ...params, port }, index)
          : params.kind === "nats"
          ? idleNats(conn, keepaliveInterval(params.tick, DEFAULT_RELAY_TIMEOUT))
          : idleEcho(conn, keepaliveInterval(params.tick, DEFAULT_RELAY_TIMEOUT));
        if (await Promise.race([up, sleep(Math.max(0, end - Date.now())).then(() => false)])) ok++;
      } catch {
        // Counted as not registered.
      }
    }
  };
  await Promise.all(Array.from({ length: CONNECT_CONCURRENCY }, lane));
  return ok;
}

function safeWrite(conn: Deno.Conn, bytes: Uint8Array): void {
  // Idle clients write a few bytes at a time; a short write of them does not happen on loopback.
  conn.write(bytes).catch(() => {});
}

function keepAlive(conn: Deno.Conn, beat: Uint8Array, tick: number): void {
  // Spread the beats of all clients over the tick, as independent nodes would be.
  setTimeout(() => {
    const timer = setInterval(() => safeWrite(conn, beat), tick);
    void readLoopDone.get(conn)?.then(() => clearInterval(timer));
  }, Math.random() * tick);
}

const readLoopDone = new WeakMap<Deno.Conn, Promise<void>>();

/** The network key of this process's idle nodes (one network per group, named apart). */
const IDLE_KEY = generateKey();
const idleFernet = new Fernet(IDLE_KEY);

/** Answers `nonce` with a signed REGISTER of node `name` of `network`, as a node does. */
async function idleRegister(
  network: string,
  name: string,
  nonce: Uint8Array,
  params: IdleParams,
): Promise<Uint8Array> {
  const credentials = await makeCredentials(IDLE_KEY, network, name, idleFernet);
  const body = await signRegistration({
    ...credentials,
    name,
    nonce,
    address: `${params.ca === undefined ? "" : "tls://"}127.0.0.1:${params.port}`,
    tick: params.tick,
    clientOnly: false,
  });
  const { identity } = credentials;
  return encodeControl(FrameType.REGISTER, identity.id, identity.pseudonyms.of(name), body);
}

function idlePeerbase(conn: Deno.Conn, params: IdleParams, index: number): Promise<boolean> {
  const network = `${params.prefix}-g${Math.floor(index / IDLE_GROUP)}`;
  const registered = Promise.withResolvers<boolean>();
  const decoder = new FrameDecoder();
  const pong = encodeBeat(FrameType.PONG);
  const onFrame = (frame: Frame) => {
    if (frame.type === FrameType.CHALLENGE) {
      const nonce = fromBase64Url(decodeChallenge(frame).n);
      idleRegister(network, `n${index}`, nonce, params).then(
        (bytes) => safeWrite(conn, bytes),
        () => registered.resolve(false),
      );
    } else if (frame.type === FrameType.REGISTERED) {
      registered.resolve(true);
      const interval = keepaliveInterval(params.tick, decodeRegistered(frame).timeout);
      keepAlive(conn, encodeBeat(FrameType.PING), interval);
    } else if (frame.type === FrameType.PING) {
      safeWrite(conn, pong);
    } else if (frame.type === FrameType.GOAWAY) {
      registered.resolve(false);
    }
  };
  readLoopDone.set(
    conn,
    readLoop(
      conn,
      (chunk) => decoder.push(chunk).forEach(onFrame),
      () => registered.resolve(false),
    ),
  );
  return registered.promise;
}

function idleNats(conn: Deno.Conn, tick: number): Promise<boolean> {
  const connected = Promise.withResolvers<boolean>();
  const text = new TextDecoder();
  const ping = encoder.encode("PING\r\n");
  const pong = encoder.encode("PONG\r\n");
  let rest = "";
  let greeted = false;
  let up = false;
  const onLine = (line: string) => {
    if (line.startsWith("INFO") && !greeted) {
      greeted = true;
      safeWrite(
        conn,
        encoder.encode('CONNECT {"verbose":false,"pedantic":false,"name":"idle"}\r\nPING\r\n'),
      );
    } else if (line === "PONG" && greeted && !up) {
      up = true;
      connected.resolve(true);
      keepAlive(conn, ping, tick);
    } else if (line === "PING") {
      safeWrite(conn, pong);
    } else if (line.startsWith("-ERR")) {
      connected.resolve(false);
    }
  };
  readLoopDone.set(
    conn,
    readLoop(conn, (chunk) => {
      rest += text.decode(chunk, { stream: true });
      let at: number;
      while ((at = rest.indexOf("\r\n")) >= 0) {
        onLine(rest.slice(0, at));
        rest = rest.slice(at + 2);
      }
    }, () => connected.resolve(false)),
  );
  return connected.promise;
}

function idleEcho(conn: Deno.Conn, tick: number): Promise<boolean> {
  const echoed = Promise.withResolvers<boolean>();
  const beat = prefixed(encodeBeat(FrameType.PING));
  readLoop(conn, () => echoed.resolve(true), () => echoed.resolve(false)).then(
    () => {},
    () => {},
  );
  safeWrite(conn, beat);
  return echoed.promise.then((up) => {
    if (up) keepAlive(conn, beat, tick);
    return up;
  });
}

async function readLoop(
  conn: Deno.Conn,
  onChunk: (chunk: Uint8Array) => void,
  onEnd: () => void,
): Promise<void> {
  const buffer = new Uint8Array(512);
  try {
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) break;
      onChunk(buffer.subarray(0, n));
    }
  } catch {
    // Closed.
  }
  onEnd();
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}

// ---- Bench side ----

/** Memory and CPU of one server under idle clients. */
export interface IdleLoadResult {
  /** Per client count: RSS growth per client, bytes. */
  memory: Record<string, number>;
  /** Per client count: the server's RSS before and after, bytes. */
  rss: Record<string, { before: number; after: number }>;
  /** CPU use with the first count of clients, % of one core, per part of the window. */
  cpu: number[];
  /** Clients per count that did not register. */
  missing: Record<string, number>;
}

/** Starts the server to load; resolves with its process and port. */
export type StartServer = () => Promise<{ proc: Proc; port: number; pid: number }>;

/** Spawns `count` idle clients of `kind` against `port` in one process. */
function spawnIdle(
  ctx: Context,
  kind: IdleKind,
  port: number,
  count: number,
  prefix: string,
  tls?: TlsFiles,
): Proc {
  return spawnWorker(ctx.placement, "worker_idle.ts", [
    "--kind",
    kind,
    "--port",
    String(port),
    "--count",
    String(count),
    "--prefix",
    prefix,
    "--tick",
    String(DEFAULT_KEEPALIVE_TICK),
    ...(tls ? ["--ca", tls.caFile] : []),
  ], { side: "client", label: `idle ${kind} ${prefix}` });
}

/**
 * For every count: a fresh server, its settled RSS, then `count` idle
 * clients spread over client processes, the settled RSS again, and, for the
 * first count, its CPU over the plan's window. With `tls`, the clients
 * dial TLS.
 */
export async function runIdleLoad(
  ctx: Context,
  kind: IdleKind,
  start: StartServer,
  tls?: TlsFiles,
): Promise<IdleLoadResult> {
  const result: IdleLoadResult = { memory: {}, rss: {}, cpu: [], missing: {} };
  for (const [index, count] of ctx.plan.idleCounts.entries()) {
    ctx.log(`${kind}${tls ? " (TLS)" : ""}: ${count} idle clients`);
    const procs: Proc[] = [];
    try {
      const server = await start();
      procs.push(server.proc);
      await sleep(300);
      const before = await settledRss(server.pid, 3000);
      const processes = count >= 1000 ? 2 : 1;
      const share = Math.ceil(count / processes);
      for (let p = 0; p < processes; p++) {
        const n = Math.min(share, count - p * share);
        procs.push(spawnIdle(ctx, kind, server.port, n, `idle${p}`, tls));
      }
      const ready = await Promise.all(
        procs.slice(1).map((c) => c.line("ready ", IDLE_REGISTER_MS + 10_000)),
      );
      const up = ready.reduce((sum, n) => sum + Number(n), 0);
      result.missing[count] = count - up;
      await sleep(ctx.plan.settleMs);
      const after = await settledRss(server.pid, 10_000);
      result.rss[count] = { before, after };
      result.memory[count] = (after - before) / Math.max(1, up);
      if (index === 0) {
        // Parts of at least a second: /proc counts CPU time in 10 ms ticks.
        const seconds = Math.floor(ctx.plan.cpuWindowMs / 1000);
        const parts = Math.max(1, Math.min(ctx.plan.rounds, seconds));
        result.cpu = await cpuOver(server.pid, ctx.plan.cpuWindowMs, parts);
      }
    } finally {
      await stopAll(procs);
    }
  }
  return result;
}

/** CPU of `pid`, % of one core, over `ms` split in `parts`. */
export async function cpuOver(pid: number, ms: number, parts: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < parts; i++) {
    const cpu = await readCpuSeconds(pid);
    const start = performance.now();
    await sleep(ms / parts);
    const seconds = (performance.now() - start) / 1000;
    out.push(((await readCpuSeconds(pid)) - cpu) / seconds * 100);
  }
  return out;
}

/** The V8 flags bench relays run with: `PEERBASE_RELAY_V8_FLAGS`, else {@linkcode RELAY_V8_FLAGS}. */
export function relayV8Flags(): string {
  return Deno.env.get("PEERBASE_RELAY_V8_FLAGS") ?? RELAY_V8_FLAGS;
}

/**
 * The environment bench relays run with: {@linkcode RELAY_MALLOC_ENV}; with
 * `PEERBASE_RELAY_MALLOC_ENV=0` none is added (what the bench inherits still
 * reaches them).
 */
export function relayEnv(): Record<string, string> {
  return Deno.env.get("PEERBASE_RELAY_MALLOC_ENV") === "0" ? {} : { ...RELAY_MALLOC_ENV };
}

/**
 * Spawns `worker_relay.ts` with `args`, as `deno task relay` runs a relay:
 * with {@linkcode relayV8Flags} and {@linkcode relayEnv}.
 */
export function spawnRelayWorker(
  ctx: Context,
  args: string[],
  options: SpawnOptions = {},
): Proc {
  return spawnLikeRelay(ctx, "worker_relay.ts", args, options);
}

/**
 * Spawns the bench script `script` with the relay's runtime settings
 * ({@linkcode relayV8Flags}, {@linkcode relayEnv}): relays, and the bare
 * servers that are their memory floors, so that a ratio compares what each
 * keeps, not how V8 and `malloc` were tuned.
 */
function spawnLikeRelay(
  ctx: Context,
  script: string,
  args: string[],
  options: SpawnOptions = {},
): Proc {
  const flags = relayV8Flags();
  return spawnCommand(ctx.placement, Deno.execPath(), [
    "run",
    "-A",
    "--unstable-net",
    ...(flags === "" ? [] : [`--v8-flags=${flags}`]),
    ...LOCK_ARGS,
    benchScript(script),
    ...args,
  ], {
    label: `${script} ${args.join(" ")}`.slice(0, 120),
    ...options,
    env: { ...relayEnv(), ...options.env },
  });
}

/** The relay under idle nodes; with `tls`, it serves TLS and the nodes dial it so. */
export function runRelayLoad(ctx: Context, tls?: TlsFiles): Promise<IdleLoadResult> {
  return runIdleLoad(ctx, "peerbase", async () => {
    const args = tls ? ["--cert", tls.certFile, "--key", tls.keyFile] : [];
    const proc = spawnRelayWorker(ctx, args, {
      side: "server",
      label: tls ? "relay (TLS, idle load)" : "relay (idle load)",
    });
    try {
      const port = Number(await proc.line("ready "));
      await readRss(proc.pid);
      return { proc, port, pid: proc.pid };
    } catch (error) {
      await proc.stop();
      throw error;
    }
  }, tls);
}

/**
 * The floor: a bare Deno echo server under the same number of idle clients,
 * run with the relay's V8 flags and `malloc` settings. With `tls`, the
 * server serves TLS as a relay does (`TlsTransport`: `node:tls` reads the
 * socket itself, the server takes 1 KiB at a time from what it read, as a
 * relay takes what it needs) and the clients dial it so: the floor of the
 * TLS relay's memory per node. Plain TCP: 1 KiB reads.
 */
export function runEchoLoad(ctx: Context, tls?: TlsFiles): Promise<IdleLoadResult> {
  return runIdleLoad(ctx, "echo", async () => {
    const proc = spawnLikeRelay(ctx, "worker_echo.ts", [
      "--mode",
      "echo",
      "--read-size",
      "1024",
      ...(tls ? ["--cert", tls.certFile, "--key", tls.keyFile] : []),
    ], {
      side: "server",
      label: tls ? "echo (TLS, idle load)" : "echo (idle load)",
    });
    return { proc, port: Number(await proc.ready("ready ")), pid: proc.pid };
  }, tls);
}
