// deno-lint-ignore-file no-console
/**
 * Floor server process: the length-prefixed echo, or the bare hop to one,
 * over TCP or, with `--cert` and `--key` (PEM files), over TLS served as a
 * relay serves it (`TlsTransport`: `node:tls`, `TCP_NODELAY`).
 *
 * ```sh
 * deno run -A bench/worker_echo.ts --mode echo [--read-size BYTES] [--cert FILE --key FILE]
 * deno run -A bench/worker_echo.ts --mode hop --target <port> [--ca FILE] [--cert FILE --key FILE]
 * ```
 *
 * A hop with `--ca` dials its echo over TLS (`dialTls`), trusting that CA.
 * Prints `ready <port>`; exits when its stdin closes.
 *
 * @module
 */

import { TlsTransport } from "../lib/tls_transport.ts";
import { type EchoListener, serveEcho, serveHop } from "./floor.ts";
import { lifeline, required, workerArgs } from "./proc.ts";

lifeline();
const options = workerArgs();
const certFile = options.get("cert");
const keyFile = options.get("key");
let listener: EchoListener;
let port: number;
if (certFile !== undefined && keyFile !== undefined) {
  const [cert, key] = await Promise.all([certFile, keyFile].map((f) => Deno.readTextFile(f)));
  const tls = await new TlsTransport({ cert: cert!, key: key! })
    .listen({ hostname: "127.0.0.1", port: 0 });
  [listener, port] = [tls, tls.address.port];
} else {
  const tcp = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  [listener, port] = [tcp, tcp.addr.port];
}
console.log(`ready ${port}`);
if (required(options, "mode") === "hop") {
  const ca = options.get("ca");
  await serveHop(listener, {
    port: Number(required(options, "target")),
    ...(ca !== undefined ? { caCerts: [await Deno.readTextFile(ca)] } : {}),
  });
} else {
  await serveEcho(listener, Number(options.get("read-size") ?? 65_536));
}
