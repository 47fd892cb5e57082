/**
 * peerbase: programs on one LAN (and, through relays, across LANs) form a
 * named, end-to-end encrypted network and call each other's functions by
 * dotted command path.
 *
 * Every payload is a Fernet token (AES-128-CBC + HMAC-SHA256) under the
 * shared network key. LAN peers find each other by UDP multicast and call
 * each other directly over TCP. Run with `--unstable-net` (UDP), or put
 * `"unstable": ["net"]` in deno.json.
 *
 * The relay library is `@peerbase/peerbase/relay`, and Fernet on its own
 * (for tokens exchanged without a node) is `@peerbase/peerbase/fernet`.
 *
 * @example Two nodes: one serves `math.add`, the other calls it
 * ```ts
 * import { generateKey, Node } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 *
 * const networkKey = generateKey(); // share it with every member, keep it secret
 * const network = `office-${crypto.randomUUID().slice(0, 8)}`;
 *
 * // hostname "127.0.0.1" keeps this example on this machine (adverts stay on loopback).
 * await using server = new Node({
 *   name: "calc",
 *   network,
 *   networkKey,
 *   hostname: "127.0.0.1",
 *   commands: {
 *     math: {
 *       add: (_node, args) => (args as number[]).reduce((a, b) => a + b, 0),
 *     },
 *   },
 * });
 * await using client = new Node({ name: "desk", network, networkKey, hostname: "127.0.0.1" });
 * await server.start();
 * await client.start();
 * await client.waitForPeer("calc"); // LAN discovery takes a moment
 *
 * const sum = await client.command<number>("math.add", { target: "calc", args: [2, 3] });
 * assert.equal(sum, 5);
 * const everyone = await client.command("__echo__", { args: ["hi"] }); // target "*"
 * assert.deepEqual(Object.keys(everyone), ["calc"]);
 * ```
 *
 * @module
 */

// The synchronous node:crypto Fernet backend (the fast path for small calls) exists on Deno.
import "./lib/fernet_node.ts";

export * from "./browser.ts";
