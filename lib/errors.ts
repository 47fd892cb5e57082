/**
 * Every error peerbase throws on purpose. Each class sets `name`, accepts
 * `{ cause }`, and carries the fields a caller needs to react.
 *
 * Messages follow one shape: the action that failed, a colon, the detail and
 * what to do about it.
 *
 * @module
 */

/**
 * Base class of peerbase's own errors, so `err instanceof PeerbaseError`
 * tells them apart from bugs.
 *
 * @example
 * ```ts
 * import { PeerbaseError, PeerNotFoundError } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 * const err = new PeerNotFoundError("bob");
 * assert.ok(err instanceof PeerbaseError);
 * assert.ok(!(new Error("bug") instanceof PeerbaseError));
 * ```
 */
export class PeerbaseError extends Error {
  /** Always `"PeerbaseError"`. */
  override name = "PeerbaseError";
}

/**
 * A call named a peer that this node does not know (not on the LAN, not on
 * any relay). Raised at once, never after a timeout.
 *
 * @example
 * ```ts
 * import { PeerNotFoundError } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 * const err = new PeerNotFoundError("bob");
 * assert.equal(err.peer, "bob");
 * assert.equal(err.name, "PeerNotFoundError");
 * assert.match(err.message, /^Cannot reach peer 'bob': /);
 * ```
 */
export class PeerNotFoundError extends PeerbaseError {
  /** Always `"PeerNotFoundError"`. */
  override name = "PeerNotFoundError";
  /** The peer name that was asked for. */
  readonly peer: string;
  /**
   * Creates the error for `peer`; `detail` replaces the default explanation
   * (no such peer is known; check the name or wait for discovery).
   */
  constructor(peer: string, options?: ErrorOptions & { detail?: string }) {
    const detail = options?.detail ??
      "no such peer is known on this network; check the name or wait with node.waitForPeer()";
    super(`Cannot reach peer '${peer}': ${detail}`, options);
    this.peer = peer;
  }
}

/**
 * A target did not answer within the call's `timeout`.
 *
 * @example
 * ```ts
 * import { CommandTimeoutError } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 * const err = new CommandTimeoutError("bob", "math.add", 5000);
 * assert.equal(err.timeout, 5000);
 * assert.equal(err.path, "math.add");
 * ```
 */
export class CommandTimeoutError extends PeerbaseError {
  /** Always `"CommandTimeoutError"`. */
  override name = "CommandTimeoutError";
  /** The peer that did not answer. */
  readonly peer: string;
  /** The command path that was called. */
  readonly path: string;
  /** The timeout that expired, in milliseconds. */
  readonly timeout: number;
  /** Creates the error for a call of `path` on `peer`. */
  constructor(peer: string, path: string, timeout: number, options?: ErrorOptions) {
    super(
      `Call '${path}' on peer '${peer}' timed out after ${timeout} ms: raise the timeout or check that the peer is responsive`,
      options,
    );
    this.peer = peer;
    this.path = path;
    this.timeout = timeout;
  }
}

/**
 * The target has no command registered at that path, or serves nothing at
 * all (a client-only member: the message says so).
 *
 * @example
 * ```ts
 * import { UnknownCommandError } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 * const err = new UnknownCommandError("bob", "math.mul");
 * assert.equal(err.path, "math.mul");
 * assert.equal(err.peer, "bob");
 * ```
 */
export class UnknownCommandError extends PeerbaseError {
  /** Always `"UnknownCommandError"`. */
  override name = "UnknownCommandError";
  /** The peer that was called. */
  readonly peer: string;
  /** The command path it does not know. */
  readonly path: string;
  /**
   * Creates the error for `path` on `peer`; `detail` replaces the default
   * explanation (no such command; list the peer's commands).
   */
  constructor(peer: string, path: string, options?: ErrorOptions & { detail?: string }) {
    const detail = options?.detail ??
      "no such command; list the peer's commands with getCommands()";
    super(`Call '${path}' on peer '${peer}' failed: ${detail}`, options);
    this.peer = peer;
    this.path = path;
  }
}

/**
 * The remote handler threw. Carries the remote error's name and message,
 * never its stack.
 *
 * @example
 * ```ts
 * import { RemoteError } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 * const err = new RemoteError("bob", "math.div", "RangeError", "Division by zero");
 * assert.equal(err.remoteName, "RangeError");
 * assert.equal(err.remoteMessage, "Division by zero");
 * ```
 */
export class RemoteError extends PeerbaseError {
  /** Always `"RemoteError"`. */
  override name = "RemoteError";
  /** The peer whose handler threw. */
  readonly peer: string;
  /** The command path that was called. */
  readonly path: string;
  /** The `name` of the error the handler threw (e.g. `TypeError`). */
  readonly remoteName: string;
  /** The message of the error the handler threw. */
  readonly remoteMessage: string;
  /** Creates the error from what the remote reported. */
  constructor(
    peer: string,
    path: string,
    remoteName: string,
    remoteMessage: string,
    options?: ErrorOptions,
  ) {
    super(`Call '${path}' on peer '${peer}' failed: ${remoteName}: ${remoteMessage}`, options);
    this.peer = peer;
    this.path = path;
    this.remoteName = remoteName;
    this.remoteMessage = remoteMessage;
  }
}

/**
 * The connection to a peer closed while a call was waiting for its answer
 * (the peer died, or a link was cut). Raised promptly, not after a timeout.
 *
 * @example
 * ```ts
 * import { ConnectionClosedError } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 * const err = new ConnectionClosedError("bob", "connection reset");
 * assert.equal(err.reason, "connection reset");
 * ```
 */
export class ConnectionClosedError extends PeerbaseError {
  /** Always `"ConnectionClosedError"`. */
  override name = "ConnectionClosedError";
  /** The peer whose connection closed. */
  readonly peer: string;
  /** Why it closed, as far as this side knows. */
  readonly reason: string;
  /** Creates the error for `peer`. */
  constructor(peer: string, reason: string, options?: ErrorOptions) {
    super(
      `Connection to peer '${peer}' closed during a call: ${reason}; retry once the peer is back`,
      options,
    );
    this.peer = peer;
    this.reason = reason;
  }
}

/**
 * The node was closed (or is not started) while the operation needed it.
 *
 * @example
 * ```ts
 * import { NodeClosedError } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 * const err = new NodeClosedError("alice");
 * assert.equal(err.node, "alice");
 * ```
 */
export class NodeClosedError extends PeerbaseError {
  /** Always `"NodeClosedError"`. */
  override name = "NodeClosedError";
  /** The name of the node that is closed. */
  readonly node: string;
  /** Creates the error for node `node`. */
  constructor(node: string, detail = "the node is closed", options?: ErrorOptions) {
    super(`Cannot use node '${node}': ${detail}; create a new Node to go on`, options);
    this.node = node;
  }
}

/**
 * The node is not started yet (or still starting): `await node.start()`
 * before calling.
 *
 * @example
 * ```ts
 * import { NodeNotStartedError } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 * const err = new NodeNotStartedError("alice");
 * assert.equal(err.node, "alice");
 * ```
 */
export class NodeNotStartedError extends PeerbaseError {
  /** Always `"NodeNotStartedError"`. */
  override name = "NodeNotStartedError";
  /** The node's name. */
  readonly node: string;
  /** Creates the error for node `node`; `action` says what could not be done (default: call). */
  constructor(
    node: string,
    action: string | ErrorOptions = "call from it",
    options?: ErrorOptions,
  ) {
    const what = typeof action === "string" ? action : "call from it";
    super(
      `Cannot ${what}: node '${node}' is not started; await node.start() first`,
      typeof action === "string" ? options : action,
    );
    this.node = node;
  }
}

/**
 * Another live node of the same network already uses this name.
 *
 * @example
 * ```ts
 * import { NameTakenError } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 * const err = new NameTakenError("alice", "office");
 * assert.equal(err.network, "office");
 * assert.equal(err.peer, "alice");
 * ```
 */
export class NameTakenError extends PeerbaseError {
  /** Always `"NameTakenError"`. */
  override name = "NameTakenError";
  /** The contested node name. */
  readonly peer: string;
  /** The network it was contested in. */
  readonly network: string;
  /** Creates the error for name `peer` in `network`. */
  constructor(peer: string, network: string, detail = "", options?: ErrorOptions) {
    super(
      `Name '${peer}' is used by two live nodes of network '${network}'${
        detail ? ` (${detail})` : ""
      }: give each node a unique name`,
      options,
    );
    this.peer = peer;
    this.network = network;
  }
}

/**
 * A message is larger than the maximum frame size the receiving side accepts.
 * The call fails before anything is sent.
 *
 * @example
 * ```ts
 * import { MessageTooLargeError } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 * const err = new MessageTooLargeError(20_000_000, 16_777_216);
 * assert.equal(err.limit, 16_777_216);
 * assert.equal(err.size, 20_000_000);
 * ```
 */
export class MessageTooLargeError extends PeerbaseError {
  /** Always `"MessageTooLargeError"`. */
  override name = "MessageTooLargeError";
  /** The size the frame would have, in bytes. */
  readonly size: number;
  /** The largest frame allowed, in bytes. */
  readonly limit: number;
  /** Creates the error for a frame of `size` bytes against `limit`. */
  constructor(size: number, limit: number, options?: ErrorOptions) {
    super(
      `Cannot send a frame of ${size} bytes: the limit is ${limit} bytes; send less data per call or raise maxFrameSize on both sides`,
      options,
    );
    this.size = size;
    this.limit = limit;
  }
}

/**
 * A frame carried a protocol version this build does not speak.
 *
 * @example
 * ```ts
 * import { ProtocolVersionError } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 * const err = new ProtocolVersionError(7, 1);
 * assert.equal(err.received, 7);
 * assert.equal(err.supported, 1);
 * ```
 */
export class ProtocolVersionError extends PeerbaseError {
  /** Always `"ProtocolVersionError"`. */
  override name = "ProtocolVersionError";
  /** The version found in the frame. */
  readonly received: number;
  /** The version this build speaks. */
  readonly supported: number;
  /** Creates the error for version `received`. */
  constructor(received: number, supported: number, options?: ErrorOptions) {
    super(
      `Cannot read frame: protocol version ${received} is not supported (this build speaks version ${supported}); run the same peerbase version on every node`,
      options,
    );
    this.received = received;
    this.supported = supported;
  }
}

/**
 * Bytes that are not a well-formed frame or message: the connection that
 * carried them is closed, nothing else is affected.
 *
 * @example
 * ```ts
 * import { FrameError } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 * const err = new FrameError("unknown frame type 99");
 * assert.equal(err.message, "Cannot read frame: unknown frame type 99");
 * ```
 */
export class FrameError extends PeerbaseError {
  /** Always `"FrameError"`. */
  override name = "FrameError";
  /** Creates the error with a description of what is malformed. */
  constructor(detail: string, options?: ErrorOptions) {
    super(`Cannot read frame: ${detail}`, options);
  }
}

/**
 * A value cannot be carried by peerbase's encoding (a function, a symbol, a
 * bigint, a `Map`, a cyclic structure, NaN, ...). Raised on the caller's side
 * before anything is sent.
 *
 * @example
 * ```ts
 * import { EncodeError } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 * const err = new EncodeError("a function is not encodable");
 * assert.equal(err.name, "EncodeError");
 * ```
 */
export class EncodeError extends PeerbaseError {
  /** Always `"EncodeError"`. */
  override name = "EncodeError";
  /** Creates the error with what could not be encoded. */
  constructor(detail: string, options?: ErrorOptions) {
    super(
      `Cannot encode value: ${detail}; use JSON values (plain objects, arrays, strings, finite numbers, booleans, null) and Uint8Array`,
      options,
    );
  }
}

/**
 * A Fernet token is malformed, not authentic under this key, expired, or
 * from too far in the future.
 *
 * @example
 * ```ts
 * import { InvalidTokenError } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 * const err = new InvalidTokenError("bad-mac");
 * assert.equal(err.reason, "bad-mac");
 * ```
 */
export class InvalidTokenError extends PeerbaseError {
  /** Always `"InvalidTokenError"`. */
  override name = "InvalidTokenError";
  /** A short machine-readable reason: `bad-mac`, `expired`, `future`, `format`, ... */
  readonly reason: string;
  /** Creates the error for `reason`. */
  constructor(reason: string, detail = "", options?: ErrorOptions) {
    super(
      `Cannot decrypt token: ${reason}${
        detail ? ` (${detail})` : ""
      }; check that both sides use the same network key and have synchronised clocks`,
      options,
    );
    this.reason = reason;
  }
}

/**
 * The runtime lacks an API peerbase needs for what was asked (for example
 * `Deno.listenDatagram` without `--unstable-net`).
 *
 * @example
 * ```ts
 * import { UnsupportedRuntimeError } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 * const err = new UnsupportedRuntimeError("UDP needs --unstable-net");
 * assert.equal(err.name, "UnsupportedRuntimeError");
 * assert.equal(err.message, "Cannot start: UDP needs --unstable-net");
 * const early = new UnsupportedRuntimeError("a browser has no UDP", { action: "create node" });
 * assert.equal(early.message, "Cannot create node: a browser has no UDP");
 * ```
 */
export class UnsupportedRuntimeError extends PeerbaseError {
  /** Always `"UnsupportedRuntimeError"`. */
  override name = "UnsupportedRuntimeError";
  /**
   * Creates the error with what is missing and how to get it; `action` is
   * what could not be done (default `"start"`).
   */
  constructor(detail: string, options?: ErrorOptions & { action?: string }) {
    super(`Cannot ${options?.action ?? "start"}: ${detail}`, options);
  }
}

/**
 * A call on several targets with `raiseErrors: true` where at least one
 * target failed. `errors` (from `AggregateError`) lists the failures;
 * `results` keeps every target's value or error, so successes are not lost.
 *
 * @example
 * ```ts
 * import { CommandError, PeerNotFoundError } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 * const failure = new PeerNotFoundError("carol");
 * const err = new CommandError("__echo__", { bob: 1, carol: failure });
 * assert.equal(err.results.bob, 1);
 * assert.deepEqual(err.errors, [failure]);
 * assert.ok(err instanceof AggregateError);
 * ```
 */
export class CommandError extends AggregateError {
  /** Always `"CommandError"`. */
  override name = "CommandError";
  /** The command path that was called. */
  readonly path: string;
  /** Each target's value, or the error it failed with. */
  readonly results: Record<string, unknown>;
  /** Creates the error from the per-target `results`. */
  constructor(path: string, results: Record<string, unknown>, options?: ErrorOptions) {
    const failed = Object.entries(results).filter(([, v]) => v instanceof Error);
    super(
      failed.map(([, v]) => v),
      `Call '${path}' failed on ${failed.length} of ${Object.keys(results).length} targets (${
        failed.map(([k]) => k).join(", ")
      }): see results for each target`,
      options,
    );
    this.path = path;
    this.results = results;
  }
}

/**
 * A relay refused this node for a reason retrying will not fix (it does not
 * serve the node's network).
 *
 * @example
 * ```ts
 * import { RelayRefusedError } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 * const err = new RelayRefusedError("relay.example:7000", "this relay does not serve network 'x'");
 * assert.equal(err.relay, "relay.example:7000");
 * ```
 */
export class RelayRefusedError extends PeerbaseError {
  /** Always `"RelayRefusedError"`. */
  override name = "RelayRefusedError";
  /** The relay's `host:port`. */
  readonly relay: string;
  /** Creates the error for `relay` with the relay's `reason`. */
  constructor(relay: string, reason: string, options?: ErrorOptions) {
    super(
      `Relay ${relay} refused this node: ${reason}; remove it from servers or use a relay that serves this network`,
      options,
    );
    this.relay = relay;
  }
}

/**
 * `node.waitForRelay()` found no relay up: none came up within its
 * `timeout` (`relays` lists those it waited for), or the node has no
 * `servers` to wait for (`relays` is empty, `timeout` 0).
 *
 * @example
 * ```ts
 * import { NoRelayError, PeerbaseError } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 * const err = new NoRelayError("gw", ["relay.example:7000"], 5000);
 * assert.ok(err instanceof PeerbaseError);
 * assert.deepEqual(err.relays, ["relay.example:7000"]);
 * assert.equal(err.timeout, 5000);
 * assert.match(err.message, /^Cannot reach a relay from node 'gw': relay\.example:7000 /);
 * assert.match(new NoRelayError("gw", [], 0).message, /servers/);
 * ```
 */
export class NoRelayError extends PeerbaseError {
  /** Always `"NoRelayError"`. */
  override name = "NoRelayError";
  /** The node's name. */
  readonly node: string;
  /** The relays waited for (`host:port`), empty when the node has no `servers`. */
  readonly relays: string[];
  /** How long it waited, ms; 0 when it refused at once. */
  readonly timeout: number;
  /**
   * Creates the error for node `node`: none of `relays` came up within
   * `timeout` ms, or, with no relays, the node has no `servers`. `listed`
   * names the relays in the message instead of `relays` joined (with what
   * each last reported, say).
   */
  constructor(
    node: string,
    relays: string[],
    timeout: number,
    options?: ErrorOptions & { listed?: string },
  ) {
    const detail = relays.length === 0
      ? "it has no servers and no relay is up; list relays in the servers option " +
        '(servers: ["host:port"]), or wait for LAN peers with node.waitForPeer()'
      : `${options?.listed ?? relays.join(", ")} did not come up within ${timeout} ms; ` +
        "check each address, the relay's log and the network key (a relay refuses a network " +
        "it does not serve), or wait longer";
    super(`Cannot reach a relay from node '${node}': ${detail}`, options);
    this.node = node;
    this.relays = relays;
    this.timeout = timeout;
  }
}

/**
 * A relay listed as `tls://host:port` could not be reached over TLS: its
 * certificate is not trusted or not for that host, or it does not speak TLS
 * on that port. The message names the relay and what to do (for a private
 * CA: the node's `caCerts` option).
 *
 * @example
 * ```ts
 * import { PeerbaseError, RelayTlsError } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 * const err = new RelayTlsError("tls://relay.example:7000", "invalid peer certificate (UnknownIssuer)");
 * assert.ok(err instanceof PeerbaseError);
 * assert.equal(err.relay, "tls://relay.example:7000");
 * assert.equal(err.reason, "invalid peer certificate (UnknownIssuer)");
 * assert.match(err.message, /^Cannot reach relay tls:\/\/relay\.example:7000 over TLS: /);
 * assert.match(err.message, /caCerts/);
 * ```
 */
export class RelayTlsError extends PeerbaseError {
  /** Always `"RelayTlsError"`. */
  override name = "RelayTlsError";
  /** The relay, as listed (`tls://host:port`). */
  readonly relay: string;
  /** What the TLS handshake reported. */
  readonly reason: string;
  /** Creates the error for `relay` from the handshake's `reason`. */
  constructor(relay: string, reason: string, options?: ErrorOptions) {
    const remedy = /not valid for name|NotValidForName/i.test(reason)
      ? "list the relay in servers under a name its certificate holds"
      : /certificate|UnknownIssuer|issuer|expired/i.test(reason)
      ? "if the relay uses a private CA, pass its certificate in the node's caCerts option"
      : "check that the relay serves TLS on that port (relay --cert and --key)";
    super(`Cannot reach relay ${relay} over TLS: ${reason}; ${remedy}`, options);
    this.relay = relay;
    this.reason = reason;
  }
}

/**
 * LAN discovery cannot join its multicast group: this host has no network
 * interface that carries multicast (offline, a `--network none` container,
 * a fresh network namespace), or the interface of the node's `hostname` is
 * down. The message names the ways out: connect a network, use relays only
 * (`useLocal: false` with `servers`), bind the node to loopback to find the
 * nodes of this machine only, or run inside a network namespace whose
 * loopback carries multicast.
 *
 * A class of its own, not {@linkcode UnsupportedRuntimeError}: the runtime is
 * fine, the host's network is not, and a caller may catch exactly this to
 * fall back to relays.
 *
 * @example
 * ```ts
 * import { NoMulticastError, PeerbaseError } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 * const err = new NoMulticastError("239.255.80.66");
 * assert.ok(err instanceof PeerbaseError);
 * assert.equal(err.group, "239.255.80.66");
 * assert.match(err.message, /useLocal: false with servers/);
 * ```
 */
export class NoMulticastError extends PeerbaseError {
  /** Always `"NoMulticastError"`. */
  override name = "NoMulticastError";
  /** The IPv4 multicast group that could not be joined. */
  readonly group: string;
  /** The address of the interface it was joined on; absent when the system picks it. */
  readonly interfaceAddress: string | undefined;
  /** Creates the error for `group`, joined on the interface of `interfaceAddress`. */
  constructor(group: string, interfaceAddress?: string, options?: ErrorOptions) {
    const cause = interfaceAddress === undefined
      ? `no network interface can carry multicast to ${group} (the host is offline, or has no route for multicast)`
      : `the interface of ${interfaceAddress} cannot join multicast group ${group} (it is down or lacks that address)`;
    super(
      `Cannot start LAN discovery: ${cause}; connect a network or bring the interface up, ` +
        "or pass useLocal: false with servers to call through a relay only, " +
        'or bind the node to loopback (hostname: "127.0.0.1") to find only the nodes of this machine, ' +
        "or run inside a network namespace whose loopback carries multicast " +
        "(unshare -rn sh -c 'ip link set lo up multicast on && ip route add 224.0.0.0/4 dev lo && exec deno run ...')",
      options,
    );
    this.group = group;
    this.interfaceAddress = interfaceAddress;
  }
}

/**
 * A port the node must bind is held by another socket that does not share
 * it. Carries the port and the option that chose it.
 *
 * @example
 * ```ts
 * import { PortInUseError } from "@peerbase/peerbase";
 * import assert from "node:assert/strict";
 * const err = new PortInUseError(41993, "ports[1]", "stop the program that holds it");
 * assert.equal(err.port, 41993);
 * assert.equal(err.option, "ports[1]");
 * ```
 */
export class PortInUseError extends PeerbaseError {
  /** Always `"PortInUseError"`. */
  override name = "PortInUseError";
  /** The port that is taken. */
  readonly port: number;
  /** The option that chose the port, e.g. `ports[1]`. */
  readonly option: string;
  /** Creates the error for `port`, chosen by `option`, with what to do about it. */
  constructor(port: number, option: string, remedy: string, options?: ErrorOptions) {
    super(`Cannot start: port ${port} (${option}) is already in use; ${remedy}`, options);
    this.port = port;
    this.option = option;
  }
}
