/**
 * The peerbase relay as a library: carries end-to-end encrypted calls
 * between nodes on different LANs. It sees only routing headers and opaque
 * tokens, never the network key, and logs nothing about peers or traffic.
 * Times are in milliseconds.
 *
 * To run a relay from the command line instead, use the `relay.ts` script
 * of the repository (`deno task relay --help`; times in seconds there).
 *
 * @example Start a relay on a free port and stop it
 * ```ts
 * import { ok } from "node:assert/strict";
 * import { Relay } from "@peerbase/peerbase/relay";
 *
 * await using relay = new Relay({ hostname: "127.0.0.1", port: 0 });
 * await relay.start();
 * ok(relay.addr.port > 0);
 * ```
 *
 * @module
 */

export {
  DEFAULT_DRAIN_GRACE,
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
  DEFAULT_MAX_NODES,
  DEFAULT_REGISTER_DEADLINE,
  DEFAULT_RELAY_PORT,
  DEFAULT_RELAY_TIMEOUT,
  Relay,
} from "../lib/relay_server.ts";
export type { RelayOptions, RelayStats } from "../lib/relay_server.ts";
export { DEFAULT_MAX_FRAME_SIZE } from "../lib/frame.ts";
export type { Listener, ListenOptions, Stream, Transport } from "../lib/transport.ts";
export type {
  ConnectionCounts,
  ConnectionGate,
  ConnectionLimits,
  ConnectionRefusal,
  ConnectionSlot,
} from "../lib/connection_gate.ts";
export { tcpTransport } from "../lib/tcp_transport.ts";
export { natsCluster } from "../lib/nats_cluster.ts";
export type { NatsClusterOptions } from "../lib/nats_cluster.ts";
export type { NatsBackplaneOptions } from "../lib/nats_backplane.ts";
export type {
  Claim,
  MemberEntry,
  Quota,
  Registration,
  Switchboard,
  SwitchboardFactory,
  SwitchboardHost,
} from "../lib/switchboard.ts";
export { TlsTransport } from "../lib/tls_transport.ts";
export type { TlsTransportOptions } from "../lib/tls_transport.ts";
export type { HostPort } from "../lib/address.ts";
