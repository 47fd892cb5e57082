// deno-lint-ignore-file no-console
/**
 * A relay process: the library's `Relay` (what `relay.ts` runs) on
 * 127.0.0.1 and a free port, with default limits and keepalive timeout
 * (but no per-source limits: every bench client shares 127.0.0.1);
 * with `--cert` and `--key` (PEM files) it serves TLS through
 * `TlsTransport`, as `relay.ts --cert FILE --key FILE` does; with
 * `--cluster URLS` (comma-separated `nats://host:port`) it joins the relay
 * cluster on those NATS servers (`natsCluster`, as `relay.ts --cluster`
 * does; npm `nats` comes from the bench lock).
 *
 * ```sh
 * deno run -A bench/worker_relay.ts [--cert FILE --key FILE] [--cluster URLS]
 * ```
 *
 * Prints `ready <port>`; exits when its stdin closes.
 *
 * @module
 */

import { natsCluster, Relay, TlsTransport } from "../relay/mod.ts";
import { lifeline, workerArgs } from "./proc.ts";

lifeline();
const options = workerArgs();
const certFile = options.get("cert");
const keyFile = options.get("key");
const cluster = options.get("cluster")?.split(",").filter((s) => s !== "") ?? [];
const transport = certFile !== undefined && keyFile !== undefined
  ? new TlsTransport({
    cert: await Deno.readTextFile(certFile),
    key: await Deno.readTextFile(keyFile),
  })
  : undefined;
// Every bench client comes from 127.0.0.1, which a relay counts as one source: the per-source
// limits are lifted (admission proofs are still checked), the others keep their defaults.
const perSource = {
  maxPerAddress: 1e6,
  maxUnproven: 1e6,
  verifyRate: 1e6,
  verifyBurst: 1e6,
  maxConnectionsPerAddress: 1e6,
};
const relay = new Relay({
  hostname: "127.0.0.1",
  port: 0,
  ...perSource,
  ...(transport ? { transport } : {}),
  ...(cluster.length > 0 ? { switchboard: natsCluster({ servers: cluster }) } : {}),
});
await relay.start();
console.log(`ready ${relay.addr.port}`);
