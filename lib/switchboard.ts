/**
 * The relay's switchboard seam: who holds which name in which network, and
 * how a frame reaches a member. The relay's front end (lib/relay_server.ts)
 * owns connections, admission, limits and drain; a switchboard owns names,
 * membership and delivery. {@linkcode LocalSwitchboard} keeps them in this
 * process; a cluster switchboard spreads them over many relays. Nodes see
 * no difference: the protocol and the API are the same.
 *
 * `P` is the front end's handle on one of its own connections (a "port").
 *
 * @module
 */

import type { Member as MemberEntry } from "./relay_protocol.ts";

export type { MemberEntry };

/** A registered member, as every relay of a switchboard may know it. */
export interface Registration {
  /** The network id. */
  readonly network: string;
  /** The node's pseudonym in that network. */
  readonly name: string;
  /** Its instance id (the hash of {@linkcode Registration.instanceKey}). */
  readonly instance: string;
  /** The instance public key it proved. */
  readonly instanceKey: string;
  /** The member card, opaque to relays. */
  readonly card: string;
  /** Registered with `c: 1`: frames reach it, but it is never listed to others. */
  readonly clientOnly: boolean;
}

/** How a switchboard reaches the front end's own connections. */
export interface SwitchboardHost<P> {
  /**
   * Queues a DATA frame for local member `to`, charged to sender `from`;
   * false when `to`'s connection is closed (the frame was not queued).
   */
  send(to: P, bytes: Uint8Array, from: P): boolean;
  /**
   * Queues a DATA frame from a sender on another relay of the cluster for
   * `to` (`sender`: `<origin relay>.<network>.<pseudonym>`); false when it
   * was dropped (that sender's share, or `to`'s queue, is full).
   */
  deliver(to: P, bytes: Uint8Array, sender: string): boolean;
  /**
   * Another relay of the cluster dropped frames of local member `sender`:
   * its reads are held for `ms`.
   */
  hold(sender: P, ms: number): void;
  /** Queues a control frame (MEMBERS) for local member `to`. */
  control(to: P, bytes: Uint8Array): void;
  /**
   * The same instance registered again: `holder` is cut, and released
   * without telling anyone (the new registration says what changed).
   */
  replaced(holder: P): void;
}

/**
 * What a claim got: the name, with the members listed now; or nothing,
 * because another instance holds it (`taken`) or the quota said no.
 */
export type Claim =
  | { readonly status: "claimed"; readonly members: MemberEntry[] }
  | { readonly status: "taken" | "refused" };

/** The front end's registration slots (its node, address and network quotas). */
export interface Quota {
  /** Takes a slot; false (and the connection refused, saying why) when there is none. */
  take(): boolean;
  /** Gives back a slot taken for a claim that failed. */
  giveBack(): void;
}

/**
 * Makes a relay's switchboard (the relay passes its host): the
 * `switchboard` option of `Relay`.
 */
export type SwitchboardFactory = <P>(host: SwitchboardHost<P>) => Switchboard<P>;

/** Names, membership and delivery for a relay (see the module doc). */
export interface Switchboard<P> {
  /**
   * Claims `registration.name` in its network for `holder`. Another
   * instance holding the name makes it taken; the same instance holding it
   * (a reconnect) is replaced at once. A registration slot is taken from
   * `quota` (which may refuse) before anyone can hear of the claim, and
   * given back when the name turns out to be taken. On success the others
   * are told.
   */
  claim(registration: Registration, holder: P, quota: Quota): Claim | Promise<Claim>;
  /**
   * `holder` closed: releases its name if it still holds it, and tells the
   * others when `announce`. Returns whether it held the name.
   */
  release(registration: Registration, holder: P, announce: boolean): boolean;
  /**
   * Delivers a frame from `from` (registered as `sender`) to `target`, a
   * pseudonym or `"*"` (every listed member but the sender).
   */
  route(sender: Registration, from: P, target: string, bytes: Uint8Array): void;
  /** Networks with a member on this relay. */
  readonly networks: number;
  /**
   * Frames it could not carry between relays: no live relay held the
   * target, the backplane was away, or a frame from another relay named no
   * member here (0 for a relay on its own).
   */
  readonly unrouted: number;
  /** True for a switchboard shared by a cluster of relays (REGISTERED says so). */
  readonly clustered: boolean;
  /** Largest frame it carries between relays, bytes (Infinity when it carries none). */
  readonly maxFrame: number;
  /** Gets ready; the relay accepts nodes once it resolves. */
  start(): Promise<void>;
  /** Stops timers and backplane traffic. Safe to call twice. */
  close(): Promise<void>;
}
