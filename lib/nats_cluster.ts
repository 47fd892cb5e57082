/**
 * A relay cluster on NATS: the `switchboard` option that makes a `Relay`
 * one of many relays acting as one (docs/PROTOCOL.md, "Relay clusters").
 *
 * @module
 */

import { ClusterSwitchboard, DEFAULT_CLUSTER_PREFIX } from "./cluster_switchboard.ts";
import { connectNats, type NatsBackplaneOptions } from "./nats_backplane.ts";
import type { SwitchboardFactory, SwitchboardHost } from "./switchboard.ts";

/** How a relay joins a cluster: its NATS servers and credentials, and the cluster's prefix. */
export interface NatsClusterOptions extends NatsBackplaneOptions {
  /**
   * Names of the cluster's buckets and subjects start with it: relays with
   * different prefixes on the same NATS servers are different clusters.
   * @default "peerbase"
   */
  prefix?: string;
}

/**
 * Returns `prefix` when it can name NATS subjects and buckets (1 to 32
 * letters, digits, `-` or `_`); else throws a `TypeError` saying so.
 */
export function checkClusterPrefix(prefix: string): string {
  if (/^[A-Za-z0-9_-]{1,32}$/.test(prefix)) return prefix;
  throw new TypeError(
    `Cannot join a relay cluster: the prefix must be 1 to 32 letters, digits, '-' or '_' (got ${
      JSON.stringify(prefix)
    })`,
  );
}

/**
 * The `switchboard` of a relay in a cluster on NATS (nats-server with
 * JetStream). The relay connects at `start()`, which rejects when no
 * server answers; npm `nats` is loaded then, and only then.
 *
 * @example A relay that joins a cluster (needs nats-server with JetStream)
 * ```ts ignore
 * import { natsCluster, Relay } from "@peerbase/peerbase/relay";
 *
 * await using relay = new Relay({
 *   port: 7000,
 *   switchboard: natsCluster({ servers: ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"] }),
 * });
 * await relay.start();
 * ```
 */
export function natsCluster(options: NatsClusterOptions): SwitchboardFactory {
  if (!Array.isArray(options.servers) || options.servers.length === 0) {
    throw new TypeError("Cannot join a relay cluster: servers must list at least one NATS URL");
  }
  const prefix = checkClusterPrefix(options.prefix ?? DEFAULT_CLUSTER_PREFIX);
  return <P>(host: SwitchboardHost<P>) =>
    new ClusterSwitchboard<P>(host, () => connectNats(options), { prefix });
}
