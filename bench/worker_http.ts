// deno-lint-ignore-file no-console
/**
 * The HTTP server of the HTTP comparison (`http.ts`): `Deno.serve` on
 * 127.0.0.1 with one JSON echo route, HTTP/1.1 with keep-alive, no TLS.
 *
 * ```sh
 * deno run -A bench/worker_http.ts
 * ```
 *
 * Prints `ready <port>`; exits when its stdin closes.
 *
 * @module
 */

import { echoHandler } from "./http.ts";
import { lifeline } from "./proc.ts";

lifeline();
const server = Deno.serve({
  hostname: "127.0.0.1",
  port: 0,
  onListen: ({ port }) => console.log(`ready ${port}`),
}, echoHandler);
await server.finished;
