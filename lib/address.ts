/**
 * `host:port` addresses, IPv6 in brackets (`[::1]:7000`).
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
