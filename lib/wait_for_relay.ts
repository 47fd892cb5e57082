/**
 * Waiting until one of a node's relays is up (`node.waitForRelay()`), as
 * `waitForPeer()` waits for peers: woken by `relayup` events (no polling),
 * bounded by a timeout, stopped by a signal or by the node closing.
 *
 * @module
 */

import type { RelayInfo } from "./relay_pool.ts";
import type { RelayRefusal, RelayStatus } from "./events.ts";
import { checkTimeout, DEFAULT_WAIT_TIMEOUT, type WaitOptions } from "./caller.ts";
import { NoRelayError } from "./errors.ts";

/** Most relays a timeout's message names (and refusal reasons it keeps) before "and N more". */
const MAX_NAMED_RELAYS = 8;

/** What {@linkcode waitForRelay} needs from its node. */
export interface RelayWaitParts {
  /** The node's name, for errors. */
  node: string;
  /** The node's `servers` (canonical addresses). With none and no relay up, it refuses at once. */
  servers: readonly string[];
  /** Fires `relayup` and `relayrefused` (the node itself). */
  events: EventTarget;
  /** The relays up now as `relayup` means it: registered, their members known. */
  up: () => RelayInfo[];
  /** Every relay the node knows now, maintained and learned. */
  relays: () => RelayInfo[];
  /** Aborts (with `NodeClosedError`) once the node begins to close. */
  closing?: AbortSignal;
}

/**
 * Resolves with the first relay that is up as `relayup` means it (at once
 * when one already is). Rejects with {@linkcode NoRelayError} naming the
 * relays it waited for when `timeout` passes first (default
 * {@linkcode DEFAULT_WAIT_TIMEOUT}), or at once when the node has no
 * `servers` and no relay is up; with the signal's reason on abort; with
 * `NodeClosedError` once `closing` aborts; with `TypeError`/`RangeError`
 * for bad options. Every listener and timer is gone when it settles.
 *
 * @example Wait for a relay started after the node
 * ```ts
 * import { generateKey, Node } from "@peerbase/peerbase";
 * import { Relay } from "@peerbase/peerbase/relay";
 * import assert from "node:assert/strict";
 *
 * await using relay = new Relay({ hostname: "127.0.0.1", port: 0 });
 * await relay.start();
 * const address = `127.0.0.1:${relay.addr.port}`;
 * await using node = new Node({
 *   name: "gw", network: `doc-${crypto.randomUUID().slice(0, 8)}`, networkKey: generateKey(),
 *   useLocal: false, servers: [address],
 * });
 * const waiting = node.waitForRelay({ timeout: 10_000 }); // before start(): it waits
 * await node.start();
 * assert.deepEqual(await waiting, { address, up: true, maintained: true });
 * ```
 */
export async function waitForRelay(
  parts: RelayWaitParts,
  options: WaitOptions = {},
): Promise<RelayInfo> {
  if (typeof options !== "object" || options === null) {
    throw new TypeError("Cannot wait for a relay: options must be an object");
  }
  const { signal } = options;
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new TypeError("Cannot wait for a relay: signal must be an AbortSignal");
  }
  const limit = options.timeout === undefined ? DEFAULT_WAIT_TIMEOUT : options.timeout;
  const timeout = checkTimeout(limit, "Cannot wait for a relay");
  const { closing } = parts;
  const stop = signal && closing ? AbortSignal.any([signal, closing]) : signal ?? closing;
  stop?.throwIfAborted();
  const first = parts.up()[0];
  if (first) return first;
  if (parts.servers.length === 0) throw new NoRelayError(parts.node, [], 0);
  return await new Promise<RelayInfo>((resolve, reject) => {
    /** The last refusal each relay reported during the wait, for the timeout's message. */
    const refusals = new Map<string, string>();
    const done = () => {
      clearTimeout(timer);
      stop?.removeEventListener("abort", aborted);
      parts.events.removeEventListener("relayup", up);
      parts.events.removeEventListener("relayrefused", refused);
    };
    const up = (event: Event) => {
      const relays = parts.up();
      if (relays.length === 0) return; // Down again before this listener ran.
      const { relay } = (event as CustomEvent<RelayStatus>).detail;
      done();
      resolve(relays.find((info) => info.address === relay) ?? relays[0]!);
    };
    const refused = (event: Event) => {
      const { relay, reason } = (event as CustomEvent<RelayRefusal>).detail;
      if (refusals.has(relay) || refusals.size < MAX_NAMED_RELAYS) refusals.set(relay, reason);
    };
    const aborted = () => {
      done();
      reject(stop!.reason);
    };
    const timer = Number.isFinite(timeout)
      ? setTimeout(() => {
        done();
        reject(timedOut(parts, timeout, refusals));
      }, timeout)
      : undefined;
    stop?.addEventListener("abort", aborted, { once: true });
    parts.events.addEventListener("relayup", up);
    parts.events.addEventListener("relayrefused", refused);
  });
}

/** The error of a wait that timed out: each relay waited for, with its last refusal if any. */
function timedOut(
  parts: RelayWaitParts,
  timeout: number,
  refusals: Map<string, string>,
): NoRelayError {
  const relays = [...new Set([...parts.servers, ...parts.relays().map((r) => r.address)])];
  const named = relays.slice(0, MAX_NAMED_RELAYS).map((address) => {
    const reason = refusals.get(address);
    return reason === undefined ? address : `${address} (${reason})`;
  });
  const more = relays.length - named.length;
  const listed = more > 0 ? `${named.join(", ")} and ${more} more` : named.join(", ");
  return new NoRelayError(parts.node, relays, timeout, { listed });
}
