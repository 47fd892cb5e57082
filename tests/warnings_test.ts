import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { CommandError, PeerNotFoundError } from "../lib/errors.ts";
import { DEFAULT_WARNING_RECALL, type NodeWarning, Warnings } from "../lib/warnings.ts";

function clocked() {
  const clock = { now: 0 };
  const events: NodeWarning[] = [];
  const warnings = new Warnings((w) => events.push(w), { interval: 1000, now: () => clock.now });
  return { clock, events, warnings };
}

Deno.test("Warnings emits one event per code per interval and counts the rest", () => {
  const { clock, events, warnings } = clocked();
  const skew = { code: "clock-skew", message: "skewed", skew: 3_600_000 } as const;
  warnings.warn(skew);
  warnings.warn({ code: "key-mismatch", message: "another key" });
  warnings.warn(skew);
  warnings.warn(skew);
  clock.now = 999;
  warnings.warn(skew);
  clock.now = 1000;
  warnings.warn({ ...skew, skew: 10 });
  deepStrictEqual(events, [
    { ...skew, suppressed: 0 },
    { code: "key-mismatch", message: "another key", suppressed: 0 },
    { ...skew, skew: 10, suppressed: 3 },
  ]);
});

Deno.test("Warnings.explain() names the latest warning in PeerNotFoundError messages", () => {
  const { clock, warnings } = clocked();
  const plain = new PeerNotFoundError("bob");
  strictEqual(warnings.explain(plain).message, new PeerNotFoundError("bob").message);
  warnings.warn({ code: "key-mismatch", message: "adverts under another key" });
  clock.now = 5;
  warnings.warn({ code: "multicast-lost", message: "cannot send LAN adverts" });
  const error = warnings.explain(new PeerNotFoundError("bob"));
  ok(
    error.message.endsWith("; likely cause: cannot send LAN adverts (warning multicast-lost)"),
    error.message,
  );
  strictEqual(warnings.explain(error).message, error.message, "named once");
  const inner = new PeerNotFoundError("carol");
  const many = warnings.explain(new CommandError("x", { bob: 1, carol: inner }));
  ok(many.errors[0].message.includes("likely cause"), inner.message);
  clock.now = 5 + DEFAULT_WARNING_RECALL + 1;
  const later = warnings.explain(new PeerNotFoundError("dave"));
  ok(!later.message.includes("likely cause"), "an old warning is not named");
});
