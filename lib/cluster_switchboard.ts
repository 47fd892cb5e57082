/**
 * The switchboard of a relay in a cluster (docs/PROTOCOL.md, "Relay
 * clusters"): names are claimed in the backplane's directory, membership
 * comes from watching it, and frames for members held by other relays
 * travel on the backplane to the relay that holds them.
 *
 * @module
 */

import type { Backplane, Bucket, Subscription, Watch } from "./backplane.ts";
import { claimName, decodeEntry, type DirectoryEntry, dropRelays } from "./cluster_directory.ts";
import { directoryKey, releaseName } from "./cluster_directory.ts";
import { parseFrame } from "./frame.ts";
import { toBase64UrlBare } from "./encoding.ts";
import { MembershipFeed } from "./membership_feed.ts";
import { SentFrames } from "./sent_frames.ts";
import type { Member as MemberEntry } from "./relay_protocol.ts";
import type { Claim, Registration, Switchboard, SwitchboardHost } from "./switchboard.ts";

/** How often a relay refreshes its lease and reads the others', ms. */
export const LEASE_INTERVAL = 3000;
/** A lease not refreshed for this long is gone, ms (the bucket's max age). */
export const LEASE_TTL = 9000;
/** The names of the cluster's buckets and subjects start with this. */
export const DEFAULT_CLUSTER_PREFIX = "peerbase";

/** Options of {@linkcode ClusterSwitchboard}. */
export interface ClusterSwitchboardOptions {
  /** Prefix of the buckets and subjects. @default "peerbase" */
  prefix?: string;
}

interface Holding<P> {
  readonly holder: P;
  readonly registration: Registration;
}

interface Seen {
  readonly entry: DirectoryEntry;
  /** When this relay heard it (performance.now()). */
  readonly at: number;
}

/** One network as seen by this relay: its directory entries and its local members. */
interface View<P> {
  readonly id: string;
  readonly entries: Map<string, Seen>;
  readonly local: Map<string, Holding<P>>;
  readonly feed: MembershipFeed;
  /** Claims under way: they hold the view open too. */
  pending: number;
  /** Resolves once the watch has heard the current entries. */
  ready: Promise<Watch | null>;
}

/** How long a sender whose frames another relay dropped is held, ms. */
export const HOLD_MS = 100;
/** Most senders remembered as blamed (cleared when full). */
const MAX_BLAMED = 4096;

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const EMPTY = encoder.encode("{}");

/**
 * A switchboard that makes many relays act as one, on a {@linkcode Backplane}.
 * Call {@linkcode ClusterSwitchboard.start} before the relay accepts nodes.
 */
export class ClusterSwitchboard<P> implements Switchboard<P> {
  /** This relay's id in the cluster: fresh at every start. */
  readonly id: string = toBase64UrlBare(crypto.getRandomValues(new Uint8Array(16)));
  readonly clustered = true;
  readonly #host: SwitchboardHost<P>;
  readonly #connect: () => Promise<Backplane>;
  #backplane: Backplane | null = null;
  readonly #prefix: string;
  readonly #views = new Map<string, View<P>>();
  /** Holders being replaced: their release leaves the directory alone. */
  readonly #replaced = new WeakSet<object>();
  readonly #writes = new Set<Promise<unknown>>();
  #names: Bucket | null = null;
  #leases: Bucket | null = null;
  #live = new Set<string>();
  #polledAt = -Infinity;
  #subscriptions: Subscription[] = [];
  /** Frames sent lately, until NATS would have said nobody got them. */
  readonly #sent = new SentFrames();
  /** Relays NATS said had no subscription, and when. */
  readonly #unreachable = new Map<string, number>();
  /** When each (origin, network, sender) was last blamed here. */
  readonly #blamed = new Map<string, number>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #closing: Promise<void> | null = null;
  #ticking = false;
  /** Frames from the backplane that could not be read, or found no member here. */
  dropped = 0;

  /**
   * A switchboard reaching its members through `host` and other relays
   * through the backplane `connect` opens at start.
   */
  constructor(
    host: SwitchboardHost<P>,
    connect: () => Promise<Backplane>,
    options: ClusterSwitchboardOptions = {},
  ) {
    this.#host = host;
    this.#connect = connect;
    this.#prefix = options.prefix ?? DEFAULT_CLUSTER_PREFIX;
  }

  /** Largest frame the backplane carries. */
  get maxFrame(): number {
    return this.#backplane?.maxPayload ?? Infinity;
  }

  /** Networks with a member here. */
  get networks(): number {
    return this.#views.size;
  }

  /** Opens the buckets, takes this relay's lease and listens for frames. */
  async start(): Promise<void> {
    const backplane = this.#backplane = await this.#connect();
    this.#names = await backplane.bucket(`${this.#prefix}-names`);
    this.#leases = await backplane.bucket(`${this.#prefix}-relays`, { maxAge: LEASE_TTL });
    await this.#leases.put(this.id, EMPTY);
    await this.#pollLeases();
    this.#subscriptions = [
      backplane.subscribe(
        `${this.#prefix}.r.${this.id}.*`,
        (subject, bytes) => this.#fromBackplane(subject, bytes),
      ),
      backplane.subscribe(`${this.#prefix}.h.${this.id}`, (_, bytes) => this.#heldBack(bytes)),
      backplane.subscribe(
        `${this.#prefix}.nr.${this.id}.*`,
        (subject) => this.#undelivered(subject),
      ),
    ];
    this.#timer = setInterval(() => this.#track(this.#tick()), LEASE_INTERVAL);
  }

  /** Claims a name in the directory (see {@linkcode Switchboard.claim}). */
  async claim(registration: Registration, holder: P, admit: () => boolean): Promise<Claim> {
    const { network, name } = registration;
    const mine = this.#views.get(network)?.local.get(name);
    if (mine && mine.registration.instanceKey !== registration.instanceKey) {
      return { status: "taken" };
    }
    const view = this.#views.get(network) ?? this.#open(network);
    let held: boolean;
    view.pending++;
    try {
      await view.ready;
      held = await claimName(this.#names!, registration, this.id, this.#holdsLease);
    } finally {
      view.pending--;
    }
    if (!held) {
      this.#closeIfIdle(view);
      return { status: "taken" };
    }
    const previous = view.local.get(name);
    if (previous) this.#replace(view, name, previous.holder);
    if (!admit()) {
      this.#closeIfIdle(view);
      this.#track(releaseName(this.#names!, registration, this.id));
      return { status: "refused" };
    }
    view.local.set(name, { holder, registration });
    const members: MemberEntry[] = [];
    for (const [other, { entry }] of view.entries) {
      if (other !== name && entry.o === 0) members.push([other, entry.i, entry.c]);
    }
    return { status: "claimed", members };
  }

  /** Releases a name (see {@linkcode Switchboard.release}); members hear it from the directory. */
  release(registration: Registration, holder: P, _announce: boolean): boolean {
    if (this.#replaced.delete(holder as object)) return true; // Its name stays claimed.
    const view = this.#views.get(registration.network);
    if (view?.local.get(registration.name)?.holder !== holder) return false;
    view.local.delete(registration.name);
    this.#closeIfIdle(view);
    this.#track(releaseName(this.#names!, registration, this.id));
    return true;
  }

  /** Delivers a frame here, or sends it to the relay that holds its target. */
  route(sender: Registration, from: P, target: string, bytes: Uint8Array): void {
    const view = this.#views.get(sender.network);
    if (!view) return;
    if (target !== "*") {
      const local = view.local.get(target);
      if (local) this.#host.send(local.holder, bytes, from);
      else {
        const relay = this.#relayOf(view.entries.get(target));
        if (relay) this.#publish(relay, bytes);
      }
      return;
    }
    for (const { holder, registration } of view.local.values()) {
      if (holder !== from && !registration.clientOnly) this.#host.send(holder, bytes, from);
    }
    const relays = new Set<string>();
    for (const [name, seen] of view.entries) {
      if (seen.entry.o === 1 || view.local.has(name)) continue;
      const relay = this.#relayOf(seen);
      if (relay) relays.add(relay);
    }
    for (const relay of relays) this.#publish(relay, bytes);
  }

  /** Releases every name, gives up the lease and leaves the backplane. Safe to call twice. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    clearInterval(this.#timer);
    for (const subscription of this.#subscriptions) subscription.unsubscribe();
    await Promise.allSettled([...this.#writes]);
    for (const view of this.#views.values()) {
      view.feed.close();
      void view.ready.then((watch) => watch?.stop());
    }
    this.#views.clear();
    await this.#leases?.delete(this.id).catch(() => false);
    await this.#backplane?.close();
  }

  #open(id: string): View<P> {
    const local = new Map<string, Holding<P>>();
    const feed = new MembershipFeed(id, (bytes) => {
      for (const { holder } of local.values()) this.#host.control(holder, bytes);
    });
    const view: View<P> = {
      id,
      entries: new Map(),
      local,
      feed,
      pending: 0,
      ready: Promise.resolve(null),
    };
    view.ready = this.#names!.watch(id, (key, entry) => {
      const name = key.slice(id.length + 1);
      this.#heard(view, name, entry && decodeEntry(entry.value));
    });
    view.ready.catch(() => {}); // A claim waiting for it hears why.
    this.#views.set(id, view);
    return view;
  }

  /** Closes a view that has no local member and no claim under way. */
  #closeIfIdle(view: View<P>): void {
    if (view.local.size > 0 || view.pending > 0 || this.#views.get(view.id) !== view) return;
    this.#views.delete(view.id);
    view.feed.close();
    void view.ready.then((watch) => watch?.stop(), () => {});
  }

  /** Cuts the local holder of `name`; its release leaves the directory to the newer claim. */
  #replace(view: View<P>, name: string, holder: P): void {
    view.local.delete(name);
    this.#replaced.add(holder as object);
    this.#host.replaced(holder);
  }

  /** A directory entry of `view` changed: tell the local members, repair or evict. */
  #heard(view: View<P>, name: string, entry: DirectoryEntry | null): void {
    const before = view.entries.get(name)?.entry;
    if (entry) view.entries.set(name, { entry, at: performance.now() });
    else view.entries.delete(name);
    const listedBefore = before?.o === 0, listed = entry?.o === 0;
    if (before && entry && before.i === entry.i) {
      if (listedBefore && !listed) view.feed.leave([name, entry.i]);
      if (!listedBefore && listed) view.feed.join([name, entry.i, entry.c]);
    } else {
      if (listedBefore) view.feed.leave([name, before.i]);
      if (listed) view.feed.join([name, entry.i, entry.c]);
    }
    if (!this.#holdsName(view, name)) this.#reclaim(view, name);
  }

  /** Whether the directory, as `view` last heard it, shows this relay holding `name` for its local holder. */
  #holdsName(view: View<P>, name: string): boolean {
    const local = view.local.get(name);
    const entry = view.entries.get(name)?.entry;
    return !local || (entry?.k === local.registration.instanceKey && entry.r.includes(this.id));
  }

  /**
   * Claims `name` again for its local holder, whose hold is missing from
   * the directory (deleted, or taken as stale); cuts the holder when
   * another instance holds the name now.
   */
  #reclaim(view: View<P>, name: string): void {
    const local = view.local.get(name);
    if (!local) return;
    const { holder, registration } = local;
    this.#track(
      claimName(this.#names!, registration, this.id, this.#holdsLease).then((held) => {
        if (held || view.local.get(name)?.holder !== holder) return;
        this.#replace(view, name, holder);
        this.#closeIfIdle(view);
      }),
    );
  }

  /** Whether `relay` holds its lease now (read from the bucket unless known). */
  readonly #holdsLease = async (relay: string): Promise<boolean> =>
    relay === this.id || this.#live.has(relay) || (await this.#leases!.get(relay)) !== null;

  /** A live relay of `entry` other than this one, or null. */
  #relayOf(seen: Seen | undefined): string | null {
    if (!seen) return null;
    const recently = performance.now() - LEASE_INTERVAL;
    for (const relay of seen.entry.r) {
      if (relay === this.id || !this.#isLive(relay, seen.at)) continue;
      if ((this.#unreachable.get(relay) ?? -Infinity) < recently) return relay;
    }
    return null;
  }

  /**
   * Whether `relay` is live: its lease was there at the last poll, or the
   * entry naming it was heard after that poll began (a relay takes its
   * lease before it claims anything).
   */
  #isLive(relay: string, heardAt = -Infinity): boolean {
    return relay === this.id || this.#live.has(relay) || heardAt >= this.#polledAt;
  }

  /** Sends a frame to `relay`, with a reply subject NATS answers if nobody gets it. */
  #publish(relay: string, bytes: Uint8Array): void {
    const seq = this.#sent.add(relay, bytes, performance.now());
    const p = this.#prefix;
    this.#backplane!.publish(`${p}.r.${relay}.${this.id}`, bytes, `${p}.nr.${this.id}.${seq}`);
  }

  /**
   * NATS says nobody got frame `seq` (no responders): its relay is gone
   * from the backplane, so it is skipped for a while, and the frame goes to
   * another relay of its target (`*` frames are not sent again).
   */
  #undelivered(subject: string): void {
    const sent = this.#sent.take(Number(subject.slice(subject.lastIndexOf(".") + 1)));
    if (!sent) return;
    this.#unreachable.set(sent.relay, performance.now());
    let frame;
    try {
      frame = parseFrame(sent.bytes);
    } catch {
      return;
    }
    if (frame.target === "*") return;
    const relay = this.#relayOf(this.#views.get(frame.network)?.entries.get(frame.target));
    if (relay) this.#publish(relay, sent.bytes);
  }

  /** A frame from relay `origin` for members held here. */
  #fromBackplane(subject: string, bytes: Uint8Array): void {
    const origin = subject.slice(subject.lastIndexOf(".") + 1);
    let frame;
    try {
      frame = parseFrame(bytes);
    } catch {
      this.dropped++;
      return;
    }
    const view = this.#views.get(frame.network);
    if (!view) return;
    if (frame.target !== "*") {
      const local = view.local.get(frame.target);
      const sender = `${origin}.${frame.network}.${frame.sender}`;
      if (local && !this.#host.deliver(local.holder, bytes, sender)) this.#blame(origin, sender);
      return;
    }
    for (const [name, { holder, registration }] of view.local) {
      if (name === frame.sender || registration.clientOnly) continue;
      // Each member gets a `*` frame once: from the origin if it is there, else from its first relay.
      const seen = view.entries.get(name);
      if (seen && (seen.entry.r.includes(origin) || this.#relayOrSelf(seen) !== this.id)) continue;
      this.#host.deliver(holder, bytes, `${origin}.${frame.network}.${frame.sender}`);
    }
  }

  /**
   * Tells relay `origin` that frames of its member `sender` are dropped
   * here, at most once per {@linkcode HOLD_MS} per sender: it holds the
   * sender's reads for that long, so the flood slows at its source.
   */
  #blame(origin: string, sender: string): void {
    const now = performance.now();
    if ((this.#blamed.get(sender) ?? -Infinity) > now - HOLD_MS) return;
    if (this.#blamed.size >= MAX_BLAMED) this.#blamed.clear();
    this.#blamed.set(sender, now);
    const member = sender.slice(origin.length + 1); // <network>.<pseudonym>
    this.#backplane!.publish(`${this.#prefix}.h.${origin}`, encoder.encode(member));
  }

  /** A relay dropped frames of a member of ours: hold its reads. */
  #heldBack(bytes: Uint8Array): void {
    const [network, sender] = decoder.decode(bytes).split(".");
    const local = network && sender ? this.#views.get(network)?.local.get(sender) : undefined;
    if (local) this.#host.hold(local.holder, HOLD_MS);
  }

  /** The first live relay of an entry, this one included. */
  #relayOrSelf(seen: Seen): string | null {
    return seen.entry.r.find((relay) => this.#isLive(relay, seen.at)) ?? null;
  }

  /** Refreshes the lease, reads the others' and clears dead relays from the entries watched. */
  async #tick(): Promise<void> {
    if (this.#ticking) return;
    this.#ticking = true;
    try {
      await this.#sweepLeases();
    } finally {
      this.#ticking = false;
    }
  }

  async #sweepLeases(): Promise<void> {
    await this.#leases!.put(this.id, EMPTY);
    await this.#pollLeases();
    for (const view of this.#views.values()) {
      for (const name of view.local.keys()) {
        if (!this.#holdsName(view, name)) this.#reclaim(view, name);
      }
      for (const [name, seen] of view.entries) {
        if (seen.entry.r.every((relay) => this.#isLive(relay, seen.at))) continue;
        const key = directoryKey(view.id, name);
        const current = await this.#names!.get(key);
        const entry = current && decodeEntry(current.value);
        if (current && entry) {
          const gone = (r: string) => seen.entry.r.includes(r) && !this.#isLive(r, seen.at);
          await dropRelays(this.#names!, key, current, entry, gone);
        }
      }
    }
  }

  async #pollLeases(): Promise<void> {
    const started = performance.now();
    this.#live = new Set(await this.#leases!.keys());
    this.#polledAt = started;
    for (const [relay, at] of this.#unreachable) {
      if (at < started - LEASE_INTERVAL) this.#unreachable.delete(relay);
    }
  }

  /** Keeps a backplane write in flight until it settles (close waits for it). */
  #track(write: Promise<unknown>): void {
    const settled = write.catch(() => {}).finally(() => this.#writes.delete(settled));
    this.#writes.add(settled);
  }
}
