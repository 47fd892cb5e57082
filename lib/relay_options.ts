/**
 * The options of a relay, their defaults and their checks; and the two
 * facts a relay derives from a connection before trusting it: which source
 * its limits are charged to ({@linkcode sourceOf}), and whether an
 * admission proof names it.
 *
 * @module
 */

import type { SwitchboardFactory } from "./switchboard.ts";
import { DEFAULT_RELAY_BUFFER_BUDGET } from "./buffer_budget.ts";
import { DEFAULT_MAX_FRAME_SIZE } from "./frame.ts";
import { isBase64UrlOf } from "./encoding.ts";
import {
  formatRelayAddress,
  parseRelayAddress,
  RELAY_ADDRESS_FORMS,
  type RelayAddress,
} from "./address.ts";
import { checkInteger } from "./validate.ts";
import type { Transport } from "./transport.ts";
import { connectionCap, perAddressCap } from "./connection_gate.ts";
import {
  DEFAULT_FANOUT_BURST,
  DEFAULT_FANOUT_RATE,
  DEFAULT_MAX_PER_ADDRESS,
  DEFAULT_MAX_PER_NETWORK,
  DEFAULT_MAX_UNPROVEN,
  DEFAULT_SENDER_FRAME_BURST,
  DEFAULT_SENDER_FRAME_RATE,
  DEFAULT_VERIFY_BURST,
  DEFAULT_VERIFY_RATE,
} from "./relay_limits.ts";

/** Default relay port. */
export const DEFAULT_RELAY_PORT = 7000;
/** Default silence timeout: a node silent this long (or 3 ticks, if longer) is dropped. */
export const DEFAULT_RELAY_TIMEOUT = 10_000;
/** Default maximum number of registered nodes. */
export const DEFAULT_MAX_NODES = 100_000;
/** Default deadline for a new connection to register, ms. */
export const DEFAULT_REGISTER_DEADLINE = 5000;
/** Default time a draining relay gives its nodes to move away, ms. */
export const DEFAULT_DRAIN_GRACE = 3000;
/**
 * Most connections a relay holds at once by default, when the open-file
 * limit allows that many (above {@linkcode DEFAULT_MAX_NODES}: registered
 * nodes and connections still registering).
 */
export const DEFAULT_MAX_CONNECTIONS = 131_072;
/**
 * Most connections from one source address (IPv4 address or IPv6 /64) by
 * default: above the registrations (1024) and unregistered connections
 * (256) one source may hold, so that many nodes behind one NAT fit.
 */
export const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS = 2048;

export { sourceOf } from "./connection_gate.ts";

/** Options of {@linkcode Relay}. Times in milliseconds, sizes in bytes. */
export interface RelayOptions {
  /** Address to listen on. @default "0.0.0.0" */
  hostname?: string;
  /** Port to listen on (0: any free port). @default 7000 */
  port?: number;
  /**
   * A second port that serves WebSocket links (`ws://`, or `wss://` when
   * the relay serves TLS), for browsers and HTTP-only proxies; the same
   * admission, limits and caps apply. Unset: no WebSocket.
   */
  wsPort?: number;
  /**
   * Networks served, by network id (`NAME:ID` or `ID`, as `peerbase keygen
   * --network NAME` prints it); empty or unset: any network whose members
   * prove they hold its key. A bare name is refused: relays never see names.
   */
  networks?: string[];
  /**
   * Addresses nodes dial this relay by (`host:port`, `tls://host:port`,
   * `ws://host:port/path` or `wss://host:port/path`: the path counts, so
   * relays behind one proxy that routes by path each list their own),
   * checked against the address each admission proof names, so a proof
   * made for another relay is refused here. Unset: a host this relay can
   * tell is its own (loopback, its listen address, its interface
   * addresses when the `sys` permission is granted), with its port and
   * scheme. Set it when nodes dial a DNS name or a NAT's address.
   */
  publicAddresses?: string[];
  /** Silence after which a node is dropped (or 3 of its ticks, if longer). @default 10000 */
  timeout?: number;
  /** Most nodes registered at once. @default 100000 */
  maxNodes?: number;
  /** Largest frame forwarded, length field included. @default 16 MiB */
  maxFrame?: number;
  /**
   * Most bytes queued for one receiver; senders adding beyond it are slowed
   * (a receiver is cut only when nothing queued for it is written for a
   * silence timeout). @default 2 × maxFrame
   */
  maxBuffered?: number;
  /**
   * Most bytes of partial frames, and of frames queued by senders, held
   * for all connections together; past it, the connection holding the most
   * is cut. @default 512 MiB
   */
  bufferBudget?: number;
  /** Time a new connection has to register. @default 5000 */
  registerDeadline?: number;
  /** Frames per second one connection may send (control frames included). @default 20000 */
  senderFrameRate?: number;
  /** Frames one connection may send at once above its rate. @default 40000 */
  senderFrameBurst?: number;
  /** `*` frames per second one connection may send. @default 100 */
  fanoutRate?: number;
  /** `*` frames one connection may send at once above that rate. @default 200 */
  fanoutBurst?: number;
  /** Bytes one sender may have queued towards one receiver. @default maxFrame + 1 MiB */
  senderShare?: number;
  /** Registrations per source address. @default 1024 */
  maxPerAddress?: number;
  /** Registrations per network. @default 10000 */
  maxPerNetwork?: number;
  /** Admission proofs verified per source address per second. @default 200 */
  verifyRate?: number;
  /** Admission proofs one source address may have verified at once above that rate. @default 1000 */
  verifyBurst?: number;
  /** Connections one source address may hold before registering. @default 256 */
  maxUnproven?: number;
  /** Time a draining relay gives its nodes to move to other relays. @default 3000 */
  drainGrace?: number;
  /**
   * Most connections open at once, registered or not. One over it is
   * accepted and closed at once, before anything is read, and counted
   * (`stats.connectionsRefused.total`); raise the process's open-file limit
   * (`ulimit -n`, systemd `LimitNOFILE=`) and this with it when that
   * counter grows. A value above the open-file limit lets the process run
   * out of descriptors (accepts then fail and are retried, counted in
   * `stats.acceptFailures`).
   * @default DEFAULT_MAX_CONNECTIONS (131072), but at most the open-file
   * soft limit minus a reserve (an eighth of it, at least 64) when
   * `/proc/self/limits` can be read
   */
  maxConnections?: number;
  /**
   * Most connections open at once from one source address (IPv4 address
   * or IPv6 /64). One over it is closed at once and counted
   * (`stats.connectionsRefused.perAddress`); raise it when many nodes
   * share one public address (a NAT). Not the registration quota
   * (`maxPerAddress`).
   * @default DEFAULT_MAX_CONNECTIONS_PER_ADDRESS (2048), but at most a
   * quarter of `maxConnections`
   */
  maxConnectionsPerAddress?: number;
  /** How connections are accepted. @default plain TCP */
  transport?: Transport;
  /**
   * Where names, membership and delivery live: this relay alone, or a
   * cluster of relays on NATS ({@linkcode natsCluster}).
   * @default this relay alone
   */
  switchboard?: SwitchboardFactory;
}

/** {@linkcode RelayOptions} with every default applied and checked. */
export type ResolvedRelayOptions =
  & Required<Omit<RelayOptions, "transport" | "publicAddresses" | "switchboard" | "wsPort">>
  & { publicAddresses: Set<string> | null; wsPort: number | null };

/** Applies the defaults and checks every option; throws `TypeError`/`RangeError`. */
export function resolveRelayOptions(options: RelayOptions): ResolvedRelayOptions {
  const maxFrame = checkInt(options.maxFrame ?? DEFAULT_MAX_FRAME_SIZE, "maxFrame", 1024, 2 ** 31);
  const int = (key: keyof RelayOptions, fallback: number, min: number, max: number) =>
    checkInt(options[key] ?? fallback, key, min, max);
  const maxConnections = options.maxConnections === undefined
    ? connectionCap(DEFAULT_MAX_CONNECTIONS)
    : int("maxConnections", DEFAULT_MAX_CONNECTIONS, 1, 10_000_000);
  return {
    hostname: options.hostname ?? "0.0.0.0",
    port: int("port", DEFAULT_RELAY_PORT, 0, 65535),
    wsPort: options.wsPort === undefined ? null : int("wsPort", 0, 0, 65535),
    networks: checkNetworkIds(options.networks),
    publicAddresses: options.publicAddresses?.length
      ? new Set(options.publicAddresses.map((a) => checkPublicAddress(a)))
      : null,
    timeout: int("timeout", DEFAULT_RELAY_TIMEOUT, 10, 86_400_000),
    maxNodes: int("maxNodes", DEFAULT_MAX_NODES, 1, 10_000_000),
    maxFrame,
    maxBuffered: int("maxBuffered", 2 * maxFrame, 1024, 2 ** 40),
    bufferBudget: int("bufferBudget", DEFAULT_RELAY_BUFFER_BUDGET, 65_536, 2 ** 42),
    registerDeadline: int("registerDeadline", DEFAULT_REGISTER_DEADLINE, 10, 600_000),
    senderFrameRate: int("senderFrameRate", DEFAULT_SENDER_FRAME_RATE, 1, 10_000_000),
    senderFrameBurst: int("senderFrameBurst", DEFAULT_SENDER_FRAME_BURST, 1, 10_000_000),
    fanoutRate: int("fanoutRate", DEFAULT_FANOUT_RATE, 1, 10_000_000),
    fanoutBurst: int("fanoutBurst", DEFAULT_FANOUT_BURST, 1, 10_000_000),
    senderShare: int("senderShare", maxFrame + 1024 * 1024, 1024, 2 ** 40),
    maxPerAddress: int("maxPerAddress", DEFAULT_MAX_PER_ADDRESS, 1, 10_000_000),
    maxPerNetwork: int("maxPerNetwork", DEFAULT_MAX_PER_NETWORK, 1, 10_000_000),
    verifyRate: int("verifyRate", DEFAULT_VERIFY_RATE, 1, 10_000_000),
    verifyBurst: int("verifyBurst", DEFAULT_VERIFY_BURST, 1, 10_000_000),
    maxUnproven: int("maxUnproven", DEFAULT_MAX_UNPROVEN, 1, 10_000_000),
    drainGrace: int("drainGrace", DEFAULT_DRAIN_GRACE, 0, 600_000),
    maxConnections,
    maxConnectionsPerAddress: options.maxConnectionsPerAddress === undefined
      ? perAddressCap(DEFAULT_MAX_CONNECTIONS_PER_ADDRESS, maxConnections)
      : int("maxConnectionsPerAddress", DEFAULT_MAX_CONNECTIONS_PER_ADDRESS, 1, 10_000_000),
  };
}

function checkInt(value: unknown, what: string, min: number, max: number): number {
  return checkInteger(value, what, min, max, "relay");
}

/**
 * The ids of `networks` entries written `NAME:ID` or `ID`; throws a
 * `TypeError` naming the way out for anything else (a bare name cannot be
 * checked: relays never see names).
 */
export function checkNetworkIds(networks: unknown): string[] {
  if (networks === undefined) return [];
  if (!Array.isArray(networks)) {
    throw new TypeError("Cannot create relay: networks must be an array of NAME:ID strings");
  }
  return networks.map((entry) => {
    const id = typeof entry === "string" ? entry.slice(entry.lastIndexOf(":") + 1) : "";
    if (!isBase64UrlOf(id, 32)) {
      throw new TypeError(
        `Cannot create relay: network '${
          String(entry)
        }' has no network id. A relay sees network ids, never names: run 'peerbase keygen --network NAME' (or 'peerbase id --network NAME --key KEY') and pass the NAME:ID it prints`,
      );
    }
    return id;
  });
}

/** A relay address in canonical form, lowercased; null when it is not one. */
function canonical(address: unknown): string | null {
  try {
    // Scheme and host are case-insensitive; a WebSocket path is not.
    const parsed = parseRelayAddress(address as string);
    return formatRelayAddress({ ...parsed, hostname: parsed.hostname.toLowerCase() });
  } catch {
    return null;
  }
}

/** `address` canonical (a WebSocket path included) and lowercased when it is a relay address; else a `TypeError`. */
function checkPublicAddress(address: unknown): string {
  const found = canonical(address);
  if (found === null) {
    throw new TypeError(
      `Cannot create relay: public address '${
        String(address)
      }' must be written as nodes write it in servers: ${RELAY_ADDRESS_FORMS}`,
    );
  }
  return found;
}

/** Where a relay is, as an admission proof must name it. */
export interface RelayPlace {
  /** Its configured public addresses (canonical, host in lowercase), or null. */
  publicAddresses: Set<string> | null;
  /** Hosts that are this machine (loopback, the listen address, interface addresses). */
  ownHosts: ReadonlySet<string>;
  /** Its listening port. */
  port: number;
  /** True when it serves TLS. */
  tls: boolean;
  /** Its WebSocket port (`--ws-port`), or null when it has none. */
  wsPort: number | null;
}

/**
 * True when `address` (the one an admission proof names) is this relay:
 * one of its public addresses when it has some (a WebSocket path
 * included); otherwise a host of this machine (see {@linkcode ownHosts})
 * with its port and scheme, whatever the path. A name or
 * an address this relay cannot tell is its own (a DNS name, a NAT's
 * public address) needs `publicAddresses`: else a hostile relay could pass
 * a node's proof on to this one.
 */
export function namesRelay(address: string, relay: RelayPlace): boolean {
  if (relay.publicAddresses) {
    const found = canonical(address);
    return found !== null && relay.publicAddresses.has(found);
  }
  let named: RelayAddress;
  try {
    named = parseRelayAddress(address);
  } catch {
    return false;
  }
  const port = named.path === undefined ? relay.port : relay.wsPort;
  return named.tls === relay.tls && named.port === port &&
    relay.ownHosts.has(named.hostname.toLowerCase());
}

/**
 * The hosts a relay listening on `hostname` can tell are its own: loopback
 * names and addresses, `hostname` itself unless it is a wildcard, and the
 * machine's interface addresses when the `sys` permission is granted
 * (never prompted for).
 */
export function ownHosts(hostname: string): Set<string> {
  const hosts = new Set(["localhost", "127.0.0.1", "::1"]);
  if (hostname !== "0.0.0.0" && hostname !== "::") hosts.add(hostname.toLowerCase());
  try {
    const query = { name: "sys", kind: "networkInterfaces" } as const;
    if (Deno.permissions.querySync(query).state === "granted") {
      for (const i of Deno.networkInterfaces()) hosts.add(i.address.toLowerCase());
    }
  } catch {
    // No interfaces known: loopback and the listen address only.
  }
  return hosts;
}
