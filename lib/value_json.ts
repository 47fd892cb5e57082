/**
 * A message as JSON, its `Uint8Array`s taken out as blobs (docs/PROTOCOL.md,
 * "Values"). It writes what `JSON.stringify` writes, by the same rules
 * (`toJSON`, `undefined` dropped from objects and `null` in arrays, key
 * order, string escapes), plus the two tags: `{"$b": i}` for blob `i` and
 * `{"$e": {...}}` around a user object with an own `$b` or `$e` key. Values
 * JSON plus bytes cannot carry faithfully are refused with
 * {@linkcode EncodeError}: a bigint too, even where an application gave
 * `BigInt.prototype` a `toJSON` (which `JSON.stringify` would call).
 *
 * Why not `JSON.stringify` with a replacer: V8 then calls from its C++
 * serializer into the replacer for every key, and that was the largest
 * single item of a 100 B call's encoding (about 4 µs of each message).
 *
 * @module
 */

import { EncodeError } from "./errors.ts";

/**
 * Most arrays and objects nested in one message (the message itself
 * counts): deeper is refused, before the stack runs out, with a clear error.
 */
const MAX_VALUE_DEPTH = 1000;

/**
 * `value` as JSON; each `Uint8Array` in it is appended to `blobs` and
 * written as `{"$b": index}`. Throws {@linkcode EncodeError} for
 * functions, symbols, bigints, non-finite numbers, objects that are not
 * plain (class instances, `Map`, typed arrays other than `Uint8Array`),
 * cycles, and nesting deeper than 1000 arrays or objects.
 *
 * @example Bytes become blob references; the rest is plain JSON
 * ```ts
 * import assert from "node:assert/strict";
 * import { valueJson } from "./value_json.ts";
 *
 * const blobs: Uint8Array[] = [];
 * const json = valueJson({ k: "r", id: 1, v: [new Uint8Array([7]), { $b: "mine" }, undefined] }, blobs);
 * assert.equal(json, '{"k":"r","id":1,"v":[{"$b":0},{"$e":{"$b":"mine"}},null]}');
 * assert.deepEqual(blobs, [new Uint8Array([7])]);
 * assert.throws(() => valueJson({ v: NaN }, []), { name: "EncodeError" });
 * ```
 */
export function valueJson(value: unknown, blobs: Uint8Array[]): string {
  return new ValueWriter(blobs).property(value, "") ?? "null";
}

class ValueWriter {
  readonly #blobs: Uint8Array[];
  /** The arrays and objects being written, outermost first: meeting one again is a cycle. */
  readonly #open: object[] = [];

  constructor(blobs: Uint8Array[]) {
    this.#blobs = blobs;
  }

  /** `value` (found under `key`) as JSON, or undefined where JSON leaves it out. */
  property(value: unknown, key: string): string | undefined {
    if (typeof value === "object" && value !== null && !(value instanceof Uint8Array)) {
      const toJSON = (value as { toJSON?: unknown }).toJSON;
      if (typeof toJSON === "function") value = toJSON.call(value, key);
    }
    switch (typeof value) {
      case "string":
        return JSON.stringify(value);
      case "boolean":
        return value ? "true" : "false";
      case "undefined":
        return undefined;
      case "number":
        if (!Number.isFinite(value)) throw new EncodeError(`${value} is not a finite number`);
        return String(value);
      case "object":
        return value === null ? "null" : this.#object(value);
      default:
        throw new EncodeError(`a value of type ${typeof value} is not encodable`);
    }
  }

  #object(value: object): string {
    if (value instanceof Uint8Array) {
      this.#blobs.push(value);
      return `{"$b":${this.#blobs.length - 1}}`;
    }
    if (this.#open.includes(value)) throw new EncodeError("a value contains itself (a cycle)");
    if (this.#open.length >= MAX_VALUE_DEPTH) {
      throw new EncodeError(
        `a value is nested deeper than ${MAX_VALUE_DEPTH} arrays or objects; flatten it`,
      );
    }
    this.#open.push(value);
    let json: string;
    if (Array.isArray(value)) json = this.#array(value);
    else {
      const proto = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) {
        const kind = (value as { constructor?: { name?: string } }).constructor?.name ?? "object";
        throw new EncodeError(`a value of type ${kind} is not encodable`);
      }
      json = this.#members(value as Record<string, unknown>);
      if (Object.hasOwn(value, "$b") || Object.hasOwn(value, "$e")) json = `{"$e":${json}}`;
    }
    this.#open.pop();
    return json;
  }

  #array(items: unknown[]): string {
    let json = "[";
    for (let i = 0; i < items.length; i++) {
      if (i > 0) json += ",";
      json += this.property(items[i], String(i)) ?? "null";
    }
    return json + "]";
  }

  #members(object: Record<string, unknown>): string {
    let json = "{";
    for (const key of Object.keys(object)) {
      const member = this.property(object[key], key);
      if (member === undefined) continue;
      if (json.length > 1) json += ",";
      json += `${JSON.stringify(key)}:${member}`;
    }
    return json + "}";
  }
}
