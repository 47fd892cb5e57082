// deno-lint-ignore-file no-console
/**
 * A relay process: the library's `Relay` (what `relay.ts` runs) on
 * 127.0.0.1 and a free port, with default limits and keepalive timeout
 * (but no per-source limits: every bench client shares 127.0.0.1);
 * with `--cert` and `--key` (PEM files) it serves TLS through
 * `TlsTransport`, as `relay.ts --cert FILE --key FILE` does; with
 * `--cluster URLS` (comma-separated `nats://host:port`) it joins the relay
 * cluster on those NATS servers (`natsCluster`, as `relay.ts --cluster`
 * does; npm `nats` comes from the bench lock); with `--ws-port PORT` (0: a
 * free one) it also serves WebSocket links there (`wsPort`, as
 * `relay.ts --ws-port` does).
 *
 * ```sh
 * deno run -A bench/worker_relay.ts [--cert FILE --key FILE] [--cluster URLS] [--ws-port PORT]
 * ```
 *
 * Prints `ws <port>` (with `--ws-port`), then `ready <port>`; exits when
 * its stdin closes.
 *
 * @module
 */

import { natsCluster, Relay, TlsTransport } from "../relay/mod.ts";
import { lifeline, workerArgs } from "./proc.ts";

lifeline();
const options = workerArgs();
const certFile = options.get("cert");
const keyFile = options.get("key");
const wsPort = options.get("ws-port");
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
  ...(wsPort !== undefined ? { wsPort: Number(wsPort) } : {}),
  ...(cluster.length > 0 ? { switchboard: natsCluster({ servers: cluster }) } : {}),
});
await relay.start();
if (relay.wsAddr) console.log(`ws ${relay.wsAddr.port}`);
console.log(`ready ${relay.addr.port}`);
