/**
 * The LAN's defaults, apart from the LAN code itself: options and the
 * public API name them without loading discovery (which a browser never
 * runs; see `node.ts`, which imports `lan.ts` only when `useLocal` is on).
 *
 * @module
 */

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
