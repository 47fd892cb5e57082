/**
 * The switchboard of a relay that stands alone: names, membership and
 * delivery in this process's maps (see lib/switchboard.ts); membership
 * changes reach members through a {@linkcode MembershipFeed} per network.
 *
 * @module
 */

import type { Member as MemberEntry } from "./relay_protocol.ts";
import { MembershipFeed } from "./membership_feed.ts";
import type { Claim, Quota, Registration, Switchboard, SwitchboardHost } from "./switchboard.ts";

interface Holding<P> {
  readonly holder: P;
  readonly registration: Registration;
}

interface Network<P> {
  readonly id: string;
  readonly members: Map<string, Holding<P>>;
  readonly feed: MembershipFeed;
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
 *   send: (to, bytes) => got.push(`${to}:${bytes.length}`) > 0,
 *   deliver: () => true,
 *   hold: () => {},
 *   control: () => {},
 *   replaced: () => {},
 * });
 * const member = (name: string) => ({
 *   network: "n", name, instance: `${name}-1`, instanceKey: `${name}-k`, card: "", clientOnly: false,
 * });
 * const quota = { take: () => true, giveBack: () => {} };
 * assert.deepEqual(board.claim(member("a"), "A", quota), { status: "claimed", members: [] });
 * assert.deepEqual(board.claim(member("b"), "B", quota), {
 *   status: "claimed",
 *   members: [["a", "a-1", ""]],
 * });
 * const impostor = { ...member("b"), instanceKey: "other" };
 * assert.deepEqual(board.claim(impostor, "C", quota), { status: "taken" });
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

  /** False: it serves this relay alone. */
  readonly clustered = false;
  /** Infinity: it carries no frame between relays. */
  readonly maxFrame: number = Infinity;

  /** Nothing to get ready. */
  start(): Promise<void> {
    return Promise.resolve();
  }

  /** Networks with a member here. */
  get networks(): number {
    return this.#networks.size;
  }

  /** Always 0: a relay on its own carries nothing between relays. */
  readonly unrouted = 0;

  /** Claims a name (see {@linkcode Switchboard.claim}). */
  claim(registration: Registration, holder: P, quota: Quota): Claim {
    const { network: id, name } = registration;
    const existing = this.#networks.get(id)?.members.get(name);
    if (existing && existing.registration.instanceKey !== registration.instanceKey) {
      return { status: "taken" };
    }
    if (existing) this.#host.replaced(existing.holder); // It releases the name, silently.
    if (!quota.take()) {
      // The registration it would have replaced is gone: members hear it left.
      const network = this.#networks.get(id);
      if (existing && !existing.registration.clientOnly && network) {
        network.feed.leave([name, existing.registration.instance]);
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
      network.feed.leave([registration.name, registration.instance]);
    } else if (network.members.size === 0 && !network.feed.pending) {
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
    for (const network of this.#networks.values()) network.feed.close();
    return Promise.resolve();
  }

  #open(id: string): Network<P> {
    const members = new Map<string, Holding<P>>();
    const feed = new MembershipFeed(id, (bytes) => {
      for (const { holder } of members.values()) this.#host.control(holder, bytes);
    }, () => {
      if (members.size === 0) this.#networks.delete(id);
    });
    const network: Network<P> = { id, members, feed };
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
    if (wasListed) network.feed.leave([next.name, next.instance]);
    else network.feed.join([next.name, next.instance, next.card]);
  }
}
