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
 * for a list or `"*"`. `GET /` answers `{ name, network, relaysUp, relays, peers }` (503 with
 * `Retry-After` while no relay is up). A call that finds no relay up waits for one, and for its
 * named targets, while at least 100 ms of its timeout remain for the call itself.
 *
 * Errors answer `{ "error": { name, message, ... } }`. The gateway's own: 400 `SyntaxError` (body
 * not JSON), `TypeError` (bad target, args, kwargs or path) or `RangeError` (the target is the
 * gateway itself); 401 `UnauthorizedError`; 404 `NotFoundError` (route); 405
 * `MethodNotAllowedError` (with `Allow`); 413 `PayloadTooLargeError` (body over 1 MiB); 503
 * `NoRelayError` (with `Retry-After: 2`: no relay came up before the call's time ran out; the node
 * keeps reconnecting); 500 `ConfigError`. The node's, by peerbase error name: 400 `EncodeError`,
 * 404 `PeerNotFoundError` or `UnknownCommandError`, 413 `MessageTooLargeError`, 502 `RemoteError`,
 * `CommandError` (its `results` keep each target's value or error) or `ConnectionClosedError` (a
 * relay dropped during the call), 503 `NodeClosedError` (the gateway is stopping), 504
 * `CommandTimeoutError`. Any other error is a bug of the gateway or the node: 500.
 *
 * Copied out of this repository, it imports `jsr:@peerbase/peerbase` instead of `../mod.ts`.
 *
 * @module
 */

import { createHash, timingSafeEqual } from "node:crypto";
import {
  CommandError,
  DEFAULT_COMMAND_TIMEOUT,
  Node,
  NoRelayError as NodeNoRelayError,
  PeerbaseError,
} from "../mod.ts";

/** Largest request body read, bytes (1 MiB). */
const MAX_BODY = 1 << 20;
/** Longest `PEERBASE_TIMEOUT`, ms (an hour). */
const MAX_TIMEOUT = 3_600_000;
/** Least time, ms, a call keeps after waiting for a relay: with less left, a 503 instead. */
const MIN_CALL_TIME = 100;
/** The `Retry-After` of a 503, seconds: a reconnecting relay link is often back by then. */
const RETRY_AFTER = 2;
/** HTTP status of each peerbase error the node throws, by name; any other error is a 500. */
const NODE_STATUS: Record<string, number> = {
  EncodeError: 400, // args or kwargs the node cannot send (nested too deep)
  PeerNotFoundError: 404,
  UnknownCommandError: 404,
  MessageTooLargeError: 413,
  RemoteError: 502,
  CommandError: 502,
  ConnectionClosedError: 502,
  NodeClosedError: 503, // the gateway is stopping
  CommandTimeoutError: 504,
};
/** The variable behind each node option, to name it when the node refuses the option. */
const VARIABLES: Record<string, string> = {
  name: "PEERBASE_NAME",
  network: "PEERBASE_NETWORK",
  networkKey: "PEERBASE_KEY",
  servers: "PEERBASE_SERVERS",
};

/** An error the gateway answers itself, with its status and headers (`Allow`, `Retry-After`). */
class HttpError extends Error {
  constructor(
    readonly status: number,
    name: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = name;
  }
}

/** A 400: the request is wrong (`name` says how, as the matching JS error would). */
function badRequest(name: "SyntaxError" | "TypeError" | "RangeError", message: string): HttpError {
  return new HttpError(400, name, message);
}

/** `Retry-After`, for every 503. */
const RETRY_HEADERS = { "retry-after": String(RETRY_AFTER) };

/** `NoRelayError`: a 503 with `Retry-After`; no relay came up before the call's time ran out. */
class NoRelayError extends HttpError {
  constructor(timeout: number) {
    const message = `Cannot call: no relay is up, and none came up within PEERBASE_TIMEOUT ` +
      `(${timeout} ms); the gateway keeps reconnecting to PEERBASE_SERVERS, retry in ${RETRY_AFTER} s`;
    super(503, "NoRelayError", message, RETRY_HEADERS);
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
  let json: unknown;
  try {
    json = JSON.parse(await new Blob(chunks).text());
  } catch (error) {
    throw badRequest("SyntaxError", `Cannot call: send a JSON body; ${(error as Error).message}`);
  }
  const { target, args = [], kwargs = {} } = (json ?? {}) as Record<string, unknown>;
  const names = typeof target === "string" ? [target] : target;
  if (!Array.isArray(names) || !names.every((name) => typeof name === "string" && name !== "")) {
    throw badRequest(
      "TypeError",
      'Cannot call: set target to a peer name, an array of names, or "*"',
    );
  }
  if (!Array.isArray(args)) throw badRequest("TypeError", "Cannot call: args must be an array");
  if (typeof kwargs !== "object" || kwargs === null || Array.isArray(kwargs)) {
    throw badRequest("TypeError", "Cannot call: kwargs must be an object");
  }
  return { target: target as string | string[], args, kwargs: kwargs as Record<string, unknown> };
}

/**
 * Calls `path` within the gateway's timeout. When no relay is up, it first waits for one and then
 * for the named targets, but leaves the call at least `MIN_CALL_TIME`: a `NoRelayError` when no
 * relay came up by then.
 */
async function call(gateway: Gateway, path: string, body: CallBody, signal: AbortSignal) {
  const { node, timeout } = gateway;
  const names = typeof body.target === "string" ? [body.target] : body.target;
  if (names.includes(node.name)) {
    throw badRequest(
      "RangeError",
      `Cannot call '${path}' on '${node.name}': that is this gateway; target other peers`,
    );
  }
  const end = Date.now() + timeout;
  const waitLeft = () => end - MIN_CALL_TIME - Date.now();
  // A relay counts once its members are known (waitForRelay answers at once then), not from the
  // moment it is registered (RelayInfo.up): a "*" call in between would reach no one.
  const registered = node.relays.some((relay) => relay.up);
  const left = waitLeft();
  if (left <= 0 && !registered) throw new NoRelayError(timeout);
  // The request going away ends the wait too; its answer is then read by no one.
  await node.waitForRelay({ timeout: Math.max(1, left), signal }).catch((error) => {
    throw error instanceof NodeNoRelayError || signal.aborted ? new NoRelayError(timeout) : error;
  });
  if (!registered) {
    // The relay's members are known now, but a named target may still be reconnecting to it:
    // give it the time left to appear (one that does not is then a PeerNotFoundError of the call).
    const wait = { timeout: waitLeft(), signal };
    if (body.target !== "*" && wait.timeout > 0) {
      await node.waitForPeer(names, wait).catch(() => {});
    }
  }
  const result = await node.command(path, {
    ...body,
    timeout: Math.max(1, end - Date.now()),
    signal,
  });
  return typeof body.target === "string" && body.target !== "*" ? { result } : { results: result };
}

/** `GET /`: who the gateway is, its relays and the peers it knows; 503 while no relay is up. */
function status({ node }: Gateway): Response {
  const relays = node.relays.map(({ address, up }) => ({ address, up }));
  const relaysUp = relays.filter((relay) => relay.up).length;
  const peers = node.peers.map((peer) => peer.name);
  const body = { name: node.name, network: node.network, relaysUp, relays, peers };
  if (relaysUp > 0) return Response.json(body);
  return Response.json(body, { status: 503, headers: RETRY_HEADERS });
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

/** The status of `error`: the gateway's own, a peerbase error's by name, else 500. */
function statusOf(error: Error): number {
  if (error instanceof HttpError) return error.status;
  const fromNode = error instanceof PeerbaseError || error instanceof CommandError;
  return fromNode ? NODE_STATUS[error.name] ?? 500 : 500;
}

function failure(error: unknown): Response {
  const err = error instanceof Error ? error : new Error(String(error));
  const status = statusOf(err);
  const headers = err instanceof HttpError ? err.headers : status === 503 ? RETRY_HEADERS : {};
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
  throw new HttpError(405, "MethodNotAllowedError", message, { allow: method });
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
  const raw = pathname.slice("/call/".length);
  let path: string;
  try {
    path = decodeURIComponent(raw);
  } catch {
    throw badRequest("TypeError", `Cannot call '${raw}': write the path as /call/<dotted.path>`);
  }
  if (!/^[^./\s]+(\.[^./\s]+)*$/.test(path)) {
    throw badRequest("TypeError", `Cannot call '${path}': write the path as /call/<dotted.path>`);
  }
  const body = await readCall(request);
  return Response.json(await call(await gateway(), path, body, request.signal));
}

/** What `deno serve` runs: each request answered as JSON, errors included. */
export default {
  async fetch(request: Request): Promise<Response> {
    try {
      return await route(request);
    } catch (error) {
      return failure(error);
    }
  },
} satisfies Deno.ServeDefaultExport;
