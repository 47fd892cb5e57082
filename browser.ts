/**
 * peerbase for browsers (and any runtime without Deno's sockets): the same
 * API as `@peerbase/peerbase`, for remote-only nodes. A browser joins a
 * network through a relay's WebSocket port (`ws://` or `wss://` in
 * `servers`), end to end encrypted with the network key as everywhere.
 *
 * What a browser cannot do: LAN discovery and direct calls (no UDP, no
 * listening socket), so `useLocal` defaults to false here and `true` is an
 * `UnsupportedRuntimeError`; TCP relays (`host:port`, `tls://`) cannot be
 * dialled, so a browser lists WebSocket relays. Fernet runs on WebCrypto.
 * Nothing here touches `Deno` or `node:` modules when it loads.
 *
 * @example A remote-only node (in a browser, on Deno as well)
 * ```ts
 * import { generateKey, Node } from "@peerbase/peerbase/browser";
 * import assert from "node:assert/strict";
 *
 * const node = new Node({
 *   name: "tab",
 *   network: "office",
 *   networkKey: generateKey(),
 *   useLocal: false,
 *   servers: "wss://relay.example:443/peerbase",
 * });
 * assert.equal(node.name, "tab");
 * ```
 *
 * @module
 */

export { Node } from "./lib/node.ts";
export type {
  CommandOptions,
  CommandResult,
  ManyResult,
  SingleResult,
  WaitOptions,
} from "./lib/caller.ts";
export type { NodeStats, RouteCounts, RouteDecision } from "./lib/stats.ts";
export type { ConnectionCounts } from "./lib/connection_gate.ts";
export { NodeEvent } from "./lib/events.ts";
export type { NodeEventMap, NodeEventTarget, RelayRefusal, RelayStatus } from "./lib/events.ts";
export type { RelayInfo } from "./lib/relay_pool.ts";
export type { NodeWarning, WarningCode } from "./lib/warnings.ts";
export {
  DEFAULT_COMMAND_TIMEOUT,
  DEFAULT_LIST_TIMEOUT,
  DEFAULT_MAX_CONCURRENCY,
  DEFAULT_WAIT_TIMEOUT,
} from "./lib/caller.ts";
export {
  DEFAULT_ADVERTISE_INTERVAL,
  DEFAULT_CONNECT_TIMEOUT,
  DEFAULT_KEEPALIVE_TICK,
  DEFAULT_MAX_INBOUND_CONCURRENCY,
  DEFAULT_MAX_INBOUND_CONNECTIONS,
  DEFAULT_MAX_INBOUND_CONNECTIONS_PER_ADDRESS,
  DEFAULT_REPLAY_WINDOW,
} from "./lib/options.ts";
export type { NodeOptions } from "./lib/options.ts";
export type { CallContext, CommandTree, Handler, Via } from "./lib/commands.ts";
export type { ConflictInfo, PeerInfo } from "./lib/peers.ts";
export { generateKey } from "./lib/fernet.ts";
export { networkId } from "./lib/network_identity.ts";
export { DEFAULT_ADVERTISER_PORT, DEFAULT_MULTICAST_GROUP } from "./lib/lan_defaults.ts";
export { DEFAULT_MAX_FRAME_SIZE, PROTOCOL_VERSION } from "./lib/frame.ts";
export {
  CommandError,
  CommandTimeoutError,
  ConnectionClosedError,
  EncodeError,
  FrameError,
  InvalidTokenError,
  MessageTooLargeError,
  NameTakenError,
  NodeClosedError,
  NodeNotStartedError,
  NoMulticastError,
  NoRelayError,
  PeerbaseError,
  PeerNotFoundError,
  PortInUseError,
  ProtocolVersionError,
  RelayRefusedError,
  RelayTlsError,
  RemoteError,
  UnknownCommandError,
  UnsupportedRuntimeError,
} from "./lib/errors.ts";
