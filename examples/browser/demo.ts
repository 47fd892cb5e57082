// deno-lint-ignore-file no-console
/**
 * The browser example, all on this machine: a relay with a WebSocket port,
 * a Deno node serving `math.add` and `chat.post`, and the page. Open the
 * printed URL (it carries the demo's key in its `#fragment`, which browsers
 * never send to a server), join, and call the Deno node; the Deno node
 * greets every page that joins by calling the page's own `chat.post`.
 *
 * ```sh
 * deno task browser-demo
 * ```
 *
 * @module
 */

import { generateKey, Node, NodeEvent } from "../../mod.ts";
import { Relay } from "../../relay/mod.ts";
import { servePage } from "./serve.ts";

/** Starts the relay, the Deno node and the page; returns them, for the test and for main. */
export async function startDemo(options: { port?: number; network?: string } = {}) {
  const network = options.network ?? "demo";
  const networkKey = generateKey();
  const relay = new Relay({ hostname: "127.0.0.1", port: 0, wsPort: 0 });
  await relay.start();
  const ws = `ws://127.0.0.1:${relay.wsAddr!.port}`;
  const chat: string[] = [];
  const node = new Node({
    name: "deno",
    network,
    networkKey,
    useLocal: false,
    servers: `127.0.0.1:${relay.addr.port}`,
    commands: {
      math: { add: (_node, args) => (args as number[]).reduce((a, b) => a + b, 0) },
      chat: {
        post: (_node, args, _kwargs, ctx) => {
          chat.push(`${ctx.caller}: ${args[0]}`);
          return "received";
        },
      },
    },
  });
  // Greets each page that joins, through the page's own command.
  node.addEventListener(NodeEvent.PEER_JOIN, (event) => {
    const peer = event.detail.name;
    void node.command("chat.post", { target: peer, args: [`hello ${peer}, from Deno`] })
      .catch(() => {});
  });
  await node.start();
  const page = await servePage({ relay: ws, network, port: options.port ?? 0 });
  const url = `${page.url}#key=${encodeURIComponent(networkKey)}`;
  const close = async () => {
    await page.close();
    await node.close();
    await relay.close();
  };
  return { relay, node, page, url, ws, chat, networkKey, close, [Symbol.asyncDispose]: close };
}

if (import.meta.main) {
  const demo = await startDemo({ port: 8000 });
  console.log(`Open ${demo.url}`);
  console.log(`(relay ${demo.ws}; bundle ${demo.page.bundleSize} bytes; Ctrl-C to stop)`);
  const stop = () => void demo.close().then(() => Deno.exit(0));
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
}
