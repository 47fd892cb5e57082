import assert from "node:assert/strict";
import { CommandRegistry, splitPath } from "../lib/commands.ts";

const noop = () => null;

Deno.test("register() creates intermediate namespaces for a dotted path", () => {
  const registry = new CommandRegistry();
  registry.register("math.int.add", noop);
  assert.equal(registry.lookup("math.int.add"), noop);
  assert.equal(registry.lookup("math.int"), undefined, "a namespace is not a command");
  assert.deepEqual(registry.list(), ["math.int.add"]);
});

Deno.test("register() refuses a function where a namespace stands", () => {
  const registry = new CommandRegistry();
  registry.register("math.add", noop);
  assert.throws(() => registry.register("math", noop), /is a namespace/);
});

Deno.test("register() refuses a namespace below a function", () => {
  const registry = new CommandRegistry();
  registry.register("math", noop);
  assert.throws(() => registry.register("math.add", noop), /'math' is a command, not a namespace/);
});

Deno.test("register() replaces an existing function at the same path", () => {
  const registry = new CommandRegistry();
  const other = () => 2;
  registry.register("a", noop);
  registry.register("a", other);
  assert.equal(registry.lookup("a"), other);
});

Deno.test("register() rejects empty path parts and non-functions", () => {
  const registry = new CommandRegistry();
  for (const path of ["", ".", "a.", ".a", "a..b"]) {
    assert.throws(() => registry.register(path, noop), RangeError, path);
  }
  assert.throws(() => registry.register("a", 5 as unknown as typeof noop), TypeError);
});

Deno.test("registerTree() merges a nested tree at the root or under a top path", () => {
  const registry = new CommandRegistry();
  registry.registerTree({ math: { add: noop, mul: noop }, ping: noop });
  registry.registerTree({ sub: noop }, "math");
  registry.registerTree({ upper: noop }, "text.utils");
  assert.deepEqual(registry.list(), [
    "math.add",
    "math.mul",
    "math.sub",
    "ping",
    "text.utils.upper",
  ]);
});

Deno.test("registerTree() refuses keys containing a dot", () => {
  assert.throws(() => new CommandRegistry().registerTree({ "a.b": noop }), /may not contain '.'/);
});

Deno.test("lookup() of unknown or malformed paths returns undefined", () => {
  const registry = new CommandRegistry();
  registry.register("a.b", noop);
  for (const path of ["x", "a.b.c", "a..b", "", "__proto__", "constructor"]) {
    assert.equal(registry.lookup(path), undefined, path);
  }
});

Deno.test("splitPath() splits on dots", () => {
  assert.deepEqual(splitPath("a.b.c"), ["a", "b", "c"]);
});
