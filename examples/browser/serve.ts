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

/**
 * The page holds a network key: only its own script and style run, it connects only to this
 * server and WebSocket relays, and no other site may frame it (README, "Security model").
 */
export const CONTENT_SECURITY_POLICY: string = [
  "default-src 'self'",
  "connect-src 'self' ws: wss:",
  "img-src 'self' data:",
  "style-src 'self'",
  "script-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

/** Sent with every answer; the policy too on the page itself. */
const SECURITY_HEADERS: Record<string, string> = {
  "referrer-policy": "no-referrer",
  "x-content-type-options": "nosniff",
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
  /** The address to listen on. @default "127.0.0.1" */
  hostname?: string;
  /** The port to listen on. @default 0 (any free port) */
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
  /** Stops serving and removes the bundle built for this server. */
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
    if (request.method !== "GET") {
      return new Response("GET only\n", { status: 405, headers: SECURITY_HEADERS });
    }
    if (pathname === "/config.json") {
      const headers = { ...SECURITY_HEADERS, "content-type": "application/json" };
      return new Response(config, { headers });
    }
    const file = pathname === "/peerbase.js" ? bundle : FILES[pathname];
    if (!file) return new Response("not found\n", { status: 404, headers: SECURITY_HEADERS });
    const path = file === bundle ? bundle : new URL(file, HERE);
    const extension = String(file).split(".").pop()!;
    const type = TYPES[extension] ?? "application/octet-stream";
    const headers: Record<string, string> = {
      ...SECURITY_HEADERS,
      "content-type": type,
      "cache-control": "no-store",
    };
    if (extension === "html") headers["content-security-policy"] = CONTENT_SECURITY_POLICY;
    return new Response(await Deno.readFile(path), { headers });
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
