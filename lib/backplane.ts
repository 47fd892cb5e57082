/**
 * What a relay cluster needs from its backplane: subjects to publish frames
 * on, and key-value buckets whose writes are conditional. NATS with
 * JetStream provides both (lib/nats_backplane.ts); the cluster switchboard
 * (lib/cluster_switchboard.ts) speaks only this interface.
 *
 * A conditional write that loses its race resolves to `null` (or `false`),
 * never throws: losing is part of the protocol. Anything else that fails
 * (the backplane is unreachable, a deadline passed) rejects.
 *
 * @module
 */

/** A key's value and the revision a conditional write must name. */
export interface BucketEntry {
  readonly value: Uint8Array;
  readonly revision: number;
}

/** A key-value bucket with conditional writes. */
export interface Bucket {
  /** The key's entry, or null when it has none (or was deleted). */
  get(key: string): Promise<BucketEntry | null>;
  /** Writes a key that has no value; null when it has one. Resolves to the new revision. */
  create(key: string, value: Uint8Array): Promise<number | null>;
  /** Writes a key still at `revision`; null when it moved on. */
  update(key: string, value: Uint8Array, revision: number): Promise<number | null>;
  /** Writes a key whatever it holds. */
  put(key: string, value: Uint8Array): Promise<number>;
  /** Deletes a key (only if still at `revision`, when given); false when it moved on. */
  delete(key: string, revision?: number): Promise<boolean>;
  /** Every key that has a value now. */
  keys(): Promise<string[]>;
  /**
   * The current value of every key that `filter` matches (`net.>`, or `>`
   * for all), deleted keys included (with `entry` null), each with its
   * revision.
   */
  snapshot(filter: string): Promise<BucketChange[]>;
  /**
   * Watches the keys that `filter` matches: `change` hears every change
   * from now on (a deleted key with `entry` null), in the bucket's order.
   */
  watch(filter: string, change: (change: BucketChange) => void): Promise<Watch>;
}

/** A key's value (null: deleted) at a revision. */
export interface BucketChange {
  readonly key: string;
  readonly entry: BucketEntry | null;
  readonly revision: number;
}

/** A running watch. */
export interface Watch {
  /** Stops it; no change is heard afterwards. */
  stop(): void;
  /**
   * Starts it again from the revision after the last one heard (its
   * consumer seems stalled); no change is missed.
   */
  restart(): void;
}

/** A subscription to a subject. */
export interface Subscription {
  /** Stops it; no message is heard afterwards. */
  unsubscribe(): void;
}

/** A relay's connection to its cluster's backplane. */
export interface Backplane {
  /** Largest message the backplane carries, bytes. */
  readonly maxPayload: number;
  /**
   * Sends `bytes` to whoever subscribes `subject` (never back to this
   * connection). With `reply`, a message with no subscriber at all makes
   * the backplane send an empty message to `reply` (NATS: status 503, no
   * responders). False when it was not sent: disconnected (nothing is kept
   * for later), or larger than {@linkcode Backplane.maxPayload}.
   */
  publish(subject: string, bytes: Uint8Array, reply?: string): boolean;
  /** Hears every message on `subject` (which may end with the wildcard `.*`). */
  subscribe(subject: string, message: (subject: string, bytes: Uint8Array) => void): Subscription;
  /** Opens (creating when missing) a bucket; `maxAge` ms drops values older than that. */
  bucket(name: string, options?: { maxAge?: number }): Promise<Bucket>;
  /** Closes the connection; safe to call twice. */
  close(): Promise<void>;
}
