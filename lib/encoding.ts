/**
 * Byte and text encodings, kept in one file so that a later switch to
 * `jsr:@std/encoding` is a one-file change.
 *
 * @module
 */

/** Shared UTF-8 encoder. */
export const textEncoder: TextEncoder = new TextEncoder();
/** Shared strict UTF-8 decoder: malformed input throws instead of turning into U+FFFD. */
export const textDecoder: TextDecoder = new TextDecoder("utf-8", { fatal: true });

/** Encodes bytes as base64url with padding (the alphabet Fernet uses). */
export function toBase64Url(bytes: Uint8Array): string {
  return bytes.toBase64({ alphabet: "base64url" });
}

/**
 * Decodes base64url text (padding optional). Throws `SyntaxError` on
 * characters outside the alphabet.
 */
export function fromBase64Url(text: string): Uint8Array {
  return Uint8Array.fromBase64(text, { alphabet: "base64url", lastChunkHandling: "loose" });
}

/** Encodes bytes as base64url without padding (ids, nonces, signatures, pseudonyms). */
export function toBase64UrlBare(bytes: Uint8Array): string {
  return bytes.toBase64({ alphabet: "base64url", omitPadding: true });
}

/** True when `text` is unpadded base64url of exactly `bytes` bytes. */
export function isBase64UrlOf(text: unknown, bytes: number): text is string {
  if (typeof text !== "string" || text.length !== Math.ceil(bytes * 4 / 3)) return false;
  if (!/^[A-Za-z0-9_-]+$/.test(text)) return false;
  try {
    return fromBase64Url(text).length === bytes;
  } catch {
    return false;
  }
}

/** Encodes bytes as lowercase hex. */
export function toHex(bytes: Uint8Array): string {
  return bytes.toHex();
}

/**
 * The bytes of `parts`, one after the other, in a new array.
 *
 * @example
 * ```ts
 * import { concatBytes } from "./encoding.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(concatBytes([Uint8Array.of(1, 2), Uint8Array.of(3)]), Uint8Array.of(1, 2, 3));
 * ```
 */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, part) => n + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}
