import assert from "node:assert/strict";
import { createCipheriv, createHmac } from "node:crypto";
import {
  DEFAULT_WEBCRYPTO_THRESHOLD,
  Fernet,
  type FernetBackend,
  generateKey,
} from "../fernet/mod.ts";
import { InvalidTokenError } from "../lib/errors.ts";
import { fromBase64Url, textEncoder, toBase64Url } from "../lib/encoding.ts";
// Static imports: a missing vector file fails the whole module instead of skipping.
import generateVectors from "./vectors/generate.json" with { type: "json" };
import verifyVectors from "./vectors/verify.json" with { type: "json" };
import invalidVectors from "./vectors/invalid.json" with { type: "json" };

const BACKENDS = ["node", "webcrypto"] as const;
const KEY = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";
const NOW = Date.UTC(2024, 0, 1);

/** The reason each invalid vector must be rejected with, by its `desc`. */
const INVALID_REASONS: Record<string, string> = {
  "incorrect mac": "bad-mac",
  "too short": "format",
  "invalid base64": "format",
  "payload size not multiple of block size": "format",
  "payload padding error": "padding",
  "far-future TS (unacceptable clock skew)": "future",
  "expired TTL": "expired",
  "incorrect IV (causes padding error)": "padding",
};

/** Bytes 0, 1, ... 255, 0, ... of length `n` (getRandomValues stops at 64 KiB). */
function pattern(n: number): Uint8Array {
  return new Uint8Array(n).map((_, i) => (i * 7 + 3) & 0xff);
}

/** A token under KEY, with a valid MAC, whose plaintext is `padded` as is (no padding added). */
function forge(padded: Uint8Array): Uint8Array {
  const key = fromBase64Url(KEY);
  const header = new Uint8Array(25);
  header[0] = 0x80;
  const cipher = createCipheriv("aes-128-cbc", key.subarray(16), header.subarray(9));
  cipher.setAutoPadding(false);
  const body = new Uint8Array([...header, ...cipher.update(padded), ...cipher.final()]);
  const mac = createHmac("sha256", key.subarray(0, 16)).update(body).digest();
  return new Uint8Array([...body, ...mac]);
}

async function rejection(promise: Promise<unknown>): Promise<InvalidTokenError> {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  assert.ok(err instanceof InvalidTokenError, `expected InvalidTokenError, got ${err}`);
  return err;
}

Deno.test("the Fernet spec vector files are present and not empty", () => {
  assert.ok(generateVectors.length >= 1);
  assert.ok(verifyVectors.length >= 1);
  assert.equal(invalidVectors.length, Object.keys(INVALID_REASONS).length);
});

for (const backend of BACKENDS) {
  Deno.test(`Fernet.encrypt() makes exactly each generate vector's token (${backend})`, async (t) => {
    for (const v of generateVectors) {
      await t.step(v.src, async () => {
        const fernet = new Fernet(v.secret, { backend });
        const options = { iv: new Uint8Array(v.iv), now: Date.parse(v.now) };
        assert.equal(await fernet.encrypt(v.src, options), v.token);
        const raw = await fernet.encryptBytes(textEncoder.encode(v.src), options);
        assert.deepEqual(raw, fromBase64Url(v.token));
      });
    }
  });

  Deno.test(`Fernet.decrypt() opens each verify vector at its now and ttl (${backend})`, async (t) => {
    for (const v of verifyVectors) {
      await t.step(v.src, async () => {
        const fernet = new Fernet(v.secret, { backend });
        const options = { ttl: v.ttl_sec * 1000, now: Date.parse(v.now) };
        assert.deepEqual(await fernet.decrypt(v.token, options), textEncoder.encode(v.src));
        const raw = await fernet.decryptBytes(fromBase64Url(v.token), options);
        assert.deepEqual(raw, textEncoder.encode(v.src));
      });
    }
  });

  Deno.test(`Fernet.decrypt() rejects each invalid vector with its reason (${backend})`, async (t) => {
    for (const v of invalidVectors) {
      await t.step(v.desc, async () => {
        const fernet = new Fernet(v.secret, { backend });
        const err = await rejection(
          fernet.decrypt(v.token, { ttl: v.ttl_sec * 1000, now: Date.parse(v.now) }),
        );
        assert.equal(err.reason, INVALID_REASONS[v.desc]);
      });
    }
  });
}

Deno.test("new Fernet() accepts a key from generateKey() and a spec key", () => {
  assert.equal(new Fernet(generateKey()).backend, "auto");
  assert.equal(new Fernet(KEY, { backend: "node" }).backend, "node");
});

Deno.test("new Fernet() rejects a key that is not 44 characters of padded base64url", async (t) => {
  const cases: Record<string, unknown> = {
    "too short": KEY.slice(0, 40) + "===",
    "too long": KEY.slice(0, 43) + "AAAA=",
    "16 bytes": toBase64Url(new Uint8Array(16)),
    "no padding": KEY.slice(0, 43),
    "standard alphabet": "cw/0x689RpI+jtRR7oE8h/eQsKImvJapLeSbXpwF4e4=",
    "a character outside base64": "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e%=",
    "whitespace": ` ${KEY}`,
    "empty": "",
    "raw bytes": new Uint8Array(32),
    "undefined": undefined,
    "a number": 42,
  };
  for (const [name, key] of Object.entries(cases)) {
    await t.step(name, () => {
      assert.throws(() => new Fernet(key as string), {
        name: "TypeError",
        message:
          "Cannot create Fernet: the key must be 32 bytes as base64url with padding (44 characters, as generateKey() returns)",
      });
    });
  }
});

Deno.test("new Fernet() rejects an unknown backend", () => {
  assert.throws(() => new Fernet(KEY, { backend: "openssl" as FernetBackend }), TypeError);
});

Deno.test("without lib/fernet_node.ts, backend 'node' throws naming the import and 'auto' uses WebCrypto", async () => {
  // A fresh process that loads only lib/fernet.ts, as a browser entry would.
  const script = `
    import { Fernet, generateKey } from ${JSON.stringify(import.meta.resolve("../lib/fernet.ts"))};
    const key = generateKey();
    let thrown = "nothing";
    try { new Fernet(key, { backend: "node" }); } catch (e) { thrown = e.name + ": " + e.message; }
    const fernet = new Fernet(key);
    const plain = await fernet.decrypt(await fernet.encrypt("hi"));
    console.log(JSON.stringify({ thrown, backend: fernet.backend, plain: new TextDecoder().decode(plain) }));
  `;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--no-config", script],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  const text = new TextDecoder();
  assert.ok(output.success, text.decode(output.stderr));
  const result = JSON.parse(text.decode(output.stdout));
  assert.match(result.thrown, /^UnsupportedRuntimeError: /);
  assert.match(result.thrown, /"node" is not loaded; import "@peerbase\/peerbase\/fernet"/);
  assert.deepEqual({ backend: result.backend, plain: result.plain }, {
    backend: "auto",
    plain: "hi",
  });
});

Deno.test("generateKey() returns 32 bytes as padded base64url, like Python", () => {
  for (let i = 0; i < 100; i++) {
    const key = generateKey();
    assert.match(key, /^[A-Za-z0-9_-]{43}=$/);
    assert.equal(fromBase64Url(key).length, 32);
    assert.equal(toBase64Url(fromBase64Url(key)), key);
  }
});

Deno.test("generateKey() returns a different key every call", () => {
  const keys = new Set(Array.from({ length: 1000 }, generateKey));
  assert.equal(keys.size, 1000);
});

const SIZES = [0, 1, 15, 16, 17, 65_536, 1_048_576];

for (const backend of [...BACKENDS, "auto"] as const) {
  Deno.test(`Fernet round-trips 0 B to 1 MiB with the ${backend} backend`, async (t) => {
    const fernet = new Fernet(generateKey(), { backend });
    for (const size of SIZES) {
      await t.step(`${size} bytes`, async () => {
        const data = pattern(size);
        const token = await fernet.encryptBytes(data);
        assert.equal(token.length, Fernet.tokenSize(size));
        const plain = await fernet.decryptBytes(token);
        assert.equal(Object.getPrototypeOf(plain), Uint8Array.prototype);
        assert.deepEqual(plain, data);
        assert.deepEqual(await fernet.decrypt(await fernet.encrypt(data)), data);
      });
    }
  });
}

Deno.test("Fernet tokens made by one backend open with the other", async (t) => {
  const key = generateKey();
  const node = new Fernet(key, { backend: "node" });
  const web = new Fernet(key, { backend: "webcrypto" });
  for (const size of SIZES) {
    await t.step(`${size} bytes`, async () => {
      const data = pattern(size);
      assert.deepEqual(await web.decryptBytes(await node.encryptBytes(data)), data);
      assert.deepEqual(await node.decrypt(await web.encrypt(data)), data);
    });
  }
});

Deno.test("every backend makes the same token for the same iv and now", async () => {
  const options = { iv: pattern(16), now: NOW };
  const data = pattern(100);
  const tokens = await Promise.all(
    [
      new Fernet(KEY, { backend: "node" }),
      new Fernet(KEY, { backend: "webcrypto" }),
      new Fernet(KEY, { backend: "auto", webCryptoThreshold: 0 }),
      new Fernet(KEY, { backend: "auto", webCryptoThreshold: Infinity }),
    ].map((f) => f.encrypt(data, options)),
  );
  assert.equal(new Set(tokens).size, 1);
});

Deno.test("a token sealed with headroom is the same token, at that offset of a buffer of its own", async (t) => {
  const options = { iv: pattern(16), now: NOW };
  for (const backend of [...BACKENDS, "auto"] as const) {
    const fernet = new Fernet(KEY, { backend });
    for (const size of [100, 65_536, 1_048_576]) {
      await t.step(`${backend}, ${size} bytes`, async () => {
        const data = pattern(size);
        const plain = await fernet.encryptBytes(data, options);
        const roomy = await fernet.encryptBytes(data, { ...options, headroom: 37 });
        assert.equal(roomy.byteOffset, 37);
        assert.equal(roomy.buffer.byteLength, 37 + plain.length);
        assert.deepEqual(roomy, plain);
        assert.deepEqual(await fernet.decryptBytes(roomy), data);
      });
    }
  }
});

Deno.test("the node backend seals and opens many tokens in a row exactly as fresh ciphers do", async () => {
  // Its AES runs on one long-lived cipher pair, whose CBC chain carries over between tokens.
  const node = new Fernet(KEY, { backend: "node" });
  const web = new Fernet(KEY, { backend: "webcrypto" });
  for (let i = 0; i < 40; i++) {
    const data = pattern((i * 37) % 300);
    const options = { iv: pattern(16).map((b) => b ^ i), now: NOW };
    const token = await node.encryptBytes(data, options);
    assert.deepEqual(token, await web.encryptBytes(data, options), `token ${i}`);
    assert.deepEqual(await node.decryptBytes(await web.encryptBytes(data)), data, `open ${i}`);
    if (i % 7 === 3) {
      // A token that fails its padding check after AES ran must not spoil the next ones.
      const error = await rejection(node.decryptBytes(forge(pattern(32))));
      assert.equal(error.reason, "padding");
    }
  }
});

Deno.test("Fernet.encrypt() encodes string input as UTF-8", async () => {
  const fernet = new Fernet(KEY);
  const text = "héllo wörld ✓ 🌍";
  const options = { iv: pattern(16), now: NOW };
  const token = await fernet.encrypt(text, options);
  assert.equal(token, await fernet.encrypt(textEncoder.encode(text), options));
  assert.equal(new TextDecoder().decode(await fernet.decrypt(token)), text);
});

Deno.test("Fernet.encrypt() returns padded base64url text", async () => {
  const token = await new Fernet(KEY).encrypt(pattern(20));
  assert.match(token, /^[A-Za-z0-9_-]+=*$/);
  assert.equal(token.length % 4, 0);
  assert.ok(token.startsWith("gAAAAA"));
});

for (const backend of BACKENDS) {
  Deno.test(`Fernet.decryptBytes() rejects every truncation of a token (${backend})`, async () => {
    const fernet = new Fernet(KEY, { backend });
    const token = await fernet.encryptBytes(pattern(20));
    for (let length = 0; length < token.length; length++) {
      const err = await rejection(fernet.decryptBytes(token.slice(0, length)));
      // Shorter than 73 bytes or off the 16-byte grid: format; otherwise the MAC fails.
      const reason = length < 73 || (length - 57) % 16 !== 0 ? "format" : "bad-mac";
      assert.equal(err.reason, reason, `length ${length}`);
    }
  });

  Deno.test(`Fernet.decrypt() rejects a token with a bad HMAC (${backend})`, async () => {
    const fernet = new Fernet(KEY, { backend });
    const token = await fernet.encryptBytes(pattern(40));
    for (const index of [1, 9, 30, token.length - 40, token.length - 1]) {
      const forged = token.slice();
      forged[index]! ^= 0x01;
      assert.equal((await rejection(fernet.decryptBytes(forged))).reason, "bad-mac");
    }
  });

  Deno.test(`Fernet.decryptBytes() checks every PKCS#7 padding byte (${backend})`, async (t) => {
    const fernet = new Fernet(KEY, { backend });
    const block = (tail: number[]) => [...pattern(16 - tail.length), ...tail];
    const bad: Record<string, number[]> = {
      "pad byte 0": block([0]),
      "pad byte 17": block([17]),
      "one pad byte wrong": block([3, 2, 3, 3]),
      "first of 16 pad bytes wrong": block([15, ...new Array(15).fill(16)]),
    };
    for (const [name, padded] of Object.entries(bad)) {
      await t.step(name, async () => {
        const err = await rejection(fernet.decryptBytes(forge(new Uint8Array(padded))));
        assert.equal(err.reason, "padding");
      });
    }
    await t.step("a full block of padding is valid", async () => {
      const padded = [...pattern(16), ...new Array(16).fill(16)];
      assert.deepEqual(await fernet.decryptBytes(forge(new Uint8Array(padded))), pattern(16));
    });
  });

  Deno.test(`Fernet.decrypt() rejects a token made with another key as bad-mac (${backend})`, async () => {
    const token = await new Fernet(generateKey()).encrypt("secret");
    const err = await rejection(new Fernet(KEY, { backend }).decrypt(token));
    assert.equal(err.reason, "bad-mac");
  });

  Deno.test(`Fernet.decrypt() rejects a bad version byte as format (${backend})`, async () => {
    const fernet = new Fernet(KEY, { backend });
    const token = await fernet.encryptBytes(pattern(5));
    token[0] = 0x81;
    assert.equal((await rejection(fernet.decryptBytes(token))).reason, "format");
  });

  Deno.test(`Fernet.decrypt() reads ttl in milliseconds (${backend})`, async () => {
    const fernet = new Fernet(KEY, { backend });
    // Made at NOW + 999 ms: the token records whole seconds, so NOW.
    const token = await fernet.encrypt("x", { now: NOW + 999 });
    assert.deepEqual(
      await fernet.decrypt(token, { ttl: 1500, now: NOW + 1500 }),
      textEncoder.encode("x"),
    );
    assert.deepEqual(await fernet.decrypt(token, { now: NOW + 10 ** 9 }), textEncoder.encode("x"));
    const err = await rejection(fernet.decrypt(token, { ttl: 1500, now: NOW + 1501 }));
    assert.equal(err.reason, "expired");
  });

  Deno.test(`Fernet.decrypt() rejects a token over 60 s in the future, even without ttl (${backend})`, async () => {
    const fernet = new Fernet(KEY, { backend });
    const token = await fernet.encrypt("x", { now: NOW + 60_000 });
    assert.deepEqual(await fernet.decrypt(token, { now: NOW }), textEncoder.encode("x"));
    const err = await rejection(fernet.decrypt(token, { now: NOW - 1 }));
    assert.equal(err.reason, "future");
    assert.equal(
      (await rejection(fernet.decrypt(token, { ttl: 5000, now: NOW - 1 }))).reason,
      "future",
    );
  });

  Deno.test(`Fernet.decryptBytes() ignores changes to the token after the call (${backend})`, async () => {
    const fernet = new Fernet(KEY, { backend });
    const token = await fernet.encryptBytes(pattern(100));
    const pending = fernet.decryptBytes(token);
    token.fill(0, 1);
    assert.deepEqual(await pending, pattern(100));
  });

  Deno.test(`Fernet.decryptBytes() reads a token in a SharedArrayBuffer (${backend})`, async () => {
    const fernet = new Fernet(KEY, { backend });
    const token = await fernet.encryptBytes(pattern(33));
    const shared = new Uint8Array(new SharedArrayBuffer(token.length));
    shared.set(token);
    assert.deepEqual(await fernet.decryptBytes(shared), pattern(33));
  });
}

Deno.test("Fernet.decrypt() rejects text that is not base64url as format", async () => {
  const fernet = new Fernet(KEY);
  for (const token of ["", "%%%%", "gAAAAA*", "gAAAAAAdwJ6w" + "A".repeat(100) + "!"]) {
    assert.equal((await rejection(fernet.decrypt(token))).reason, "format");
  }
});

Deno.test("Fernet rejects arguments of the wrong type or range", async () => {
  const fernet = new Fernet(KEY);
  await assert.rejects(fernet.encrypt(42 as unknown as string), TypeError);
  await assert.rejects(fernet.encryptBytes("x" as unknown as Uint8Array), TypeError);
  await assert.rejects(fernet.encrypt("x", { iv: new Uint8Array(15) }), TypeError);
  await assert.rejects(fernet.encrypt("x", { now: Number.NaN }), RangeError);
  await assert.rejects(fernet.encryptBytes(new Uint8Array(1), { headroom: -1 }), /headroom/);
  await assert.rejects(fernet.encryptBytes(new Uint8Array(1), { headroom: 0.5 }), /headroom/);
  await assert.rejects(fernet.encryptBytes(new Uint8Array(1), { headroom: 2 ** 40 }), /headroom/);
  await assert.rejects(fernet.decrypt(new Uint8Array(80) as unknown as string), TypeError);
  await assert.rejects(fernet.decryptBytes("gAAA" as unknown as Uint8Array), TypeError);
  await assert.rejects(fernet.decrypt(await fernet.encrypt("x"), { ttl: -1 }), RangeError);
});

Deno.test("Fernet.tokenSize() is the exact length of the raw token", async () => {
  const fernet = new Fernet(KEY);
  for (let size = 0; size <= 100; size++) {
    const token = await fernet.encryptBytes(pattern(size));
    assert.equal(Fernet.tokenSize(size), token.length, `${size} bytes`);
  }
  assert.equal(Fernet.tokenSize(0), 73);
  assert.equal(Fernet.tokenSize(15), 73);
  assert.equal(Fernet.tokenSize(16), 89);
  assert.equal(Fernet.tokenSize(1_048_576), 1_048_576 + 16 + 57);
  assert.throws(() => Fernet.tokenSize(-1), RangeError);
  assert.throws(() => Fernet.tokenSize(1.5), RangeError);
});

Deno.test("DEFAULT_WEBCRYPTO_THRESHOLD is a positive byte count", () => {
  assert.ok(DEFAULT_WEBCRYPTO_THRESHOLD > 0);
});
