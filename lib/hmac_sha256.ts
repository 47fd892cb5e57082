/**
 * HMAC-SHA256 (RFC 2104, FIPS 180-4) in plain TypeScript, for short
 * messages: below about 1 KiB a call into `node:crypto` (two hash copies,
 * two digests, their buffers) costs more than the hashing itself. The key's
 * inner and outer states are computed once; signing allocates nothing.
 *
 * SHA-256 uses only additions, rotations and bitwise operations on 32-bit
 * words: no table indexed by secret data and no secret-dependent branch, so
 * it runs in constant time for a given message length.
 *
 * @module
 */

const K = new Int32Array([
  0x428a2f98,
  0x71374491,
  0xb5c0fbcf,
  0xe9b5dba5,
  0x3956c25b,
  0x59f111f1,
  0x923f82a4,
  0xab1c5ed5,
  0xd807aa98,
  0x12835b01,
  0x243185be,
  0x550c7dc3,
  0x72be5d74,
  0x80deb1fe,
  0x9bdc06a7,
  0xc19bf174,
  0xe49b69c1,
  0xefbe4786,
  0x0fc19dc6,
  0x240ca1cc,
  0x2de92c6f,
  0x4a7484aa,
  0x5cb0a9dc,
  0x76f988da,
  0x983e5152,
  0xa831c66d,
  0xb00327c8,
  0xbf597fc7,
  0xc6e00bf3,
  0xd5a79147,
  0x06ca6351,
  0x14292967,
  0x27b70a85,
  0x2e1b2138,
  0x4d2c6dfc,
  0x53380d13,
  0x650a7354,
  0x766a0abb,
  0x81c2c92e,
  0x92722c85,
  0xa2bfe8a1,
  0xa81a664b,
  0xc24b8b70,
  0xc76c51a3,
  0xd192e819,
  0xd6990624,
  0xf40e3585,
  0x106aa070,
  0x19a4c116,
  0x1e376c08,
  0x2748774c,
  0x34b0bcb5,
  0x391c0cb3,
  0x4ed8aa4a,
  0x5b9cca4f,
  0x682e6ff3,
  0x748f82ee,
  0x78a5636f,
  0x84c87814,
  0x8cc70208,
  0x90befffa,
  0xa4506ceb,
  0xbef9a3f7,
  0xc67178f2,
]);

const INITIAL = new Int32Array([
  0x6a09e667,
  0xbb67ae85,
  0x3c6ef372,
  0xa54ff53a,
  0x510e527f,
  0x9b05688c,
  0x1f83d9ab,
  0x5be0cd19,
]);

/** Scratch: message schedule, working state, padded tail, inner digest (single-threaded). */
const W = new Int32Array(64);
const STATE = new Int32Array(8);
const TAIL = new Uint8Array(128);
const INNER = new Uint8Array(32);

/** Absorbs the 64-byte block of `data` at `at` into `state`. */
function compress(state: Int32Array, data: Uint8Array, at: number): void {
  for (let i = 0; i < 16; i++) {
    const j = at + i * 4;
    W[i] = (data[j]! << 24) | (data[j + 1]! << 16) | (data[j + 2]! << 8) | data[j + 3]!;
  }
  for (let i = 16; i < 64; i++) {
    const w15 = W[i - 15]!, w2 = W[i - 2]!;
    const s0 = ((w15 >>> 7) | (w15 << 25)) ^ ((w15 >>> 18) | (w15 << 14)) ^ (w15 >>> 3);
    const s1 = ((w2 >>> 17) | (w2 << 15)) ^ ((w2 >>> 19) | (w2 << 13)) ^ (w2 >>> 10);
    W[i] = (W[i - 16]! + s0 + W[i - 7]! + s1) | 0;
  }
  let a = state[0]!, b = state[1]!, c = state[2]!, d = state[3]!;
  let e = state[4]!, f = state[5]!, g = state[6]!, h = state[7]!;
  for (let i = 0; i < 64; i++) {
    const s1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const t1 = (h + s1 + ((e & f) ^ (~e & g)) + K[i]! + W[i]!) | 0;
    const s0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const t2 = (s0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
    h = g;
    g = f;
    f = e;
    e = (d + t1) | 0;
    d = c;
    c = b;
    b = a;
    a = (t1 + t2) | 0;
  }
  state[0] = (state[0]! + a) | 0;
  state[1] = (state[1]! + b) | 0;
  state[2] = (state[2]! + c) | 0;
  state[3] = (state[3]! + d) | 0;
  state[4] = (state[4]! + e) | 0;
  state[5] = (state[5]! + f) | 0;
  state[6] = (state[6]! + g) | 0;
  state[7] = (state[7]! + h) | 0;
}

/**
 * Continues the hash `start` (which already absorbed one 64-byte block)
 * over `data`, pads, and writes the 32-byte digest into `out` at `outAt`.
 */
function finish(start: Int32Array, data: Uint8Array, out: Uint8Array, outAt: number): void {
  STATE.set(start);
  const whole = data.length - (data.length % 64);
  for (let at = 0; at < whole; at += 64) compress(STATE, data, at);
  const rest = data.length - whole;
  TAIL.fill(0);
  TAIL.set(data.subarray(whole), 0);
  TAIL[rest] = 0x80;
  const end = rest < 56 ? 64 : 128;
  const bits = (64 + data.length) * 8;
  const high = Math.floor(bits / 2 ** 32);
  TAIL[end - 8] = high >>> 24;
  TAIL[end - 7] = high >>> 16;
  TAIL[end - 6] = high >>> 8;
  TAIL[end - 5] = high;
  TAIL[end - 4] = bits >>> 24;
  TAIL[end - 3] = bits >>> 16;
  TAIL[end - 2] = bits >>> 8;
  TAIL[end - 1] = bits;
  compress(STATE, TAIL, 0);
  if (end === 128) compress(STATE, TAIL, 64);
  for (let i = 0; i < 8; i++) {
    const word = STATE[i]!;
    out[outAt + i * 4] = word >>> 24;
    out[outAt + i * 4 + 1] = word >>> 16;
    out[outAt + i * 4 + 2] = word >>> 8;
    out[outAt + i * 4 + 3] = word;
  }
}

/** HMAC-SHA256 under one key of at most 64 bytes, with its pad states precomputed. */
export class HmacSha256 {
  readonly #inner = INITIAL.slice();
  readonly #outer = INITIAL.slice();

  /** Prepares the key (at most 64 bytes; Fernet's is 16). */
  constructor(key: Uint8Array) {
    if (key.length > 64) throw new RangeError("Cannot use HMAC key: it must be at most 64 bytes");
    const pad = new Uint8Array(64);
    for (let i = 0; i < 64; i++) pad[i] = 0x36 ^ (key[i] ?? 0);
    compress(this.#inner, pad, 0);
    for (let i = 0; i < 64; i++) pad[i] = 0x5c ^ (key[i] ?? 0);
    compress(this.#outer, pad, 0);
  }

  /** Writes the 32-byte MAC of `data` into `out` at `at`. */
  sign(data: Uint8Array, out: Uint8Array, at = 0): void {
    finish(this.#inner, data, INNER, 0);
    finish(this.#outer, INNER, out, at);
  }
}
