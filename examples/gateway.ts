/**
 * An HTTP gateway to a peerbase network, run the way Deno Deploy runs a
 * module (`export default { fetch }`): each request calls a command of the
 * network through the relays and answers JSON.
 *
 * ```sh
 * PEERBASE_NETWORK=office PEERBASE_KEY=<key> PEERBASE_SERVERS=relay1.example.com:7000 \
 *   deno serve --allow-net --allow-env examples/gateway.ts
 * curl -s localhost:8000/call/math.add -d '{"target": "calc", "args": [2, 3]}'
 * # {"result":5}
 * ```
 *
 * Environment, read on the first request (a missing or bad value answers 500
 * with a `ConfigError` naming the variable; the next request reads it again):
 * - `PEERBASE_NETWORK` (required): the network's name.
 * - `PEERBASE_KEY` (required): the network key (`peerbase keygen`).
 * - `PEERBASE_SERVERS` (required): relays, comma-separated `host:port`, `tls://host:port` or
 *   `wss://host:port`.
 * - `PEERBASE_NAME`: this node's name. Default `gateway-<random>`, one per isolate: a relay
 *   refuses a second live node of the same name, and Deploy may run several isolates.
 * - `PEERBASE_TIMEOUT`: ms a call may take, waiting for a relay included. Default 5000, at most
 *   an hour.
 * - `PEERBASE_GATEWAY_TOKEN`: when set, every request needs `Authorization: Bearer <token>`.
 *   Without it, anyone who reaches the gateway can call every command of the network.
 *
 * Routes: `POST /call/<dotted.path>` with `{ "target": "calc" | ["a", "b"] | "*", "args": [],
 * "kwargs": {} }` answers `{ "result": value }` for one name, `{ "results": { name: value } }`
 * for a list or `"*"`. `GET /` answers `{ name, network, relaysUp, relays, peers }` (503 while
 * no relay is up). Errors answer `{ "error": { name, message, ... } }`: 400 bad body or path,
 * 401 no token, 404 `PeerNotFoundError`, `UnknownCommandError` or route, 405 method, 502
 * `RemoteError`, `CommandError` (its `results` keep each target's value or error) or
 * `ConnectionClosedError` (also when no relay came up in time), 413 body over 1 MiB, 504
 * `CommandTimeoutError`, 500 `ConfigError` and anything else.
 *
 * Copied out of this repository, it imports `jsr:@peerbase/peerbase` instead of `../mod.ts`.
 *
 * @module
 */

import { createHash, timingSafeEqual } from "node:crypto";
import { CommandError, ConnectionClosedError, DEFAULT_COMMAND_TIMEOUT, Node } from "../mod.ts";

/** Largest request body read, bytes (1 MiB). */
const MAX_BODY = 1 << 20;
/** Longest `PEERBASE_TIMEOUT`, ms (an hour). */
const MAX_TIMEOUT = 3_600_000;
/** HTTP status by error name; any other error is a 500. */
const STATUS: Record<string, number> = {
  SyntaxError: 400, // body not JSON
  TypeError: 400, // bad target, args, kwargs or path
  RangeError: 400,
  URIError: 400,
  EncodeError: 400,
  PeerNotFoundError: 404,
  UnknownCommandError: 404,
  MessageTooLargeError: 413,
  RemoteError: 502,
  CommandError: 502,
  ConnectionClosedError: 502,
  CommandTimeoutError: 504,
};
/** The variable behind each node option, to name it when the node refuses the option. */
const VARIABLES: Record<string, string> = {
  name: "PEERBASE_NAME",
  network: "PEERBASE_NETWORK",
  networkKey: "PEERBASE_KEY",
  servers: "PEERBASE_SERVERS",
};

/** An error the gateway answers itself, with its status (and `Allow` for a 405). */
class HttpError extends Error {
  constructor(readonly status: number, name: string, message: string, readonly allow = "") {
    super(message);
    this.name = name;
  }
}

/** A `ConfigError`: answers 500 and says which variable to fix. */
function configError(variable: string, detail: string): HttpError {
  return new HttpError(500, "ConfigError", `Cannot start the gateway: ${variable} ${detail}`);
}

/** The value of `variable`; a `ConfigError` saying what to set it to when it is empty. */
function required(variable: string, what: string): string {
  const value = Deno.env.get(variable)?.trim();
  if (!value) throw configError(variable, `is not set; set it to ${what}`);
  return value;
}

/** A started node and the time a call may take, ms. */
interface Gateway {
  node: Node;
  timeout: number;
}

async function start(): Promise<Gateway> {
  const network = required("PEERBASE_NETWORK", "the network's name");
  const networkKey = required("PEERBASE_KEY", "the network key (peerbase keygen)");
  const servers = required("PEERBASE_SERVERS", "relays, comma-separated host:port")
    .split(",").map((server) => server.trim());
  const name = Deno.env.get("PEERBASE_NAME") || `gateway-${crypto.randomUUID().slice(0, 8)}`;
  const timeout = Number(Deno.env.get("PEERBASE_TIMEOUT") || DEFAULT_COMMAND_TIMEOUT);
  if (!Number.isInteger(timeout) || timeout < 1 || timeout > MAX_TIMEOUT) {
    throw configError("PEERBASE_TIMEOUT", `must be 1 to ${MAX_TIMEOUT} ms; unset it for 5000`);
  }
  let node: Node;
  try {
    // Remote-only: it dials its relays and listens on nothing. Client-only: it serves nothing.
    node = new Node({ name, network, networkKey, servers, useLocal: false, clientOnly: true });
  } catch (error) {
    const { message } = error as Error;
    const option = /^Cannot create node: (\w+)/.exec(message)?.[1] ?? "";
    throw configError(VARIABLES[option] ?? "a PEERBASE_* variable", `is refused: ${message}`);
  }
  try {
    await node.start();
  } catch (error) {
    await node.close();
    throw error;
  }
  return { node, timeout };
}

let starting: Promise<Gateway> | null = null;
/** The node, started by the first request and shared by all; a failed start is tried again. */
function gateway(): Promise<Gateway> {
  starting ??= start().catch((error) => {
    starting = null;
    throw error;
  });
  return starting;
}

// `deno serve` stops on SIGINT or SIGTERM only once nothing runs any more: close the node then.
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  try {
    Deno.addSignalListener(signal, () => void starting?.then(({ node }) => node.close(), () => {}));
  } catch {
    // Not here (no SIGTERM listener on Windows): the platform ends the process.
  }
}

/** True once `node` has a relay up; false when `ms` pass or `signal` aborts first. */
function relayUp(node: Node, ms: number, signal: AbortSignal): Promise<boolean> {
  const up = () => node.relays.some((relay) => relay.up);
  if (up()) return Promise.resolve(true);
  const stop = AbortSignal.any([signal, AbortSignal.timeout(ms)]);
  return new Promise((resolve) => {
    const done = () => {
      node.removeEventListener("relayup", done);
      stop.removeEventListener("abort", done);
      resolve(up());
    };
    node.addEventListener("relayup", done);
    stop.addEventListener("abort", done);
  });
}

/** What `POST /call/<path>` takes. */
interface CallBody {
  target: string | string[];
  args: unknown[];
  kwargs: Record<string, unknown>;
}

/** The checked body of a call: 413 past `MAX_BODY`, 400 when not JSON or not a call. */
async function readCall(request: Request): Promise<CallBody> {
  const chunks: Uint8Array<ArrayBuffer>[] = [];
  let size = 0;
  for await (const chunk of request.body ?? []) {
    size += chunk.length;
    if (size > MAX_BODY) {
      throw new HttpError(413, "PayloadTooLargeError", "Cannot call: the body is over 1 MiB");
    }
    chunks.push(chunk);
  }
  const { target, args = [], kwargs = {} } = JSON.parse(await new Blob(chunks).text()) ?? {};
  const names = typeof target === "string" ? [target] : target;
  if (!Array.isArray(names) || !names.every((name) => typeof name === "string" && name !== "")) {
    throw new TypeError('Cannot call: set target to a peer name, an array of names, or "*"');
  }
  if (!Array.isArray(args)) throw new TypeError("Cannot call: args must be an array");
  if (typeof kwargs !== "object" || kwargs === null || Array.isArray(kwargs)) {
    throw new TypeError("Cannot call: kwargs must be an object");
  }
  return { target, args, kwargs };
}

/** Calls `path`; first, if no relay is up, waits for one (and the targets) within the timeout. */
async function call(gateway: Gateway, path: string, body: CallBody, signal: AbortSignal) {
  const { node, timeout } = gateway;
  const end = Date.now() + timeout;
  const left = () => Math.max(1, end - Date.now());
  if (!node.relays.some((relay) => relay.up)) {
    if (!await relayUp(node, left(), signal)) {
      const reason = "no relay is up yet; the gateway keeps reconnecting to PEERBASE_SERVERS";
      throw new ConnectionClosedError(String(body.target), reason);
    }
    // A relay's member list arrives just after its link: give the named targets time to appear
    // (one that does not is then a PeerNotFoundError of the call itself).
    const names = typeof body.target === "string" ? [body.target] : body.target;
    const wait = { timeout: left(), signal };
    if (body.target !== "*") await node.waitForPeer(names, wait).catch(() => {});
  }
  const result = await node.command(path, { ...body, timeout: left(), signal });
  return typeof body.target === "string" && body.target !== "*" ? { result } : { results: result };
}

/** `GET /`: who the gateway is, its relays and the peers it knows; 503 while no relay is up. */
function status({ node }: Gateway): Response {
  const relays = node.relays.map(({ address, up }) => ({ address, up }));
  const relaysUp = relays.filter((relay) => relay.up).length;
  const peers = node.peers.map((peer) => peer.name);
  const body = { name: node.name, network: node.network, relaysUp, relays, peers };
  return Response.json(body, { status: relaysUp > 0 ? 200 : 503 });
}

/** `{ name, message }` of an error, with the fields peerbase errors carry. */
function describe(error: Error): Record<string, unknown> {
  const { name, message, peer, path, remoteName, remoteMessage } = error as
    & Error
    & Record<string, unknown>;
  const each = (value: unknown) => value instanceof Error ? { error: describe(value) } : value;
  const results = error instanceof CommandError
    ? Object.fromEntries(Object.entries(error.results).map(([to, value]) => [to, each(value)]))
    : undefined;
  return { name, message, peer, path, remoteName, remoteMessage, results };
}

function failure(error: unknown): Response {
  const err = error instanceof Error ? error : new Error(String(error));
  const status = err instanceof HttpError ? err.status : STATUS[err.name] ?? 500;
  const headers = err instanceof HttpError && err.allow ? { allow: err.allow } : {};
  return Response.json({ error: describe(err) }, { status, headers });
}

/** True unless `PEERBASE_GATEWAY_TOKEN` is set and the request does not carry it. */
function authorized(request: Request): boolean {
  const token = Deno.env.get("PEERBASE_GATEWAY_TOKEN");
  const digest = (text: string) => createHash("sha256").update(text).digest();
  const given = request.headers.get("authorization") ?? "";
  return !token || timingSafeEqual(digest(given), digest(`Bearer ${token}`));
}

function allow(request: Request, method: string): void {
  if (request.method === method) return;
  const message = `Cannot ${request.method} here: use ${method}`;
  throw new HttpError(405, "MethodNotAllowedError", message, method);
}

async function route(request: Request): Promise<Response> {
  if (!authorized(request)) {
    const message = "Cannot serve: send Authorization: Bearer <PEERBASE_GATEWAY_TOKEN>";
    throw new HttpError(401, "UnauthorizedError", message);
  }
  const { pathname } = new URL(request.url);
  if (pathname === "/") {
    allow(request, "GET");
    return status(await gateway());
  }
  if (!pathname.startsWith("/call/")) {
    throw new HttpError(404, "NotFoundError", `Cannot find ${pathname}: use POST /call/<path>`);
  }
  allow(request, "POST");
  const path = decodeURIComponent(pathname.slice("/call/".length));
  if (!/^[^./\s]+(\.[^./\s]+)*$/.test(path)) {
    throw new TypeError(`Cannot call '${path}': write the path as /call/<dotted.path>`);
  }
  const body = await readCall(request);
  return Response.json(await call(await gateway(), path, body, request.signal));
}

export default {
  async fetch(request: Request): Promise<Response> {
    try {
      return await route(request);
    } catch (error) {
      return failure(error);
    }
  },
} satisfies Deno.ServeDefaultExport;
