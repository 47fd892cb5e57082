import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { HmacSha256 } from "../lib/hmac_sha256.ts";

Deno.test("HmacSha256 matches node:crypto for every length from 0 to 300 bytes and some large", () => {
  const key = crypto.getRandomValues(new Uint8Array(16));
  const hmac = new HmacSha256(key);
  for (const length of [...Array(301).keys(), 1000, 4095, 4096, 65_536, 70_000]) {
    const message = new Uint8Array(length).map((_, i) => (i * 31 + length) & 0xff);
    const out = new Uint8Array(32);
    hmac.sign(message, out);
    const expected = createHmac("sha256", key).update(message).digest();
    assert.deepEqual(out, new Uint8Array(expected), `length ${length}`);
  }
});

Deno.test("HmacSha256 matches RFC 4231 test case 2", () => {
  const out = new Uint8Array(32);
  new HmacSha256(new TextEncoder().encode("Jefe"))
    .sign(new TextEncoder().encode("what do ya want for nothing?"), out);
  assert.equal(out.toHex(), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
});

Deno.test("HmacSha256 writes at an offset and refuses keys over 64 bytes", () => {
  const hmac = new HmacSha256(new Uint8Array(16));
  const out = new Uint8Array(40);
  hmac.sign(new Uint8Array(3), out, 8);
  assert.deepEqual(out.subarray(0, 8), new Uint8Array(8));
  assert.notDeepEqual(out.subarray(8), new Uint8Array(32));
  assert.throws(() => new HmacSha256(new Uint8Array(65)), RangeError);
});
