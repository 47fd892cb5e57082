/**
 * The peerbase relay's command line: carries end-to-end encrypted calls
 * between nodes on different LANs. It sees only routing headers and opaque
 * tokens, never the network key, and logs nothing about peers or traffic.
 * Times on the command line are SECONDS, as in the Python original:
 *
 * ```sh
 * deno run --allow-net --allow-read relay.ts --port 7000 [--host 0.0.0.0] \
 *   [--network NAME ...] [--timeout SECONDS] [--config FILE] \
 *   [--max-nodes N] [--max-frame BYTES]
 * ```
 *
 * This script is what `deno task relay` runs and `deno task compile`
 * builds; it is not a package export. To embed a relay, import `Relay`
 * from `@peerbase/peerbase/relay` (times in milliseconds).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Relay, type RelayOptions } from "./relay/mod.ts";
import { checkName, describeValue, UsageError } from "./lib/validate.ts";

export { UsageError };

/** The relay's version, as `--version` prints it. */
export const RELAY_VERSION = "0.1.0";

const USAGE = `peerbase relay ${RELAY_VERSION}: forwards end-to-end encrypted peerbase traffic

Usage: peerbase-relay [options]
   or: deno run --allow-net --allow-read relay.ts [options]

Options:
  --port PORT          TCP port to listen on (default 7000; 0 = any free port)
  --host ADDRESS       address to listen on (default 0.0.0.0)
  --network NAME       serve only this network; repeat for several (default: any)
  --timeout SECONDS    drop a node silent this long, or 3 of its keepalive
                       ticks if longer (default 10)
  --max-nodes N        most nodes registered at once (default 100000)
  --max-frame BYTES    largest frame forwarded (default 16777216)
  --config FILE        JSON file with RelayOptions (hostname, port, networks,
                       timeout, maxNodes, maxFrame; times in MILLISECONDS);
                       command-line options override it
  -h, --help           show this help
  -V, --version        show the version

All times on the command line are in seconds. The relay never holds a
network key and writes nothing about peers or traffic: only its own start
and stop lines and fatal errors.`;

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
 * `["--port", "7001", "--timeout", "30"]` gives `{ port: 7001, timeout: 30000 }`.
 */
export async function parseRelayArgs(args: string[]): Promise<RelayOptions | "help" | "version"> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        port: { type: "string" },
        host: { type: "string" },
        network: { type: "string", multiple: true },
        timeout: { type: "string" },
        config: { type: "string" },
        "max-nodes": { type: "string" },
        "max-frame": { type: "string" },
        help: { type: "boolean", short: "h" },
        version: { type: "boolean", short: "V" },
      },
    }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (values.help) return "help";
  if (values.version) return "version";
  const options: RelayOptions = values.config ? await readConfig(values.config) : {};
  const port = positiveInt(values.port, "--port", 0);
  if (port !== undefined) options.port = port;
  if (values.host !== undefined) options.hostname = values.host;
  if (values.network !== undefined) {
    options.networks = values.network.map((network) => checkNetwork(network, "--network"));
  }
  if (values.timeout !== undefined) {
    const seconds = Number(values.timeout);
    if (!(seconds > 0) || !Number.isFinite(seconds)) {
      throw new UsageError(`Invalid --timeout '${values.timeout}': expected seconds above 0`);
    }
    options.timeout = Math.round(seconds * 1000);
  }
  const maxNodes = positiveInt(values["max-nodes"], "--max-nodes");
  if (maxNodes !== undefined) options.maxNodes = maxNodes;
  const maxFrame = positiveInt(values["max-frame"], "--max-frame", 1024);
  if (maxFrame !== undefined) options.maxFrame = maxFrame;
  return options;
}

/** Throws a {@linkcode UsageError} unless `network` is a valid network name. */
function checkNetwork(network: unknown, what: string): string {
  try {
    return checkName(network, what, "relay");
  } catch (error) {
    throw new UsageError((error as Error).message, { cause: error });
  }
}

/** The keys a `--config` file may hold (plain JSON values only), with the type of each. */
const CONFIG_KEYS: { readonly [K in keyof RelayOptions]?: "string" | "number" | "array" } = {
  hostname: "string",
  port: "number",
  networks: "array",
  timeout: "number",
  maxNodes: "number",
  maxFrame: "number",
  maxBuffered: "number",
  registerDeadline: "number",
};

async function readConfig(path: string): Promise<RelayOptions> {
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
    const expected = CONFIG_KEYS[key as keyof RelayOptions];
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
        expected === "array" ? "an array of network names" : `a ${expected}`
      }, got ${describeValue(value)}${fix}`,
    );
  }
  const options = parsed as RelayOptions;
  options.networks?.forEach((network) => checkNetwork(network, "network"));
  return options;
}

/** Runs the relay command line; resolves with the exit status. */
export async function main(args: string[]): Promise<number> {
  // deno-lint-ignore no-console
  const log = console.error;
  let options: RelayOptions | "help" | "version";
  let relay: Relay;
  try {
    options = await parseRelayArgs(args);
    if (options === "help" || options === "version") {
      // deno-lint-ignore no-console
      console.log(options === "help" ? USAGE : RELAY_VERSION);
      return 0;
    }
    relay = new Relay(options);
    await relay.start();
  } catch (error) {
    log(`peerbase-relay: ${(error as Error).message}`);
    if (error instanceof UsageError) log("Run with --help for usage.");
    return 2;
  }
  const { hostname, port } = relay.addr;
  log(`peerbase-relay ${RELAY_VERSION} listening on ${hostname}:${port}`);
  const stopped = Promise.withResolvers<void>();
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  const stop = () => stopped.resolve();
  for (const signal of signals) Deno.addSignalListener(signal, stop);
  await stopped.promise;
  for (const signal of signals) Deno.removeSignalListener(signal, stop);
  await relay.close();
  log("peerbase-relay stopped");
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
