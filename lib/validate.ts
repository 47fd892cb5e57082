/**
 * Option checks shared by the node and the relay. Each takes the subject
 * being created ("node", "relay") so that its message names it:
 * `Cannot create relay: network 'a.b' must be …`. It also holds the
 * {@linkcode UsageError} of both command lines.
 *
 * This module depends only on the frame constants and the text encoder:
 * the relay imports it, and must not pull in Fernet, discovery or adverts.
 *
 * @module
 */

import { MAX_NAME_BYTES } from "./frame.ts";
import { textEncoder } from "./encoding.ts";

/**
 * A command-line mistake, shared by the `peerbase` command line (`cli.ts`)
 * and the relay's (`relay.ts`): each prints its message with a usage hint
 * and exits with status 2. Not a package export.
 *
 * @example
 * ```ts
 * import { UsageError } from "./validate.ts";
 * import assert from "node:assert/strict";
 * const err = new UsageError("Invalid --wait '0': expected whole milliseconds");
 * assert.equal(err.name, "UsageError");
 * ```
 */
export class UsageError extends Error {
  /** Always `"UsageError"`. */
  override name = "UsageError";
}

/**
 * Describes a value for an error message: numbers as they are, anything
 * else with its type (`the string "7000"`, `an array`, `null`), so that a
 * quoted number in a config file is visible as such.
 */
export function describeValue(value: unknown): string {
  if (typeof value === "number" || typeof value === "bigint") return `the number ${value}`;
  if (typeof value === "string") return `the string ${JSON.stringify(value)}`;
  if (value === null || value === undefined || typeof value === "boolean") return String(value);
  if (Array.isArray(value)) return "an array";
  return typeof value === "object" ? "an object" : `a ${typeof value}`;
}

/**
 * Throws unless `value` is a valid node or network name: a non-empty
 * string of at most 255 UTF-8 bytes with no `.`, `|`, `:`, `*` or control
 * characters (U+0000–U+001F, U+007F).
 * `what` names the option, `subject` what is being created.
 */
export function checkName(value: unknown, what: string, subject = "node"): string {
  if (typeof value !== "string") {
    throw new TypeError(
      `Cannot create ${subject}: ${what} must be a string, got ${describeValue(value)}`,
    );
  }
  // deno-lint-ignore no-control-regex
  if (value === "" || /[.|:*\x00-\x1f\x7f]/.test(value)) {
    throw new RangeError(
      `Cannot create ${subject}: ${what} '${value}' must be non-empty and contain no '.', '|', ':', '*' or control characters`,
    );
  }
  if (textEncoder.encode(value).length > MAX_NAME_BYTES) {
    throw new RangeError(
      `Cannot create ${subject}: ${what} must be at most ${MAX_NAME_BYTES} bytes in UTF-8`,
    );
  }
  return value;
}

/**
 * Returns `value` if it is an integer from `min` to `max`. Throws a
 * `TypeError` when it is not a number at all (a string from a config file,
 * say), a `RangeError` when it is a number out of range or not whole.
 * `what` names the option, `subject` what is being created.
 */
export function checkInteger(
  value: unknown,
  what: string,
  min: number,
  max: number,
  subject = "node",
): number {
  if (typeof value !== "number") {
    throw new TypeError(
      `Cannot create ${subject}: ${what} must be an integer from ${min} to ${max}, got ${
        describeValue(value)
      }`,
    );
  }
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(
      `Cannot create ${subject}: ${what} must be an integer from ${min} to ${max}, got ${value}`,
    );
  }
  return value;
}
