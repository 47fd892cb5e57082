/**
 * Fernet symmetric encryption on its own, token for token compatible with
 * Python's `cryptography.fernet`: the cipher peerbase seals every payload
 * with, for programs that exchange tokens with a peerbase network or with
 * Python without running a node.
 *
 * This entry loads both backends: `node:crypto` (synchronous, cheapest for
 * small messages) and WebCrypto (quicker from {@linkcode DEFAULT_WEBCRYPTO_THRESHOLD}
 * bytes); the default `"auto"` backend picks per message.
 *
 * @example Encrypt and decrypt with a new key
 * ```ts
 * import { strictEqual } from "node:assert/strict";
 * import { Fernet, generateKey } from "@peerbase/peerbase/fernet";
 *
 * const fernet = new Fernet(generateKey());
 * const token = await fernet.encrypt("hello");
 * strictEqual(new TextDecoder().decode(await fernet.decrypt(token)), "hello");
 * ```
 *
 * @module
 */

import "../lib/fernet_node.ts";

export { DEFAULT_WEBCRYPTO_THRESHOLD, Fernet, generateKey } from "../lib/fernet.ts";
export type {
  DecryptOptions,
  EncryptOptions,
  FernetBackend,
  FernetOptions,
} from "../lib/fernet.ts";
export { InvalidTokenError } from "../lib/errors.ts";
