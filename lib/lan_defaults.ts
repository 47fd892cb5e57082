/**
 * The LAN's defaults and the rule for its multicast group, apart from the
 * LAN code itself: options and the public API name and check them without
 * loading discovery (which a browser never runs; see `node.ts`, which
 * imports `lan.ts` only when `useLocal` is on). `new Node()` and
 * `new Discovery()` both check the group with {@linkcode checkMulticastGroup}.
 *
 * @module
 */

import { describeValue } from "./validate.ts";

/**
 * UDP port that nodes advertise on, by default.
 *
 * @example
 * ```ts
 * import { strictEqual } from "node:assert/strict";
 * import { DEFAULT_ADVERTISER_PORT } from "@peerbase/peerbase";
 * strictEqual(DEFAULT_ADVERTISER_PORT, 41993);
 * ```
 */
export const DEFAULT_ADVERTISER_PORT = 41993;

/**
 * IPv4 multicast group that nodes advertise to, by default
 * (administratively scoped, never routed; sent with TTL 1).
 *
 * @example
 * ```ts
 * import { strictEqual } from "node:assert/strict";
 * import { DEFAULT_MULTICAST_GROUP } from "@peerbase/peerbase";
 * strictEqual(DEFAULT_MULTICAST_GROUP, "239.255.80.66");
 * ```
 */
export const DEFAULT_MULTICAST_GROUP = "239.255.80.66";

/** What {@linkcode checkMulticastGroup} accepts, for its messages. */
const MULTICAST_RULE =
  "an IPv4 multicast address, four decimal numbers from 224.0.0.0 to 239.255.255.255";

/**
 * Whether `address` is an IPv4 address in dotted-decimal form: four
 * numbers of 1 to 3 digits without leading zeros, each at most 255 (the
 * form the system's multicast join accepts).
 *
 * @example
 * ```ts
 * import { strictEqual } from "node:assert/strict";
 * import { isIPv4 } from "./lan_defaults.ts";
 * strictEqual(isIPv4("192.168.1.20"), true);
 * strictEqual(isIPv4("239.1.2.300"), false);
 * strictEqual(isIPv4("::1"), false);
 * ```
 */
export function isIPv4(address: string): boolean {
  const parts = address.split(".");
  return parts.length === 4 &&
    parts.every((part) => /^(0|[1-9]\d{0,2})$/.test(part) && Number(part) <= 255);
}

/**
 * Returns `group` if it is an IPv4 multicast address (`224.0.0.0/4`, in
 * dotted-decimal form); IPv6 groups are not supported. Throws a
 * `TypeError` naming `what` when it is not a string, a `RangeError` when
 * it is any other string. `what` names the option, `subject` what is being
 * created (`Cannot create node: multicastGroup must be …`).
 *
 * @example
 * ```ts
 * import { strictEqual, throws } from "node:assert/strict";
 * import { checkMulticastGroup, DEFAULT_MULTICAST_GROUP } from "./lan_defaults.ts";
 * strictEqual(checkMulticastGroup("239.1.2.3"), "239.1.2.3");
 * strictEqual(checkMulticastGroup(DEFAULT_MULTICAST_GROUP), DEFAULT_MULTICAST_GROUP);
 * throws(() => checkMulticastGroup("10.0.0.1"), {
 *   name: "RangeError",
 *   message:
 *     'Cannot create node: multicastGroup must be an IPv4 multicast address, four decimal numbers from 224.0.0.0 to 239.255.255.255, got the string "10.0.0.1"; use one of 239.255.0.0/16, which stays on the local network, such as the default 239.255.80.66',
 * });
 * throws(() => checkMulticastGroup(239, "group", "discovery"), {
 *   name: "TypeError",
 *   message: /^Cannot create discovery: group must be an IPv4 multicast address, .*, got the number 239;/,
 * });
 * ```
 */
export function checkMulticastGroup(
  group: unknown,
  what = "multicastGroup",
  subject = "node",
): string {
  if (typeof group === "string" && isIPv4(group)) {
    const first = Number(group.split(".")[0]);
    if (first >= 224 && first <= 239) return group;
  }
  const ipv6 = typeof group === "string" && group.includes(":")
    ? " (IPv6 groups are not supported)"
    : "";
  const message = `Cannot create ${subject}: ${what} must be ${MULTICAST_RULE}, got ${
    describeValue(group)
  }${ipv6}; use one of 239.255.0.0/16, which stays on the local network, such as the default ${DEFAULT_MULTICAST_GROUP}`;
  throw typeof group === "string" ? new RangeError(message) : new TypeError(message);
}
