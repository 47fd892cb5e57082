/**
 * What a relay derives from a connection before trusting it: the source its
 * limits are charged to, and whether an admission proof names this relay.
 */

import { deepStrictEqual, strictEqual, throws } from "node:assert/strict";
import { namesRelay, resolveRelayOptions, sourceOf } from "../lib/relay_options.ts";

Deno.test("sourceOf() charges an IPv4 peer to its address, whatever its port", () => {
  strictEqual(sourceOf("203.0.113.7:51000"), "203.0.113.7");
  strictEqual(sourceOf("203.0.113.7:51001"), "203.0.113.7");
});

Deno.test("sourceOf() charges an IPv4-mapped IPv6 peer to its IPv4 address", () => {
  strictEqual(sourceOf("[::ffff:203.0.113.7]:51000"), "203.0.113.7");
});

Deno.test("sourceOf() charges an IPv6 peer to its /64, so one host cannot spread over its addresses", () => {
  const a = sourceOf("[2001:db8:1:2:aaaa::1]:7000");
  strictEqual(a, "2001:db8:1:2::/64");
  strictEqual(sourceOf("[2001:db8:1:2:bbbb:cccc:dddd:eeee]:7000"), a);
  strictEqual(sourceOf("[2001:0db8:0001:0002::9]:1"), a);
  strictEqual(sourceOf("[2001:db8::1]:7000"), "2001:db8:0:0::/64");
});

Deno.test("namesRelay() with public addresses accepts exactly those, in any case", () => {
  const relay = { publicAddresses: new Set(["tls://relay.example:443"]), port: 7000, tls: true };
  strictEqual(namesRelay("tls://Relay.Example:443", relay), true);
  strictEqual(namesRelay("tls://other.example:443", relay), false);
  strictEqual(namesRelay("relay.example:443", relay), false);
});

Deno.test("namesRelay() without public addresses checks the port and the scheme only", () => {
  const relay = { publicAddresses: null, port: 7000, tls: false };
  strictEqual(namesRelay("anything.example:7000", relay), true);
  strictEqual(namesRelay("[::1]:7000", relay), true);
  strictEqual(namesRelay("anything.example:7001", relay), false);
  strictEqual(namesRelay("tls://anything.example:7000", relay), false);
  strictEqual(namesRelay("not an address", relay), false);
});

Deno.test("resolveRelayOptions() fills every limit with its default and names a bad one", () => {
  const o = resolveRelayOptions({});
  deepStrictEqual(
    [
      o.senderFrameRate,
      o.fanoutRate,
      o.maxPerAddress,
      o.maxPerNetwork,
      o.verifyRate,
      o.maxUnproven,
    ],
    [20_000, 100, 1024, 10_000, 200, 256],
  );
  strictEqual(o.senderShare, o.maxFrame + 1024 * 1024);
  throws(() => resolveRelayOptions({ fanoutRate: 0 }), /fanoutRate/);
  throws(() => resolveRelayOptions({ publicAddresses: ["https://x:1"] }), /public address/);
});
