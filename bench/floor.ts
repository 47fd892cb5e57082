/**
 * The floors: what bare Deno TCP (and TLS) costs on this machine, with none
 * of peerbase's work. A length-prefixed echo server (u32 length + body: it
 * reads each whole frame, then writes it back, as a node reads a whole
 * frame before answering), a bare forwarding hop (copies bytes both ways
 * between a client and the echo server, as a relay sits between two nodes),
 * and a pipelining client for both.
 *
 * The TLS floors run the same code over the TLS streams peerbase uses: the
 * servers accept with `TlsTransport` (a `node:tls` server, `TCP_NODELAY` on
 * every socket), and clients, the hop's upstream included, dial with
 * `dialTls` (`Deno.connect`, `setNoDelay`, `Deno.startTls`). Over TCP the
 * floors use `Deno.TcpConn` directly, as before; over TLS the library's
 * {@linkcode Stream}.
 *
 * @module
 */

import { dialTls } from "../lib/tls_dial.ts";
import type { Listener, Stream } from "../lib/transport.ts";
import {
  type Call,
  type LatencyPlan,
  type LatencyResult,
  measureLatency,
  measureThroughput,
  type PathResult,
  type ThroughputPlan,
} from "./measure.ts";
import { type Context, FANOUT_PEERS } from "./plan.ts";
import { type Proc, runClient, spawnWorker, stopAll } from "./proc.ts";

/** Size of the length prefix. */
const PREFIX = 4;
/** Largest echo frame accepted: 64 MiB. */
const MAX_FRAME = 64 * 1024 * 1024;
/** Read buffer of servers and clients. */
const READ_SIZE = 65_536;

/** Reads length-prefixed frames from a byte stream (sans-IO). */
export class PrefixDecoder {
  #head = new Uint8Array(PREFIX);
  #headFill = 0;
  #frame: Uint8Array | null = null;
  #fill = 0;

  /** Consumes `chunk`; returns each complete frame, prefix included. */
  push(chunk: Uint8Array): Uint8Array[] {
    const frames: Uint8Array[] = [];
    let at = 0;
    while (at < chunk.length) {
      if (this.#frame === null) {
        const take = Math.min(PREFIX - this.#headFill, chunk.length - at);
        this.#head.set(chunk.subarray(at, at + take), this.#headFill);
        this.#headFill += take;
        at += take;
        if (this.#headFill < PREFIX) break;
        const length = new DataView(this.#head.buffer).getUint32(0);
        if (length > MAX_FRAME) throw new Error(`Echo frame of ${length} bytes is too large`);
        this.#frame = new Uint8Array(PREFIX + length);
        this.#frame.set(this.#head);
        this.#fill = PREFIX;
      }
      const frame = this.#frame;
      const take = Math.min(frame.length - this.#fill, chunk.length - at);
      frame.set(chunk.subarray(at, at + take), this.#fill);
      this.#fill += take;
      at += take;
      if (this.#fill === frame.length) {
        frames.push(frame);
        this.#frame = null;
        this.#headFill = 0;
      }
    }
    return frames;
  }
}

/** `payload` with its u32 length prefix. */
export function prefixed(payload: Uint8Array): Uint8Array {
  const frame = new Uint8Array(PREFIX + payload.length);
  new DataView(frame.buffer).setUint32(0, payload.length);
  frame.set(payload, PREFIX);
  return frame;
}

/**
 * A connection of the floors: a `Deno.TcpConn` over TCP, used as it comes
 * (as the floors always did), or the library's TLS {@linkcode Stream}.
 */
export type Duplex = Deno.TcpConn | Stream;

/** Writes all of `bytes` (a `Deno.Conn` may write part; a `Stream` writes all). */
export async function writeAll(conn: Duplex, bytes: Uint8Array): Promise<void> {
  let at = 0;
  while (at < bytes.length) {
    const n = await conn.write(bytes.subarray(at));
    at += typeof n === "number" ? n : bytes.length - at;
  }
}

function closeQuietly(conn: Duplex): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}

/** Where a floor client or the hop connects: a port on 127.0.0.1, over TLS when `caCerts` are given. */
export interface EchoTarget {
  port: number;
  /** Trusted roots (PEM text) for a TLS server; absent: plain TCP. */
  caCerts?: string[];
}

/** Opens a connection to `target`: TCP with Nagle off, or TLS as peerbase dials it (`dialTls`). */
export async function dialEcho(target: EchoTarget): Promise<Duplex> {
  const address = { hostname: "127.0.0.1", port: target.port };
  if (target.caCerts) return await dialTls(address, { caCerts: target.caCerts });
  const conn = await Deno.connect(address);
  conn.setNoDelay(true);
  return conn;
}

/** A TCP listener (`Deno.TcpListener`) or the library's TLS {@linkcode Listener}. */
export type EchoListener = Deno.TcpListener | Listener;

/** Each connection `listener` accepts (TCP ones with Nagle off), until it closes. */
async function* accepted(listener: EchoListener): AsyncGenerator<Duplex> {
  for (;;) {
    let conn: Duplex;
    try {
      conn = await listener.accept();
    } catch {
      return;
    }
    if ("setNoDelay" in conn) conn.setNoDelay(true);
    yield conn;
  }
}

/**
 * Serves the echo on `listener` until it closes: every frame goes back
 * whole. Each connection reads `readSize` bytes at a time.
 */
export async function serveEcho(listener: EchoListener, readSize = READ_SIZE): Promise<void> {
  for await (const conn of accepted(listener)) void echoConnection(conn, readSize);
}

async function echoConnection(conn: Duplex, readSize: number): Promise<void> {
  const decoder = new PrefixDecoder();
  const buffer = new Uint8Array(readSize);
  let writing = Promise.resolve();
  try {
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) break;
      for (const frame of decoder.push(buffer.subarray(0, n))) {
        writing = writing.then(() => writeAll(conn, frame));
      }
    }
    await writing;
  } catch {
    // The client went away.
  } finally {
    closeQuietly(conn);
  }
}

/** Forwards every connection on `listener` to `target`, copying bytes both ways. */
export async function serveHop(listener: EchoListener, target: EchoTarget): Promise<void> {
  for await (const conn of accepted(listener)) {
    void (async () => {
      let upstream: Duplex;
      try {
        upstream = await dialEcho(target);
      } catch {
        closeQuietly(conn);
        return;
      }
      await Promise.all([copy(conn, upstream), copy(upstream, conn)]);
    })();
  }
}

async function copy(from: Duplex, to: Duplex): Promise<void> {
  const buffer = new Uint8Array(READ_SIZE);
  try {
    for (;;) {
      const n = await from.read(buffer);
      if (n === null) break;
      await writeAll(to, buffer.subarray(0, n));
    }
  } catch {
    // Either side went away.
  }
  closeQuietly(from);
  closeQuietly(to);
}

/**
 * A client of the echo (directly or through the hop): pipelines frames on
 * one connection; answers come back in order.
 */
export class EchoClient implements Disposable {
  readonly #conn: Duplex;
  readonly #waiting: { resolve: () => void; reject: (error: Error) => void }[] = [];
  #writing = Promise.resolve();
  #failed: Error | null = null;

  private constructor(conn: Duplex) {
    this.#conn = conn;
    void this.#readLoop();
  }

  /** Connects to an echo server or hop (over TLS when `target.caCerts` is set). */
  static async connect(target: EchoTarget): Promise<EchoClient> {
    return new EchoClient(await dialEcho(target));
  }

  /** Sends `payload` and resolves when it has come back whole. */
  call(payload: Uint8Array): Promise<void> {
    if (this.#failed) return Promise.reject(this.#failed);
    const frame = prefixed(payload);
    const answered = new Promise<void>((resolve, reject) =>
      this.#waiting.push({ resolve, reject })
    );
    const write = this.#writing.then(() => writeAll(this.#conn, frame));
    this.#writing = write.catch(() => {});
    return Promise.all([write, answered]).then(() => {});
  }

  async #readLoop(): Promise<void> {
    const decoder = new PrefixDecoder();
    const buffer = new Uint8Array(READ_SIZE);
    try {
      for (;;) {
        const n = await this.#conn.read(buffer);
        if (n === null) break;
        for (const _ of decoder.push(buffer.subarray(0, n))) this.#waiting.shift()?.resolve();
      }
    } catch (error) {
      this.#failed = error as Error;
    }
    this.#failed ??= new Error("Echo connection closed");
    for (const waiter of this.#waiting.splice(0)) waiter.reject(this.#failed);
  }

  /** Closes the connection. */
  [Symbol.dispose](): void {
    closeQuietly(this.#conn);
  }
}

// ---- Client side (inside worker_client.ts) ----

/** Parameters of {@linkcode clientEcho}: the echo server or hop, and what to measure. */
export interface EchoParams extends EchoTarget {
  latency: LatencyPlan;
  throughput: ThroughputPlan;
}

/** Latency per size and throughput in flight through one echo connection. */
export async function clientEcho(params: EchoParams): Promise<PathResult> {
  using client = await EchoClient.connect(params);
  const call: Call = (data) => client.call(data);
  return {
    latency: await measureLatency(call, params.latency),
    throughput: await measureThroughput(call, params.throughput),
  };
}

/** Latency of one frame sent to every echo server at `ports` at once. */
export async function clientEchoFanout(
  params: { ports: number[]; latency: LatencyPlan },
): Promise<LatencyResult> {
  const clients = await Promise.all(params.ports.map((port) => EchoClient.connect({ port })));
  try {
    return await measureLatency(
      (data) => Promise.all(clients.map((c) => c.call(data))),
      params.latency,
    );
  } finally {
    for (const client of clients) client[Symbol.dispose]();
  }
}

// ---- Bench side ----

/** The floor figures. */
export interface FloorResult {
  echo: PathResult;
  hop: PathResult;
  /** 100 B to 8 echo processes at once. */
  fanout: LatencyResult;
}

async function spawnEcho(ctx: Context, args: string[]): Promise<{ proc: Proc; port: number }> {
  const proc = spawnWorker(ctx.placement, "worker_echo.ts", args, {
    side: "server",
    label: `echo ${args.join(" ")}`,
  });
  return { proc, port: Number(await proc.ready("ready ")) };
}

/** The TLS floors: the echo and the hop, both over TLS. */
export interface FloorTlsResult {
  echo: PathResult;
  /** Client → hop and hop → echo both TLS: the hop decrypts and encrypts again, as a TLS relay does. */
  hop: PathResult;
}

/** Measures the echo and the hop over TLS, with the run's throw-away certificate. */
export async function runFloorTls(ctx: Context): Promise<FloorTlsResult> {
  const tls = await ctx.tls();
  const serve = ["--cert", tls.certFile, "--key", tls.keyFile];
  const procs: Proc[] = [];
  try {
    const echo = await spawnEcho(ctx, ["--mode", "echo", ...serve]);
    procs.push(echo.proc);
    const plans = { latency: ctx.plan.latency, throughput: ctx.plan.throughput, caCerts: [tls.ca] };
    ctx.log("floor-tls: echo");
    const direct = await runClient<PathResult>(ctx, "echo", { port: echo.port, ...plans });
    const hop = await spawnEcho(ctx, [
      "--mode",
      "hop",
      "--target",
      String(echo.port),
      "--ca",
      tls.caFile,
      ...serve,
    ]);
    procs.push(hop.proc);
    ctx.log("floor-tls: hop");
    const hopped = await runClient<PathResult>(ctx, "echo", { port: hop.port, ...plans });
    return { echo: direct, hop: hopped };
  } finally {
    await stopAll(procs);
  }
}

/** Measures the echo, the hop and the echo fan-out. */
export async function runFloor(ctx: Context): Promise<FloorResult> {
  const procs: Proc[] = [];
  try {
    const echo = await spawnEcho(ctx, ["--mode", "echo"]);
    procs.push(echo.proc);
    const plans = { latency: ctx.plan.latency, throughput: ctx.plan.throughput };
    ctx.log("floor: echo");
    const direct = await runClient<PathResult>(ctx, "echo", { port: echo.port, ...plans });
    const hop = await spawnEcho(ctx, ["--mode", "hop", "--target", String(echo.port)]);
    procs.push(hop.proc);
    ctx.log("floor: hop");
    const hopped = await runClient<PathResult>(ctx, "echo", { port: hop.port, ...plans });
    ctx.log(`floor: echo fan-out to ${FANOUT_PEERS}`);
    const more = await Promise.all(
      Array.from({ length: FANOUT_PEERS - 1 }, () => spawnEcho(ctx, ["--mode", "echo"])),
    );
    procs.push(...more.map((m) => m.proc));
    const fanout = await runClient<LatencyResult>(ctx, "echo-fanout", {
      ports: [echo.port, ...more.map((m) => m.port)],
      latency: { ...ctx.plan.latency, sizes: [100] },
    });
    return { echo: direct, hop: hopped, fanout };
  } finally {
    await stopAll(procs);
  }
}
