/**
 * The switchboard of a relay that stands alone: names, membership and
 * delivery in this process's maps (see lib/switchboard.ts).
 *
 * Membership changes are pushed to a network's members in batches (MEMBERS,
 * at most every {@linkcode MEMBERS_FLUSH_DELAY} ms). Nodes apply a batch's
 * leaves before its joins, so a leave of a member whose join is still queued
 * pushes the queued batch first (else the member would stay listed).
 *
 * @module
 */

import { FrameType } from "./frame.ts";
import { encodeControl, type Leaving, type Member as MemberEntry } from "./relay_protocol.ts";
import type { Claim, Registration, Switchboard, SwitchboardHost } from "./switchboard.ts";

/** Membership changes are pushed in batches at most this often, ms. */
export const MEMBERS_FLUSH_DELAY = 5;

interface Holding<P> {
  readonly holder: P;
  readonly registration: Registration;
}

interface Network<P> {
  readonly id: string;
  readonly members: Map<string, Holding<P>>;
  join: MemberEntry[];
  leave: Leaving[];
  flush: ReturnType<typeof setTimeout> | undefined;
}

/**
 * Names, membership and delivery kept in this process.
 *
 * @example Two members of a network reach each other
 * ```ts
 * import { LocalSwitchboard } from "./local_switchboard.ts";
 * import assert from "node:assert/strict";
 *
 * const got: string[] = [];
 * const board = new LocalSwitchboard<string>({
 *   send: (to, bytes) => got.push(`${to}:${bytes.length}`),
 *   control: () => {},
 *   replaced: () => {},
 * });
 * const member = (name: string) => ({
 *   network: "n", name, instance: `${name}-1`, instanceKey: `${name}-k`, card: "", clientOnly: false,
 * });
 * const admit = () => true;
 * assert.deepEqual(board.claim(member("a"), "A", admit), { status: "claimed", members: [] });
 * assert.deepEqual(board.claim(member("b"), "B", admit), {
 *   status: "claimed",
 *   members: [["a", "a-1", ""]],
 * });
 * const impostor = { ...member("b"), instanceKey: "other" };
 * assert.deepEqual(board.claim(impostor, "C", admit), { status: "taken" });
 * board.route(member("a"), "A", "b", new Uint8Array(3));
 * assert.deepEqual(got, ["B:3"]);
 * await board.close();
 * ```
 */
export class LocalSwitchboard<P> implements Switchboard<P> {
  readonly #host: SwitchboardHost<P>;
  readonly #networks = new Map<string, Network<P>>();
  #closed = false;

  /** A switchboard that reaches its members through `host`. */
  constructor(host: SwitchboardHost<P>) {
    this.#host = host;
  }

  /** Networks with a member here. */
  get networks(): number {
    return this.#networks.size;
  }

  /** Claims a name (see {@linkcode Switchboard.claim}). */
  claim(registration: Registration, holder: P, admit: () => boolean): Claim {
    const { network: id, name } = registration;
    const existing = this.#networks.get(id)?.members.get(name);
    if (existing && existing.registration.instanceKey !== registration.instanceKey) {
      return { status: "taken" };
    }
    if (existing) this.#host.replaced(existing.holder); // It releases the name, silently.
    if (!admit()) {
      // The registration it would have replaced is gone: members hear it left.
      const network = this.#networks.get(id);
      if (existing && !existing.registration.clientOnly && network) {
        this.#announce(network, "leave", [name, existing.registration.instance]);
      }
      return { status: "refused" };
    }
    const network = this.#networks.get(id) ?? this.#open(id);
    const members: MemberEntry[] = [];
    for (const [other, { registration: r }] of network.members) {
      if (!r.clientOnly) members.push([other, r.instance, r.card]);
    }
    network.members.set(name, { holder, registration });
    this.#reconcile(network, existing?.registration, registration);
    return { status: "claimed", members };
  }

  /** Releases a name (see {@linkcode Switchboard.release}). */
  release(registration: Registration, holder: P, announce: boolean): boolean {
    const network = this.#networks.get(registration.network);
    if (!network || network.members.get(registration.name)?.holder !== holder) return false;
    network.members.delete(registration.name);
    if (announce && !this.#closed && !registration.clientOnly) {
      this.#announce(network, "leave", [registration.name, registration.instance]);
    } else if (network.members.size === 0 && !network.flush) {
      this.#networks.delete(network.id);
    }
    return true;
  }

  /** Delivers a frame (see {@linkcode Switchboard.route}). */
  route(sender: Registration, from: P, target: string, bytes: Uint8Array): void {
    const network = this.#networks.get(sender.network);
    if (!network) return;
    if (target !== "*") {
      const to = network.members.get(target);
      if (to) this.#host.send(to.holder, bytes, from);
      return;
    }
    for (const { holder, registration } of network.members.values()) {
      if (holder !== from && !registration.clientOnly) this.#host.send(holder, bytes, from);
    }
  }

  /** Stops every pending membership push. */
  close(): Promise<void> {
    this.#closed = true;
    for (const network of this.#networks.values()) clearTimeout(network.flush);
    return Promise.resolve();
  }

  #open(id: string): Network<P> {
    const network: Network<P> = { id, members: new Map(), join: [], leave: [], flush: undefined };
    this.#networks.set(id, network);
    return network;
  }

  /**
   * Announces what members see change when `next` registers in place of
   * `previous` (the same instance's earlier registration, if any): a join
   * when it becomes listed, a leave when it becomes hidden (client-only),
   * nothing when its visibility stays.
   */
  #reconcile(network: Network<P>, previous: Registration | undefined, next: Registration): void {
    const wasListed = previous !== undefined && !previous.clientOnly;
    if (wasListed === !next.clientOnly) return;
    if (wasListed) this.#announce(network, "leave", [next.name, next.instance]);
    else this.#announce(network, "join", [next.name, next.instance, next.card]);
  }

  /** Queues a membership change and schedules one push for the batch. */
  #announce(network: Network<P>, kind: "join" | "leave", member: MemberEntry | Leaving): void {
    if (kind === "leave" && network.join.some(([n, i]) => n === member[0] && i === member[1])) {
      this.#push(network);
    }
    if (kind === "join") network.join.push(member as MemberEntry);
    else network.leave.push(member as Leaving);
    network.flush ??= setTimeout(() => {
      this.#push(network);
      if (network.members.size === 0) this.#networks.delete(network.id);
    }, MEMBERS_FLUSH_DELAY);
  }

  /** Pushes the queued membership changes of `network` to its members. */
  #push(network: Network<P>): void {
    clearTimeout(network.flush);
    network.flush = undefined;
    const body = { join: network.join, leave: network.leave };
    network.join = [];
    network.leave = [];
    const bytes = encodeControl(FrameType.MEMBERS, network.id, "", body);
    for (const { holder } of network.members.values()) this.#host.control(holder, bytes);
  }
}
