/**
 * Incoming dispatch: each message of an authentic batch goes to the part
 * of the node that owns it (requests and cancels to the responder, answers
 * to the calls waiting for them, pings answered at once, relay reports to
 * the relay pool).
 *
 * @module
 */

import type { Link } from "./link.ts";
import { encodeRecord, type Envelope, ErrorCode, type Message, NOT_SERVING } from "./message.ts";
import type { Inbox } from "./router.ts";
import type { Responder } from "./responder.ts";
import type { PendingCalls } from "./calls.ts";
import type { RelayPool } from "./relay_pool.ts";
import type { StatsRecorder } from "./stats.ts";
import { DIRECT } from "./route.ts";

/** The parts a {@linkcode NodeInbox} hands messages to. */
export interface InboxParts<N> {
  responder: Responder<N>;
  pending: PendingCalls;
  relays: RelayPool;
  stats: StatsRecorder;
  /**
   * False for a client-only member: every request is answered with an
   * `unknown-command` error named {@linkcode NOT_SERVING}, and no handler
   * runs. @default true
   */
  serving?: boolean;
}

/** Dispatches the batches of every link of one node. */
export class NodeInbox<N> implements Inbox {
  readonly #parts: InboxParts<N>;

  /** Creates the inbox over `parts`. */
  constructor(parts: InboxParts<N>) {
    this.#parts = parts;
  }

  /** Hands each message of an authentic batch to its owner. */
  deliver(link: Link, envelope: Envelope, messages: Message[]): void {
    const { responder, pending, relays, stats, serving = true } = this.#parts;
    // A request id twice in one batch runs once and is answered once: no caller sends that, and
    // a synchronous handler's answer would otherwise go back for every copy.
    const requests = messages.length > 1 ? new Set<number>() : null;
    for (const message of messages) {
      switch (message.k) {
        case "q":
          if (requests) {
            if (requests.has(message.id)) break;
            requests.add(message.id);
          }
          if (!serving) {
            refuse(link, envelope, message.id);
            break;
          }
          stats.served(link.relay ?? DIRECT);
          responder.serve(link, envelope, message);
          break;
        case "x":
          responder.cancel(envelope, message.id);
          break;
        case "ping":
          link.send(envelope.s, envelope.i, encodeRecord({ k: "pong", id: message.id }));
          break;
        case "relays":
          relays.learn(message.l);
          break;
        case "ack":
          link.acked(envelope.s, message.id, message.n);
          break;
        default:
          pending.settle(envelope.s, message);
      }
    }
  }

  /** A direct link closed: its caller can no longer get answers. */
  linkClosed(link: Link): void {
    this.#parts.responder.abandon(link);
  }
}

/** Answers request `id` as a client-only member does: it serves nothing. */
function refuse(link: Link, envelope: Envelope, id: number): void {
  const record = encodeRecord({
    k: "e",
    id,
    c: ErrorCode.UNKNOWN_COMMAND,
    n: NOT_SERVING,
    m: "this node is a client-only member, which serves nothing",
  });
  try {
    link.send(envelope.s, envelope.i, record);
  } catch {
    // The link is gone: the caller's call fails with it.
  }
}
