/**
 * A WebSocket link as a {@linkcode Stream}, for either side: frames travel
 * one per binary message over the stream beneath (TCP or TLS, Nagle off).
 * The role says which side it is (a client masks what it sends and expects
 * unmasked frames back) and runs the opening handshake:
 * `websocket_server.ts` answers one on a relay's WebSocket port,
 * `websocket_client.ts` sends one for a Deno node. See `docs/PROTOCOL.md`,
 * "Links: TCP, TLS or WebSocket".
 *
 * @module
 */

import { FrameCutter } from "./frame_cutter.ts";
import {
  applyMask,
  Opcode,
  writeWsHeader,
  WsClose,
  WsDecoder,
  type WsEvent,
  wsHeader,
  wsHeaderSize,
} from "./websocket_codec.ts";
import type { Stream } from "./transport.ts";
import { delay } from "./delay.ts";

/** Payloads up to this size go out in one write with their header (one copy, one syscall). */
const COALESCE_LIMIT = 16 * 1024;

/** How long a closing stream waits for its close frame to be written, ms. */
const CLOSE_FRAME_DEADLINE = 200;

/**
 * Masking keys for a client's frames, 4 bytes each from a pool of 4 KiB
 * of `crypto.getRandomValues`: one call per 1024 frames instead of one per
 * frame (which took about 2 µs of each 100 B call in a CPU profile).
 */
class MaskPool {
  readonly #pool = new Uint8Array(4096);
  #at = this.#pool.length;

  /** The next key (a view into the pool: use it before 1024 more are taken). */
  next(): Uint8Array {
    if (this.#at === this.#pool.length) {
      crypto.getRandomValues(this.#pool);
      this.#at = 0;
    }
    return this.#pool.subarray(this.#at, this.#at += 4);
  }
}

/** Which side of a link, and how it opens. */
export interface WebSocketRole {
  /** True on the side that opened the connection: its frames are masked. */
  client: boolean;
  /**
   * The opening handshake on `inner`: resolves to the bytes read past it
   * (often none), or rejects saying why it failed.
   */
  handshake(inner: Stream): Promise<Uint8Array>;
}

/**
 * A WebSocket link over `inner`, once its role's handshake succeeded:
 * reads return the payload of binary messages; writes send each frame as
 * one message, in fragments when it arrives in pieces. Pings are answered,
 * and a violation closes the link with the close code it calls for.
 */
export class WebSocketLink implements Stream {
  readonly remoteAddress: string;
  readonly #inner: Stream;
  readonly #role: WebSocketRole;
  readonly #masks = new MaskPool();
  readonly #decoder: WsDecoder;
  readonly #incoming = new FrameCutter();
  readonly #outgoing = new FrameCutter();
  readonly #events: WsEvent[] = [];
  /** Resolves true once the handshake is answered, false when it failed. */
  readonly #open: Promise<boolean>;
  #resolveOpen!: (open: boolean) => void;
  #handshaking = false;
  /** The handshake's outcome once known; null while it runs (or before it starts). */
  #opened: boolean | null = null;
  /** Bytes that came after the request head, read before any frame. */
  #early: Uint8Array | null = null;
  /** Frames in the message being received. */
  #framesInMessage = 0;
  /** Writes, serialised: data, pongs and the close frame never interleave within a frame. */
  #writing: Promise<void> = Promise.resolve();
  #ended = false;
  #closed = false;
  /** The payload of the pong waiting to be written; a newer ping replaces it. */
  #pong: Uint8Array | null = null;
  /**
   * Asked as each ping is read (`retry`: again, after waiting): the wait in
   * ms before it is answered and anything more is read, 0 to answer now,
   * below 0 to leave it unanswered (the link is being cut). A relay charges
   * pings to the connection's frame rate here; null answers every ping.
   */
  onPing: ((retry: boolean) => number) | null = null;
  /** The wait the first ping over the rate in the last read asked for, ms. */
  #pingWait = 0;
  /** Pings of the last read held back for the rate, each to be paid for before reading on. */
  #pingsWaiting = 0;
  /** The payload of the latest ping over the rate, answered after {@linkcode #pingWait}. */
  #waitingPing: Uint8Array | null = null;
  /** Ends the waits of paced pings when the link ends. */
  readonly #stopped = new AbortController();

  /** Why the handshake failed, once it has. */
  #openError: Error | null = null;

  /** Takes over `inner`; nothing is read or written until {@linkcode open}, a read or a write. */
  constructor(inner: Stream, role: WebSocketRole) {
    this.#inner = inner;
    this.#role = role;
    this.#decoder = new WsDecoder({ masked: !role.client });
    this.remoteAddress = inner.remoteAddress;
    this.#open = new Promise((resolve) => this.#resolveOpen = resolve);
  }

  /** Why the opening handshake failed; null while it has not. */
  get openError(): Error | null {
    return this.#openError;
  }

  /**
   * Runs the opening handshake once (a read or a write starts it too);
   * resolves true once the link is open, false when the handshake failed
   * ({@linkcode openError} says why; the socket is closed).
   */
  open(): Promise<boolean> {
    return this.#start();
  }

  async read(into: Uint8Array): Promise<number | null> {
    if (!await this.#start()) return null;
    while (!this.#ended) {
      const count = await this.#fill(into);
      if (count === null || this.#ended) return null; // Closed meanwhile: pending reads end.
      const delivered = this.#decode(into, count);
      if (this.#ended) {
        // Closed by what was read (a close frame, a violation): no pong is owed, and what was
        // decoded before it still goes to the reader.
        this.#pingsWaiting = 0;
        this.#waitingPing = null;
        return delivered > 0 ? delivered : null;
      }
      if (this.#pingsWaiting > 0 && !await this.#pacePings()) return null;
      if (delivered > 0) return delivered;
    }
    return null;
  }

  /**
   * Holds reading until the pings of the last read may be answered
   * ({@linkcode onPing}), then answers the latest; false when the link
   * ended meanwhile (what was decoded is dropped with it).
   */
  async #pacePings(): Promise<boolean> {
    let wait = this.#pingWait;
    let unpaid = this.#pingsWaiting;
    const payload = this.#waitingPing!;
    this.#pingWait = 0;
    this.#pingsWaiting = 0;
    this.#waitingPing = null;
    // Each ping held back is paid for, one token at a time, before reading goes on.
    while (unpaid > 0 && !this.#ended) {
      if (wait > 0) await delay(wait, this.#stopped.signal);
      if (this.#ended) break;
      wait = this.onPing?.(true) ?? 0;
      if (wait < 0) return false;
      if (wait === 0) unpaid--;
    }
    if (this.#ended) return false;
    this.#answer(payload);
    return true;
  }

  /** Runs the handshake once, on the first read or write; resolves true once the link is open. */
  #start(): Promise<boolean> {
    if (!this.#handshaking) {
      this.#handshaking = true;
      void this.#handshake().then((opened) => {
        this.#opened = opened;
        this.#resolveOpen(opened);
      });
    }
    return this.#open;
  }

  /** Runs the role's handshake; true when the link is open. */
  async #handshake(): Promise<boolean> {
    try {
      const early = await this.#role.handshake(this.#inner);
      if (early.length > 0) this.#early = early;
      return true;
    } catch (error) {
      this.#openError = error as Error;
      this.#ended = true;
      this.#closed = true;
      this.#inner.close();
      return false;
    }
  }

  /** Raw bytes into `into`: the early bytes first, then the socket's. */
  #fill(into: Uint8Array): Promise<number | null> {
    const early = this.#early;
    if (!early) return this.#inner.read(into);
    const count = Math.min(early.length, into.length);
    into.set(early.subarray(0, count));
    this.#early = count < early.length ? early.subarray(count) : null;
    return Promise.resolve(count);
  }

  /**
   * Decodes `into[0, count)` in place: payload bytes are moved to the front;
   * returns how many. Answers pings and closes; ends the stream on a
   * violation.
   */
  #decode(into: Uint8Array, count: number): number {
    const events = this.#events;
    events.length = 0;
    this.#decoder.feed(into, 0, count, events);
    let out = 0;
    for (const event of events) {
      switch (event.kind) {
        case "data":
          if (!this.#checkFrames(into, event.start, event.end)) {
            return this.#fail(WsClose.PROTOCOL_ERROR, "a message must hold exactly one frame");
          }
          into.copyWithin(out, event.start, event.end);
          out += event.end - event.start;
          break;
        case "end":
          if (!this.#incoming.atBoundary || this.#framesInMessage !== 1) {
            return this.#fail(WsClose.PROTOCOL_ERROR, "a message must hold exactly one frame");
          }
          this.#framesInMessage = 0;
          break;
        case "ping": {
          if (this.#pingsWaiting > 0) {
            // Behind a ping over the rate: paid for in turn, once reading may go on.
            this.#pingsWaiting++;
            this.#waitingPing = event.payload;
            break;
          }
          const wait = this.onPing?.(false) ?? 0;
          if (wait < 0) break; // Being cut.
          if (wait > 0) {
            // Over the rate: answered, as the latest ping, once its token is back.
            this.#pingsWaiting = 1;
            this.#pingWait = wait;
            this.#waitingPing = event.payload;
            break;
          }
          this.#answer(event.payload);
          break;
        }
        case "close":
          return this.#fail(WsClose.NORMAL, "", out);
        case "error":
          return this.#fail(event.code, event.reason, out);
      }
    }
    return out;
  }

  /** Follows frame boundaries through one message's payload; false when a second frame starts. */
  #checkFrames(bytes: Uint8Array, start: number, end: number): boolean {
    let at = start;
    while (at < end) {
      if (this.#incoming.atBoundary && ++this.#framesInMessage > 1) return false;
      const next = this.#incoming.next(bytes, at, end);
      if (next < 0) break;
      at = next;
    }
    return true;
  }

  /** Sends a close frame, then ends: reads return what was decoded (`out`), then the end. */
  #fail(code: number, reason: string, out = 0): number {
    if (!this.#ended) {
      this.#ended = true;
      this.#stopped.abort();
      this.#closeWith(code, reason);
    }
    return out;
  }

  async write(bytes: Uint8Array): Promise<void> {
    if (!await this.#start()) throw new Error("Cannot write: the WebSocket handshake failed");
    let at = 0;
    while (at < bytes.length) {
      const first = this.#outgoing.atBoundary;
      const end = this.#outgoing.next(bytes, at, bytes.length);
      const last = end >= 0;
      const upTo = last ? end : bytes.length;
      const payload = bytes.subarray(at, upTo);
      const opcode = first ? Opcode.BINARY : Opcode.CONTINUATION;
      await this.#send(opcode, last, payload);
      at = upTo;
    }
  }

  /**
   * Answers a ping. One pong waits at a time, for the latest ping (RFC 6455,
   * 5.5.3): a peer that pings and never reads costs nothing more.
   */
  #answer(payload: Uint8Array): void {
    if (this.#pong === null) this.#queuePong();
    this.#pong = payload;
  }

  /** Queues the pong; it answers whichever ping is the latest when its turn to be written comes. */
  #queuePong(): void {
    const done = this.#writing.then(() => {
      const payload = this.#pong!;
      this.#pong = null;
      if (this.#closed) return; // No pong after a close frame.
      return this.#writeFrame(Opcode.PONG, true, payload);
    });
    this.#writing = done.catch(() => {});
  }

  /**
   * Queues one WebSocket frame behind earlier writes. A client's frames are
   * masked (a masked copy: the caller's bytes are left alone).
   */
  #send(opcode: number, fin: boolean, payload: Uint8Array): Promise<void> {
    if (this.#closed && opcode !== Opcode.CLOSE) {
      // Nothing follows a close frame (RFC 6455, 5.5.1).
      return Promise.reject(new Error("Cannot write: the WebSocket link is closed"));
    }
    const done = this.#writing.then(() => this.#writeFrame(opcode, fin, payload));
    this.#writing = done.catch(() => {});
    return done;
  }

  /** Writes one WebSocket frame now (callers keep the order through `#writing`). */
  async #writeFrame(opcode: number, fin: boolean, payload: Uint8Array): Promise<void> {
    const mask = this.#role.client ? this.#masks.next() : undefined;
    const size = wsHeaderSize(payload.length, mask !== undefined);
    if (mask || payload.length <= COALESCE_LIMIT) {
      // Header and payload in one buffer, one write: a client must copy to mask anyway.
      const whole = new Uint8Array(size + payload.length);
      writeWsHeader(whole, opcode, fin, payload.length, mask);
      whole.set(payload, size);
      if (mask) applyMask(whole, size, whole.length, mask, 0);
      await this.#inner.write(whole);
    } else {
      await this.#inner.write(wsHeader(opcode, fin, payload.length));
      await this.#inner.write(payload);
    }
  }

  /** Sends a close frame with `code` (and a short reason), then closes the socket. */
  #closeWith(code: number, reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    const text = new TextEncoder().encode(reason.slice(0, 100));
    const body = new Uint8Array(2 + text.length);
    body[0] = code >> 8;
    body[1] = code & 0xff;
    body.set(text, 2);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, CLOSE_FRAME_DEADLINE);
    });
    void Promise.race([this.#send(Opcode.CLOSE, true, body), deadline])
      .catch(() => {})
      .finally(() => {
        clearTimeout(timer);
        this.#inner.close();
      });
  }

  close(): void {
    this.#ended = true;
    this.#stopped.abort();
    if (this.#opened === true) return this.#closeWith(WsClose.NORMAL, "");
    if (this.#closed) return;
    // No link yet: close the socket at once (a pending handshake read ends with it).
    this.#closed = true;
    this.#inner.close();
    if (!this.#handshaking) this.#resolveOpen(false);
  }
}
