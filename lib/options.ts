/**
 * Options of `new Node(...)`: their types, defaults and validation.
 *
 * @module
 */

import type { CommandTree } from "./commands.ts";
import {
  canDial,
  formatRelayAddress,
  parseRelayAddress,
  RELAY_ADDRESS_FORMS,
  type RelayAddress,
} from "./address.ts";
import { DEFAULT_MAX_FRAME_SIZE } from "./frame.ts";
import { DEFAULT_NODE_BUFFER_BUDGET } from "./buffer_budget.ts";
import {
  checkMulticastGroup,
  DEFAULT_ADVERTISER_PORT,
  DEFAULT_MULTICAST_GROUP,
} from "./lan_defaults.ts";
import { checkInteger, checkName, describeValue } from "./validate.ts";
import { connectionCap, perAddressCap } from "./connection_gate.ts";
import { isKey } from "./fernet.ts";
import { UnsupportedRuntimeError } from "./errors.ts";
import { denoRuntime } from "./runtime.ts";

/** Default LAN advertisement interval: 1000 ms. A peer is dropped after 3 missed adverts. */
export const DEFAULT_ADVERTISE_INTERVAL = 1000;
/** Default relay keepalive tick: 1000 ms. */
export const DEFAULT_KEEPALIVE_TICK = 1000;
/** Default cap on handlers running at once on a node. */
export const DEFAULT_MAX_INBOUND_CONCURRENCY = 256;
/** Default replay window: tokens older than 60 000 ms are refused; answers are remembered that long. */
export const DEFAULT_REPLAY_WINDOW = 60_000;
/** Default time to open a TCP connection to a peer: 2000 ms. */
export const DEFAULT_CONNECT_TIMEOUT = 2000;
/**
 * Default cap on direct connections a node accepts at once (one per peer
 * calling it), when the open-file limit allows that many.
 */
export const DEFAULT_MAX_INBOUND_CONNECTIONS = 16_384;
/** Default cap on direct connections a node accepts at once from one address. */
export const DEFAULT_MAX_INBOUND_CONNECTIONS_PER_ADDRESS = 1024;

/**
 * Options of `new Node(options)`. Times are milliseconds, sizes bytes.
 *
 * @typeParam N The node type handlers receive (always `Node`).
 */
export interface NodeOptions<N = unknown> {
  /** This node's name, unique in its network; no `.`, `|`, `:` or `*`. */
  name: string;
  /** The network's name; only nodes of the same network see each other. */
  network: string;
  /** The shared network key, as `generateKey()` returns it (Python-compatible). */
  networkKey: string;
  /**
   * The network's previous key, while its key is rotated: tokens, cards and
   * adverts under it are accepted, the node registers at relays under both
   * keys' network ids, and peers seen only under it are called under it.
   * New calls seal under `networkKey` otherwise. Restart every node with
   * the new key as `networkKey` and the old one here, then again without
   * it once all have moved (docs/PROTOCOL.md, "Key rotation").
   * @default none
   */
  previousKey?: string;
  /**
   * `[localPort, advertiserPort]`: the TCP port for direct calls (0 = any
   * free port, which is advertised) and the shared UDP advertiser port.
   * @default [0, DEFAULT_ADVERTISER_PORT]
   */
  ports?: [number, number];
  /** Address to bind the TCP listener to. @default "0.0.0.0" */
  hostname?: string;
  /**
   * Relay servers this node maintains: `host:port` (IPv6: `[::1]:7000`) for
   * plain TCP, `tls://host:port` for TLS (the relay's certificate must be
   * for that host, and signed by a trusted root or one of `caCerts`),
   * `ws://host:port[/path]` or `wss://host:port[/path]` for a relay's
   * WebSocket port (the only kind a browser can dial).
   */
  servers?: string | string[];
  /**
   * Extra trusted root certificates (PEM text, not file names) for relays
   * reached over TLS (`tls://` or `wss://` in `servers`), besides the default roots:
   * what a relay with a certificate from a private CA needs.
   * @default []
   */
  caCerts?: string[];
  /** Commands to register at start, as a nested tree. */
  commands?: CommandTree<N>;
  /**
   * Find and call peers on the LAN (UDP multicast + direct TCP). A browser
   * has neither: there it defaults to false, and true is an
   * `UnsupportedRuntimeError`. @default true on Deno, false elsewhere
   */
  useLocal?: boolean;
  /** Relay keepalive tick. @default 1000 */
  keepaliveTick?: number;
  /** LAN advertisement interval; peers drop us after 3 missed adverts. @default 1000 */
  advertiseInterval?: number;
  /** Most relays this node connects to, maintained and learned; unlimited when unset. */
  maxRemotes?: number;
  /** Most handlers running at once; further requests wait their turn. @default 256 */
  maxInboundConcurrency?: number;
  /** Largest frame sent or accepted. @default 16 MiB */
  maxFrameSize?: number;
  /**
   * Most bytes of partial frames this node holds for all its connections
   * together; past it, the connection holding the most is cut. @default 256 MiB
   */
  bufferBudget?: number;
  /** Replay window: older tokens are refused, answers remembered this long. @default 60000 */
  replayWindow?: number;
  /** Time allowed to open a TCP connection to a peer. @default 2000 */
  connectTimeout?: number;
  /**
   * Most direct connections accepted and open at once (peers calling this
   * node on the LAN). One over it is closed the moment it is accepted and
   * counted in `stats.connections.refused.total`; raise the open-file limit
   * (`ulimit -n`) and this with it when that counter grows.
   * @default DEFAULT_MAX_INBOUND_CONNECTIONS (16384), but at most the open-file soft
   * limit minus a reserve (an eighth of it, at least 64) when `/proc/self/limits` can be read
   */
  maxInboundConnections?: number;
  /**
   * Most direct connections accepted and open at once from one address
   * (IPv4 address or IPv6 /64); one over it is closed at once and counted
   * in `stats.connections.refused.perAddress`.
   * @default DEFAULT_MAX_INBOUND_CONNECTIONS_PER_ADDRESS (1024), but at most a
   * quarter of `maxInboundConnections`
   */
  maxInboundConnectionsPerAddress?: number;
  /**
   * Multicast group for LAN adverts: an IPv4 multicast address
   * (224.0.0.0 to 239.255.255.255); anything else is refused by `new Node()`.
   * @default DEFAULT_MULTICAST_GROUP
   */
  multicastGroup?: string;
  /** Dispatch a `debug` event for every route decision of a call. @default false */
  debug?: boolean;
  /**
   * Join as a client-only member: discover and call, serve nothing, never
   * linger in peers' tables. On the LAN it opens no TCP listener (answers
   * come back on the connections it dials; `address` stays null), never
   * announces and never says bye, only queries; at relays it registers
   * with the client-only flag, so they forward its answers but never list
   * it. What the `peerbase` command line uses. Every request it receives
   * is answered with an `UnknownCommandError` saying it serves
   * nothing, so `commands` cannot be given with it (a `RangeError`).
   * @default false
   */
  clientOnly?: boolean;
}

/** Options after validation, with every default filled in. */
export interface ResolvedOptions<N> {
  name: string;
  network: string;
  networkKey: string;
  previousKey: string | undefined;
  localPort: number;
  advertiserPort: number;
  hostname: string;
  servers: string[];
  caCerts: string[];
  commands: CommandTree<N> | undefined;
  useLocal: boolean;
  keepaliveTick: number;
  advertiseInterval: number;
  maxRemotes: number;
  maxInboundConcurrency: number;
  maxFrameSize: number;
  bufferBudget: number;
  replayWindow: number;
  connectTimeout: number;
  maxInboundConnections: number;
  maxInboundConnectionsPerAddress: number;
  multicastGroup: string;
  debug: boolean;
  clientOnly: boolean;
}

/** Returns `servers` as a list; throws a `TypeError` naming the option for any other shape. */
function checkServers(servers: unknown): string[] {
  if (servers === undefined) return [];
  if (typeof servers === "string") return [servers];
  if (Array.isArray(servers) && servers.every((server) => typeof server === "string")) {
    return servers;
  }
  throw new TypeError(
    `Cannot create node: servers must be a "host:port" string or an array of them, got ${
      describeValue(servers)
    }`,
  );
}

/** Returns `value`, `false` when unset; throws a `TypeError` naming `what` for anything but a boolean. */
function checkFlag(value: unknown, what: string): boolean {
  if (value !== undefined && typeof value !== "boolean") {
    throw new TypeError(
      `Cannot create node: ${what} must be true or false, got ${describeValue(value)}`,
    );
  }
  return value ?? false;
}

/**
 * `useLocal`, defaulting to true on Deno and false elsewhere (a browser);
 * true where there is no Deno is an `UnsupportedRuntimeError`.
 */
function checkUseLocal(useLocal: unknown): boolean {
  checkFlag(useLocal, "useLocal");
  // LAN discovery and direct calls need Deno's sockets.
  if (useLocal === true && denoRuntime() === null) {
    throw new UnsupportedRuntimeError(
      "useLocal (LAN discovery and direct calls) needs Deno's UDP and TCP sockets, which this runtime (a browser?) lacks: set useLocal: false and list ws:// or wss:// relays in servers",
      { action: "create node" },
    );
  }
  return useLocal === undefined ? denoRuntime() !== null : useLocal === true;
}

/** Returns each of `servers` as a canonical relay address; throws a `TypeError` naming `servers`. */
function checkServerAddresses(servers: string[]): string[] {
  return servers.map((server, index) => {
    let address: RelayAddress;
    try {
      address = parseRelayAddress(server);
    } catch (error) {
      throw new TypeError(
        `Cannot create node: servers[${index}] '${server}' is not a relay address: write it as ${RELAY_ADDRESS_FORMS}`,
        { cause: error },
      );
    }
    if (!canDial(address)) {
      throw new UnsupportedRuntimeError(
        `servers[${index}] '${server}' is a TCP relay, which this runtime (a browser?) cannot dial: list the relay's WebSocket address (ws://host:port or wss://host:port, its --ws-port)`,
        { action: "create node" },
      );
    }
    return formatRelayAddress(address);
  });
}

/** Returns `caCerts` (PEM certificates); throws a `TypeError` naming `caCerts` for any other shape. */
function checkCaCerts(caCerts: unknown): string[] {
  if (caCerts === undefined) return [];
  if (!Array.isArray(caCerts)) {
    throw new TypeError(
      `Cannot create node: caCerts must be an array of PEM certificates (text, not file names), got ${
        describeValue(caCerts)
      }`,
    );
  }
  caCerts.forEach((pem, index) => {
    if (typeof pem !== "string" || !pem.includes("-----BEGIN CERTIFICATE-----")) {
      throw new TypeError(
        `Cannot create node: caCerts[${index}] must be a PEM certificate with a "-----BEGIN CERTIFICATE-----" line, got ${
          typeof pem === "string"
            ? "text without one (a file name? pass the file's contents)"
            : describeValue(pem)
        }`,
      );
    }
  });
  return [...caCerts];
}

/** Returns `[localPort, advertiserPort]`; throws naming `ports` and its shape. */
function checkPorts(ports: unknown): [number, number] {
  if (ports === undefined) return [0, DEFAULT_ADVERTISER_PORT];
  if (!Array.isArray(ports) || ports.length !== 2) {
    const example = typeof ports === "number" ? ports : 0;
    throw new TypeError(
      `Cannot create node: ports must be [localPort, advertiserPort], got ${
        Array.isArray(ports) ? `an array of ${ports.length}` : describeValue(ports)
      }; use [${example}, ${DEFAULT_ADVERTISER_PORT}] for TCP port ${example} and the usual advertiser port`,
    );
  }
  return [
    checkInteger(ports[0], "ports[0] (localPort)", 0, 65535),
    checkInteger(ports[1], "ports[1] (advertiserPort)", 1, 65535),
  ];
}

/** Returns `hostname` (the listener's bind address), "0.0.0.0" when unset; throws a `TypeError` naming it for a non-string. */
function checkHostname(hostname: unknown): string {
  if (hostname === undefined) return "0.0.0.0";
  if (typeof hostname === "string") return hostname;
  throw new TypeError(
    `Cannot create node: hostname must be a string, an address of this machine or "0.0.0.0" for every interface, got ${
      describeValue(hostname)
    }`,
  );
}

/** Returns `key` if it is a Fernet key as `generateKey()` makes; throws naming `networkKey`. */
function checkNetworkKey(key: unknown, what = "networkKey"): string {
  if (typeof key !== "string") {
    throw new TypeError(
      `Cannot create node: ${what} must be a string, got ${
        key instanceof Uint8Array ? "a Uint8Array" : describeValue(key)
      }; use generateKey()`,
    );
  }
  if (isKey(key)) return key;
  // The key is secret: the message describes it, never quotes it.
  const detail = key.length !== 44
    ? `it has ${key.length} characters`
    : /[+/]/.test(key)
    ? "it uses the standard base64 alphabet ('+' or '/'), not base64url ('-' and '_')"
    : "it has characters outside base64url or lacks the final '='";
  throw new TypeError(
    `Cannot create node: ${what} must be 32 bytes as base64url with padding (44 characters), but ${detail}; use generateKey()`,
  );
}

/** `previousKey` if unset or a key other than `current`; throws naming `previousKey`. */
function checkPreviousKey(previous: unknown, current: unknown): string | undefined {
  if (previous === undefined) return undefined;
  const key = checkNetworkKey(previous, "previousKey");
  if (key === current) {
    throw new RangeError(
      "Cannot create node: previousKey is the same as networkKey; pass the old key as previousKey, or drop it",
    );
  }
  return key;
}

/** Validates `options` and fills in defaults. Throws `TypeError`/`RangeError`. */
export function resolveOptions<N>(options: NodeOptions<N>): ResolvedOptions<N> {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(
      "Cannot create node: pass an options object with name, network and networkKey",
    );
  }
  const servers = checkServerAddresses(checkServers(options.servers));
  const useLocal = checkUseLocal(options.useLocal);
  if (!useLocal && servers.length === 0) {
    throw new RangeError(
      "Cannot create node: useLocal is false and no servers are given, so it could reach nobody; set servers or useLocal",
    );
  }
  const maxRemotes = options.maxRemotes === undefined
    ? Infinity
    : checkInteger(options.maxRemotes, "maxRemotes", 0, 1_000_000);
  if (maxRemotes < servers.length) {
    throw new RangeError(
      `Cannot create node: maxRemotes (${maxRemotes}) is below the number of servers (${servers.length})`,
    );
  }
  const [localPort, advertiserPort] = checkPorts(options.ports);
  const maxInboundConnections = options.maxInboundConnections === undefined
    ? connectionCap(DEFAULT_MAX_INBOUND_CONNECTIONS)
    : checkInteger(options.maxInboundConnections, "maxInboundConnections", 1, 10_000_000);
  if (options.clientOnly === true && options.commands !== undefined) {
    throw new RangeError(
      "Cannot create node: clientOnly nodes serve nothing, so commands cannot be given; drop one of them",
    );
  }
  return {
    name: checkName(options.name, "name"),
    network: checkName(options.network, "network"),
    networkKey: checkNetworkKey(options.networkKey),
    previousKey: checkPreviousKey(options.previousKey, options.networkKey),
    localPort,
    advertiserPort,
    hostname: checkHostname(options.hostname),
    servers,
    caCerts: checkCaCerts(options.caCerts),
    commands: options.commands,
    useLocal,
    keepaliveTick: checkInteger(
      options.keepaliveTick ?? DEFAULT_KEEPALIVE_TICK,
      "keepaliveTick",
      10,
      3_600_000,
    ),
    advertiseInterval: checkInteger(
      options.advertiseInterval ?? DEFAULT_ADVERTISE_INTERVAL,
      "advertiseInterval",
      10,
      3_600_000,
    ),
    maxRemotes,
    maxInboundConcurrency: checkInteger(
      options.maxInboundConcurrency ?? DEFAULT_MAX_INBOUND_CONCURRENCY,
      "maxInboundConcurrency",
      1,
      1_000_000,
    ),
    maxFrameSize: checkInteger(
      options.maxFrameSize ?? DEFAULT_MAX_FRAME_SIZE,
      "maxFrameSize",
      1024,
      2 ** 31,
    ),
    bufferBudget: checkInteger(
      options.bufferBudget ?? DEFAULT_NODE_BUFFER_BUDGET,
      "bufferBudget",
      65_536,
      2 ** 40,
    ),
    replayWindow: checkInteger(
      options.replayWindow ?? DEFAULT_REPLAY_WINDOW,
      "replayWindow",
      1000,
      86_400_000,
    ),
    connectTimeout: checkInteger(
      options.connectTimeout ?? DEFAULT_CONNECT_TIMEOUT,
      "connectTimeout",
      1,
      600_000,
    ),
    maxInboundConnections,
    maxInboundConnectionsPerAddress: options.maxInboundConnectionsPerAddress === undefined
      ? perAddressCap(DEFAULT_MAX_INBOUND_CONNECTIONS_PER_ADDRESS, maxInboundConnections)
      : checkInteger(
        options.maxInboundConnectionsPerAddress,
        "maxInboundConnectionsPerAddress",
        1,
        10_000_000,
      ),
    multicastGroup: options.multicastGroup === undefined
      ? DEFAULT_MULTICAST_GROUP
      : checkMulticastGroup(options.multicastGroup),
    debug: checkFlag(options.debug, "debug"),
    clientOnly: checkFlag(options.clientOnly, "clientOnly"),
  };
}
