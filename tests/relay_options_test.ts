/**
 * What a relay derives from a connection before trusting it: the source its
 * limits are charged to, and whether an admission proof names this relay.
 */

import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import { namesRelay, ownHosts, resolveRelayOptions, sourceOf } from "../lib/relay_options.ts";

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

const OWN = new Set(["localhost", "127.0.0.1", "::1", "192.0.2.10"]);

Deno.test("namesRelay() with public addresses accepts exactly those, in any case", () => {
  const relay = {
    publicAddresses: new Set(["tls://relay.example:443"]),
    ownHosts: OWN,
    port: 7000,
    tls: true,
    wsPort: null,
  };
  strictEqual(namesRelay("tls://Relay.Example:443", relay), true);
  strictEqual(namesRelay("tls://other.example:443", relay), false);
  strictEqual(namesRelay("relay.example:443", relay), false);
  strictEqual(namesRelay("tls://127.0.0.1:7000", relay), false);
});

Deno.test("namesRelay() without public addresses accepts this machine's hosts only, with its port and scheme", () => {
  const relay = { publicAddresses: null, ownHosts: OWN, port: 7000, tls: false, wsPort: null };
  strictEqual(namesRelay("127.0.0.1:7000", relay), true);
  strictEqual(namesRelay("[::1]:7000", relay), true);
  strictEqual(namesRelay("LOCALHOST:7000", relay), true);
  strictEqual(namesRelay("192.0.2.10:7000", relay), true);
  strictEqual(namesRelay("hostile.example:7000", relay), false); // a name it cannot tell is its own
  strictEqual(namesRelay("198.51.100.7:7000", relay), false);
  strictEqual(namesRelay("127.0.0.1:7001", relay), false);
  strictEqual(namesRelay("tls://127.0.0.1:7000", relay), false);
  strictEqual(namesRelay("not an address", relay), false);
});

Deno.test("namesRelay() takes a WebSocket address for its wsPort whatever the path when it has no public address", () => {
  const relay = { publicAddresses: null, ownHosts: OWN, port: 7000, tls: false, wsPort: 7001 };
  strictEqual(namesRelay("ws://127.0.0.1:7001", relay), true);
  strictEqual(namesRelay("ws://127.0.0.1:7001/peerbase", relay), true);
  strictEqual(namesRelay("ws://127.0.0.1:7000", relay), false); // the TCP port
  strictEqual(namesRelay("127.0.0.1:7001", relay), false); // TCP on the WebSocket port
  strictEqual(namesRelay("wss://127.0.0.1:7001", relay), false); // no TLS here
  strictEqual(namesRelay("ws://hostile.example:7001", relay), false);
  strictEqual(namesRelay("ws://127.0.0.1:7001", { ...relay, wsPort: null }), false);
});

Deno.test("namesRelay() with public WebSocket addresses compares the path: relays behind one proxy cannot pass proofs to each other", () => {
  const relay = (path: string) => ({
    publicAddresses: new Set([`wss://proxy.example:443${path}`]),
    ownHosts: OWN,
    port: 7000,
    tls: false,
    wsPort: 7001,
  });
  const a = relay("/relay-a");
  const b = relay("/relay-b");
  strictEqual(namesRelay("wss://Proxy.example:443/relay-a", a), true);
  strictEqual(namesRelay("wss://proxy.example:443/Relay-A", a), false); // Paths are case-sensitive.
  strictEqual(namesRelay("wss://proxy.example:443/relay-a", b), false);
  strictEqual(namesRelay("wss://proxy.example:443", a), false);
  strictEqual(namesRelay("ws://proxy.example:443/relay-a", a), false);
});

Deno.test("ownHosts() holds the loopback names and a specific listen address, not a wildcard", () => {
  const specific = ownHosts("192.0.2.77");
  for (const host of ["localhost", "127.0.0.1", "::1", "192.0.2.77"]) ok(specific.has(host), host);
  ok(!ownHosts("0.0.0.0").has("0.0.0.0"));
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
