/**
 * Module graphs, read with `deno info --json`: the relay loads no node code
 * (no Fernet, discovery, adverts or node options), no npm package and no
 * `node:crypto`; the WebCrypto Fernet loads nothing from `node:`; the Deno
 * entry points do load the synchronous `node:crypto` Fernet backend.
 */

import { deepStrictEqual, ok } from "node:assert/strict";

/** `deno info` reads local files only; this only catches a hang. */
const INFO_TIMEOUT = 60_000;

/** The specifiers of every module in the graph of `entry` (a path from the repository root). */
async function moduleGraph(entry: string): Promise<string[]> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", new URL(`../${entry}`, import.meta.url).pathname],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(INFO_TIMEOUT),
  }).output();
  const text = new TextDecoder();
  ok(output.success, text.decode(output.stderr));
  const info = JSON.parse(text.decode(output.stdout)) as {
    modules: { specifier: string }[];
    npmPackages?: Record<string, unknown>;
  };
  deepStrictEqual(Object.keys(info.npmPackages ?? {}), [], `npm packages in ${entry}`);
  const specifiers = info.modules.map((module) => module.specifier);
  ok(specifiers.length > 0, `no modules in the graph of ${entry}`);
  return specifiers;
}

/** The specifiers among `specifiers` that match `pattern`. */
function matching(specifiers: string[], pattern: RegExp): string[] {
  return specifiers.filter((specifier) => pattern.test(specifier));
}

const NODE_CODE = /fernet|advert|discovery|\/lib\/node\.ts$|\/lib\/options\.ts$/;

Deno.test({
  name: "the relay command line loads no Fernet, advert, discovery, node or npm module",
  async fn() {
    const graph = await moduleGraph("relay.ts");
    ok(graph.some((specifier) => specifier.endsWith("/lib/relay_server.ts")), graph.join("\n"));
    deepStrictEqual(matching(graph, NODE_CODE), []);
    // node:util (parseArgs) is fine; node:crypto would mean Fernet's node backend came along.
    deepStrictEqual(matching(graph, /^npm:|^node:crypto$/), []);
  },
});

Deno.test({
  name: "the relay library entry loads no node code, npm module or node:crypto",
  async fn() {
    const graph = await moduleGraph("relay/mod.ts");
    deepStrictEqual(matching(graph, NODE_CODE), []);
    deepStrictEqual(matching(graph, /^npm:|^node:crypto$|^node:util$/), []);
  },
});

Deno.test({
  name: "the WebCrypto Fernet (lib/fernet.ts) imports nothing from node:",
  async fn() {
    const graph = await moduleGraph("lib/fernet.ts");
    deepStrictEqual(matching(graph, /^(npm|node):/), []);
    deepStrictEqual(matching(graph, /fernet_node\.ts$/), []);
  },
});

Deno.test({
  name: "mod.ts and fernet/mod.ts load the synchronous node:crypto Fernet backend",
  async fn(t) {
    for (const entry of ["mod.ts", "fernet/mod.ts"]) {
      await t.step(entry, async () => {
        const graph = await moduleGraph(entry);
        ok(graph.some((specifier) => specifier.endsWith("/lib/fernet_node.ts")), graph.join("\n"));
        ok(graph.includes("node:crypto"), graph.join("\n"));
      });
    }
  },
});

Deno.test({
  name:
    "the Node's own module graph imports nothing from node: (the Deno entry adds the fast Fernet)",
  async fn() {
    const graph = await moduleGraph("lib/node.ts");
    deepStrictEqual(matching(graph, /^node:|^npm:|fernet_node\.ts$/), []);
  },
});
