/**
 * Fernet interoperability with Python's `cryptography` package, run as a
 * subprocess. Needs `python3` with `cryptography` (`apt install
 * python3-cryptography`); without it these tests skip, or fail under
 * `PEERBASE_STRICT=1`.
 */

import assert from "node:assert/strict";
import { Fernet, generateKey } from "../fernet/mod.ts";
import { textDecoder, textEncoder } from "../lib/encoding.ts";
import { testIf } from "./_env.ts";

const REASON = "needs python3 with the cryptography package (apt install python3-cryptography)";
const BACKENDS = ["node", "webcrypto"] as const;
const SIZES = [0, 1, 100, 70_000];

/** The first interpreter that can import `cryptography`, or undefined. */
async function findPython(): Promise<string | undefined> {
  for (const candidate of ["python3", "/usr/bin/python3"]) {
    try {
      const { success } = await new Deno.Command(candidate, {
        args: ["-c", "import cryptography.fernet"],
        stdout: "null",
        stderr: "null",
      }).output();
      if (success) return candidate;
    } catch (err) {
      // Not installed under this name: try the next one. A missing --allow-run still fails.
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }
  return undefined;
}

const PYTHON = await findPython();

/** Runs `script` with `args`, feeds it `input` on stdin, returns its stdout. */
async function python(script: string, args: string[], input: Uint8Array = new Uint8Array()) {
  const child = new Deno.Command(PYTHON!, {
    args: ["-c", script, ...args],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(input);
  await writer.close();
  const { success, stdout, stderr } = await child.output();
  assert.ok(success, `python3 failed: ${new TextDecoder().decode(stderr)}`);
  return stdout;
}

/** Bytes of length `n` that differ from one position to the next. */
function pattern(n: number): Uint8Array<ArrayBuffer> {
  return new Uint8Array(n).map((_, i) => (i * 13 + 5) & 0xff);
}

const PY_DECRYPT = `
import sys
from cryptography.fernet import Fernet
for token in sys.stdin.read().split():
    sys.stdout.write(Fernet(sys.argv[1]).decrypt(token, ttl=60).hex() + "\\n")
`;

const PY_ENCRYPT = `
import sys
from cryptography.fernet import Fernet
data = sys.stdin.buffer.read()
f = Fernet(sys.argv[1])
for size in sys.argv[2:]:
    print(f.encrypt(data[: int(size)]).decode())
`;

testIf(PYTHON !== undefined, REASON, {
  name: "Python's cryptography decrypts tokens made here by either backend",
  async fn() {
    const key = generateKey();
    for (const backend of BACKENDS) {
      const fernet = new Fernet(key, { backend });
      const tokens = await Promise.all(SIZES.map((size) => fernet.encrypt(pattern(size))));
      const lines = textDecoder.decode(
        await python(PY_DECRYPT, [key], textEncoder.encode(tokens.join("\n"))),
      ).split("\n");
      SIZES.forEach((size, i) => assert.equal(lines[i], pattern(size).toHex(), `${size} bytes`));
    }
  },
});

testIf(PYTHON !== undefined, REASON, {
  name: "tokens made by Python's cryptography decrypt here with either backend",
  async fn() {
    const key = generateKey();
    const max = Math.max(...SIZES);
    const output = await python(PY_ENCRYPT, [key, ...SIZES.map(String)], pattern(max));
    const tokens = textDecoder.decode(output).trim().split("\n");
    assert.equal(tokens.length, SIZES.length);
    for (const backend of BACKENDS) {
      const fernet = new Fernet(key, { backend });
      for (const [i, size] of SIZES.entries()) {
        assert.deepEqual(await fernet.decrypt(tokens[i]!, { ttl: 60_000 }), pattern(size));
      }
    }
  },
});

testIf(PYTHON !== undefined, REASON, {
  name: "keys from generateKey() and from Python's generate_key() work on both sides",
  async fn() {
    const ours = generateKey();
    const script = `
import sys
from cryptography.fernet import Fernet
Fernet(sys.argv[1])
print(Fernet.generate_key().decode())
`;
    const theirs = textDecoder.decode(await python(script, [ours])).trim();
    assert.match(theirs, /^[A-Za-z0-9_-]{43}=$/);
    assert.equal(new Fernet(theirs).backend, "auto");
  },
});

testIf(PYTHON !== undefined, REASON, {
  name: "Fernet.encrypt() makes the same token as Python for the same iv and time",
  async fn() {
    const key = generateKey();
    const iv = pattern(16);
    const seconds = 1_700_000_000;
    const script = `
import sys
from cryptography.fernet import Fernet
data = sys.stdin.buffer.read()
print(Fernet(sys.argv[1])._encrypt_from_parts(data, int(sys.argv[2]), bytes.fromhex(sys.argv[3])).decode())
`;
    const data = pattern(1000);
    const expected = textDecoder.decode(
      await python(script, [key, String(seconds), iv.toHex()], data),
    ).trim();
    for (const backend of BACKENDS) {
      const token = await new Fernet(key, { backend }).encrypt(data, {
        iv,
        now: seconds * 1000 + 999,
      });
      assert.equal(token, expected);
    }
  },
});
