/**
 * The `peerbase` command line: what `nats req` is to NATS. It joins a
 * network as a client-only member (it discovers and calls, serves nothing,
 * and never lingers in peers' tables), runs one command and leaves:
 *
 * ```sh
 * deno run --allow-net --allow-read --allow-env --unstable-net cli.ts keygen
 * PEERBASE_NETWORK=office PEERBASE_KEY=... deno task cli call math.add 2 3
 * ```
 *
 * This script is what `deno task cli` runs and `deno task compile` builds
 * as `dist/peerbase`; it is not a package export.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  CommandError,
  generateKey,
  networkId,
  Node,
  type NodeOptions,
  type PeerInfo,
  PeerNotFoundError,
} from "./mod.ts";
import { toHex } from "./lib/encoding.ts";
import { UsageError } from "./lib/validate.ts";
import { MAX_TIMEOUT } from "./lib/caller.ts";

export { UsageError };

/** The command line's version, as `--version` prints it. */
export const CLI_VERSION = "0.1.0";

/** Default time to wait for discovery before `*`, `peers` and `commands`, ms. */
export const DEFAULT_WAIT = 500;
/** Default time to wait for a named `--target` to be found, ms. */
export const DEFAULT_TARGET_WAIT = 5000;
/** Default time a call may take, ms. */
export const DEFAULT_CALL_TIMEOUT = 10_000;
/** Largest `--timeout` or `--wait`, ms: what a timer can hold (about 24.8 days). */
export const MAX_MILLISECONDS: number = MAX_TIMEOUT;

const SHORT_USAGE = `Usage: peerbase keygen [--network NAME]
       peerbase id --network NAME
       peerbase call PATH [ARG ...] [--kwargs JSON] [--target NAME|*] [--timeout MS|none]
       peerbase peers
       peerbase commands [--target NAME]
Network options: --network NAME, --key-file FILE, --relay HOST:PORT, --no-lan, --wait MS`;

const USAGE = `peerbase ${CLI_VERSION}: call the commands of a peerbase network

Usage: peerbase <command> [options]
   or: deno task cli <command> [options]

Commands:
  keygen                print a new network key; with --network NAME, also
                        NAME:ID, the network id a relay's --network takes
  id                    print NAME:ID for the network and key given
  call PATH [ARG ...]   call PATH with the ARGs; each ARG is JSON if it parses,
                        else a string (put "--" before negative numbers)
  peers                 list the members found
  commands              list the commands of the members (or of --target)

Options:
  --network NAME        the network (env PEERBASE_NETWORK)
  --key-file FILE       file holding the network key (env PEERBASE_KEY holds
                        the key itself)
  --key KEY             the key itself; other users can read it in the
                        process list, so prefer --key-file or PEERBASE_KEY
  --relay HOST:PORT     a relay to use; repeat it or give a comma list
                        (env PEERBASE_RELAYS, a comma list)
  --no-lan              use relays only: no LAN discovery (no multicast needed)
  --target NAME|*       call one member, or * for every member (default *)
  --kwargs JSON         keyword arguments, a JSON object
  --timeout MS|none     time a call may take (default ${DEFAULT_CALL_TIMEOUT}); none
                        (or Infinity) waits for the answer without a limit
  --wait MS             time to wait for discovery (default ${DEFAULT_WAIT}; a named
                        --target is waited for up to ${DEFAULT_TARGET_WAIT} ms, and
                        called as soon as it is found)
  --json                print JSON even on a terminal
  -h, --help            show this help
  -V, --version         show the version

Times are whole milliseconds from 1 to ${MAX_MILLISECONDS}. Output is JSON when
stdout is not a terminal, a table when it is. Exit status: 0 success, 1 a
call or network error, 2 a usage error. It joins as client-only member
cli-<8 hex>: peers never list it.`;

/** What a parsed command line asks for. */
export interface CliCommand {
  /** The command. */
  command: "keygen" | "id" | "call" | "peers" | "commands" | "help" | "version";
  /** The command path of `call`. */
  path: string;
  /** Positional arguments of `call`, parsed. */
  args: unknown[];
  /** `--kwargs`, parsed. */
  kwargs: Record<string, unknown>;
  /** `--target`, or `"*"`. */
  target: string;
  /** True when `--target` was given. */
  named: boolean;
  /** `--timeout`, ms; `Infinity` for no limit (`--timeout none`). */
  timeout: number;
  /** `--wait`, ms, when given. */
  wait: number | undefined;
  /** Force JSON output. */
  json: boolean;
  /** The network's name. */
  network: string;
  /** The network key. */
  key: string;
  /** Relays, `host:port`. */
  relays: string[];
  /** Use LAN discovery. */
  lan: boolean;
  /** Warnings to print on stderr. */
  warnings: string[];
}

/** Where {@linkcode parseCliArgs} reads files and the environment (replaceable in tests). */
export interface CliEnv {
  /** An environment variable. */
  get(name: string): string | undefined;
  /** The text of a file. */
  readTextFile(path: string): Promise<string>;
}

const DENO_ENV: CliEnv = {
  get: (name) => Deno.env.get(name),
  readTextFile: (path) => Deno.readTextFile(path),
};

const COMMANDS = new Set(["keygen", "id", "call", "peers", "commands"]);

/** Parses an `ARG`: JSON when it parses, else the string itself. */
export function parseArg(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/**
 * Parses a time flag: whole milliseconds from 1 to {@linkcode MAX_MILLISECONDS},
 * or, when `unlimited` is allowed, `Infinity` or `none` for no limit.
 * Throws a {@linkcode UsageError} naming the flag.
 */
function milliseconds(
  text: string | undefined,
  flag: string,
  unlimited = false,
): number | undefined {
  if (text === undefined) return undefined;
  if (unlimited && (text === "Infinity" || text === "none")) return Infinity;
  const value = /^[0-9]{1,10}$/.test(text) ? Number(text) : NaN;
  if (!(value >= 1 && value <= MAX_MILLISECONDS)) {
    throw new UsageError(
      `Invalid ${flag} '${text}': expected whole milliseconds from 1 to ${MAX_MILLISECONDS}${
        unlimited ? ", or none (or Infinity) for no limit" : ""
      }`,
    );
  }
  return value;
}

/**
 * Turns command-line arguments into a {@linkcode CliCommand}. Throws
 * {@linkcode UsageError} for bad arguments.
 */
/**
 * `--key KEY` as `--key=KEY`: a key is base64url, so one in 64 starts with
 * `-`, which `parseArgs` would otherwise take for an option.
 */
function keyArgsJoined(args: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--") return [...out, ...args.slice(i)];
    if (args[i] === "--key" && i + 1 < args.length) out.push(`--key=${args[++i]}`);
    else out.push(args[i]!);
  }
  return out;
}

export async function parseCliArgs(args: string[], env: CliEnv = DENO_ENV): Promise<CliCommand> {
  let values, positionals;
  try {
    ({ values, positionals } = parseArgs({
      args: keyArgsJoined(args),
      strict: true,
      allowPositionals: true,
      options: {
        network: { type: "string" },
        "key-file": { type: "string" },
        key: { type: "string" },
        relay: { type: "string", multiple: true },
        "no-lan": { type: "boolean" },
        target: { type: "string" },
        kwargs: { type: "string" },
        timeout: { type: "string" },
        wait: { type: "string" },
        json: { type: "boolean" },
        help: { type: "boolean", short: "h" },
        version: { type: "boolean", short: "V" },
      },
    }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const base = {
    path: "",
    args: [] as unknown[],
    kwargs: {},
    target: "*",
    named: false,
    timeout: DEFAULT_CALL_TIMEOUT,
    wait: undefined,
    json: values.json === true,
    network: "",
    key: "",
    relays: [] as string[],
    lan: true,
    warnings: [] as string[],
  };
  if (values.help) return { ...base, command: "help" };
  if (values.version) return { ...base, command: "version" };
  const [command, ...rest] = positionals;
  if (command === undefined) {
    throw new UsageError("Missing command: keygen, id, call, peers or commands");
  }
  if (!COMMANDS.has(command)) {
    throw new UsageError(
      `Unknown command '${command}': expected keygen, id, call, peers or commands`,
    );
  }
  if (command === "keygen") {
    if (rest.length > 0 || Object.keys(values).some((k) => k !== "json" && k !== "network")) {
      throw new UsageError("keygen takes no arguments and no option but --network");
    }
    return { ...base, command: "keygen", network: values.network ?? "" };
  }
  if (command === "id" && rest.length > 0) {
    throw new UsageError(`id takes no positional arguments, got '${rest[0]}'`);
  }
  if (command === "call") {
    if (rest[0] === undefined || rest[0] === "") throw new UsageError("call needs a PATH");
    base.path = rest[0];
    base.args = rest.slice(1).map(parseArg);
  } else if (rest.length > 0) {
    throw new UsageError(`${command} takes no positional arguments, got '${rest[0]}'`);
  }
  if (values.kwargs !== undefined) {
    if (command !== "call") throw new UsageError("--kwargs applies only to call");
    const kwargs = parseArg(values.kwargs);
    if (typeof kwargs !== "object" || kwargs === null || Array.isArray(kwargs)) {
      throw new UsageError(`Invalid --kwargs '${values.kwargs}': expected a JSON object`);
    }
    base.kwargs = kwargs;
  }
  if (values.target !== undefined) {
    if (command === "peers") throw new UsageError("--target does not apply to peers");
    if (values.target === "") throw new UsageError("Invalid --target '': expected NAME or *");
    base.target = values.target;
    base.named = values.target !== "*";
  }
  base.timeout = milliseconds(values.timeout, "--timeout", true) ?? DEFAULT_CALL_TIMEOUT;
  const wait = milliseconds(values.wait, "--wait");
  const network = values.network ?? env.get("PEERBASE_NETWORK");
  if (!network) {
    throw new UsageError("Missing network: pass --network NAME or set PEERBASE_NETWORK");
  }
  const key = await readKey(values, env, base.warnings);
  const relayText = values.relay?.join(",") ?? env.get("PEERBASE_RELAYS") ?? "";
  const relays = relayText.split(",").map((r) => r.trim()).filter((r) => r !== "");
  const lan = values["no-lan"] !== true;
  if (!lan && relays.length === 0) {
    throw new UsageError("--no-lan needs a relay: pass --relay HOST:PORT or set PEERBASE_RELAYS");
  }
  return {
    ...base,
    command: command as CliCommand["command"],
    wait,
    network,
    key,
    relays,
    lan,
  };
}

async function readKey(
  values: { key?: string; "key-file"?: string },
  env: CliEnv,
  warnings: string[],
): Promise<string> {
  if (values.key !== undefined && values["key-file"] !== undefined) {
    throw new UsageError("Pass either --key or --key-file, not both");
  }
  if (values["key-file"] !== undefined) {
    try {
      return (await env.readTextFile(values["key-file"])).trim();
    } catch (error) {
      throw new UsageError(
        `Cannot read --key-file ${values["key-file"]}: ${(error as Error).message}`,
      );
    }
  }
  if (values.key !== undefined) {
    warnings.push(
      "warning: --key shows the network key to other users of this machine (process list); use --key-file or PEERBASE_KEY",
    );
    return values.key;
  }
  const key = env.get("PEERBASE_KEY");
  if (!key) throw new UsageError("Missing key: pass --key-file FILE or set PEERBASE_KEY");
  return key.trim();
}

/** Where {@linkcode main} writes (replaceable in tests). */
export interface CliOutput {
  /** Writes a line to stdout. */
  out(line: string): void;
  /** Writes a line to stderr. */
  err(line: string): void;
  /** True when stdout is a terminal (tables instead of JSON). */
  terminal: boolean;
}

const encoder = new TextEncoder();

/** Writes all of `text` (a pipe may take it in parts). */
function writeAll(stream: { writeSync(p: Uint8Array): number }, text: string): void {
  let bytes = encoder.encode(text);
  while (bytes.length > 0) bytes = bytes.subarray(stream.writeSync(bytes));
}

const DENO_OUTPUT: CliOutput = {
  out: (line) => writeAll(Deno.stdout, `${line}\n`),
  err: (line) => writeAll(Deno.stderr, `${line}\n`),
  get terminal() {
    return Deno.stdout.isTerminal();
  },
};

/** Runs the command line; resolves with the exit status (0, 1 or 2). */
export async function main(args: string[], io: CliOutput = DENO_OUTPUT): Promise<number> {
  let cli: CliCommand;
  try {
    cli = await parseCliArgs(args);
  } catch (error) {
    io.err(`peerbase: ${(error as Error).message}`);
    io.err(SHORT_USAGE);
    return 2;
  }
  for (const warning of cli.warnings) io.err(`peerbase: ${warning}`);
  if (cli.command === "help" || cli.command === "version") {
    io.out(cli.command === "help" ? USAGE : CLI_VERSION);
    return 0;
  }
  if (cli.command === "keygen" || cli.command === "id") {
    const key = cli.command === "keygen" ? generateKey() : cli.key;
    if (cli.command === "keygen") io.out(key);
    if (cli.network) io.out(`${cli.network}:${await networkId(key, cli.network)}`);
    return 0;
  }
  const options: NodeOptions<Node> = {
    name: `cli-${toHex(crypto.getRandomValues(new Uint8Array(4)))}`,
    network: cli.network,
    networkKey: cli.key,
    clientOnly: true,
    useLocal: cli.lan,
    servers: cli.relays,
  };
  let node: Node;
  try {
    node = new Node(options);
  } catch (error) {
    io.err(`peerbase: ${(error as Error).message.replace(/^Cannot create node: /, "")}`);
    io.err(SHORT_USAGE);
    return 2;
  }
  try {
    await node.start();
    return await run(node, cli, new Printer(io, cli.json || !io.terminal));
  } catch (error) {
    const e = error as Error;
    io.err(`peerbase: ${e.name}: ${e.message}`);
    if (error instanceof CommandError) {
      for (const [name, value] of Object.entries(error.results)) {
        if (value instanceof Error) io.err(`  ${name}: ${value.name}: ${value.message}`);
      }
    }
    return 1;
  } finally {
    await node.close();
  }
}

/** Waits for discovery as the command asks, then runs it. */
async function run(node: Node, cli: CliCommand, print: Printer): Promise<number> {
  if (cli.named) {
    await node.waitForPeer(cli.target, { timeout: cli.wait ?? DEFAULT_TARGET_WAIT });
  } else {
    await sleep(cli.wait ?? DEFAULT_WAIT);
  }
  if (cli.command === "peers") {
    print.peers(node.peers);
    return 0;
  }
  if (!cli.named && node.peers.length === 0) {
    throw new PeerNotFoundError("*", {
      detail: `no member of network '${node.network}' was found within ${
        cli.wait ?? DEFAULT_WAIT
      } ms; check --network and the key, pass --relay, or raise --wait`,
    });
  }
  const common = { timeout: cli.timeout, raiseErrors: true } as const;
  if (cli.command === "commands") {
    if (cli.named) print.value(await node.getCommands({ ...common, target: cli.target }), false);
    else print.value(await node.getCommands({ ...common, target: "*" }), true);
    return 0;
  }
  const call = { ...common, args: cli.args, kwargs: cli.kwargs };
  if (cli.named) print.value(await node.command(cli.path, { ...call, target: cli.target }), false);
  else print.value(await node.command(cli.path, { ...call, target: "*" }), true);
  return 0;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** JSON with `Uint8Array` as `{"$bytes": base64}`. */
function toJson(value: unknown, indent?: number): string {
  return JSON.stringify(value, (_key, v) => {
    if (v instanceof Uint8Array) {
      return { $bytes: btoa(Array.from(v, (b) => String.fromCharCode(b)).join("")) };
    }
    return v;
  }, indent) ?? "null";
}

/** Prints results as JSON (piped) or as tables (a terminal). */
class Printer {
  readonly #io: CliOutput;
  readonly #json: boolean;

  constructor(io: CliOutput, json: boolean) {
    this.#io = io;
    this.#json = json;
  }

  peers(peers: PeerInfo[]): void {
    if (this.#json) {
      this.#io.out(toJson(peers));
      return;
    }
    if (peers.length === 0) {
      this.#io.out("(no members found)");
      return;
    }
    this.#table(
      ["NAME", "INSTANCE", "ADDRESS", "RELAYS"],
      peers.map((p) => [p.name, p.instance, p.address ?? "-", p.relays.join(",") || "-"]),
    );
  }

  /** One target's value, or a record of values by member. */
  value(value: unknown, many: boolean): void {
    if (this.#json) {
      this.#io.out(toJson(value));
      return;
    }
    if (!many) {
      const list = Array.isArray(value) && value.every((v) => typeof v === "string");
      this.#io.out(list ? value.join("\n") : readable(value));
      return;
    }
    const rows = Object.entries(value as Record<string, unknown>).map(([name, v]) => [
      name,
      readable(v),
    ]);
    this.#table(["MEMBER", "RESULT"], rows);
  }

  #table(head: string[], rows: string[][]): void {
    const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => firstLine(r[i]))));
    const line = (cells: string[]) =>
      cells.map((c, i) => i === cells.length - 1 ? c : c.padEnd(widths[i]!)).join("  ");
    this.#io.out(line(head));
    for (const row of rows) this.#io.out(line(row));
  }
}

function firstLine(cell: string | undefined): number {
  return (cell ?? "").split("\n")[0]!.length;
}

/** A value for a terminal: strings bare, lists of strings one per line, others as JSON. */
function readable(value: unknown): string {
  if (typeof value === "string") return value;
  if (Array.isArray(value) && value.every((v) => typeof v === "string")) return value.join(", ");
  return toJson(value);
}

if (import.meta.main) Deno.exit(await main(Deno.args));
