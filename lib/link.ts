/**
 * A link: a framed connection that carries sealed batches of messages.
 *
 * Outgoing messages go to the link's writer (`link_writer.ts`), which seals
 * every run of messages for the same target under one Fernet token (one IV
 * and one MAC per write, not per call), and large messages a piece at a
 * time beside them (`chunk.ts`). Incoming DATA frames are opened (large
 * tokens off the read loop, in order), their envelope checked against the
 * header and the link's pinned peer, pieces put back together, and handed
 * over as a batch.
 *
 * @module
 */

import {
  CloseCode,
  encodeFrameAround,
  encodeName,
  type Frame,
  frameSize,
  FrameType,
} from "./frame.ts";
import {
  batchSize,
  decodeBatch,
  decodeRecord,
  encodeEnvelope,
  encodeRecord,
  type Envelope,
  type Message,
} from "./message.ts";
import {
  type Chunk,
  CHUNK_PAYLOAD_VERSION,
  decodeChunk,
  Reassembly,
  ReassemblyError,
} from "./chunk.ts";
import type { Outgoing } from "./send_queue.ts";
import { LinkWriter } from "./link_writer.ts";
import type { CloseInfo, FramedConnection } from "./connection.ts";
import { DEFAULT_WEBCRYPTO_THRESHOLD, Fernet, openNow, sealNow } from "./fernet.ts";
import type { Pseudonyms } from "./network_identity.ts";
import { ConnectionClosedError, InvalidTokenError, MessageTooLargeError } from "./errors.ts";
import { tokenSkew, type WarningInput } from "./warnings.ts";
import type { HelloGuard } from "./hello_guard.ts";

/** The identity of this node, as links need it; sealed only, never in a frame header. */
export interface LocalIdentity {
  /** The node's name. */
  name: string;
  /** This start's instance id (known once the node has started). */
  instance: string;
  /** The network's name. */
  network: string;
}

/**
 * One network key as links use it: what seals and opens tokens, and what
 * frame headers carry instead of names (docs/PROTOCOL.md, "Frames"). A node
 * holds one, or two while its network's key is rotated.
 */
export interface WireKey {
  /** Seals and opens tokens. */
  fernet: Fernet;
  /** The network id under this key (known once the node has started). */
  id: string;
  /** Names → the pseudonyms frame headers carry under this key. */
  pseudonyms: Pseudonyms;
}

/** A key's header fields for this node, encoded once. */
interface WireHeader {
  key: WireKey;
  network: Uint8Array;
  sender: Uint8Array;
  pseudonym: string;
}

/** A peer's identity as proven by the envelope of an authentic batch. */
export interface PeerIdentity {
  name: string;
  instance: string;
}

/** Options of {@linkcode Link}. */
export interface LinkOptions {
  /** The keys accepted, the current one first. */
  keys: readonly WireKey[];
  /**
   * The key this link seals under and only accepts. Unset (inbound links):
   * the key of the first authentic batch, which pins it; the current one
   * until then.
   */
  sealWith?: WireKey;
  self: LocalIdentity;
  /** Largest frame sent or accepted, in bytes. */
  maxFrameSize: number;
  /** Oldest token accepted, in milliseconds (the replay window). */
  replayWindow: number;
  /** For outbound links: the peer we dialled; its batches must come from it. */
  expected?: { name: string; instance?: string };
  /**
   * Set for a link to a relay (`host:port`): batches come from many senders,
   * so the link is not pinned to one peer.
   */
  relay?: string;
  /** Receives every frame other than DATA (relay control); without it they close the link. */
  onControl?: (frame: Frame) => void;
  /** Next message id of this node instance. */
  nextId: () => number;
  /** Called with each authentic batch, in order. */
  onBatch: (link: Link, envelope: Envelope, messages: Message[]) => void;
  /** Called for each authentic piece that does not complete its message: the peer is there. */
  onHeard?: () => void;
  /**
   * Outbound direct links: open with a hello, an authentic batch with no
   * message, so the peer trusts the link before the first call arrives
   * (docs/PROTOCOL.md, "Memory: bytes received, never bytes declared").
   */
  hello?: boolean;
  /**
   * Accepted direct links, whose connection starts untrusted: the peer has
   * this long to send an authentic batch, ms, or the link is closed; the
   * first one raises the connection's frame limit to `maxFrameSize`.
   */
  proveWithin?: number;
  /** With `proveWithin`: the node's used hellos; the first batch must be a hello not seen before. */
  hellos?: HelloGuard;
  /** Hears what would otherwise fail silently: a token under another key or outside the clock allowance. */
  warn?: (warning: WarningInput) => void;
}

/** How a direct link closes when a large message's pieces fail (docs/PROTOCOL.md, "Chunks"). */
const REASSEMBLY_CLOSE = {
  sequence: CloseCode.MALFORMED,
  size: CloseCode.MALFORMED,
  "too-large": CloseCode.TOO_LARGE,
  full: CloseCode.POLICY,
} as const;

/**
 * Tokens at least this large (bytes) open off the read loop: the WebCrypto
 * threshold, from which `fernet.ts` opens them on a worker thread anyway.
 */
const LARGE_TOKEN = DEFAULT_WEBCRYPTO_THRESHOLD;

/** A sealed-batch connection to one peer. */
export class Link {
  readonly connection: FramedConnection;
  readonly #options: LinkOptions;
  #header: WireHeader;
  #pinned: boolean;
  #peer: PeerIdentity | null = null;
  readonly #writer: LinkWriter;
  /** Large tokens being opened, in order, off the read loop. */
  #lane: Promise<void> = Promise.resolve();
  #laneDepth = 0;
  readonly #closed: Promise<CloseInfo>;
  /** Pieces of large messages arriving on this link; made on the first one. */
  #reassembly: Reassembly | null = null;
  /** Looks at unfinished messages while there are any, so one left waiting is dropped in time. */
  #expiry: ReturnType<typeof setTimeout> | undefined;
  #envelopes = new Map<string, Uint8Array>();
  #targets = new Map<string, Uint8Array>();
  #maxFrameSize: number;
  #proofDeadline: ReturnType<typeof setTimeout> | undefined;

  /** Takes over a framed connection that has not started reading, and starts it. */
  constructor(connection: FramedConnection, options: LinkOptions) {
    this.#options = options;
    this.#maxFrameSize = options.maxFrameSize;
    this.#pinned = options.sealWith !== undefined;
    this.#header = this.#headerFor(options.sealWith ?? options.keys[0]!);
    this.connection = connection;
    const expected = options.expected;
    this.#writer = new LinkWriter(connection, {
      envelope: (to, piece) => this.#envelope(to.target, to.targetInstance, piece),
      fits: (to, plain) => this.#frameSizeFor(to.target, plain) <= this.#maxFrameSize,
      seal: (to, plain) => this.#seal(to, plain),
      nextId: options.nextId,
      hello: options.hello === true && expected !== undefined,
    });
    // Closed once the connection is, and the large tokens it had read are handled.
    this.#closed = connection.closed.then(async (info) => {
      await this.#lane;
      clearTimeout(this.#expiry);
      this.#reassembly?.clear();
      return info;
    });
    connection.start((frame) => this.#onFrame(frame));
    if (options.proveWithin !== undefined) this.#awaitProof(options.proveWithin);
    if (options.hello && expected) this.#enqueue(expected.name, expected.instance, null);
  }

  /** Closes the link unless an authentic batch arrives within `ms`. */
  #awaitProof(ms: number): void {
    this.#proofDeadline = setTimeout(() => {
      void this.close(CloseCode.POLICY, `no authentic hello within ${ms} ms`);
    }, ms);
    void this.connection.closed.then(() => clearTimeout(this.#proofDeadline));
  }

  /** The authenticated peer on the other end, once it has sent a batch. */
  get peer(): PeerIdentity | null {
    return this.#peer;
  }

  /** The relay's `host:port` for a relay link, else undefined. */
  get relay(): string | undefined {
    return this.#options.relay;
  }

  /** The largest frame this link sends, in bytes. */
  get maxFrameSize(): number {
    return this.#maxFrameSize;
  }

  /** Lowers the largest frame this link sends (a relay announced its limit). */
  limitFrameSize(bytes: number): void {
    this.#maxFrameSize = Math.min(this.#options.maxFrameSize, bytes);
  }

  /** True when nothing is queued or being written on this link. */
  get idle(): boolean {
    return this.#writer.idle;
  }

  /** Resolves with the close reason once the link is closed. */
  get closed(): Promise<CloseInfo> {
    return this.#closed;
  }

  /** Closes the link, telling the peer why. */
  close(code: number = CloseCode.NORMAL, reason = "closed"): Promise<CloseInfo> {
    return this.connection.close(code, reason);
  }

  /**
   * Queues one encoded message record for `target`. Throws
   * {@linkcode MessageTooLargeError} at once when the record alone cannot
   * fit in a frame, and {@linkcode ConnectionClosedError} (retriable) once
   * the link is closing.
   */
  send(
    target: string,
    targetInstance: string | undefined,
    record: Uint8Array,
    answer = false,
  ): void {
    if (this.connection.isClosed) {
      const reason = this.connection.closeInfo?.reason ?? "closed";
      throw new ConnectionClosedError(target, `the link is closed (${reason})`);
    }
    const plain = batchSize(this.#envelope(target, targetInstance), [record]);
    const size = this.#frameSizeFor(target, plain);
    if (size > this.#maxFrameSize) throw new MessageTooLargeError(size, this.#maxFrameSize);
    // Answers waiting for a direct caller that does not read count against the node's budget;
    // the node's own calls, and a relay link shared by every peer, do not (cutting them would
    // cut the node off for someone else's doing).
    this.#enqueue(target, targetInstance, record, answer && this.#options.relay === undefined);
  }

  #enqueue(
    target: string,
    targetInstance: string | undefined,
    record: Uint8Array | null,
    charged = false,
  ): void {
    this.#writer.enqueue({ target, targetInstance, record, charged });
  }

  /**
   * `from` acknowledged `n` pieces of large message `id` sent on this link
   * (docs/PROTOCOL.md, "Chunks"): its next pieces may go.
   */
  acked(from: string, id: number, n: number): void {
    this.#writer.acked(from, id, n);
  }

  /** The envelope of a batch, or with `piece` of a piece that asks for acknowledgements. */
  #envelope(target: string, targetInstance: string | undefined, piece = false): Uint8Array {
    const key = `${target}\0${targetInstance ?? ""}${piece ? "\0a" : ""}`;
    let bytes = this.#envelopes.get(key);
    if (!bytes) {
      const { name, instance, network } = this.#options.self;
      const envelope: Envelope = { s: name, i: instance, w: network, t: target };
      if (targetInstance) envelope.ti = targetInstance;
      if (piece) envelope.a = 1;
      bytes = encodeEnvelope(envelope);
      if (this.#envelopes.size > 1024) this.#envelopes.clear();
      this.#envelopes.set(key, bytes);
    }
    return bytes;
  }

  #headerFor(key: WireKey): WireHeader {
    const pseudonym = key.pseudonyms.of(this.#options.self.name);
    return {
      key,
      network: encodeName(key.id, "network"),
      sender: encodeName(pseudonym, "sender"),
      pseudonym,
    };
  }

  /** The target's pseudonym as header bytes, cached (a link talks to few targets). */
  #targetName(target: string): Uint8Array {
    let bytes = this.#targets.get(target);
    if (!bytes) {
      bytes = encodeName(this.#header.key.pseudonyms.of(target), "target");
      if (this.#targets.size > 1024) this.#targets.clear();
      this.#targets.set(target, bytes);
    }
    return bytes;
  }

  /** Size of the frame carrying a batch of `plainSize` bytes of plaintext to `target`. */
  #frameSizeFor(target: string, plainSize: number): number {
    const header = {
      network: this.#header.network,
      target: this.#targetName(target),
      sender: this.#header.sender,
    };
    return frameSize(header, Fernet.tokenSize(plainSize));
  }

  /**
   * Seals `plain` as the token of a DATA frame to `to`'s target; a small
   * token is sealed and framed at once, without a promise turn.
   */
  #seal(to: Outgoing, plain: Uint8Array): Uint8Array | Promise<Uint8Array> {
    const header = {
      network: this.#header.network,
      target: this.#targetName(to.target),
      sender: this.#header.sender,
    };
    // Sealed with room for the frame header in front, so the token is never copied into a frame:
    // sealing and framing a 64 KiB piece took 239-341 µs with the copy, 196-229 µs without.
    const token = sealNow(this.#header.key.fernet, plain, { headroom: frameSize(header, 0) });
    const frame = (token: Uint8Array) =>
      encodeFrameAround(FrameType.DATA, this.#options.nextId(), header, token, this.#maxFrameSize);
    return token instanceof Uint8Array ? frame(token) : token.then(frame);
  }

  #onFrame(frame: Frame): void | Promise<void> {
    if (frame.type !== FrameType.DATA) {
      if (this.#options.onControl) this.#options.onControl(frame);
      else {void this.close(
          CloseCode.MALFORMED,
          `unexpected frame type ${frame.type} on a direct link`,
        );}
      return;
    }
    const header = this.#pinned
      ? (frame.network === this.#header.key.id ? this.#header : null)
      : this.#acceptedHeader(frame.network);
    if (!header && this.#options.relay === undefined) {
      this.#options.warn?.({
        code: "key-mismatch",
        message:
          `A peer at ${this.connection.remoteAddr} sent a frame of another network id: it may use this network's name under another key`,
        source: this.connection.remoteAddr,
      });
    }
    if (!header || (frame.target !== header.pseudonym && frame.target !== "*")) {
      void this.close(
        CloseCode.ROUTING,
        `frame for ${frame.target} of network ${frame.network} reached ${this.#header.pseudonym} of ${this.#header.key.id}`,
      );
      return;
    }
    if (frame.body.length < LARGE_TOKEN || !this.#pinned || this.#proofDeadline !== undefined) {
      return this.#open(frame, header);
    }
    // A large token opens off the event loop: the frames behind it are read and handled meanwhile
    // (small messages overtake), while large ones open one at a time, in order. The reader waits
    // once it holds three: one opening, two waiting.
    const before = this.#lane;
    const opening = this.#lane = this.#afterLane(() => this.#open(frame, header, true));
    this.#laneDepth++;
    void opening.then(() => this.#laneDepth--);
    if (this.#laneDepth > 2) return before;
  }

  /** Runs `work` once every large token read before it is handled; never rejects. */
  #afterLane(work: () => void | Promise<void>): Promise<void> {
    return this.#lane.then(work).catch(() => this.#openFailed());
  }

  /** Something unexpected failed while opening a frame: the link can no longer be trusted. */
  #openFailed(): void {
    void this.close(CloseCode.MALFORMED, "a frame could not be handled");
  }

  /**
   * Opens a DATA frame whose header passed, checks it, and hands over what it
   * carries; a small token is opened at once, without a promise turn.
   */
  #open(frame: Frame, header: WireHeader, inLane = false): void | Promise<void> {
    if (this.connection.isClosed) return;
    let plain: Uint8Array | Promise<Uint8Array>;
    try {
      plain = openNow(header.key.fernet, frame.body, { ttl: this.#options.replayWindow });
    } catch (error) {
      this.#badToken(error, frame);
      return;
    }
    if (plain instanceof Uint8Array) return this.#opened(frame, header, plain, inLane);
    return plain.then(
      (plain) => this.#opened(frame, header, plain, inLane),
      (error) => this.#badToken(error, frame),
    );
  }

  /** A token did not open: the link is closed, naming why. */
  #badToken(error: unknown, frame: Frame): void {
    const why = error instanceof InvalidTokenError ? error.reason : "unreadable token";
    this.#warnToken(why, frame.body);
    this.#reject(
      CloseCode.AUTH,
      `token rejected (${why}); the peers use different network keys or clocks`,
    );
  }

  /** Checks what a token opened to and hands it over. */
  #opened(frame: Frame, header: WireHeader, plain: Uint8Array, inLane: boolean): void {
    let opened: { envelope: Envelope; messages: Message[] } | Chunk;
    try {
      opened = plain[0] === CHUNK_PAYLOAD_VERSION ? decodeChunk(plain) : decodeBatch(plain);
    } catch (error) {
      this.#reject(CloseCode.MALFORMED, (error as Error).message);
      return;
    }
    const problem = this.#checkEnvelope(frame, opened.envelope, header.key);
    if (problem) {
      this.#reject(CloseCode.ROUTING, problem);
      return;
    }
    const batch = "messages" in opened ? opened.messages : null;
    if (this.#proofDeadline !== undefined) {
      const hellos = this.#options.hellos;
      if (batch === null || batch.length > 0 || (hellos && !hellos.first(frame.body))) {
        void this.close(CloseCode.POLICY, "the first frame of a direct link must be a fresh hello");
        return;
      }
      this.#trusted();
    }
    if (!this.#pinned) this.#pin(header);
    if (batch) this.#options.onBatch(this, opened.envelope, batch);
    else if (inLane || this.#laneDepth === 0) this.#onPiece(opened as Chunk);
    else {
      // A small piece (a message's last) opened beside the lane: it joins its message after the
      // pieces read before it.
      this.#lane = this.#afterLane(() => this.#onPiece(opened as Chunk));
    }
  }

  /** A piece of a large message: once its last piece is in, the message is handled as a batch of one. */
  #onPiece(chunk: Chunk): void {
    if (this.connection.isClosed) return;
    const { envelope } = chunk;
    let record: Uint8Array | null;
    try {
      record = this.#pieces().add(
        `${envelope.s}\0${envelope.i}`,
        chunk.id,
        chunk.index,
        chunk.last,
        chunk.bytes,
        performance.now(),
      );
    } catch (error) {
      if (!(error instanceof ReassemblyError)) throw error;
      this.#reject(REASSEMBLY_CLOSE[error.fault], error.message);
      return;
    }
    if (record === null) {
      this.#options.onHeard?.();
      this.#armExpiry();
      if (envelope.a === 1) this.#ack(envelope, chunk.id, chunk.index + 1);
      return;
    }
    let message: Message;
    try {
      message = decodeRecord(record);
    } catch (error) {
      this.#reject(CloseCode.MALFORMED, (error as Error).message);
      return;
    }
    this.#options.onBatch(this, envelope, [message]);
  }

  /** Tells the sender of a piece that asked for it that `n` pieces of message `id` are handled. */
  #ack(envelope: Envelope, id: number, n: number): void {
    if (this.connection.isClosed) return; // The sender's pieces go nowhere either.
    const record = encodeRecord({ k: "ack", id, n });
    this.#writer.enqueue({
      target: envelope.s,
      targetInstance: envelope.i,
      record,
      charged: false,
      ack: true,
    });
  }

  /** While messages are unfinished, drops the ones that got no piece in time, even if nothing arrives. */
  #armExpiry(): void {
    const at = this.#reassembly?.expiresAt ?? null;
    if (this.#expiry !== undefined || this.connection.isClosed || at === null) return;
    this.#expiry = setTimeout(() => {
      this.#expiry = undefined;
      this.#reassembly?.expire(performance.now());
      this.#armExpiry();
    }, Math.max(0, at - performance.now()) + 1);
  }

  /** This link's reassembly, made on the first piece; on a direct link it counts against the budget. */
  #pieces(): Reassembly {
    if (this.#reassembly) return this.#reassembly;
    const maxFrameSize = this.#options.maxFrameSize;
    const reassembly = new Reassembly({ maxMessage: maxFrameSize, maxBytes: 4 * maxFrameSize });
    const account = this.connection.account;
    if (account && this.#options.relay === undefined) {
      reassembly.onBytes = (bytes) => account.setAssembling(bytes);
    }
    return this.#reassembly = reassembly;
  }

  /** Reports a token that did not open for a reason the user can fix (key or clock). */
  #warnToken(reason: string, token: Uint8Array): void {
    const source = this.#options.relay ?? this.connection.remoteAddr;
    if (reason === "bad-mac") {
      this.#options.warn?.({
        code: "key-mismatch",
        message:
          `A token from ${source} does not verify under this network's key: a peer may use this network's name under another key`,
        source,
      });
    } else if (reason === "expired" || reason === "future") {
      const skew = tokenSkew(token);
      this.#options.warn?.({
        code: "clock-skew",
        message: `A token from ${source} is ${Math.round(Math.abs(skew) / 1000)} s ${
          skew > 0 ? "ahead of" : "behind"
        } this node's clock: synchronise the clocks (NTP)`,
        source,
        skew,
      });
    }
  }

  /**
   * A DATA frame failed its checks. A direct link belongs to one peer, which
   * sent it: close the link and say why. A relay link is shared by every
   * member: drop the frame only, so one bad member cannot cut others off.
   */
  #reject(code: number, reason: string): void {
    if (this.#options.relay !== undefined) return;
    void this.close(code, reason);
  }

  /** The header of the accepted key whose network id `id` is, if any. */
  #acceptedHeader(id: string): WireHeader | null {
    if (id === this.#header.key.id) return this.#header;
    const key = this.#options.keys.find((k) => k.id === id);
    return key ? this.#headerFor(key) : null;
  }

  /** The peer sent its first authentic batch: its frames may now be as large as ours. */
  #trusted(): void {
    clearTimeout(this.#proofDeadline);
    this.#proofDeadline = undefined;
    this.connection.trust(this.#options.maxFrameSize);
  }

  /** The first authentic batch came under `header`'s key: the link keeps to it. */
  #pin(header: WireHeader): void {
    this.#pinned = true;
    if (header.key === this.#header.key) return;
    this.#header = header;
    this.#targets.clear();
  }

  #checkEnvelope(frame: Frame, envelope: Envelope, key: WireKey): string | null {
    const { self, expected } = this.#options;
    if (key.pseudonyms.of(envelope.s) !== frame.sender) {
      return `sealed sender ${envelope.s} is not the header's sender ${frame.sender}`;
    }
    if (envelope.w !== self.network) {
      return `sealed network ${envelope.w} differs from ${self.network}`;
    }
    if (envelope.t !== self.name && envelope.t !== "*") {
      return `sealed target ${envelope.t} is not ${self.name}`;
    }
    if (envelope.ti !== undefined && envelope.ti !== self.instance) {
      return "sealed for another instance of this node";
    }
    if (this.#options.relay !== undefined) return null;
    if (this.#peer) {
      if (this.#peer.name !== envelope.s || this.#peer.instance !== envelope.i) {
        return `link belongs to ${this.#peer.name}, batch came from ${envelope.s}`;
      }
      return null;
    }
    if (
      expected &&
      (expected.name !== envelope.s || (expected.instance && expected.instance !== envelope.i))
    ) {
      return `dialled ${expected.name} but ${envelope.s} answered`;
    }
    this.#peer = { name: envelope.s, instance: envelope.i };
    return null;
  }
}
