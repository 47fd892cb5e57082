// deno-lint-ignore-file no-console
/**
 * A process of idle clients (see `relay_load.ts`).
 *
 * ```sh
 * deno run -A bench/worker_idle.ts --kind peerbase|nats|echo --port <port> \
 *   --count <n> --prefix <names prefix> --tick <ms> [--ca <CA file: dial with TLS>] \
 *   [--ports <port,port,...: client i dials the i-th modulo their number>] \
 *   [--ms <registration window, ms; default IDLE_REGISTER_MS>]
 * ```
 *
 * Prints `took <ms>` (from the first dial to the last client registered or
 * given up) and `ready <registered>` once every client registered (or gave
 * up), then keeps them alive until its stdin closes.
 *
 * @module
 */

import { type IdleKind, openIdleClients } from "./relay_load.ts";
import { lifeline, required, workerArgs } from "./proc.ts";

lifeline();
const options = workerArgs();
const caFile = options.get("ca");
const ports = options.get("ports")?.split(",").map(Number);
const ms = options.get("ms");
const began = performance.now();
const registered = await openIdleClients({
  kind: required(options, "kind") as IdleKind,
  port: Number(required(options, "port")),
  count: Number(required(options, "count")),
  prefix: required(options, "prefix"),
  tick: Number(required(options, "tick")),
  ...(caFile === undefined ? {} : { ca: await Deno.readTextFile(caFile) }),
  ...(ports === undefined ? {} : { ports }),
}, ms === undefined ? undefined : Number(ms));
console.log(`took ${performance.now() - began}`);
console.log(`ready ${registered}`);
