// deno-lint-ignore-file no-console
/**
 * Floor server process: the length-prefixed echo, or the bare hop to one.
 *
 * ```sh
 * deno run -A bench/worker_echo.ts --mode echo [--read-size BYTES]
 * deno run -A bench/worker_echo.ts --mode hop --target <port>
 * ```
 *
 * Prints `ready <port>`; exits when its stdin closes.
 *
 * @module
 */

import { serveEcho, serveHop } from "./floor.ts";
import { lifeline, required, workerArgs } from "./proc.ts";

lifeline();
const options = workerArgs();
const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
console.log(`ready ${listener.addr.port}`);
if (required(options, "mode") === "hop") {
  await serveHop(listener, { hostname: "127.0.0.1", port: Number(required(options, "target")) });
} else {
  await serveEcho(listener, Number(options.get("read-size") ?? 65_536));
}
