/**
 * Result types of `node.command()`, checked by running `deno check` on small
 * probe modules written at test time. A probe that fails to type-check fails
 * only its own test (with the compiler's message), not the type check of the
 * whole suite.
 */

import { ok } from "node:assert/strict";

const CONFIG = new URL("../deno.json", import.meta.url);
const MOD = new URL("../mod.ts", import.meta.url);

/** Type-checks `body` (which sees `node: Node`) under the project's compiler options. */
async function typeCheck(body: string): Promise<{ ok: boolean; output: string }> {
  const dir = await Deno.makeTempDir({ prefix: "peerbase-types-" });
  try {
    const probe = `${dir}/probe.ts`;
    await Deno.writeTextFile(
      probe,
      `import type { Node } from "${MOD.href}";\n` +
        `export async function probe(node: Node): Promise<void> {\n${body}\n}\n`,
    );
    const { success, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["check", "--quiet", "--config", CONFIG.pathname, probe],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder();
    return { ok: success, output: text.decode(stdout) + text.decode(stderr) };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: "command() result types: a single target is T, '*' and lists are records (probe control)",
  async fn() {
    const { ok: passed, output } = await typeCheck(`
      const one: number = await node.command<number>("p", { target: "calc" });
      const all: Record<string, number> = await node.command<number>("p", { target: "*" });
      const list: Record<string, number> = await node.command<number>("p", { target: ["a"] });
      const target: string = "*";
      // @ts-expect-error a string variable may hold "*": not a single value
      const single: number = await node.command("p", { target });
      void [one, all, list, single];
    `);
    ok(passed, output);
  },
});

Deno.test({
  name:
    "command<T>() with raiseErrors: false types each failed result as null (T | null), on one target or several",
  async fn() {
    const { ok: passed, output } = await typeCheck(`
      // With T given, O is not inferred: the type must still admit the null that comes back.
      // @ts-expect-error raiseErrors: false yields null for a failed call
      const value: number = await node.command<number>("p", { target: "calc", raiseErrors: false });
      const many = await node.command<number>("p", { target: ["a"], raiseErrors: false });
      // @ts-expect-error each failed target is null
      const first: number | undefined = many["a"];
      void [value, first];
    `);
    ok(passed, output);
  },
});

Deno.test({
  name: "waitForPeer() takes a name, a list, or a value that may be either",
  async fn() {
    const { ok: passed, output } = await typeCheck(`
      const one: { name: string } = await node.waitForPeer("calc");
      const many: { name: string }[] = await node.waitForPeer(["a", "b"]);
      const names: string | string[] = Math.random() > 0.5 ? "a" : ["a", "b"];
      const either = await node.waitForPeer(names);
      const list = Array.isArray(either) ? either : [either];
      void one; void many; void list;
    `);
    ok(passed, output);
  },
});
