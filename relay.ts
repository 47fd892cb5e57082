/**
 * The peerbase relay server entry point.
 *
 * Relays carry end-to-end encrypted calls between nodes on different LANs.
 * They are not implemented in this version yet: running this file prints a
 * clear message and exits with status 2.
 *
 * @example Run the relay (not yet available)
 * ```sh
 * deno run --allow-net relay.ts --port 7000
 * ```
 *
 * @module
 */

/** Message printed by the relay entry point until relays are implemented. */
export const RELAY_NOT_YET =
  "peerbase relay: not yet implemented in this version; LAN nodes work without a relay (see README)";

if (import.meta.main) {
  // deno-lint-ignore no-console
  console.error(RELAY_NOT_YET);
  Deno.exit(2);
}
