// deno-lint-ignore-file no-console
/**
 * A serving peerbase node in its own process.
 *
 * ```sh
 * PEERBASE_KEY=<key> deno run -A --unstable-net bench/worker_node.ts \
 *   --name <name> --network <network> [--servers host:port,tls://host:port,ws://host:port] \
 *   [--local 0] [--ca FILE] [--per-address N] [--max-remotes N] [--twin <name>]
 * ```
 *
 * Serves `echo(x)` → x (a `Uint8Array` comes back as one), `whoami()` →
 * the relay's `host:port` the call came through (null when direct), and
 * `sleep(ms)` → "done" after `ms` (honouring the call's signal). With `--servers` it
 * registers with those relays (`--ca`: a PEM file of a CA to trust for
 * `tls://` ones); `--local 0` turns LAN discovery off (remote-only);
 * `--per-address` sets `maxInboundConnectionsPerAddress` (every bench client
 * comes from 127.0.0.1); `--max-remotes` sets `maxRemotes` (1: it stays on
 * its one relay, even one of a cluster, which other relays' members would
 * otherwise make it join too); `--twin` starts a second node of that name in the
 * same process, with the same options and commands (its own links: the
 * `hol` section's control). Prints `ready <name> <address>` (the direct-call
 * `host:port`, or `-` when remote-only) once every node started; exits when
 * its stdin closes.
 *
 * @module
 */

import { type CallContext, Node } from "../mod.ts";
import { lifeline, required, workerArgs } from "./proc.ts";

lifeline();
const options = workerArgs();
const servers = options.get("servers")?.split(",").filter((s) => s !== "") ?? [];
const useLocal = options.get("local") !== "0";
const caFile = options.get("ca");
const perAddress = options.get("per-address");
const maxRemotes = options.get("max-remotes");
const twin = options.get("twin");
const caCerts = caFile === undefined ? [] : [await Deno.readTextFile(caFile)];
const makeNode = (name: string) =>
  new Node({
    name,
    network: required(options, "network"),
    networkKey: Deno.env.get("PEERBASE_KEY") ?? "",
    hostname: "127.0.0.1",
    useLocal,
    ...(servers.length > 0 ? { servers } : {}),
    ...(caCerts.length > 0 ? { caCerts } : {}),
    ...(perAddress !== undefined ? { maxInboundConnectionsPerAddress: Number(perAddress) } : {}),
    ...(maxRemotes !== undefined ? { maxRemotes: Number(maxRemotes) } : {}),
    commands: {
      echo: (_node, args) => args[0] ?? null,
      whoami: (_node, _args, _kwargs, ctx: CallContext) => ctx.relay ?? null,
      sleep: (_node, args, _kwargs, ctx: CallContext) =>
        new Promise((resolve, reject) => {
          const timer = setTimeout(() => resolve("done"), Number(args[0] ?? 0));
          ctx.signal.addEventListener("abort", () => {
            clearTimeout(timer);
            reject(ctx.signal.reason);
          }, { once: true });
        }),
    },
  });
const node = makeNode(required(options, "name"));
await node.start();
if (twin !== undefined) await makeNode(twin).start();
console.log(`ready ${node.name} ${node.address ?? "-"}`);
