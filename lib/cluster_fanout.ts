/**
 * The body of a `*` frame sent to another relay of a cluster
 * (docs/PROTOCOL.md, "Relay clusters"): the pseudonyms that relay must
 * write it to, then the frame. The sending relay chooses, once, which relay
 * delivers to which member, so no member gets a `*` frame twice or never.
 *
 * ```text
 * count (u16 BE) | count × (length (u8) | pseudonym, UTF-8) | frame
 * ```
 *
 * @module
 */

/** Most pseudonyms one fan-out body names. */
export const MAX_FANOUT_NAMES = 65_535;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Encodes a fan-out body. Throws `RangeError` for more than
 * {@linkcode MAX_FANOUT_NAMES} names or a name over 255 bytes.
 *
 * @example
 * ```ts
 * import { decodeFanout, encodeFanout } from "./cluster_fanout.ts";
 * import assert from "node:assert/strict";
 *
 * const body = encodeFanout(["a", "bc"], new Uint8Array([9, 9]));
 * assert.deepEqual(decodeFanout(body), { names: ["a", "bc"], frame: new Uint8Array([9, 9]) });
 * assert.equal(decodeFanout(new Uint8Array([0, 2, 5])), null);
 * ```
 */
export function encodeFanout(names: readonly string[], frame: Uint8Array): Uint8Array {
  if (names.length > MAX_FANOUT_NAMES) throw new RangeError("Cannot fan out: too many names");
  const encoded = names.map((name) => encoder.encode(name));
  const size = 2 + encoded.reduce((n, name) => n + 1 + name.length, 0) + frame.length;
  const body = new Uint8Array(size);
  body[0] = names.length >> 8;
  body[1] = names.length & 0xff;
  let at = 2;
  for (const name of encoded) {
    if (name.length > 255) throw new RangeError("Cannot fan out: a name is over 255 bytes");
    body[at++] = name.length;
    body.set(name, at);
    at += name.length;
  }
  body.set(frame, at);
  return body;
}

/** Decodes a fan-out body; null when it is not one. */
export function decodeFanout(body: Uint8Array): { names: string[]; frame: Uint8Array } | null {
  if (body.length < 2) return null;
  const count = (body[0]! << 8) | body[1]!;
  const names: string[] = [];
  let at = 2;
  for (let i = 0; i < count; i++) {
    const length = body[at];
    if (length === undefined || at + 1 + length > body.length) return null;
    names.push(decoder.decode(body.subarray(at + 1, at + 1 + length)));
    at += 1 + length;
  }
  return { names, frame: body.subarray(at) };
}
