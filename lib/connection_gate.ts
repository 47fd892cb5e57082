/**
 * Connection caps: how many accepted connections a listener may hold, in
 * all and from one source address, and the counts behind them. Sans-IO: a
 * transport asks {@linkcode ConnectionGate.admit} with the remote address of
 * each connection it accepts, before reading a byte; a refused connection
 * is closed at once (counted), an admitted one releases its slot when it
 * closes. A failed accept (out of file descriptors, say) is counted too.
 *
 * The default total cap stays below the process's open-file limit
 * ({@linkcode openFileLimit}, `RLIMIT_NOFILE`) by a reserve that grows with
 * it ({@linkcode connectionCap}), so that accepted connections alone never
 * exhaust the descriptors the rest of the process needs (outbound and
 * relay links, UDP sockets, files). The default per-address cap is at most
 * a quarter of the total cap ({@linkcode perAddressCap}), so that one
 * source never takes every slot.
 *
 * @module
 */

/**
 * Fewest descriptors kept free for everything but accepted connections
 * (outbound and relay links, UDP sockets, files); the reserve is an eighth
 * of the open-file limit when that is more.
 */
export const DEFAULT_FD_RESERVE = 64;

/** The reserve of descriptors is at least the open-file limit divided by this. */
const FD_RESERVE_DIVISOR = 8;

/** The default per-address cap is at most the total cap divided by this. */
const PER_ADDRESS_DIVISOR = 4;

/** Which cap a refused connection was over. */
export type ConnectionRefusal = "total" | "per-address";

/**
 * What a listener's connection caps counted.
 *
 * @example
 * ```ts
 * import { ConnectionGate, type ConnectionCounts } from "./connection_gate.ts";
 * import assert from "node:assert/strict";
 *
 * const gate = new ConnectionGate({ maxConnections: 10, maxConnectionsPerAddress: 1 });
 * gate.admit("10.0.0.1:5000");
 * gate.admit("10.0.0.1:5001"); // refused: one per address
 * const counts: ConnectionCounts = gate.counts;
 * assert.deepEqual(counts, { open: 1, acceptFailures: 0, refused: { total: 0, perAddress: 1 } });
 * ```
 */
export interface ConnectionCounts {
  /** Connections admitted and still open (gauge). */
  open: number;
  /**
   * Accepts that failed (out of file descriptors, a reset in the backlog)
   * and were retried; for a TLS listener, also each time it had stopped
   * accepting and listened anew.
   */
  acceptFailures: number;
  /** Connections closed at once for going over a cap, by cap. */
  refused: { total: number; perAddress: number };
}

/** The caps of a {@linkcode ConnectionGate}. */
export interface ConnectionLimits {
  /** Most connections open at once, every source together. */
  maxConnections: number;
  /** Most connections open at once from one source (see {@linkcode sourceOf}). */
  maxConnectionsPerAddress: number;
}

/** An admitted connection's slot; `release()` (safe to call twice) frees it when it closes. */
export interface ConnectionSlot {
  /** Frees the slot. Safe to call twice. */
  release(): void;
}

/**
 * Counts open connections per source and in all, and refuses those over a
 * cap.
 *
 * @example Admit, refuse, release
 * ```ts
 * import { ConnectionGate } from "./connection_gate.ts";
 * import assert from "node:assert/strict";
 *
 * const gate = new ConnectionGate({ maxConnections: 2, maxConnectionsPerAddress: 2 });
 * const a = gate.admit("10.0.0.1:5000");
 * const b = gate.admit("10.0.0.2:5000");
 * assert.equal(gate.admit("10.0.0.3:5000"), "total");
 * assert.ok(typeof a !== "string" && typeof b !== "string");
 * a.release();
 * a.release(); // a second release frees nothing more
 * assert.equal(gate.counts.open, 1);
 * assert.notEqual(typeof gate.admit("10.0.0.3:5000"), "string");
 * ```
 */
export class ConnectionGate {
  readonly #limits: ConnectionLimits;
  readonly #sources = new Map<string, number>();
  #open = 0;
  #acceptFailures = 0;
  #refusedTotal = 0;
  #refusedPerAddress = 0;

  /** A gate with these caps (whole numbers of at least 1). */
  constructor(limits: ConnectionLimits) {
    this.#limits = limits;
  }

  /**
   * Takes a slot for a connection from `remoteAddress` (`host:port`), or
   * says which cap it is over (the caller closes it at once; it is counted).
   */
  admit(remoteAddress: string): ConnectionSlot | ConnectionRefusal {
    const { maxConnections, maxConnectionsPerAddress } = this.#limits;
    if (this.#open >= maxConnections) {
      this.#refusedTotal++;
      return "total";
    }
    const source = sourceOf(remoteAddress);
    const held = this.#sources.get(source) ?? 0;
    if (held >= maxConnectionsPerAddress) {
      this.#refusedPerAddress++;
      return "per-address";
    }
    this.#sources.set(source, held + 1);
    this.#open++;
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.#open--;
        const left = (this.#sources.get(source) ?? 1) - 1;
        if (left > 0) this.#sources.set(source, left);
        else this.#sources.delete(source);
      },
    };
  }

  /** Counts an accept that failed and is retried. */
  acceptFailed(): void {
    this.#acceptFailures++;
  }

  /** A snapshot of the counts. */
  get counts(): ConnectionCounts {
    return {
      open: this.#open,
      acceptFailures: this.#acceptFailures,
      refused: { total: this.#refusedTotal, perAddress: this.#refusedPerAddress },
    };
  }
}

/**
 * The source a connection's limits are charged to: its IPv4 address, or
 * the /64 of its IPv6 address (one host usually holds a whole /64).
 *
 * @example
 * ```ts
 * import { sourceOf } from "./connection_gate.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(sourceOf("192.0.2.7:4000"), "192.0.2.7");
 * assert.equal(sourceOf("[2001:db8:1:2:3::4]:4000"), "2001:db8:1:2::/64");
 * assert.equal(sourceOf("[::ffff:192.0.2.7]:4000"), "192.0.2.7");
 * ```
 */
export function sourceOf(remoteAddress: string): string {
  const host = remoteAddress.replace(/^\[?([^\]]*?)\]?:\d+$/, "$1").toLowerCase();
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(host);
  if (mapped) return mapped[1]!;
  if (!host.includes(":")) return host;
  const [head = "", tail = ""] = host.split("::");
  const groups = head ? head.split(":") : [];
  const tailGroups = tail ? tail.split(":") : [];
  while (groups.length + tailGroups.length < 8 && host.includes("::")) groups.push("0");
  return [...groups, ...tailGroups].slice(0, 4).map((g) => g.replace(/^0+(?=.)/, "")).join(":") +
    "::/64";
}

/** Where Linux shows a process's limits. */
const LIMITS_FILE = "/proc/self/limits";

/**
 * The soft limit on open files of this process (`RLIMIT_NOFILE`), read
 * from `/proc/self/limits`; null when it cannot be read (not Linux, no
 * read permission for that file: it is never prompted for) or is unlimited.
 *
 * @example
 * ```ts
 * import { openFileLimit } from "./connection_gate.ts";
 * import assert from "node:assert/strict";
 *
 * const limit = openFileLimit();
 * assert.ok(limit === null || (Number.isInteger(limit) && limit > 0));
 * ```
 */
export function openFileLimit(): number | null {
  try {
    const query = { name: "read", path: LIMITS_FILE } as const;
    if (Deno.permissions.querySync(query).state !== "granted") return null;
    return parseOpenFileLimit(Deno.readTextFileSync(LIMITS_FILE));
  } catch {
    return null;
  }
}

/**
 * The soft "Max open files" limit in the text of `/proc/self/limits`; null
 * when absent or unlimited.
 *
 * @example
 * ```ts
 * import { parseOpenFileLimit } from "./connection_gate.ts";
 * import assert from "node:assert/strict";
 *
 * const text = "Limit                     Soft Limit  Hard Limit  Units\n" +
 *   "Max open files            256         4096        files\n";
 * assert.equal(parseOpenFileLimit(text), 256);
 * assert.equal(parseOpenFileLimit("Max open files  unlimited  unlimited  files"), null);
 * ```
 */
export function parseOpenFileLimit(text: string): number | null {
  const match = /^Max open files\s+(\d+)\s/m.exec(text);
  return match ? Number(match[1]) : null;
}

/**
 * The default total cap: `ceiling`, but never more than the open-file
 * limit `limit` minus a reserve: the larger of
 * {@linkcode DEFAULT_FD_RESERVE} (64) and an eighth of `limit`, and at
 * most half of `limit`. `limit`
 * null (unknown): `ceiling`.
 *
 * @example
 * ```ts
 * import { connectionCap } from "./connection_gate.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(connectionCap(100_000, 256), 192); // 64 kept free
 * assert.equal(connectionCap(100_000, 1024), 896); // 128 kept free
 * assert.equal(connectionCap(100_000, 100), 50);
 * assert.equal(connectionCap(1000, 1_048_576), 1000);
 * assert.equal(connectionCap(1000, null), 1000);
 * ```
 */
export function connectionCap(ceiling: number, limit: number | null = openFileLimit()): number {
  if (limit === null) return ceiling;
  const reserve = Math.min(
    Math.max(DEFAULT_FD_RESERVE, Math.floor(limit / FD_RESERVE_DIVISOR)),
    Math.floor(limit / 2),
  );
  return Math.max(1, Math.min(ceiling, limit - reserve));
}

/**
 * The default per-address cap: `ceiling`, but never more than a quarter of
 * the total cap `total`, and at least 1,
 * so that one source address cannot take every slot. A per-address cap the
 * user sets is taken as given.
 *
 * @example
 * ```ts
 * import { connectionCap, perAddressCap } from "./connection_gate.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(perAddressCap(1024, 16_384), 1024);
 * assert.equal(perAddressCap(1024, connectionCap(16_384, 1024)), 224); // 896 in all
 * assert.equal(perAddressCap(1024, 3), 1);
 * ```
 */
export function perAddressCap(ceiling: number, total: number): number {
  return Math.max(1, Math.min(ceiling, Math.floor(total / PER_ADDRESS_DIVISOR)));
}
