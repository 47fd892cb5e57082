// deno-lint-ignore-file no-console
/**
 * A relay process: the library's `Relay` (what `relay.ts` runs) on
 * 127.0.0.1 and a free port, with default limits and keepalive timeout.
 *
 * ```sh
 * deno run -A bench/worker_relay.ts
 * ```
 *
 * Prints `ready <port>`; exits when its stdin closes.
 *
 * @module
 */

import { Relay } from "../relay/mod.ts";
import { lifeline } from "./proc.ts";

lifeline();
const relay = new Relay({ hostname: "127.0.0.1", port: 0 });
await relay.start();
console.log(`ready ${relay.addr.port}`);
