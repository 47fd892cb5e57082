/**
 * `chooseRoute()`: the pure decision of which path a call's next attempt
 * takes. No sockets, no permissions.
 */

import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import { chooseRoute, DIRECT, hasRoute, type PeerPaths, type Route } from "../lib/route.ts";
import type { LocalRoute } from "../lib/peers.ts";
import { ConnectionClosedError, NameTakenError, PeerNotFoundError } from "../lib/errors.ts";

const LOCAL: LocalRoute = {
  instance: "aaaaaaaaaaaaaaaa",
  hostname: "10.0.0.2",
  port: 7001,
  interval: 1000,
  lastSeen: 0,
};

/** What a caller knows of "bob", with `overrides`. */
function paths(overrides: Partial<PeerPaths> = {}): PeerPaths {
  return {
    name: "bob",
    network: "office",
    local: { route: LOCAL, conflict: false },
    relays: [
      { relay: "r1:7000", instance: "bbbbbbbbbbbbbbbb", up: true },
      { relay: "r2:7000", instance: "cccccccccccccccc", up: true },
    ],
    known: true,
    ...overrides,
  };
}

const down = (relay: string, instance = "bbbbbbbbbbbbbbbb") => ({ relay, instance, up: false });
const up = (relay: string, instance = "bbbbbbbbbbbbbbbb") => ({ relay, instance, up: true });

Deno.test("chooseRoute() picks the path of the next attempt", async (t) => {
  const cases: Array<{ name: string; paths: PeerPaths; tried: string[]; via: string }> = [
    { name: "the direct LAN route comes first", paths: paths(), tried: [], via: DIRECT },
    {
      name: "once direct was tried, the first relay that is up",
      paths: paths(),
      tried: [DIRECT],
      via: "r1:7000",
    },
    {
      name: "a relay that is down is skipped",
      paths: paths({ relays: [down("r1:7000"), up("r2:7000")] }),
      tried: [DIRECT],
      via: "r2:7000",
    },
    {
      name: "a relay already tried is skipped",
      paths: paths(),
      tried: [DIRECT, "r1:7000"],
      via: "r2:7000",
    },
    {
      name: "with no LAN route, a relay is the first attempt",
      paths: paths({ local: undefined }),
      tried: [],
      via: "r1:7000",
    },
    {
      name: "with no LAN route, down and tried relays are skipped",
      paths: paths({
        local: undefined,
        relays: [up("r1:7000"), down("r2:7000"), up("r3:7000")],
      }),
      tried: ["r1:7000"],
      via: "r3:7000",
    },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      strictEqual(chooseRoute(c.paths, new Set(c.tried)).via, c.via);
      ok(hasRoute(c.paths, new Set(c.tried)), "hasRoute() agrees");
    });
  }
});

Deno.test("chooseRoute() returns the instance of the path it picks", () => {
  const direct: Route = chooseRoute(paths(), new Set());
  deepStrictEqual(direct, { via: DIRECT, instance: LOCAL.instance, local: LOCAL });
  const relayed = chooseRoute(paths(), new Set([DIRECT, "r1:7000"]));
  deepStrictEqual(relayed, { via: "r2:7000", instance: "cccccccccccccccc" });
});

Deno.test("chooseRoute() throws the typed error when there is no path", async (t) => {
  const cases: Array<{
    name: string;
    paths: PeerPaths;
    tried: string[];
    error: new (...args: never[]) => Error;
  }> = [
    {
      name: "a name contested on the LAN: NameTakenError",
      paths: paths({ local: { route: LOCAL, conflict: true } }),
      tried: [],
      error: NameTakenError,
    },
    {
      name: "an unknown peer: PeerNotFoundError",
      paths: paths({ local: undefined, relays: [], known: false }),
      tried: [],
      error: PeerNotFoundError,
    },
    {
      name: "a known peer with every relay down and nothing tried: PeerNotFoundError",
      paths: paths({ local: undefined, relays: [down("r1:7000"), down("r2:7000")] }),
      tried: [],
      error: PeerNotFoundError,
    },
    {
      name: "a peer that vanished after an attempt: PeerNotFoundError",
      paths: paths({ local: undefined, relays: [], known: false }),
      tried: ["r1:7000"],
      error: PeerNotFoundError,
    },
    {
      name: "every path tried: ConnectionClosedError",
      paths: paths(),
      tried: [DIRECT, "r1:7000", "r2:7000"],
      error: ConnectionClosedError,
    },
    {
      name: "direct tried and every relay down: ConnectionClosedError",
      paths: paths({ relays: [down("r1:7000"), down("r2:7000")] }),
      tried: [DIRECT],
      error: ConnectionClosedError,
    },
    {
      name: "only a LAN route, already tried: ConnectionClosedError",
      paths: paths({ relays: [] }),
      tried: [DIRECT],
      error: ConnectionClosedError,
    },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      throws(() => chooseRoute(c.paths, new Set(c.tried)), (error: unknown) => {
        ok(error instanceof c.error, `expected ${c.error.name}, got ${String(error)}`);
        strictEqual((error as { peer?: string }).peer, "bob");
        return true;
      });
      strictEqual(hasRoute(c.paths, new Set(c.tried)), false, "hasRoute() agrees");
    });
  }
});

Deno.test("chooseRoute() names the network in the NameTakenError of a contested name", () => {
  throws(
    () => chooseRoute(paths({ local: { route: LOCAL, conflict: true } }), new Set()),
    (error: unknown) => error instanceof NameTakenError && error.network === "office",
  );
});

Deno.test("chooseRoute() does not change the tried set it is given", () => {
  const tried = new Set([DIRECT]);
  chooseRoute(paths(), tried);
  deepStrictEqual([...tried], [DIRECT]);
});
