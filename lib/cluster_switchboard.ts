/**
 * The switchboard of a relay in a cluster (docs/PROTOCOL.md, "Relay
 * clusters"): names are claimed in the backplane's directory, membership
 * comes from one watch of it per relay, and frames for members held by
 * other relays travel on the backplane to the relay that holds them.
 *
 * @module
 */

import type { Backplane, Bucket, BucketChange, Subscription, Watch } from "./backplane.ts";
import {
  claimName,
  decodeEntry,
  type DirectoryEntry,
  directoryKey,
  dropRelays,
  releaseKey,
} from "./cluster_directory.ts";
import { decodeFanout, encodeFanout } from "./cluster_fanout.ts";
import { LEASE_INTERVAL, LEASE_TTL, Leases } from "./cluster_leases.ts";
import { type Frame, FrameType, parseFrame } from "./frame.ts";
import { toBase64UrlBare } from "./encoding.ts";
import { MembershipFeed } from "./membership_feed.ts";
import type { Member as MemberEntry } from "./relay_protocol.ts";
import { SentFrames } from "./sent_frames.ts";
import type { Claim, Quota, Registration, Switchboard, SwitchboardHost } from "./switchboard.ts";

export { LEASE_INTERVAL, LEASE_TTL };

/** The names of the cluster's buckets and subjects start with this. */
export const DEFAULT_CLUSTER_PREFIX = "peerbase";
/** How long a sender whose frames another relay dropped is held, ms. */
export const HOLD_MS = 100;
/** How often failed releases are retried and dead relays swept from the entries watched, ms. */
const SWEEP_INTERVAL = LEASE_INTERVAL;
/** Most directory writes one sweep makes; the rest wait for the next sweep. */
const SWEEP_WRITES = 2048;
/** Directory writes one sweep keeps in flight at once. */
const SWEEP_CONCURRENCY = 16;
/** Most releases waiting to be retried. */
const MAX_RETRIES = 65_536;
/** Most senders remembered as blamed (cleared when full). */
const MAX_BLAMED = 4096;
/** How long closing waits for writes in flight, ms. */
const CLOSE_WAIT = 1000;

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
  readonly revision: number;
  /** When this relay heard it (performance.now()). */
  readonly at: number;
}

/** One network with members here: its directory entries and its local members. */
interface View<P> {
  readonly id: string;
  readonly entries: Map<string, Seen>;
  readonly local: Map<string, Holding<P>>;
  readonly feed: MembershipFeed;
  /** Claims under way: they hold the view open too. */
  pending: number;
  /** Deletions heard while the entries are first read, by revision (null once read). */
  tombstones: Map<string, number> | null;
  /** Resolves once the entries have been read. */
  ready: Promise<void>;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

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
  readonly #prefix: string;
  readonly #views = new Map<string, View<P>>();
  /** Holders cut because their name was claimed again: their release leaves the directory alone. */
  readonly #replaced = new WeakSet<object>();
  readonly #writes = new Set<Promise<unknown>>();
  /** Releases that failed, by key: the instance key they release. */
  readonly #retries = new Map<string, string>();
  /** Frames sent lately, until NATS would have said nobody got them. */
  readonly #sent = new SentFrames();
  /** Relays NATS said had no subscription, and when. */
  readonly #unreachable = new Map<string, number>();
  /** When each sender on another relay was last blamed here. */
  readonly #blamed = new Map<string, number>();
  #backplane: Backplane | null = null;
  #names: Bucket | null = null;
  #leases: Leases | null = null;
  #watch: Watch | null = null;
  #subscriptions: Subscription[] = [];
  #timer: ReturnType<typeof setInterval> | undefined;
  #sweeping = false;
  #closing: Promise<void> | null = null;
  /** Frames from the backplane that were not DATA frames for a member here. */
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

  /** Opens the buckets, takes this relay's lease, watches the directory and listens for frames. */
  async start(): Promise<void> {
    const backplane = this.#backplane = await this.#connect();
    const p = this.#prefix;
    this.#names = await backplane.bucket(`${p}-names`);
    const leases = await backplane.bucket(`${p}-relays`, { maxAge: LEASE_TTL });
    this.#leases = new Leases(leases, this.id);
    await this.#leases.start();
    this.#watch = await this.#names.watch(">", (change) => this.#changed(change));
    const listen = (subject: string, heard: (subject: string, bytes: Uint8Array) => void) =>
      backplane.subscribe(subject, heard);
    this.#subscriptions = [
      listen(`${p}.r.${this.id}.*`, (subject, bytes) => this.#forMember(subject, bytes)),
      listen(`${p}.f.${this.id}.*`, (subject, bytes) => this.#forMembers(subject, bytes)),
      listen(`${p}.h.${this.id}`, (_, bytes) => this.#heldBack(bytes)),
      listen(`${p}.nr.${this.id}.*`, (subject) => this.#undelivered(subject)),
    ];
    this.#timer = setInterval(() => void this.#sweep(), SWEEP_INTERVAL);
  }

  /** Claims a name in the directory (see {@linkcode Switchboard.claim}). */
  async claim(registration: Registration, holder: P, quota: Quota): Promise<Claim> {
    const { network, name, instanceKey } = registration;
    const existing = this.#views.get(network)?.local.get(name);
    if (existing && existing.registration.instanceKey !== instanceKey) return { status: "taken" };
    const view = this.#views.get(network) ?? this.#open(network);
    view.pending++;
    try {
      await view.ready;
      const previous = view.local.get(name);
      if (previous && previous.registration.instanceKey !== instanceKey) return { status: "taken" };
      if (previous) this.#replace(view, name, previous.holder);
      if (!quota.take()) return { status: "refused" }; // Before any write: nobody hears of it.
      let held: boolean;
      try {
        held = await claimName(this.#names!, registration, this.id, (r) => this.#leases!.holds(r));
      } catch (error) {
        quota.giveBack();
        this.#retryRelease(directoryKey(network, name), instanceKey); // The write may have landed.
        throw error;
      }
      if (!held) {
        quota.giveBack();
        return { status: "taken" };
      }
      const racing = view.local.get(name); // The same instance, claiming here at the same time.
      if (racing) this.#replace(view, name, racing.holder);
      view.local.set(name, { holder, registration });
      const members: MemberEntry[] = [];
      for (const [other, { entry }] of view.entries) {
        if (other !== name && entry.o === 0) members.push([other, entry.i, entry.c]);
      }
      return { status: "claimed", members };
    } finally {
      view.pending--;
      this.#closeIfIdle(view);
    }
  }

  /** Releases a name (see {@linkcode Switchboard.release}); members hear it from the directory. */
  release(registration: Registration, holder: P, _announce: boolean): boolean {
    if (this.#replaced.delete(holder as object)) return true; // A newer claim holds its name.
    const view = this.#views.get(registration.network);
    if (view?.local.get(registration.name)?.holder !== holder) return false;
    view.local.delete(registration.name);
    this.#closeIfIdle(view);
    this.#release(directoryKey(registration.network, registration.name), registration.instanceKey);
    return true;
  }

  /** Delivers a frame here, or sends it to the relays that hold its targets. */
  route(sender: Registration, from: P, target: string, bytes: Uint8Array): void {
    const view = this.#views.get(sender.network);
    if (!view) return;
    // A member whose connection here just closed may still be registered at another relay.
    if (target !== "*") {
      const local = view.local.get(target);
      if (local && this.#host.send(local.holder, bytes, from)) return;
      const relay = this.#relayOf(view.entries.get(target));
      if (relay) this.#publish("r", relay, bytes);
      return;
    }
    const reached = new Set<string>([sender.name]);
    for (const [name, { holder, registration }] of view.local) {
      if (holder === from || registration.clientOnly) continue;
      if (this.#host.send(holder, bytes, from)) reached.add(name);
    }
    this.#fanOut(view, [...view.entries.keys()].filter((name) => !reached.has(name)), bytes);
  }

  /** Gives up the lease and leaves the backplane. Safe to call twice. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    clearInterval(this.#timer);
    for (const subscription of this.#subscriptions) subscription.unsubscribe();
    this.#watch?.stop();
    for (const view of this.#views.values()) view.feed.close();
    this.#views.clear();
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.allSettled([...this.#writes]),
      new Promise((resolve) => timer = setTimeout(resolve, CLOSE_WAIT)),
    ]);
    clearTimeout(timer);
    await this.#leases?.close();
    await this.#backplane?.close();
  }

  /** Opens the view of network `id` and reads its entries. */
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
      tombstones: new Map(),
      ready: Promise.resolve(),
    };
    view.ready = this.#names!.snapshot(`${id}.>`).then((changes) => {
      for (const change of changes) this.#apply(view, change);
      view.tombstones = null;
    });
    view.ready.catch(() => {
      if (this.#views.get(id) === view) this.#views.delete(id); // The next claim reads again.
    });
    this.#views.set(id, view);
    return view;
  }

  /** Closes a view that has no local member and no claim under way. */
  #closeIfIdle(view: View<P>): void {
    if (view.local.size > 0 || view.pending > 0 || this.#views.get(view.id) !== view) return;
    this.#views.delete(view.id);
    view.feed.close();
  }

  /** Cuts the local holder of `name`; its release leaves the directory to the newer claim. */
  #replace(view: View<P>, name: string, holder: P): void {
    view.local.delete(name);
    this.#replaced.add(holder as object);
    this.#host.replaced(holder);
  }

  /** A change from the directory's watch: it matters only to a network with members here. */
  #changed(change: BucketChange): void {
    const dot = change.key.indexOf(".");
    const view = dot > 0 ? this.#views.get(change.key.slice(0, dot)) : undefined;
    if (view) this.#apply(view, change);
  }

  /** Applies a change to `view` unless a later revision of its key was heard already. */
  #apply(view: View<P>, { key, entry, revision }: BucketChange): void {
    const name = key.slice(view.id.length + 1);
    if ((view.entries.get(name)?.revision ?? 0) >= revision) return;
    if ((view.tombstones?.get(name) ?? 0) >= revision) return;
    const decoded = entry && decodeEntry(entry.value);
    if (!decoded) view.tombstones?.set(name, revision);
    this.#heard(view, name, decoded, revision);
  }

  /** A directory entry of `view` changed: tell the local members, and repair our own. */
  #heard(view: View<P>, name: string, entry: DirectoryEntry | null, revision: number): void {
    const before = view.entries.get(name)?.entry;
    if (entry) view.entries.set(name, { entry, revision, at: performance.now() });
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

  /** Whether the directory, as `view` heard it, shows this relay holding `name` for its holder. */
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
    const holds = (relay: string) => this.#leases!.holds(relay);
    this.#track(
      claimName(this.#names!, registration, this.id, holds).then((held) => {
        if (held || view.local.get(name)?.holder !== holder) return;
        this.#replace(view, name, holder);
        this.#closeIfIdle(view);
      }),
    );
  }

  /** Removes this relay from the entry at `key`; a failure is retried by the sweep. */
  #release(key: string, instanceKey: string): void {
    const write = releaseKey(this.#names!, key, instanceKey, this.id);
    this.#track(write.catch(() => this.#retryRelease(key, instanceKey)));
  }

  #retryRelease(key: string, instanceKey: string): void {
    if (this.#retries.size < MAX_RETRIES) this.#retries.set(key, instanceKey);
  }

  /** A live relay of `seen`'s entry other than this one that NATS did not just call silent. */
  #relayOf(seen: Seen | undefined): string | null {
    if (!seen) return null;
    const recently = performance.now() - LEASE_INTERVAL;
    for (const relay of seen.entry.r) {
      if (relay === this.id || !this.#leases!.isLive(relay, seen.at)) continue;
      if ((this.#unreachable.get(relay) ?? -Infinity) < recently) return relay;
    }
    return null;
  }

  /** Sends a `*` frame to the relays of `names`, each with the names it writes it to. */
  #fanOut(view: View<P>, names: string[], frame: Uint8Array): void {
    const byRelay = new Map<string, string[]>();
    for (const name of names) {
      const seen = view.entries.get(name);
      if (!seen || seen.entry.o === 1) continue;
      const relay = this.#relayOf(seen);
      if (!relay) continue;
      const list = byRelay.get(relay);
      if (list) list.push(name);
      else byRelay.set(relay, [name]);
    }
    for (const [relay, list] of byRelay) this.#publish("f", relay, encodeFanout(list, frame));
  }

  /** Sends to `relay`, with a reply subject NATS answers if nobody gets it. */
  #publish(kind: "r" | "f", relay: string, bytes: Uint8Array): void {
    const seq = this.#sent.add(relay, kind, bytes, performance.now());
    const p = this.#prefix;
    this.#backplane!.publish(
      `${p}.${kind}.${relay}.${this.id}`,
      bytes,
      `${p}.nr.${this.id}.${seq}`,
    );
  }

  /**
   * NATS says nobody got what was sent as `seq` (no responders): its relay
   * is gone from the backplane, so it is skipped for a while, and the frame
   * goes to other relays of its targets (it reached no one: never twice).
   */
  #undelivered(subject: string): void {
    const sent = this.#sent.take(Number(subject.slice(subject.lastIndexOf(".") + 1)));
    if (!sent) return;
    this.#unreachable.set(sent.relay, performance.now());
    if (sent.kind === "r") {
      const frame = dataFrame(sent.bytes);
      const view = frame && this.#views.get(frame.network);
      const relay = view && this.#relayOf(view.entries.get(frame.target));
      if (relay) this.#publish("r", relay, sent.bytes);
      return;
    }
    const body = decodeFanout(sent.bytes);
    const frame = body && dataFrame(body.frame);
    const view = frame && this.#views.get(frame.network);
    if (view) this.#fanOut(view, body.names, body.frame);
  }

  /** A DATA frame from relay `origin` for one member held here. */
  #forMember(subject: string, bytes: Uint8Array): void {
    const frame = dataFrame(bytes);
    const local = frame && this.#views.get(frame.network)?.local.get(frame.target);
    if (!frame || !local) {
      this.dropped++;
      return;
    }
    const origin = subject.slice(subject.lastIndexOf(".") + 1);
    const sender = `${origin}.${frame.network}.${frame.sender}`;
    if (!this.#host.deliver(local.holder, bytes, sender)) this.#blame(origin, sender);
  }

  /** A `*` frame from relay `origin`, with the names of the members here it is written to. */
  #forMembers(subject: string, bytes: Uint8Array): void {
    const body = decodeFanout(bytes);
    const frame = body && dataFrame(body.frame);
    const view = frame && this.#views.get(frame.network);
    if (!body || !frame || !view) {
      this.dropped++;
      return;
    }
    const origin = subject.slice(subject.lastIndexOf(".") + 1);
    const sender = `${origin}.${frame.network}.${frame.sender}`;
    for (const name of body.names) {
      const local = view.local.get(name);
      if (!local || local.registration.clientOnly || name === frame.sender) continue;
      if (!this.#host.deliver(local.holder, body.frame, sender)) this.#blame(origin, sender);
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

  /**
   * Every {@linkcode SWEEP_INTERVAL}: retries failed releases, re-claims
   * our own names the directory lost, releases entries naming this relay
   * that no member here holds, and removes dead relays from the entries
   * watched; at most {@linkcode SWEEP_WRITES} writes, the rest next time.
   */
  async #sweep(): Promise<void> {
    if (this.#sweeping || this.#closing) return;
    this.#sweeping = true;
    try {
      let budget = SWEEP_WRITES;
      const old = performance.now() - SWEEP_INTERVAL;
      for (const view of this.#views.values()) {
        for (const name of view.local.keys()) {
          if (!this.#holdsName(view, name)) this.#reclaim(view, name);
        }
        if (view.pending > 0) continue;
        for (const [name, seen] of view.entries) {
          const ghost = seen.at < old && seen.entry.r.includes(this.id) && !view.local.has(name);
          if (ghost) this.#retryRelease(directoryKey(view.id, name), seen.entry.k);
        }
      }
      for (const [key, instanceKey] of this.#retries) {
        if (budget-- <= 0) break;
        this.#retries.delete(key);
        if (this.#heldHere(key, instanceKey)) continue;
        await releaseKey(this.#names!, key, instanceKey, this.id).catch(() =>
          this.#retryRelease(key, instanceKey)
        );
      }
      const dead: Array<() => Promise<void>> = [];
      for (const view of this.#views.values()) {
        for (const [name, seen] of view.entries) {
          if (dead.length >= budget) break;
          if (seen.entry.r.every((relay) => this.#leases!.isLive(relay, seen.at))) continue;
          dead.push(() => this.#dropDead(directoryKey(view.id, name), seen).catch(() => {}));
        }
      }
      await inParallel(dead, SWEEP_CONCURRENCY);
    } finally {
      this.#sweeping = false;
    }
  }

  /** Whether a member here holds the name at `key` for instance key `instanceKey`. */
  #heldHere(key: string, instanceKey: string): boolean {
    const dot = key.indexOf(".");
    const local = this.#views.get(key.slice(0, dot))?.local.get(key.slice(dot + 1));
    return local?.registration.instanceKey === instanceKey;
  }

  /** Removes from the entry at `key` the relays that `seen` named and that are dead now. */
  async #dropDead(key: string, seen: Seen): Promise<void> {
    const current = await this.#names!.get(key);
    const entry = current && decodeEntry(current.value);
    if (!current || !entry) return;
    const gone = (r: string) => seen.entry.r.includes(r) && !this.#leases!.isLive(r, seen.at);
    await dropRelays(this.#names!, key, current, entry, gone);
  }

  /** Keeps a backplane write in flight until it settles (close waits for it, briefly). */
  #track(write: Promise<unknown>): void {
    const settled = write.catch(() => {}).finally(() => this.#writes.delete(settled));
    this.#writes.add(settled);
  }
}

/** Runs `tasks`, at most `concurrency` at a time. */
async function inParallel(tasks: Array<() => Promise<void>>, concurrency: number): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) await tasks[next++]!();
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, tasks.length) }, worker));
}

/** `bytes` as a DATA frame, or null: anything else from the backplane is dropped. */
function dataFrame(bytes: Uint8Array): Frame | null {
  try {
    const frame = parseFrame(bytes);
    return frame.type === FrameType.DATA ? frame : null;
  } catch {
    return null;
  }
}
