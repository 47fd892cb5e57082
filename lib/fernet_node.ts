/**
 * The synchronous `"node"` backend of `Fernet`, on `node:crypto`
 * (and, for short tokens, the TypeScript HMAC of `hmac_sha256.ts`).
 * Importing this module registers it with `fernet.ts`; until then
 * `backend: "node"` throws and `"auto"` uses WebCrypto for every size.
 * Deno's entry points (`mod.ts`, `fernet/mod.ts`) import it; a browser
 * entry imports only `fernet.ts`.
 *
 * @module
 */

import {
  type Cipheriv,
  createCipheriv,
  createDecipheriv,
  createHash,
  type Decipheriv,
  type Hash,
} from "node:crypto";
import { HmacSha256 } from "./hmac_sha256.ts";
import {
  badMac,
  badPadding,
  type Bytes,
  checkAge,
  type Engine,
  HEADER,
  MAC,
  registerNodeEngine,
} from "./fernet.ts";

/**
 * Tokens up to this many bytes (before the MAC; a call of about 900 bytes
 * of arguments) are authenticated with the allocation-free TypeScript HMAC
 * of `hmac_sha256.ts`; larger ones with `node:crypto`'s SHA-256, which is
 * faster per byte. Measured per MAC (copied pad states for `node:crypto`):
 * 2.7 against 7.4 µs at 150 bytes, 5.2 against 10.0 µs at 400, 9.8 against
 * 10.9 µs at 1024, 16.1 against 13.9 µs at 2048. A 100-byte call's token
 * (about 350 bytes with its deadline fields) stays on the fast side.
 */
const SMALL_MAC = 1024;

/**
 * HMAC-SHA256 under the signing key, synchronous: two SHA-256 states of
 * `node:crypto` that have already absorbed the key pads (RFC 2104), copied
 * for each message; short messages use the TypeScript HMAC instead.
 */
class Mac {
  readonly #inner: Hash;
  readonly #outer: Hash;
  readonly #small: HmacSha256;
  readonly #expected = new Uint8Array(MAC);

  constructor(signingKey: Bytes) {
    const ipad = new Uint8Array(64).fill(0x36);
    const opad = new Uint8Array(64).fill(0x5c);
    for (let i = 0; i < signingKey.length; i++) {
      ipad[i]! ^= signingKey[i]!;
      opad[i]! ^= signingKey[i]!;
    }
    this.#inner = createHash("sha256").update(ipad);
    this.#outer = createHash("sha256").update(opad);
    this.#small = new HmacSha256(signingKey);
  }

  /** Writes the MAC of `data` into `out` at `at`. */
  sign(data: Uint8Array, out: Uint8Array, at: number): void {
    if (data.length <= SMALL_MAC) {
      this.#small.sign(data, out, at);
      return;
    }
    const inner = this.#inner.copy().update(data).digest();
    out.set(this.#outer.copy().update(inner).digest(), at);
  }

  /**
   * Throws the bad-MAC error unless `token`'s last 32 bytes are the MAC of
   * the rest. The comparison looks at every byte whatever differs (constant
   * time), in TypeScript: `node:crypto`'s `timingSafeEqual` wraps both sides
   * in new views first.
   */
  verify(token: Uint8Array): void {
    const end = token.length - MAC;
    const expected = this.#expected;
    this.sign(token.subarray(0, end), expected, 0);
    let diff = 0;
    for (let i = 0; i < MAC; i++) diff |= expected[i]! ^ token[end + i]!;
    if (diff !== 0) throw badMac();
  }
}

/**
 * AES-128-CBC of whole blocks (the caller pads) on one long-lived
 * `node:crypto` cipher and one decipher per key, instead of a new pair per
 * token: creating them cost about 5 µs of each 100 B call's 10 µs of AES
 * (Deno builds a Node stream object and its buffers each time).
 *
 * A CBC cipher chains each block to the ciphertext block before it, across
 * calls too: fed a token after another, it starts from the previous
 * token's last ciphertext block, `chain`, instead of the token's IV. As
 * CBC is `C1 = E(P1 ⊕ IV)`, XOR-ing `chain ⊕ IV` into the first block
 * before encrypting (`E((P1 ⊕ chain ⊕ IV) ⊕ chain)`) gives the very
 * ciphertext of a fresh cipher with that IV; decrypting, the same XOR after
 * gives `P1 = D(C1) ⊕ IV`. Later blocks chain as usual. The output is
 * byte for byte a fresh cipher's (the Fernet vectors check it). Should a
 * call ever throw or return another length, the pair is dropped and the
 * next token gets a fresh one.
 */
class Cbc {
  readonly #key: Bytes;
  #cipher: Cipheriv | null = null;
  #decipher: Decipheriv | null = null;
  /** The last ciphertext block each has seen: where its chain stands. */
  readonly #sealChain = new Uint8Array(16);
  readonly #openChain = new Uint8Array(16);

  constructor(key: Bytes) {
    this.#key = key;
  }

  /** Encrypts `blocks` (whole blocks; its first one is changed) under `iv`; returns the ciphertext. */
  encrypt(iv: Uint8Array, blocks: Uint8Array): Uint8Array {
    const cipher = this.#cipher ??= this.#fresh(createCipheriv, this.#sealChain);
    xorInto(blocks, iv, this.#sealChain);
    const out = this.#run(cipher, blocks, true);
    this.#sealChain.set(out.subarray(out.length - 16));
    return out;
  }

  /** Decrypts `blocks` (whole blocks, left unchanged) under `iv`; returns the padded plaintext. */
  decrypt(iv: Uint8Array, blocks: Uint8Array): Uint8Array {
    const decipher = this.#decipher ??= this.#fresh(createDecipheriv, this.#openChain);
    const out = this.#run(decipher, blocks, false);
    xorInto(out, iv, this.#openChain);
    this.#openChain.set(blocks.subarray(blocks.length - 16));
    return out;
  }

  #fresh<T extends Cipheriv | Decipheriv>(
    create: (algorithm: string, key: Bytes, iv: Uint8Array) => T,
    chain: Uint8Array,
  ): T {
    chain.fill(0);
    return create("aes-128-cbc", this.#key, chain).setAutoPadding(false) as T;
  }

  #run(aes: Cipheriv | Decipheriv, blocks: Uint8Array, sealing: boolean): Uint8Array {
    let out: Uint8Array | undefined;
    try {
      out = aes.update(blocks);
    } finally {
      if (out?.length !== blocks.length) {
        if (sealing) this.#cipher = null;
        else this.#decipher = null;
      }
    }
    if (out.length !== blocks.length) throw new Error("Cannot run AES-CBC: unexpected output size");
    return out;
  }
}

/** XORs `a ⊕ b` into the first 16 bytes of `block`. */
function xorInto(block: Uint8Array, a: Uint8Array, b: Uint8Array): void {
  for (let i = 0; i < 16; i++) block[i]! ^= a[i]! ^ b[i]!;
}

/**
 * Synchronous backend on `node:crypto`: AES-CBC on a long-lived cipher pair
 * ({@linkcode Cbc}), HMAC as {@linkcode Mac}.
 */
class NodeEngine implements Engine {
  readonly #aes: Cbc;
  readonly #mac: Mac;

  constructor(signingKey: Bytes, encryptionKey: Bytes) {
    this.#aes = new Cbc(encryptionKey);
    this.#mac = new Mac(signingKey);
  }

  seal(token: Bytes, plaintext: Bytes): Bytes {
    const end = token.length - MAC;
    // PKCS#7: pad to whole blocks with bytes worth the pad's length, in the token itself.
    token.set(plaintext, HEADER);
    token.fill(end - HEADER - plaintext.length, HEADER + plaintext.length, end);
    token.set(this.#aes.encrypt(token.subarray(9, HEADER), token.subarray(HEADER, end)), HEADER);
    this.#mac.sign(token.subarray(0, end), token, end);
    return token;
  }

  open(token: Bytes, now: number, ttl: number | undefined): Uint8Array {
    const end = token.length - MAC;
    this.#mac.verify(token);
    checkAge(token, now, ttl);
    const padded = this.#aes.decrypt(token.subarray(9, HEADER), token.subarray(HEADER, end));
    const pad = padded[padded.length - 1]!;
    let bad = pad === 0 || pad > 16 ? 1 : 0;
    for (let i = padded.length - (bad ? 1 : pad); i < padded.length; i++) bad |= padded[i]! ^ pad;
    if (bad !== 0) throw badPadding();
    // A plain Uint8Array view over the Buffer's own memory; copy only if it is pooled.
    const length = padded.length - pad;
    return padded.byteOffset === 0 && padded.buffer.byteLength === padded.length
      ? new Uint8Array(padded.buffer, 0, length)
      : new Uint8Array(padded.subarray(0, length));
  }
}

/**
 * The `"auto"` backend for large tokens: WebCrypto's AES (off the event
 * loop, about twice as fast as `node:crypto`'s here) and the synchronous MAC,
 * which spares a hop to a worker thread per token and, when opening, the
 * copy WebCrypto would need to check the MAC and decrypt the same bytes
 * across an `await`.
 */
class LargeEngine implements Engine {
  readonly #mac: Mac;
  readonly #aes: Promise<CryptoKey>;

  constructor(signingKey: Bytes, encryptionKey: Bytes) {
    this.#mac = new Mac(signingKey);
    this.#aes = crypto.subtle.importKey("raw", encryptionKey, "AES-CBC", false, [
      "encrypt",
      "decrypt",
    ]);
  }

  async seal(token: Bytes, plaintext: Bytes): Promise<Bytes> {
    const iv = token.subarray(9, HEADER);
    const aes = await this.#aes;
    token.set(
      new Uint8Array(await crypto.subtle.encrypt({ name: "AES-CBC", iv }, aes, plaintext)),
      HEADER,
    );
    const end = token.length - MAC;
    this.#mac.sign(token.subarray(0, end), token, end);
    return token;
  }

  async open(token: Bytes, now: number, ttl: number | undefined): Promise<Uint8Array> {
    const aes = await this.#aes;
    this.#mac.verify(token);
    checkAge(token, now, ttl);
    const end = token.length - MAC;
    // WebCrypto copies the ciphertext before its first await, in this same turn as the MAC
    // check: a later change to the caller's bytes cannot reach what is decrypted.
    try {
      return new Uint8Array(
        await crypto.subtle.decrypt(
          { name: "AES-CBC", iv: token.subarray(9, HEADER) },
          aes,
          token.subarray(HEADER, end),
        ),
      );
    } catch (cause) {
      throw badPadding({ cause });
    }
  }
}

registerNodeEngine(
  (signingKey, encryptionKey) => new NodeEngine(signingKey, encryptionKey),
  (signingKey, encryptionKey) => new LargeEngine(signingKey, encryptionKey),
);
