/**
 * `host:port` addresses, IPv6 in brackets (`[::1]:7000`), and relay
 * addresses: the same, optionally prefixed with `tls://` (TLS) or `tcp://`
 * (plain TCP, the default), or a WebSocket URL (`ws://host:port/path`,
 * `wss://…`).
 *
 * @module
 */

import { denoRuntime } from "./runtime.ts";

/** A parsed address. */
export interface HostPort {
  /** Host name or IP address (IPv6 without brackets). */
  hostname: string;
  /** TCP or UDP port. */
  port: number;
}

/**
 * Parses `host:port` or `[v6]:port`. Throws `TypeError` for anything else,
 * naming the expected form.
 */
export function parseHostPort(text: string): HostPort {
  const match = typeof text === "string"
    ? /^(?:\[([0-9A-Fa-f:.]+)\]|([^\s:\[\]]+)):(\d{1,5})$/.exec(text.trim())
    : null;
  const port = match ? Number(match[3]) : NaN;
  if (!match || port < 1 || port > 65535) {
    throw new TypeError(
      `Cannot use server address '${
        String(text)
      }': write it as host:port, or [ipv6]:port, with a port from 1 to 65535`,
    );
  }
  return { hostname: match[1] ?? match[2]!, port };
}

/** Formats an address as `host:port`, bracketing IPv6 hosts. */
export function formatHostPort({ hostname, port }: HostPort): string {
  return hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`;
}

/** A relay's address: where it listens, whether it speaks TLS, and over WebSocket at which path. */
export interface RelayAddress extends HostPort {
  /** True for `tls://host:port` and `wss://…`, false for plain TCP and `ws://…`. */
  tls: boolean;
  /** For a WebSocket relay (`ws://`, `wss://`) only: the HTTP path, `/` at least. */
  path?: string;
}

/** The forms a relay address may take, for error messages. */
export const RELAY_ADDRESS_FORMS =
  "host:port or [ipv6]:port for TCP, tls://host:port for TLS, ws://host:port/path or wss://host:port/path for WebSocket";

/**
 * Parses a relay address: `host:port` or `[v6]:port` (plain TCP; a
 * `tcp://` prefix is accepted too), either of them after `tls://`, or a
 * WebSocket URL, `ws://host:port[/path]` or `wss://host:port[/path]` (the
 * port is required; the path defaults to `/`). Throws a `TypeError` naming
 * the accepted forms for anything else (`https://relay:443`, a missing
 * port).
 *
 * @example
 * ```ts
 * import { parseRelayAddress } from "./address.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(parseRelayAddress("tls://relay.example:7000"), {
 *   hostname: "relay.example",
 *   port: 7000,
 *   tls: true,
 * });
 * assert.deepEqual(parseRelayAddress("[::1]:7000"), { hostname: "::1", port: 7000, tls: false });
 * assert.deepEqual(parseRelayAddress("wss://relay.example:443/peerbase"), {
 *   hostname: "relay.example",
 *   port: 443,
 *   tls: true,
 *   path: "/peerbase",
 * });
 * assert.throws(() => parseRelayAddress("https://relay.example:443"), TypeError);
 * ```
 */
export function parseRelayAddress(text: string): RelayAddress {
  const match = typeof text === "string"
    ? /^(?:(tls|tcp|wss|ws):\/\/)?([^/?#]*)(\/[\w\-.~!$&'()*+,;=:@%/]*)?$/i.exec(text.trim())
    : null;
  try {
    if (!match) throw new TypeError("not a string");
    const scheme = match[1]?.toLowerCase() ?? "tcp";
    const { hostname, port } = parseHostPort(match[2]!);
    const web = scheme === "ws" || scheme === "wss";
    if (!web && match[3] !== undefined) throw new TypeError("a path needs ws:// or wss://");
    const tls = scheme === "tls" || scheme === "wss";
    return web ? { hostname, port, tls, path: match[3] ?? "/" } : { hostname, port, tls };
  } catch (error) {
    throw new TypeError(
      `Cannot use relay address '${
        String(text)
      }': write it as ${RELAY_ADDRESS_FORMS}, with a port from 1 to 65535`,
      { cause: error },
    );
  }
}

/**
 * Formats a relay address canonically: `tls://host:port` for TLS,
 * `host:port` for TCP, `ws://host:port/path` or `wss://host:port/path` for
 * WebSocket (IPv6 hosts in brackets; the path left out when it is `/`).
 *
 * @example
 * ```ts
 * import { formatRelayAddress, parseRelayAddress } from "./address.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(formatRelayAddress(parseRelayAddress("TLS://relay.example:7000")), "tls://relay.example:7000");
 * assert.equal(formatRelayAddress(parseRelayAddress("tcp://[::1]:7000")), "[::1]:7000");
 * assert.equal(formatRelayAddress(parseRelayAddress("WS://relay:80/")), "ws://relay:80");
 * assert.equal(formatRelayAddress(parseRelayAddress("wss://relay:443/pb")), "wss://relay:443/pb");
 * ```
 */
export function formatRelayAddress(address: RelayAddress): string {
  if (address.path !== undefined) {
    const path = address.path === "/" ? "" : address.path;
    return `${address.tls ? "wss" : "ws"}://${formatHostPort(address)}${path}`;
  }
  return `${address.tls ? "tls://" : ""}${formatHostPort(address)}`;
}

/**
 * True when this runtime can dial `address`: everything on Deno; only
 * WebSocket relays where there is no `Deno` (a browser).
 */
export function canDial(address: RelayAddress): boolean {
  return address.path !== undefined || denoRuntime() !== null;
}
