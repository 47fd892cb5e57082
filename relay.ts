/**
 * The peerbase relay's command line: carries end-to-end encrypted calls
 * between nodes on different LANs. It sees only routing headers and opaque
 * tokens, never the network key, and logs nothing about peers or traffic.
 * Times on the command line are SECONDS, as in the Python original:
 *
 * ```sh
 * deno run --v8-flags=--max-semi-space-size=1,--heap-growing-percent=30 \
 *   --allow-net --allow-read --allow-sys=networkInterfaces relay.ts --port 7000 [--host 0.0.0.0] \
 *   [--ws-port 7001] \
 *   [--network NAME:ID ...] [--timeout SECONDS] [--config FILE] \
 *   [--max-nodes N] [--max-frame BYTES] [--cert FILE --key FILE] \
 *   [--drain SECONDS] [--metrics HOST:PORT] [limits, see --help]
 * ```
 *
 * It admits a node only with a proof that the node holds its network's key
 * and routes on network ids and pseudonyms, never names. On SIGTERM or
 * SIGINT it drains: nodes are told to move to their other relays, and it
 * closes once they have (or after `--drain` seconds).
 *
 * With `--cert` and `--key` (PEM files) it serves TLS, with `TCP_NODELAY`
 * on every connection; nodes list it as `tls://host:port`. On SIGHUP it
 * reads both files again and serves the new certificate to new connections
 * without dropping open ones; a file that does not load leaves the old
 * certificate in place and prints one error line.
 *
 * This script is what `deno task relay` runs and `deno task compile`
 * builds; it is not a package export. To embed a relay, import `Relay`
 * from `@peerbase/peerbase/relay` (times in milliseconds).
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  natsCluster,
  type NatsClusterOptions,
  Relay,
  type RelayOptions,
  TlsTransport,
} from "./relay/mod.ts";
import { describeValue, UsageError } from "./lib/validate.ts";
import { formatHostPort, formatRelayAddress, type HostPort, parseHostPort } from "./lib/address.ts";
import { checkNetworkIds } from "./lib/relay_options.ts";
import { checkClusterPrefix } from "./lib/nats_cluster.ts";
import { DEFAULT_CLUSTER_PREFIX } from "./lib/cluster_switchboard.ts";
import { type MetricsServer, serveMetrics } from "./lib/relay_metrics.ts";

export { UsageError };

/** The relay's version, as `--version` prints it. */
export const RELAY_VERSION = "0.1.0";

/**
 * The V8 flags a relay process runs with: `deno task relay` passes them
 * (`deno run --v8-flags=...`) and `deno task compile` builds them into
 * `peerbase-relay`. `--max-semi-space-size=1` keeps V8's young generation
 * at 1 MiB a semi-space (by default it grows to 16 MiB or more after a burst
 * of registrations, and stays there); `--heap-growing-percent=30` lets the
 * old generation grow 30% past what the last full collection kept (by
 * default up to 4x), so the garbage of a burst does not stay resident. An
 * idle relay then holds little more than its nodes' state. A program that
 * embeds `Relay` passes the same flags to its own `deno run`.
 */
export const RELAY_V8_FLAGS = "--max-semi-space-size=1,--heap-growing-percent=30";

/**
 * The environment a relay process runs with: glibc's `malloc` keeps up to
 * 32 MiB of freed memory for reuse (`MALLOC_TRIM_THRESHOLD_`) and takes
 * 8 MiB more at a time (`MALLOC_TOP_PAD_`), instead of giving memory back
 * to the system as soon as 128 KiB lie free. A relay forwarding large
 * messages frees a frame's buffer for every 64 KiB piece; given back and
 * taken again, each page is touched afresh, which on a virtual machine
 * costs about 10 µs a page. Measured on the bench VM, a relayed 1 MiB call
 * cost the relay 6.9–13.9 ms of CPU without it and 2.8–4.0 ms with it.
 * `deno task relay` sets it; environment cannot be built into a compiled
 * binary, so set it where `peerbase-relay` is started (systemd:
 * `Environment=`). Other C libraries ignore it.
 *
 * @example
 * ```ts
 * import { RELAY_MALLOC_ENV } from "./relay.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(RELAY_MALLOC_ENV.MALLOC_TRIM_THRESHOLD_, String(32 * 1024 * 1024));
 * ```
 */
export const RELAY_MALLOC_ENV: Readonly<Record<string, string>> = {
  MALLOC_TRIM_THRESHOLD_: String(32 * 1024 * 1024),
  MALLOC_TOP_PAD_: String(8 * 1024 * 1024),
};

const USAGE = `peerbase relay ${RELAY_VERSION}: forwards end-to-end encrypted peerbase traffic

Usage: peerbase-relay [options]
   or: deno run --v8-flags=${RELAY_V8_FLAGS} --allow-net --allow-read \\
         --allow-sys=networkInterfaces relay.ts [options]
Run either with ${Object.entries(RELAY_MALLOC_ENV).map(([k, v]) => `${k}=${v}`).join(" ")}
in the environment (as deno task relay does): large messages then reuse memory.

Options:
  --port PORT          TCP port to listen on (default 7000; 0 = any free port)
  --ws-port PORT       also serve WebSocket links on this port, for browsers
                       and HTTP-only proxies: nodes list ws://host:PORT
                       (wss://host:PORT with --cert/--key); same admission
                       and limits (default: none; 0 = any free port)
  --host ADDRESS       address to listen on (default 0.0.0.0)
  --network NAME:ID    serve only this network, by the network id that
                       'peerbase keygen --network NAME' prints; repeat for
                       several (default: any network whose nodes prove they
                       hold its key)
  --public-address A   an address nodes dial this relay by (host:port,
                       tls://host:port, ws://host:port or wss://host:port);
                       repeat for several. Proofs naming
                       another address are refused (default: this machine's
                       own addresses, so name a DNS name or a NAT's address
                       nodes dial here)
  --timeout SECONDS    drop a node silent this long, or 3 of its keepalive
                       ticks if longer (default 10)
  --max-nodes N        most nodes registered at once (default 100000)
  --max-frame BYTES    largest frame forwarded (default 16777216)
  --max-per-address N  registrations per source address (default 1024)
  --max-per-network N  registrations per network (default 10000)
  --sender-rate N      frames per second one node may send (default 20000)
  --fanout-rate N      '*' frames per second one node may send (default 100)
  --sender-share BYTES bytes one node may have queued towards another
                       before it is slowed (default max-frame + 1 MiB)
  --verify-rate N      admission proofs checked per source address per
                       second (default 200)
  --max-unproven N     connections per source address before they register
                       (default 256)
  --max-connections N  connections open at once, registered or not; more are
                       closed as soon as accepted (default 131072, but at
                       most the open-file limit, ulimit -n, minus an eighth
                       of it, at least 64)
  --max-connections-per-address N
                       connections open at once from one source address
                       (default 2048, but at most a quarter of
                       --max-connections)
  --drain SECONDS      on SIGTERM or SIGINT, give nodes this long to move to
                       other relays before closing (default 3; a second
                       signal closes at once)
  --metrics HOST:PORT  serve aggregate counters (Prometheus text format) at
                       http://HOST:PORT/metrics; no names, no addresses
  --cert FILE          serve TLS with this certificate chain (PEM file);
                       needs --key; nodes then list tls://host:port
  --key FILE           private key of --cert (PEM file)
  --cluster URLS       join a relay cluster on these NATS servers (nats-server
                       with JetStream; comma-separated nats://host:port or
                       tls://host:port): any relay of the cluster then
                       reaches every member of a network. Run the relay
                       with --lock=relay/cluster.lock (see the README)
  --cluster-user NAME  NATS user (with --cluster-password-file)
  --cluster-password-file FILE
                       file holding the NATS password
  --cluster-token-file FILE
                       file holding a NATS token
  --cluster-ca FILE    CA certificate (PEM) to verify the NATS servers' TLS
  --cluster-prefix P   names of the cluster's buckets and subjects start
                       with P (default peerbase): one prefix, one cluster
  --config FILE        JSON file with RelayOptions (hostname, port, networks,
                       publicAddresses, timeout, maxNodes, maxFrame,
                       maxPerAddress, maxPerNetwork, senderFrameRate,
                       fanoutRate, senderShare, verifyRate, maxUnproven,
                       maxConnections, maxConnectionsPerAddress,
                       drainGrace; times in MILLISECONDS), metrics
                       and cert, key (file names); command-line options
                       override it
  -h, --help           show this help
  -V, --version        show the version

All times on the command line are in seconds. On SIGHUP a TLS relay reads
--cert and --key again: new connections get the new certificate, open ones
stay. The relay never holds a network key and writes nothing about peers
or traffic: only its own start, reload and stop lines and errors.`;

/**
 * What the command line gives: relay options (milliseconds) plus the
 * certificate and key files (PEM) to serve TLS with, both or neither.
 */
export interface RelayCommandOptions extends RelayOptions {
  /** Certificate chain file (PEM); TLS is served when set, with `key`. */
  cert?: string;
  /** Private key file (PEM) of `cert`. */
  key?: string;
  /** Where to serve the Prometheus counters, `host:port`. */
  metrics?: string;
  /** The relay cluster to join (secrets already read from their files). */
  cluster?: NatsClusterOptions;
}

function positiveInt(text: string | undefined, what: string, min = 1): number | undefined {
  if (text === undefined) return undefined;
  const value = /^[0-9]{1,15}$/.test(text) ? Number(text) : NaN;
  if (!Number.isInteger(value) || value < min) {
    throw new UsageError(`Invalid ${what} '${text}': expected a whole number of at least ${min}`);
  }
  return value;
}

/**
 * Turns command-line arguments into relay options (milliseconds), or
 * `"help"`/`"version"`. Throws {@linkcode UsageError} for bad arguments:
 * `["--port", "7001", "--timeout", "30"]` gives `{ port: 7001, timeout: 30000 }`,
 * and `["--cert", "c.pem", "--key", "k.pem"]` gives `{ cert: "c.pem", key: "k.pem" }`
 * (file names; `main` reads them).
 */
export async function parseRelayArgs(
  args: string[],
): Promise<RelayCommandOptions | "help" | "version"> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        port: { type: "string" },
        "ws-port": { type: "string" },
        host: { type: "string" },
        network: { type: "string", multiple: true },
        timeout: { type: "string" },
        config: { type: "string" },
        "max-nodes": { type: "string" },
        "max-frame": { type: "string" },
        cert: { type: "string" },
        key: { type: "string" },
        "public-address": { type: "string", multiple: true },
        "max-per-address": { type: "string" },
        "max-per-network": { type: "string" },
        "sender-rate": { type: "string" },
        "fanout-rate": { type: "string" },
        "sender-share": { type: "string" },
        "verify-rate": { type: "string" },
        "max-unproven": { type: "string" },
        "max-connections": { type: "string" },
        "max-connections-per-address": { type: "string" },
        drain: { type: "string" },
        metrics: { type: "string" },
        cluster: { type: "string" },
        "cluster-user": { type: "string" },
        "cluster-password-file": { type: "string" },
        "cluster-token-file": { type: "string" },
        "cluster-ca": { type: "string" },
        "cluster-prefix": { type: "string" },
        help: { type: "boolean", short: "h" },
        version: { type: "boolean", short: "V" },
      },
    }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (values.help) return "help";
  if (values.version) return "version";
  const options: RelayCommandOptions = values.config ? await readConfig(values.config) : {};
  const port = positiveInt(values.port, "--port", 0);
  if (port !== undefined) options.port = port;
  const wsPort = positiveInt(values["ws-port"], "--ws-port", 0);
  if (wsPort !== undefined) options.wsPort = wsPort;
  if (values.host !== undefined) options.hostname = values.host;
  if (values.network !== undefined) options.networks = checkNetworks(values.network);
  if (values["public-address"] !== undefined) options.publicAddresses = values["public-address"];
  const timeout = seconds(values.timeout, "--timeout");
  if (timeout !== undefined) options.timeout = timeout;
  const drain = seconds(values.drain, "--drain", true);
  if (drain !== undefined) options.drainGrace = drain;
  const counts: [string, keyof RelayOptions][] = [
    ["max-per-address", "maxPerAddress"],
    ["max-per-network", "maxPerNetwork"],
    ["sender-rate", "senderFrameRate"],
    ["fanout-rate", "fanoutRate"],
    ["sender-share", "senderShare"],
    ["verify-rate", "verifyRate"],
    ["max-unproven", "maxUnproven"],
    ["max-connections", "maxConnections"],
    ["max-connections-per-address", "maxConnectionsPerAddress"],
  ];
  for (const [flag, key] of counts) {
    const value = positiveInt(
      values[flag as keyof typeof values] as string | undefined,
      `--${flag}`,
    );
    if (value !== undefined) (options as Record<string, unknown>)[key] = value;
  }
  if (values.metrics !== undefined) options.metrics = checkMetrics(values.metrics);
  const maxNodes = positiveInt(values["max-nodes"], "--max-nodes");
  if (maxNodes !== undefined) options.maxNodes = maxNodes;
  const maxFrame = positiveInt(values["max-frame"], "--max-frame", 1024);
  if (maxFrame !== undefined) options.maxFrame = maxFrame;
  if (values.cert !== undefined) options.cert = values.cert;
  if (values.key !== undefined) options.key = values.key;
  const cluster = await clusterOptions(values);
  if (cluster) options.cluster = cluster;
  if ((options.cert === undefined) !== (options.key === undefined)) {
    throw new UsageError(
      `Cannot serve TLS: give both --cert and --key (PEM files), or neither for plain TCP; only ${
        options.cert === undefined ? "--key" : "--cert"
      } was given`,
    );
  }
  return options;
}

/** The `--cluster*` flags as cluster options (secrets read from their files), or undefined. */
async function clusterOptions(
  values: Record<string, string | boolean | string[] | undefined>,
): Promise<NatsClusterOptions | undefined> {
  const flag = (name: string) => values[name] as string | undefined;
  const servers = flag("cluster");
  const others = ["user", "password-file", "token-file", "ca", "prefix"]
    .map((name) => `cluster-${name}`).filter((name) => flag(name) !== undefined);
  if (servers === undefined) {
    if (others.length === 0) return undefined;
    throw new UsageError(
      `Cannot use --${others[0]} without --cluster: add --cluster nats://host:port`,
    );
  }
  const urls = servers.split(",").map((url) => url.trim()).filter((url) => url !== "");
  for (const url of urls) {
    if (!/^(nats|tls):\/\/[^\s/]+:[0-9]{1,5}$/.test(url)) {
      throw new UsageError(
        `Invalid --cluster '${url}': expected nats://host:port or tls://host:port, comma-separated`,
      );
    }
  }
  if (urls.length === 0) throw new UsageError("Invalid --cluster '': expected nats://host:port");
  const secret = async (name: string) => {
    const path = flag(name);
    if (path === undefined) return undefined;
    try {
      return (await Deno.readTextFile(path)).trim();
    } catch (error) {
      throw new UsageError(`Cannot read --${name} ${path}: ${(error as Error).message}`);
    }
  };
  const user = flag("cluster-user"), password = await secret("cluster-password-file");
  if ((user === undefined) !== (password === undefined)) {
    throw new UsageError(
      "Cannot log in to NATS: give both --cluster-user and --cluster-password-file, or neither",
    );
  }
  const token = await secret("cluster-token-file");
  const ca = flag("cluster-ca"), prefix = flag("cluster-prefix");
  if (prefix !== undefined) {
    try {
      checkClusterPrefix(prefix);
    } catch (error) {
      throw new UsageError(`Invalid --cluster-prefix: ${(error as Error).message}`);
    }
  }
  return {
    servers: urls,
    ...(user === undefined ? {} : { user, password: password! }),
    ...(token === undefined ? {} : { token }),
    ...(ca === undefined ? {} : { caFile: ca }),
    ...(prefix === undefined ? {} : { prefix }),
  };
}

/** Seconds on the command line as milliseconds (`zero`: 0 allowed). */
function seconds(text: string | undefined, what: string, zero = false): number | undefined {
  if (text === undefined) return undefined;
  const value = Number(text);
  if (!(zero ? value >= 0 : value > 0) || !Number.isFinite(value) || text.trim() === "") {
    throw new UsageError(
      `Invalid ${what} '${text}': expected seconds ${zero ? "from 0" : "above 0"}`,
    );
  }
  return Math.round(value * 1000);
}

/** `NAME:ID` entries, kept as given; a {@linkcode UsageError} for a bare name. */
function checkNetworks(networks: unknown): string[] {
  try {
    checkNetworkIds(networks);
    return networks as string[];
  } catch (error) {
    throw new UsageError((error as Error).message, { cause: error });
  }
}

/** A `host:port` for the metrics endpoint (port 0: any free port), or a {@linkcode UsageError}. */
function checkMetrics(address: string): string {
  metricsAddress(address);
  return address;
}

/** Where to serve metrics: `host:port`, where port 0 asks for any free port. */
function metricsAddress(address: string): HostPort {
  const anyPort = /:0$/.test(address);
  try {
    const parsed = parseHostPort(anyPort ? `${address.slice(0, -1)}1` : address);
    return anyPort ? { ...parsed, port: 0 } : parsed;
  } catch {
    throw new UsageError(`Invalid --metrics '${address}': expected host:port, e.g. 127.0.0.1:9464`);
  }
}

/** The keys a `--config` file may hold (plain JSON values only), with the type of each. */
const CONFIG_KEYS: { readonly [K in keyof RelayCommandOptions]?: "string" | "number" | "array" } = {
  hostname: "string",
  port: "number",
  wsPort: "number",
  networks: "array",
  timeout: "number",
  maxNodes: "number",
  maxFrame: "number",
  maxBuffered: "number",
  registerDeadline: "number",
  publicAddresses: "array",
  maxPerAddress: "number",
  maxPerNetwork: "number",
  senderFrameRate: "number",
  senderFrameBurst: "number",
  fanoutRate: "number",
  fanoutBurst: "number",
  senderShare: "number",
  verifyRate: "number",
  verifyBurst: "number",
  maxUnproven: "number",
  maxConnections: "number",
  maxConnectionsPerAddress: "number",
  drainGrace: "number",
  cert: "string",
  key: "string",
  metrics: "string",
};

async function readConfig(path: string): Promise<RelayCommandOptions> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await Deno.readTextFile(path));
  } catch (error) {
    throw new UsageError(`Cannot read --config ${path}: ${(error as Error).message}`, {
      cause: error,
    });
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new UsageError(`Cannot read --config ${path}: expected a JSON object`);
  }
  const unknown = Object.keys(parsed).filter((key) => !Object.hasOwn(CONFIG_KEYS, key));
  if (unknown.length > 0) {
    throw new UsageError(
      `Cannot read --config ${path}: unknown keys ${unknown.join(", ")} (allowed: ${
        Object.keys(CONFIG_KEYS).join(", ")
      })`,
    );
  }
  for (const [key, value] of Object.entries(parsed)) {
    const expected = CONFIG_KEYS[key as keyof RelayCommandOptions];
    const found = Array.isArray(value) ? "array" : typeof value;
    if (found === expected) continue;
    const fix = typeof value === "string" && expected === "number" && value.trim() !== "" &&
        Number.isFinite(Number(value))
      ? `; write ${value.trim()} without quotes`
      : expected === "array" && typeof value === "string"
      ? `; write [${JSON.stringify(value)}]`
      : "";
    throw new UsageError(
      `Cannot read --config ${path}: "${key}" must be ${
        expected === "array" ? "an array of strings" : `a ${expected}`
      }, got ${describeValue(value)}${fix}`,
    );
  }
  const options = parsed as RelayCommandOptions;
  if (options.networks !== undefined) checkNetworks(options.networks);
  if (options.metrics !== undefined) checkMetrics(options.metrics);
  return options;
}

/** The certificate and key files of a TLS relay. */
interface CertificateFiles {
  cert: string;
  key: string;
}

/**
 * Reads `files` into `tls` (validated first: a bad pair changes nothing).
 * Throws a {@linkcode UsageError} naming the files; `action` is "load" or
 * "reload".
 */
async function loadCertificate(
  tls: TlsTransport,
  files: CertificateFiles,
  action: string,
): Promise<void> {
  try {
    const [cert, key] = await Promise.all([
      Deno.readTextFile(files.cert),
      Deno.readTextFile(files.key),
    ]);
    tls.reload({ cert, key });
  } catch (error) {
    // A TypeError from reload() wraps what the TLS library found wrong.
    const { cause, message } = error as Error;
    const detail = error instanceof TypeError && cause instanceof Error
      ? `${cause.message} (expected a PEM certificate chain and its private key)`
      : message;
    throw new UsageError(
      `Cannot ${action} TLS certificate --cert ${files.cert} --key ${files.key}: ${detail}`,
      { cause: error },
    );
  }
}

/**
 * Reloads the certificate of `tls` from `files` on every SIGHUP (never two
 * at once), logging one line each time; returns what removes the listener
 * and waits for a reload in progress.
 */
function reloadOnHangup(
  tls: TlsTransport,
  files: CertificateFiles,
  log: (line: string) => void,
): () => Promise<void> {
  if (Deno.build.os === "windows") return () => Promise.resolve();
  let reloading = Promise.resolve();
  const reload = () => {
    reloading = reloading.then(() =>
      loadCertificate(tls, files, "reload").then(
        () => log(`peerbase-relay reloaded its TLS certificate from ${files.cert}`),
        (error) => log(`peerbase-relay: ${(error as Error).message}; keeping the old certificate`),
      )
    );
  };
  Deno.addSignalListener("SIGHUP", reload);
  return () => {
    Deno.removeSignalListener("SIGHUP", reload);
    return reloading;
  };
}

/** Runs the relay command line; resolves with the exit status. */
export async function main(args: string[]): Promise<number> {
  // deno-lint-ignore no-console
  const log = console.error;
  let files: CertificateFiles | null = null;
  let tls: TlsTransport | null = null;
  let relay: Relay | undefined;
  let metrics: MetricsServer | null = null;
  let parsedCluster: NatsClusterOptions | undefined;
  let bound = false;
  // The first SIGINT/SIGTERM drains (nodes move to other relays); a second closes at once.
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  let signalled = 0;
  const stopped = Promise.withResolvers<void>();
  const stop = () => {
    if (signalled++ === 0) stopped.resolve();
    else void relay?.close();
  };
  let stopReloading = () => Promise.resolve();
  try {
    const parsed = await parseRelayArgs(args);
    if (parsed === "help" || parsed === "version") {
      // deno-lint-ignore no-console
      console.log(parsed === "help" ? USAGE : RELAY_VERSION);
      return 0;
    }
    const { cert, key, metrics: metricsAt, cluster, ...options } = parsed;
    parsedCluster = cluster;
    if (cluster) options.switchboard = natsCluster(cluster);
    bound = (options.publicAddresses?.length ?? 0) > 0;
    if (cert !== undefined && key !== undefined) {
      files = { cert, key };
      tls = new TlsTransport();
      await loadCertificate(tls, files, "load");
    }
    // Signals are listened for before the relay accepts anything: Deno 2.9 panics when it first
    // sets up signal handling while the process is out of file descriptors (a flood of
    // connections can do that), and a signal after the start line never kills the relay.
    for (const signal of signals) Deno.addSignalListener(signal, stop);
    if (tls && files) stopReloading = reloadOnHangup(tls, files, log);
    relay = new Relay(tls ? { ...options, transport: tls } : options);
    await relay.start();
    const counters = relay;
    if (metricsAt) metrics = serveMetrics(metricsAddress(metricsAt), () => counters.stats);
  } catch (error) {
    await relay?.close();
    for (const signal of signals) Deno.removeSignalListener(signal, stop);
    await stopReloading();
    log(`peerbase-relay: ${(error as Error).message}`);
    if (error instanceof UsageError) log("Run with --help for usage.");
    return 2;
  }
  const where = formatRelayAddress({ ...relay.addr, tls: tls !== null });
  log(`peerbase-relay ${RELAY_VERSION} listening on ${where}`);
  if (relay.wsAddr) {
    const ws = formatRelayAddress({ ...relay.wsAddr, tls: tls !== null, path: "/" });
    log(`peerbase-relay serving WebSocket links on ${ws}`);
  }
  if (parsedCluster) {
    log(
      `peerbase-relay joined the relay cluster "${
        parsedCluster.prefix ?? DEFAULT_CLUSTER_PREFIX
      }" on ${parsedCluster.servers.join(",")}`,
    );
  }
  if (!bound) {
    log(
      "peerbase-relay: no --public-address: nodes are admitted when they dial one of this machine's own addresses; if they dial a DNS name or a NAT's address, name it with --public-address",
    );
  }
  if (metrics) {
    log(`peerbase-relay serving counters at http://${formatHostPort(metrics.addr)}/metrics`);
  }
  await stopped.promise;
  log("peerbase-relay draining");
  await relay.drain();
  for (const signal of signals) Deno.removeSignalListener(signal, stop);
  await stopReloading();
  await metrics?.close();
  log("peerbase-relay stopped");
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
