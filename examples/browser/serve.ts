// deno-lint-ignore-file no-console
/**
 * Serves the browser example: the page, its script and style, the peerbase
 * browser bundle (built at start with `deno bundle`), and `config.json`
 * telling the page which relay and network to offer. `demo.ts` runs it
 * with a relay and a Deno node; run it alone to point the page at a relay
 * of your own:
 *
 * ```sh
 * deno run -A examples/browser/serve.ts --relay ws://relay.example:7001 --network office
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";

const HERE = new URL("./", import.meta.url);
const ROOT = new URL("../../", import.meta.url);

const FILES: Record<string, string> = {
  "/": "index.html",
  "/index.html": "index.html",
  "/app.js": "app.js",
  "/style.css": "style.css",
};

const TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
};

/** Builds the browser bundle of `browser.ts` into `output` with `deno bundle`; resolves to its size. */
export async function buildBundle(output: string): Promise<number> {
  const { code, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [
      "bundle",
      "--platform",
      "browser",
      "--minify",
      "--output",
      output,
      new URL("browser.ts", ROOT).pathname,
    ],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (code !== 0) {
    throw new Error(`Cannot build the browser bundle: ${new TextDecoder().decode(stderr)}`);
  }
  return (await Deno.stat(output)).size;
}

/** Options of {@linkcode servePage}. */
export interface PageOptions {
  /** The relay's WebSocket address the page offers. */
  relay: string;
  /** The network name the page offers. */
  network: string;
  /** Where to listen. @default 127.0.0.1, any free port */
  hostname?: string;
  port?: number;
  /** The bundle to serve as peerbase.js (built into a temporary file when absent). */
  bundle?: string;
}

/** A running page server. */
export interface PageServer extends AsyncDisposable {
  /** The page's URL. */
  url: string;
  /** The bundle's size in bytes. */
  bundleSize: number;
  close(): Promise<void>;
}

/** Builds the bundle (unless given) and serves the page. */
export async function servePage(options: PageOptions): Promise<PageServer> {
  const temporary = options.bundle ? null : await Deno.makeTempDir({ prefix: "peerbase-page-" });
  const bundle = options.bundle ?? `${temporary}/peerbase.js`;
  const bundleSize = options.bundle ? (await Deno.stat(bundle)).size : await buildBundle(bundle);
  const config = JSON.stringify({ relay: options.relay, network: options.network });
  const server = Deno.serve({
    hostname: options.hostname ?? "127.0.0.1",
    port: options.port ?? 0,
    onListen: () => {},
  }, async (request) => {
    const { pathname } = new URL(request.url);
    if (request.method !== "GET") return new Response("GET only\n", { status: 405 });
    if (pathname === "/config.json") {
      return new Response(config, { headers: { "content-type": "application/json" } });
    }
    const file = pathname === "/peerbase.js" ? bundle : FILES[pathname];
    if (!file) return new Response("not found\n", { status: 404 });
    const path = file === bundle ? bundle : new URL(file, HERE);
    const type = TYPES[String(file).split(".").pop()!] ?? "application/octet-stream";
    return new Response(await Deno.readFile(path), {
      headers: { "content-type": type, "cache-control": "no-store" },
    });
  });
  const { hostname, port } = server.addr;
  const close = async () => {
    await server.shutdown();
    if (temporary) await Deno.remove(temporary, { recursive: true });
  };
  return {
    url: `http://${hostname}:${port}/`,
    bundleSize,
    close,
    [Symbol.asyncDispose]: close,
  };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      relay: { type: "string" },
      network: { type: "string", default: "demo" },
      port: { type: "string", default: "8000" },
      host: { type: "string", default: "127.0.0.1" },
    },
  });
  if (!values.relay) {
    console.error("usage: serve.ts --relay ws://host:port [--network NAME] [--port 8000]");
    Deno.exit(2);
  }
  const page = await servePage({
    relay: values.relay,
    network: values.network,
    hostname: values.host,
    port: Number(values.port),
  });
  console.log(`The page is at ${page.url} (bundle: ${page.bundleSize} bytes)`);
}
