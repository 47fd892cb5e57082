/**
 * A stream that speaks frames: one read loop feeding a
 * {@linkcode FrameDecoder}, one serialised writer, and an orderly close that
 * tells the other side why (GOAWAY). The stream comes from a
 * {@linkcode Transport}; nothing here knows whether it is TCP, TLS or a
 * WebSocket.
 *
 * @module
 */

import {
  CloseCode,
  decodeGoaway,
  DEFAULT_MAX_FRAME_SIZE,
  encodeFrame,
  encodeGoaway,
  type Frame,
  FrameDecoder,
  FrameType,
} from "./frame.ts";
import { FrameError, ProtocolVersionError } from "./errors.ts";
import type { Stream } from "./transport.ts";
import type { BufferAccount, BufferBudget } from "./buffer_budget.ts";

/** Why a connection closed. */
export interface CloseInfo {
  /** One of {@linkcode CloseCode}. */
  code: number;
  /** Human-readable reason. */
  reason: string;
  /** True when the other side closed (EOF, reset or its GOAWAY). */
  remote: boolean;
}

/** Options of {@linkcode FramedConnection}. */
export interface FramedConnectionOptions {
  /** Largest frame accepted, in bytes. @default DEFAULT_MAX_FRAME_SIZE */
  maxFrameSize?: number;
  /** Most bytes read per `read()` call: the read buffer starts small and doubles up to it. @default 65536 */
  readSize?: number;
  /** First size of the read buffer, bytes (each idle connection holds one). @default 4096 */
  initialReadSize?: number;
  /**
   * Not trusted yet: frames are handled one at a time (the next header is
   * judged only after the frame before it was handled), until
   * {@linkcode FramedConnection.trust}.
   */
  untrusted?: boolean;
  /** The process's budget for buffered bytes: this connection's partial frames count against it. */
  budget?: BufferBudget;
}

/** Receives every frame except GOAWAY, one at a time, in order. */
export type FrameHandler = (frame: Frame) => void | Promise<void>;

const EMPTY_HEADER = {
  network: new Uint8Array(0),
  target: new Uint8Array(0),
  sender: new Uint8Array(0),
};

/** Largest frame read from a connection that has not shown it belongs yet, bytes. */
export const MAX_UNTRUSTED_FRAME = 4096;

/** Time a connection has to show it belongs (a hello, an admitted REGISTER), ms. */
export const TRUST_DEADLINE = 5000;

/** First size of a connection's read buffer, bytes. */
const INITIAL_READ_SIZE = 4096;

/** How long a GOAWAY may take to write before the socket is closed anyway. */
const GOAWAY_DEADLINE = 200;

/**
 * A framed connection over an open {@linkcode Stream}. Nothing is read
 * until {@linkcode FramedConnection.start} names who receives the frames.
 */
export class FramedConnection {
  readonly #conn: Stream;
  readonly #options: FramedConnectionOptions;
  readonly #decoder: FrameDecoder;
  #writing: Promise<void> = Promise.resolve();
  /** Writes started and not yet settled; `#writing` settles with the last. */
  #writes = 0;
  #closeInfo: CloseInfo | null = null;
  #resolveClosed!: (info: CloseInfo) => void;
  #onFrame: FrameHandler | null = null;
  /** The GOAWAY being sent by `close()`; the read loop lets it go out before closing the socket. */
  #goaway: Promise<void> | null = null;
  /** Its bytes in the process's budget, when there is one. */
  readonly account: BufferAccount | null;
  #bytesWritten = 0;
  /** Bytes of the write in progress, counted in `#bytesWritten` once it settles. */
  #inProgress = 0;
  /** Since when the read loop has waited for bytes (`performance.now()`); null while it is not waiting. */
  #waitingSince: number | null = null;

  /** Resolves once the connection is closed and its read loop (if started) has ended. */
  readonly closed: Promise<CloseInfo>;

  /** Takes over `stream`; call {@linkcode start} to begin reading. */
  constructor(stream: Stream, options: FramedConnectionOptions = {}) {
    this.#conn = stream;
    this.#options = options;
    this.#decoder = new FrameDecoder(options.maxFrameSize ?? DEFAULT_MAX_FRAME_SIZE);
    this.#decoder.oneAtATime = options.untrusted ?? false;
    this.account = options.budget?.open(() => {
      void this.close(
        CloseCode.POLICY,
        "holding too many buffered bytes; the process's budget is full",
      );
    }) ?? null;
    const account = this.account;
    if (account) {
      this.#decoder.onBuffered = (bytes) => account.setInput(bytes);
      account.unfilled = () => this.#decoder.unfilled;
    }
    this.closed = new Promise<CloseInfo>((resolve) => this.#resolveClosed = resolve);
    void this.closed.then(() => this.account?.close());
  }

  /**
   * Starts the read loop: every frame but GOAWAY goes to `onFrame`, one at a
   * time. Throws when already started.
   */
  start(onFrame: FrameHandler): void {
    if (this.#onFrame) throw new Error("Cannot start a framed connection twice");
    this.#onFrame = onFrame;
    if (this.#closeInfo) this.#resolveClosed(this.#closeInfo);
    else void this.#readLoop(onFrame);
  }

  /** The other side has shown it belongs: frames up to `maxFrameSize` from the next one on, read at full pace. */
  trust(maxFrameSize: number): void {
    this.#decoder.maxFrameSize = maxFrameSize;
    this.#decoder.oneAtATime = false;
  }

  /** The remote address, as `host:port`. */
  get remoteAddr(): string {
    return this.#conn.remoteAddress;
  }

  /**
   * How long a partial frame has waited for its next byte, ms (0 between
   * frames, and while the reader itself holds off reading): a peer that
   * declares a frame and stops sending it holds memory for nothing, so the
   * owner cuts it after a timeout.
   */
  stalledMidFrame(now: number = performance.now()): number {
    const since = this.#waitingSince;
    return since === null || this.#decoder.idle ? 0 : now - since;
  }

  /** True once closing has begun. */
  get isClosed(): boolean {
    return this.#closeInfo !== null;
  }

  /** Why the connection closed, or null while it is open. */
  get closeInfo(): CloseInfo | null {
    return this.#closeInfo;
  }

  /**
   * Writes bytes after every earlier write. Rejects once the connection is
   * closed, and so does a write still waiting behind another when `close()`
   * is called; a write started before `close()` (with none in progress,
   * even in the same turn) goes out before the GOAWAY, which is always last.
   */
  write(bytes: Uint8Array): Promise<void> {
    // With no write in progress, this one starts at once rather than a promise turn later.
    const next = this.#writes === 0
      ? this.#writeAll(bytes)
      : this.#writing.then(() => this.#writeAll(bytes));
    this.#writes++;
    this.#writing = next.then(this.#wrote, this.#failedWrite);
    return next;
  }

  /** The write in progress went out whole: its bytes count from now on. */
  readonly #wrote = (): void => {
    this.#bytesWritten += this.#inProgress;
    this.#inProgress = 0;
    this.#writes--;
  };

  /** The write in progress failed. */
  readonly #failedWrite = (): void => {
    this.#inProgress = 0;
    this.#writes--;
  };

  /** Starts one write; writes never overlap, so one count of bytes in progress serves. */
  #writeAll(bytes: Uint8Array): Promise<void> {
    if (this.#closeInfo) {
      return Promise.reject(new Error(`Connection is closed: ${this.#closeInfo.reason}`));
    }
    this.#inProgress = bytes.length;
    try {
      return this.#conn.write(bytes);
    } catch (error) {
      return Promise.reject(error); // A stream whose write throws: a rejection all the same.
    }
  }

  /**
   * Bytes handed to the system so far (some may still be on their way to
   * the peer); a write counts once all of it is handed over, so bytes still
   * waiting for room in the system's buffers are not counted yet.
   */
  get bytesWritten(): number {
    return this.#bytesWritten;
  }

  /**
   * Closes the connection: best effort GOAWAY with `code` and `reason`
   * (skipped when the other side already went away), then the socket. Safe
   * to call more than once; resolves when the read loop has ended. From
   * inside `onFrame`, call it without awaiting (the read loop is waiting on
   * `onFrame`).
   */
  async close(code: number = CloseCode.NORMAL, reason = "closed"): Promise<CloseInfo> {
    if (!this.#closeInfo) {
      this.#closeInfo = { code, reason, remote: false };
      this.#goaway = this.#sendGoaway(code, reason);
      await this.#goaway;
      this.#closeSocket();
      if (!this.#onFrame) this.#resolveClosed(this.#closeInfo);
    }
    return await this.closed;
  }

  async #sendGoaway(code: number, reason: string): Promise<void> {
    const frame = encodeFrame(FrameType.GOAWAY, 0, EMPTY_HEADER, encodeGoaway(code, reason));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<void>((resolve) => timer = setTimeout(resolve, GOAWAY_DEADLINE));
    const write = this.#writing.then(() => this.#conn.write(frame)).catch(() => {});
    await Promise.race([write, deadline]);
    clearTimeout(timer);
  }

  #closeSocket(): void {
    try {
      this.#conn.close();
    } catch {
      // Already closed.
    }
  }

  async #readLoop(onFrame: FrameHandler): Promise<void> {
    const most = this.#options.readSize ?? 65536;
    let buffer = new Uint8Array(Math.min(most, this.#options.initialReadSize ?? INITIAL_READ_SIZE));
    const decoder = this.#decoder;
    try {
      while (!this.#closeInfo) {
        // A large frame body is read straight into its own buffer; the small
        // shared buffer serves headers and small frames.
        const direct = decoder.writable();
        const into = direct && direct.length >= buffer.length ? direct : buffer;
        this.#waitingSince = performance.now();
        const n = await this.#conn.read(into);
        this.#waitingSince = null;
        if (n === null) {
          this.#remoteClosed(
            decoder.idle ? "peer closed the connection" : "peer closed mid-frame",
          );
          break;
        }
        let frames = into === buffer ? decoder.push(buffer.subarray(0, n)) : decoder.commit(n);
        for (;;) {
          const handled = this.#handle(frames, onFrame, 0);
          if (!(typeof handled === "boolean" ? handled : await handled)) break;
          const rest = decoder.takeRest(); // Kept back while untrusted: push it before reading on.
          if (!rest) break;
          frames = decoder.push(rest);
        }
        // Memory follows traffic: the buffer doubles for a peer whose read filled half of it or
        // more (at most four times the largest read, twice the bytes received). Not only a full
        // one: a stream that strips its own framing (a WebSocket link) returns fewer bytes than it
        // read, never the whole buffer, and a buffer that never grew took two reads a message.
        if (into === buffer && n * 2 >= buffer.length && buffer.length < most) {
          buffer = new Uint8Array(Math.min(most, buffer.length * 2));
        }
      }
    } catch (error) {
      if (!this.#closeInfo) await this.#failed(error);
    } finally {
      await this.#goaway; // A close() from onFrame: its GOAWAY goes out first (bounded).
      this.#closeSocket();
      this.#resolveClosed(this.#closeInfo!);
    }
  }

  /**
   * Hands `frames` to `onFrame` in order, from index `from`; false once the
   * connection is closing. A promise only when a handler returned one: small
   * frames are handled at once, with no promise turn.
   */
  #handle(frames: Frame[], onFrame: FrameHandler, from: number): boolean | Promise<boolean> {
    for (let i = from; i < frames.length; i++) {
      const frame = frames[i]!;
      if (frame.type === FrameType.GOAWAY) {
        const { code, reason } = decodeGoaway(frame.body);
        this.#remoteClosed(`peer closed the connection: ${reason}`, code);
        return false;
      }
      const handling = onFrame(frame);
      if (handling) {
        const next = () => !this.#closeInfo && this.#handle(frames, onFrame, i + 1);
        return Promise.resolve(handling).then(next);
      }
      if (this.#closeInfo) return false;
    }
    return true;
  }

  #remoteClosed(reason: string, code: number = CloseCode.NORMAL): void {
    this.#closeInfo ??= { code, reason, remote: true };
  }

  async #failed(error: unknown): Promise<void> {
    if (error instanceof ProtocolVersionError) {
      this.#closeInfo = { code: CloseCode.VERSION, reason: error.message, remote: false };
    } else if (error instanceof FrameError) {
      const code = error.message.includes("exceeds the limit")
        ? CloseCode.TOO_LARGE
        : CloseCode.MALFORMED;
      this.#closeInfo = { code, reason: error.message, remote: false };
    } else {
      const message = error instanceof Error ? error.message : String(error);
      this.#closeInfo = { code: CloseCode.NORMAL, reason: message, remote: true };
      return;
    }
    await this.#sendGoaway(this.#closeInfo.code, this.#closeInfo.reason);
  }
}
