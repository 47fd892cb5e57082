/**
 * `host:port` addresses, IPv6 in brackets (`[::1]:7000`), and relay
 * addresses: the same, optionally prefixed with `tls://` (TLS) or `tcp://`
 * (plain TCP, the default).
 *
 * @module
 */

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

/** A relay's address: where it listens, and whether it speaks TLS. */
export interface RelayAddress extends HostPort {
  /** True for `tls://host:port`, false for plain TCP. */
  tls: boolean;
}

/**
 * Parses a relay address: `host:port` or `[v6]:port` (plain TCP; a
 * `tcp://` prefix is accepted too), or either of them after `tls://`.
 * Throws a `TypeError` naming the accepted forms for anything else
 * (`https://relay:443`, a missing port).
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
 * assert.throws(() => parseRelayAddress("https://relay.example:443"), TypeError);
 * ```
 */
export function parseRelayAddress(text: string): RelayAddress {
  const match = typeof text === "string" ? /^(?:(tls|tcp):\/\/)?(.*)$/i.exec(text.trim()) : null;
  try {
    if (!match) throw new TypeError("not a string");
    const { hostname, port } = parseHostPort(match[2]!);
    return { hostname, port, tls: match[1]?.toLowerCase() === "tls" };
  } catch (error) {
    throw new TypeError(
      `Cannot use relay address '${
        String(text)
      }': write it as host:port or [ipv6]:port for TCP, or tls://host:port or tls://[ipv6]:port for TLS, with a port from 1 to 65535`,
      { cause: error },
    );
  }
}

/**
 * Formats a relay address canonically: `tls://host:port` for TLS,
 * `host:port` for TCP (IPv6 hosts in brackets).
 *
 * @example
 * ```ts
 * import { formatRelayAddress, parseRelayAddress } from "./address.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(formatRelayAddress(parseRelayAddress("TLS://relay.example:7000")), "tls://relay.example:7000");
 * assert.equal(formatRelayAddress(parseRelayAddress("tcp://[::1]:7000")), "[::1]:7000");
 * ```
 */
export function formatRelayAddress(address: RelayAddress): string {
  return `${address.tls ? "tls://" : ""}${formatHostPort(address)}`;
}
