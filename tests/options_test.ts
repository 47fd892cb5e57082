/**
 * Node option checks (`resolveOptions`) and the shared validators
 * (`lib/validate.ts`): each mistake is a `TypeError` or `RangeError` whose
 * message names the option and says what to do. Pure (no permissions),
 * but for the one test that starts nodes on a chosen multicast group, which
 * needs the private network namespace of `tools/netns.ts`.
 */

import { match, ok, strictEqual, throws } from "node:assert/strict";
import { type NodeOptions, resolveOptions } from "../lib/options.ts";
import { checkInteger, checkName, describeValue } from "../lib/validate.ts";
import { DEFAULT_ADVERTISER_PORT } from "../lib/discovery.ts";
import { DEFAULT_MULTICAST_GROUP } from "../lib/lan_defaults.ts";
import { generateKey } from "../lib/fernet.ts";
import { Node } from "../lib/node.ts";
import { IN_NETNS, NETNS_REASON, testIf } from "./_env.ts";
import { startNodes } from "./_fixtures.ts";

const BASE: NodeOptions = { name: "a", network: "net", networkKey: generateKey() };

/** The error `resolveOptions` throws for `BASE` with `override`; fails if it does not throw. */
function rejection(override: Record<string, unknown>): Error {
  try {
    resolveOptions({ ...BASE, ...override } as NodeOptions);
  } catch (error) {
    ok(error instanceof Error, String(error));
    // House style: the action first, then the detail; no final period.
    match(error.message, /^Cannot create node: /);
    ok(!error.message.endsWith("."), error.message);
    return error;
  }
  throw new Error(`resolveOptions accepted ${JSON.stringify(override)}`);
}

Deno.test("resolveOptions() names ports and its shape when ports is not a pair", async (t) => {
  await t.step("a bare port number", () => {
    const error = rejection({ ports: 7000 });
    ok(error instanceof TypeError, error.name);
    strictEqual(
      error.message,
      `Cannot create node: ports must be [localPort, advertiserPort], got the number 7000; use [7000, ${DEFAULT_ADVERTISER_PORT}] for TCP port 7000 and the usual advertiser port`,
    );
  });
  const cases: Array<[string, unknown, RegExp]> = [
    ["one element", [7000], /ports must be \[localPort, advertiserPort\], got an array of 1/],
    ["three elements", [1, 2, 3], /got an array of 3/],
    ["a string", "7000", /ports must be \[localPort, advertiserPort\], got the string "7000"/],
    ["null", null, /ports must be \[localPort, advertiserPort\], got null/],
  ];
  for (const [what, ports, message] of cases) {
    await t.step(what, () => {
      const error = rejection({ ports });
      ok(error instanceof TypeError, error.name);
      match(error.message, message);
      match(error.message, /; use \[\d+, \d+\]/);
    });
  }
  await t.step("a quoted port inside the pair", () => {
    const error = rejection({ ports: ["7000", DEFAULT_ADVERTISER_PORT] });
    ok(error instanceof TypeError, error.name);
    match(
      error.message,
      /ports\[0\] \(localPort\) must be an integer from 0 to 65535, got the string "7000"/,
    );
  });
  await t.step("an advertiser port out of range", () => {
    const error = rejection({ ports: [0, 70000] });
    ok(error instanceof RangeError, error.name);
    match(
      error.message,
      /ports\[1\] \(advertiserPort\) must be an integer from 1 to 65535, got 70000$/,
    );
  });
});

Deno.test("resolveOptions() names networkKey and generateKey() for a bad key, never quoting it", async (t) => {
  const secret = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";
  const cases: Array<[string, unknown, RegExp]> = [
    [
      "too short",
      secret.slice(0, 20),
      /^Cannot create node: networkKey must be 32 bytes as base64url with padding \(44 characters\), but it has 20 characters; use generateKey\(\)$/,
    ],
    ["no padding", secret.slice(0, 43), /but it has 43 characters; use generateKey\(\)$/],
    [
      "standard base64",
      "cw/0x689RpI+jtRR7oE8h/eQsKImvJapLeSbXpwF4e4=",
      /it uses the standard base64 alphabet \('\+' or '\/'\), not base64url \('-' and '_'\); use generateKey\(\)$/,
    ],
    [
      "a character outside base64",
      `${secret.slice(0, 42)}%=`,
      /it has characters outside base64url or lacks the final '='; use generateKey\(\)$/,
    ],
    [
      "a number",
      1234,
      /^Cannot create node: networkKey must be a string, got the number 1234; use generateKey\(\)$/,
    ],
    [
      "raw bytes",
      new Uint8Array(32),
      /networkKey must be a string, got a Uint8Array; use generateKey\(\)$/,
    ],
    ["missing", undefined, /networkKey must be a string, got undefined; use generateKey\(\)$/],
  ];
  for (const [what, networkKey, message] of cases) {
    await t.step(what, () => {
      const error = rejection({ networkKey });
      ok(error instanceof TypeError, error.name);
      match(error.message, message);
      ok(!error.message.includes("Fernet"), error.message);
      if (typeof networkKey === "string" && networkKey.length > 8) {
        ok(!error.message.includes(networkKey.slice(0, 8)), "the message quotes the key");
      }
    });
  }
  await t.step("a key from generateKey() is accepted", () => {
    const networkKey = generateKey();
    strictEqual(resolveOptions({ ...BASE, networkKey }).networkKey, networkKey);
  });
});

Deno.test("resolveOptions() names servers when it is neither a string nor a list of them", () => {
  const error = rejection({ servers: 7000 });
  ok(error instanceof TypeError, error.name);
  match(
    error.message,
    /servers must be a "host:port" string or an array of them, got the number 7000/,
  );
});

Deno.test("resolveOptions() refuses clientOnly together with commands, since a client-only node serves nothing", async (t) => {
  const add = () => 0;
  await t.step("clientOnly with commands is a RangeError", () => {
    const error = rejection({ clientOnly: true, commands: { add } });
    ok(error instanceof RangeError, error.name);
    strictEqual(
      error.message,
      "Cannot create node: clientOnly nodes serve nothing, so commands cannot be given; drop one of them",
    );
  });
  await t.step("an empty commands tree is still commands", () => {
    ok(rejection({ clientOnly: true, commands: {} }) instanceof RangeError);
  });
  await t.step("either alone is accepted", () => {
    strictEqual(resolveOptions({ ...BASE, clientOnly: true }).clientOnly, true);
    strictEqual(
      resolveOptions({ ...BASE, clientOnly: false, commands: { add } }).clientOnly,
      false,
    );
  });
});

Deno.test("resolveOptions() defaults ports to [0, DEFAULT_ADVERTISER_PORT]", () => {
  const resolved = resolveOptions(BASE);
  strictEqual(resolved.localPort, 0);
  strictEqual(resolved.advertiserPort, DEFAULT_ADVERTISER_PORT);
  strictEqual(resolveOptions({ ...BASE, ports: [7000, 41000] }).localPort, 7000);
});

Deno.test("checkName() and checkInteger() name what is being created", async (t) => {
  await t.step("a relay's network", () => {
    throws(() => checkName("a.b", "network", "relay"), {
      name: "RangeError",
      message:
        "Cannot create relay: network 'a.b' must be non-empty and contain no '.', '|', ':', '*' or control characters",
    });
  });
  await t.step("a name with a control character (it would bloat every frame header)", () => {
    throws(() => checkName("a\u0001b", "name"), { name: "RangeError" });
    throws(() => checkName("tab\there", "name"), { name: "RangeError" });
  });
  await t.step("a node's name by default", () => {
    throws(() => checkName(42, "name"), {
      name: "TypeError",
      message: "Cannot create node: name must be a string, got the number 42",
    });
  });
  await t.step("a quoted number is a TypeError that says it was a string", () => {
    throws(() => checkInteger("7000", "port", 0, 65535, "relay"), {
      name: "TypeError",
      message:
        'Cannot create relay: port must be an integer from 0 to 65535, got the string "7000"',
    });
  });
  await t.step("a number out of range is a RangeError", () => {
    throws(() => checkInteger(1.5, "maxNodes", 1, 10, "relay"), {
      name: "RangeError",
      message: "Cannot create relay: maxNodes must be an integer from 1 to 10, got 1.5",
    });
  });
});

Deno.test("describeValue() shows the type of anything but a number", () => {
  strictEqual(describeValue(7000), "the number 7000");
  strictEqual(describeValue("7000"), 'the string "7000"');
  strictEqual(describeValue(null), "null");
  strictEqual(describeValue(undefined), "undefined");
  strictEqual(describeValue(true), "true");
  strictEqual(describeValue([1]), "an array");
  strictEqual(describeValue({}), "an object");
  strictEqual(describeValue(() => 1), "a function");
});

Deno.test("new Node() refuses a multicastGroup that is not an IPv4 multicast address, naming the option and the value", async (t) => {
  const cases: Array<[string, unknown, typeof TypeError, string]> = [
    ["a unicast address", "10.0.0.1", RangeError, 'the string "10.0.0.1"'],
    ["the first address past 224.0.0.0/4", "240.0.0.1", RangeError, 'the string "240.0.0.1"'],
    ["an octet over 255", "239.1.2.300", RangeError, 'the string "239.1.2.300"'],
    ["leading zeros", "239.255.080.066", RangeError, 'the string "239.255.080.066"'],
    ["three octets", "239.1.2", RangeError, 'the string "239.1.2"'],
    ["a host name", "mcast.example", RangeError, 'the string "mcast.example"'],
    ["an empty string", "", RangeError, 'the string ""'],
    [
      "an IPv6 group",
      "ff02::1",
      RangeError,
      'the string "ff02::1" (IPv6 groups are not supported)',
    ],
    ["a number", 239, TypeError, "the number 239"],
    ["null", null, TypeError, "null"],
    ["an array of octets", [239, 1, 2, 3], TypeError, "an array"],
  ];
  for (const [what, multicastGroup, type, value] of cases) {
    await t.step(what, () => {
      throws(
        () => new Node({ ...BASE, multicastGroup } as NodeOptions<Node>),
        (error: unknown) => {
          ok(error instanceof type, String(error));
          strictEqual(
            error.message,
            `Cannot create node: multicastGroup must be an IPv4 multicast address, four decimal numbers from 224.0.0.0 to 239.255.255.255, got ${value}; use one of 239.255.0.0/16, which stays on the local network, such as the default 239.255.80.66`,
          );
          return true;
        },
      );
    });
  }
  await t.step("also with useLocal: false, where the group is unused", () => {
    const options = { ...BASE, useLocal: false, servers: "127.0.0.1:7000" };
    ok(rejection({ ...options, multicastGroup: "10.0.0.1" }) instanceof RangeError);
  });
});

Deno.test("resolveOptions() accepts every IPv4 multicast address as multicastGroup, and defaults it", () => {
  for (const group of ["224.0.0.0", "239.255.255.255", "239.1.2.3", "230.0.0.7"]) {
    strictEqual(resolveOptions({ ...BASE, multicastGroup: group }).multicastGroup, group);
  }
  strictEqual(resolveOptions(BASE).multicastGroup, DEFAULT_MULTICAST_GROUP);
});

Deno.test("new Node() refuses a hostname that is not a string, naming the option", async (t) => {
  for (
    const [what, hostname, value] of [["a number", 127, "the number 127"], ["null", null, "null"]]
  ) {
    await t.step(what as string, () => {
      throws(() => new Node({ ...BASE, hostname } as NodeOptions<Node>), {
        name: "TypeError",
        message:
          `Cannot create node: hostname must be a string, an address of this machine or "0.0.0.0" for every interface, got ${value}`,
      });
    });
  }
  strictEqual(resolveOptions(BASE).hostname, "0.0.0.0");
  strictEqual(resolveOptions({ ...BASE, hostname: "127.0.0.1" }).hostname, "127.0.0.1");
});

Deno.test("new Node() refuses useLocal, clientOnly or debug that is not true or false, naming the option", async (t) => {
  for (const what of ["useLocal", "clientOnly", "debug"]) {
    await t.step(what, () => {
      throws(() => new Node({ ...BASE, [what]: "true" } as NodeOptions<Node>), {
        name: "TypeError",
        message: `Cannot create node: ${what} must be true or false, got the string "true"`,
      });
    });
  }
  const resolved = resolveOptions({ ...BASE, clientOnly: false, debug: true });
  strictEqual(resolved.clientOnly, false);
  strictEqual(resolved.debug, true);
  strictEqual(resolveOptions(BASE).debug, false);
});

testIf(IN_NETNS, NETNS_REASON, {
  name: "nodes on a valid multicastGroup other than the default start and find each other",
  async fn() {
    // startNodes resolves only once every node lists every other one.
    await using group = await startNodes(["alice", "bob"], {
      common: { multicastGroup: "239.1.2.3", advertiseInterval: 50 },
    });
    ok(group.get("alice").peers.some((peer) => peer.name === "bob"));
    ok(group.get("bob").peers.some((peer) => peer.name === "alice"));
  },
});
