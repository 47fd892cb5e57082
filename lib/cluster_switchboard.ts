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
  directoryKey,
  dropRelays,
  releaseKey,
} from "./cluster_directory.ts";
import { decodeFanout } from "./cluster_fanout.ts";
import { ClusterSender, dataFrame } from "./cluster_sender.ts";
import { LEASE_INTERVAL, LEASE_TTL, Leases } from "./cluster_leases.ts";
import { toBase64UrlBare } from "./encoding.ts";
import { NetworkView } from "./cluster_view.ts";
import { DirectoryMirror, type Seen } from "./directory_mirror.ts";
import type { Claim, Quota, Registration, Switchboard, SwitchboardHost } from "./switchboard.ts";

export { LEASE_INTERVAL, LEASE_TTL };

/** The names of the cluster's buckets and subjects start with this. */
export const DEFAULT_CLUSTER_PREFIX = "peerbase";
/**
 * Keys of the directory's ticks start with this: one per relay, put every
 * sweep, so a relay can tell its directory watch still delivers (no
 * network id, 43 characters, can be this word).
 */
const TICK_PREFIX = "relay-tick.";
/** How often a relay puts its tick, ms. */
const TICK_INTERVAL = 1000;
/** A directory watch that brought back no tick of this relay for this long is restarted, ms. */
const TICK_STALE = 2500;

/** Bytes of a backplane message kept for the names of a `*` frame of the largest size. */
export const FANOUT_RESERVE = 4096;
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

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const TICK = encoder.encode("{}");

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
  readonly #views = new Map<string, NetworkView<P>>();
  /** Holders cut because their name was claimed again: their release leaves the directory alone. */
  readonly #replaced = new WeakSet<object>();
  readonly #writes = new Set<Promise<unknown>>();
  /** Releases that failed, by key: the instance key they release. */
  readonly #retries = new Map<string, string>();
  /** When each sender on another relay was last blamed here. */
  readonly #blamed = new Map<string, number>();
  #backplane: Backplane | null = null;
  #names: Bucket | null = null;
  #leases: Leases | null = null;
  /** Every entry of the directory, as heard. */
  readonly #mirror = new DirectoryMirror();
  #sender: ClusterSender | null = null;
  #watch: Watch | null = null;
  #subscriptions: Subscription[] = [];
  #timer: ReturnType<typeof setInterval> | undefined;
  #ticker: ReturnType<typeof setInterval> | undefined;
  #sweeping = false;
  #closing: Promise<void> | null = null;
  /** This relay's tick in the directory, and when the watch last brought it back. */
  readonly #tickKey = `${TICK_PREFIX}${this.id}`;
  #tickHeard = -Infinity;
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

  /**
   * Largest frame the backplane carries: its maximum message less
   * {@linkcode FANOUT_RESERVE}, so a `*` frame of that size still travels
   * with a few hundred names per message.
   */
  get maxFrame(): number {
    return this.#backplane ? this.#backplane.maxPayload - FANOUT_RESERVE : Infinity;
  }

  /** Networks with a member here. */
  get networks(): number {
    return this.#views.size;
  }

  /** Frames not carried between relays, either way (see {@linkcode Switchboard.unrouted}). */
  get unrouted(): number {
    return this.dropped + (this.#sender?.dropped ?? 0);
  }

  /** Opens the buckets, takes this relay's lease, watches the directory and listens for frames. */
  async start(): Promise<void> {
    const backplane = this.#backplane = await this.#connect();
    const p = this.#prefix;
    this.#names = await backplane.bucket(`${p}-names`);
    const leases = await backplane.bucket(`${p}-relays`, { maxAge: LEASE_TTL });
    this.#leases = new Leases(leases, this.id);
    await this.#leases.start();
    this.#sender = new ClusterSender(
      backplane,
      p,
      this.id,
      this.#leases,
      (network) => this.#mirror.entries(network),
    );
    // The whole directory: watched first, then read, merged by revision (see DirectoryMirror).
    this.#watch = await this.#names.watch(">", (change) => this.#changed(change));
    for (const change of await this.#names.snapshot(">")) this.#changed(change);
    this.#mirror.loaded();
    const listen = (subject: string, heard: (subject: string, bytes: Uint8Array) => void) =>
      backplane.subscribe(subject, heard);
    this.#subscriptions = [
      listen(`${p}.r.${this.id}.*`, (subject, bytes) => this.#forMember(subject, bytes)),
      listen(`${p}.f.${this.id}.*`, (subject, bytes) => this.#forMembers(subject, bytes)),
      listen(`${p}.h.${this.id}`, (_, bytes) => this.#heldBack(bytes)),
      listen(`${p}.nr.${this.id}.*`, (subject) => this.#sender!.undelivered(subject)),
    ];
    this.#tickHeard = performance.now();
    void this.#tick();
    this.#ticker = setInterval(() => void this.#tick(), TICK_INTERVAL);
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
      return { status: "claimed", members: view.members(name) };
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
      this.#sender!.toMember(view.entries, target, bytes);
      return;
    }
    const reached = new Set<string>([sender.name]);
    for (const [name, { holder, registration }] of view.local) {
      if (holder === from || registration.clientOnly) continue;
      if (this.#host.send(holder, bytes, from)) reached.add(name);
    }
    const others = [...view.entries.keys()].filter((name) => !reached.has(name));
    this.#sender!.toMembers(view.entries, others, bytes);
  }

  /** Gives up the lease and leaves the backplane. Safe to call twice. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    clearInterval(this.#timer);
    clearInterval(this.#ticker);
    for (const subscription of this.#subscriptions) subscription.unsubscribe();
    this.#sender?.close();
    this.#watch?.stop();
    for (const view of this.#views.values()) view.close();
    this.#views.clear();
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.allSettled([...this.#writes]),
      new Promise((resolve) => timer = setTimeout(resolve, CLOSE_WAIT)),
    ]);
    clearTimeout(timer);
    await this.#names?.delete(this.#tickKey).catch(() => false);
    await this.#leases?.close();
    await this.#backplane?.close();
  }

  /** Opens the view of network `id`. */
  #open(id: string): NetworkView<P> {
    const push = (holder: P, bytes: Uint8Array) => this.#host.control(holder, bytes);
    const view = new NetworkView<P>(id, this.#mirror, push);
    this.#views.set(id, view);
    return view;
  }

  /** Closes a view that has no local member and no claim under way. */
  #closeIfIdle(view: NetworkView<P>): void {
    if (!view.idle || this.#views.get(view.id) !== view) return;
    this.#views.delete(view.id);
    view.close();
  }

  /** Cuts the local holder of `name`; its release leaves the directory to the newer claim. */
  #replace(view: NetworkView<P>, name: string, holder: P): void {
    view.local.delete(name);
    this.#replaced.add(holder as object);
    this.#host.replaced(holder);
  }

  /**
   * A change of the directory: into the mirror; members here hear what it
   * changed, and a name of ours the directory lost is claimed again.
   */
  #changed(change: BucketChange): void {
    if (change.key.startsWith(TICK_PREFIX)) {
      if (change.key === this.#tickKey && change.entry) this.#tickHeard = performance.now();
      return;
    }
    const changed = this.#mirror.apply(change);
    const view = changed && this.#views.get(changed.network);
    if (!view) return;
    view.announce(changed.name, changed.before, changed.after);
    if (!view.holds(changed.name, this.id)) this.#reclaim(view, changed.name);
  }

  /**
   * Claims `name` again for its local holder, whose hold is missing from
   * the directory (deleted, or taken as stale); cuts the holder when
   * another instance holds the name now.
   */
  #reclaim(view: NetworkView<P>, name: string): void {
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
   * Puts this relay's tick in the directory; when the watch has not brought
   * one back for {@linkcode TICK_STALE} ms, its consumer stalled (a NATS
   * server was lost): it starts again from the last revision heard.
   */
  async #tick(): Promise<void> {
    if (this.#closing) return;
    if (performance.now() - this.#tickHeard > TICK_STALE) {
      this.#watch?.restart();
      this.#tickHeard = performance.now(); // The new watch gets its own grace.
    }
    await this.#names!.put(this.#tickKey, TICK).catch(() => {}); // Away: the next tick tries.
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
    this.#sender?.sweep();
    try {
      let budget = SWEEP_WRITES;
      const old = performance.now() - SWEEP_INTERVAL;
      for (const view of this.#views.values()) {
        for (const name of view.local.keys()) {
          if (!view.holds(name, this.id)) this.#reclaim(view, name);
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
      // A relay the watch calls dead is dropped only if the bucket agrees (asked once per sweep).
      const asked = new Map<string, Promise<boolean>>();
      const holds = (relay: string) => {
        let answer = asked.get(relay);
        if (!answer) asked.set(relay, answer = this.#leases!.holds(relay).catch(() => true));
        return answer;
      };
      const dead: Array<() => Promise<void>> = [];
      for (const view of this.#views.values()) {
        for (const [name, seen] of view.entries) {
          if (dead.length >= budget) break;
          if (seen.entry.r.every((relay) => this.#leases!.isLive(relay, seen.at))) continue;
          const key = directoryKey(view.id, name);
          dead.push(() => this.#dropDead(key, seen, holds).catch(() => {}));
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
  async #dropDead(
    key: string,
    seen: Seen,
    holds: (relay: string) => Promise<boolean>,
  ): Promise<void> {
    const dead = new Set<string>();
    for (const relay of seen.entry.r) {
      if (!this.#leases!.isLive(relay, seen.at) && !await holds(relay)) dead.add(relay);
    }
    if (dead.size === 0) return;
    const current = await this.#names!.get(key);
    const entry = current && decodeEntry(current.value);
    if (current && entry) await dropRelays(this.#names!, key, current, entry, (r) => dead.has(r));
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
