import assert from "node:assert/strict";
import {
  decodeBatch,
  decodeRecord,
  DEFAULT_MAX_BATCH_MESSAGES,
  encodeBatch,
  encodeEnvelope,
  encodeRecord,
  type Message,
  stampRequest,
} from "../lib/message.ts";
import { EncodeError, FrameError } from "../lib/errors.ts";

function roundTrip(message: Message): Message {
  return decodeRecord(encodeRecord(message));
}

Deno.test("a request record round-trips JSON args and kwargs", () => {
  const message: Message = {
    k: "q",
    id: 7,
    p: "math.add",
    a: [1, "two", [3], { four: 4 }, null],
    kw: { x: true },
  };
  assert.deepEqual(roundTrip(message), message);
});

Deno.test("Uint8Array values travel as raw bytes anywhere in a value", () => {
  const big = crypto.getRandomValues(new Uint8Array(65536));
  const message: Message = {
    k: "q",
    id: 1,
    p: "p",
    a: [new Uint8Array([1, 2]), { nested: [new Uint8Array(0), big] }],
    kw: { blob: new Uint8Array([9]) },
  };
  const record = encodeRecord(message);
  assert.ok(record.length < 65536 + 200, "bytes are not base64-inflated");
  assert.deepEqual(decodeRecord(record), message);
});

Deno.test("user objects with $b or $e keys survive unchanged", () => {
  const message: Message = {
    k: "r",
    id: 2,
    v: [{ $b: 0 }, { $e: { $b: 1 } }, { $b: "x", other: 1 }, { a: { $e: 5 } }],
  };
  assert.deepEqual(roundTrip(message), message);
});

Deno.test("the same escaped object appearing twice survives", () => {
  const shared = { $b: 3 };
  const message: Message = { k: "r", id: 3, v: [shared, shared] };
  assert.deepEqual(roundTrip(message), { k: "r", id: 3, v: [{ $b: 3 }, { $b: 3 }] });
});

Deno.test("encodeRecord() refuses values JSON cannot carry faithfully", async (t) => {
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  const cases: [string, unknown][] = [
    ["a function", () => 1],
    ["a bigint", 1n],
    ["a symbol", Symbol("s")],
    ["NaN", NaN],
    ["Infinity", Infinity],
    ["a Map", new Map()],
    ["a Set", new Set()],
    ["a class instance", new (class Point {})()],
    ["an Int32Array", new Int32Array(2)],
    ["a cyclic object", cyclic],
  ];
  for (const [what, value] of cases) {
    await t.step(what, () => {
      assert.throws(() => encodeRecord({ k: "r", id: 1, v: [value] }), EncodeError);
    });
  }
});

Deno.test("decodeRecord() rejects malformed records with FrameError", async (t) => {
  const good = encodeRecord({ k: "r", id: 1, v: new Uint8Array([1, 2, 3]) });
  await t.step("every truncation", () => {
    for (let n = 0; n < good.length; n++) {
      assert.throws(() => decodeRecord(good.subarray(0, n)), FrameError, `length ${n}`);
    }
  });
  await t.step("a missing kind", () => {
    const json = new TextEncoder().encode('{"id":1}');
    const record = new Uint8Array([0, 0, 0, json.length, ...json]);
    assert.throws(() => decodeRecord(record), /lacks a kind/);
  });
  await t.step("a reference to a missing blob", () => {
    const json = new TextEncoder().encode('{"k":"r","id":1,"v":{"$b":4}}');
    const record = new Uint8Array([0, 0, 0, json.length, ...json]);
    assert.throws(() => decodeRecord(record), /missing blob/);
  });
});

Deno.test("a batch carries an envelope and several records", () => {
  const envelope = { s: "alice", i: "0123456789abcdef", w: "office", t: "bob" };
  const messages: Message[] = [
    { k: "q", id: 1, p: "a", a: [], kw: {} },
    { k: "x", id: 2 },
    { k: "e", id: 3, c: "handler", n: "TypeError", m: "no" },
  ];
  const plain = encodeBatch(encodeEnvelope(envelope), messages.map(encodeRecord));
  assert.deepEqual(decodeBatch(plain), { envelope, messages });
});

Deno.test("decodeBatch() reads each batch's own envelope, shared and frozen when the bytes repeat", () => {
  const record = encodeRecord({ k: "x", id: 1 });
  const envelopes = Array.from({ length: 12 }, (_, i) => ({
    s: `node${i % 10}`,
    i: "0123456789abcdef",
    w: "office",
    t: i % 2 ? "bob" : "bot",
  }));
  for (let round = 0; round < 3; round++) {
    for (const envelope of envelopes) {
      const decoded = decodeBatch(encodeBatch(encodeEnvelope(envelope), [record])).envelope;
      assert.deepEqual(decoded, envelope);
      assert.ok(Object.isFrozen(decoded));
    }
  }
  const bytes = encodeBatch(encodeEnvelope(envelopes[0]!), [record]);
  assert.equal(decodeBatch(bytes).envelope, decodeBatch(bytes.slice()).envelope);
});

Deno.test("records round-trip JSON text of every length and alphabet", () => {
  // Short ASCII JSON is written and read in TypeScript, the rest by the runtime's codecs.
  for (const text of ["", "a", "é", "✓ ok", "🌍", "x".repeat(300), "é".repeat(200), '\u0000"']) {
    const message: Message = { k: "r", id: 1, v: { text, more: [text, 1] } };
    assert.deepEqual(decodeRecord(encodeRecord(message)), message);
  }
});

Deno.test("decodeBatch() rejects a wrong payload version and truncations", () => {
  const envelope = encodeEnvelope({ s: "a", i: "b", w: "c", t: "d" });
  const plain = encodeBatch(envelope, [encodeRecord({ k: "x", id: 1 })]);
  for (let n = 0; n < plain.length; n++) {
    if (n === 5 + envelope.length) continue; // a batch may hold no record
    assert.throws(() => decodeBatch(plain.subarray(0, n)), FrameError, `length ${n}`);
  }
  const wrong = plain.slice();
  wrong[0] = 2;
  assert.throws(() => decodeBatch(wrong), /payload version 2/);
});

Deno.test("a Buffer travels as bytes despite its toJSON()", async () => {
  const { Buffer } = await import("node:buffer");
  const decoded = decodeRecord(encodeRecord({ k: "r", id: 1, v: { b: Buffer.from("hi") } }));
  assert.deepEqual(decoded, { k: "r", id: 1, v: { b: new Uint8Array([104, 105]) } });
});

/** A record whose message JSON is `json`, with `blobs` after it. */
function rawRecord(json: string, blobs: Uint8Array[] = []): Uint8Array {
  const text = new TextEncoder().encode(json);
  const parts = [text, ...blobs];
  const out = new Uint8Array(parts.reduce((size, part) => size + 4 + part.length, 0));
  const view = new DataView(out.buffer);
  let at = 0;
  for (const part of parts) {
    view.setUint32(at, part.length);
    out.set(part, at + 4);
    at += 4 + part.length;
  }
  return out;
}

Deno.test('decodeRecord() rejects {"$b": "length"} with FrameError instead of a number', () => {
  assert.throws(
    () => decodeRecord(rawRecord('{"k":"r","id":1,"v":{"$b":"length"}}')),
    (error) =>
      error instanceof FrameError && /malformed blob reference "length"/.test(error.message),
  );
});

Deno.test('decodeRecord() rejects {"$b": "constructor"} with FrameError instead of Array', () => {
  assert.throws(
    () => decodeRecord(rawRecord('{"k":"r","id":1,"v":{"$b":"constructor"}}', [new Uint8Array(1)])),
    (error) =>
      error instanceof FrameError && /malformed blob reference "constructor"/.test(error.message),
  );
});

Deno.test("decodeRecord() rejects a blob reference that is not a non-negative integer", async (t) => {
  const blobs = [new Uint8Array([1]), new Uint8Array([2])];
  for (const ref of ['"0"', "-1", "1.5", "null", "true", "[0]", "{}", '"__proto__"']) {
    await t.step(ref, () => {
      assert.throws(
        () => decodeRecord(rawRecord(`{"k":"r","id":1,"v":{"$b":${ref}}}`, blobs)),
        FrameError,
      );
    });
  }
});

Deno.test("decodeRecord() rejects a blob index equal to the record's blob count", () => {
  const record = rawRecord('{"k":"r","id":1,"v":{"$b":2}}', [new Uint8Array(1), new Uint8Array(1)]);
  assert.throws(() => decodeRecord(record), /missing blob 2; the record holds 2 blobs/);
});

Deno.test("decodeRecord() resolves the highest valid blob index", () => {
  const record = rawRecord('{"k":"r","id":1,"v":{"$b":1}}', [
    new Uint8Array([1]),
    new Uint8Array([2]),
  ]);
  assert.deepEqual(decodeRecord(record), { k: "r", id: 1, v: new Uint8Array([2]) });
});

Deno.test("decodeRecord() rejects requests and cancels whose id is below 1", async (t) => {
  const cases = [
    '{"k":"q","id":0,"p":"count","a":[],"kw":{}}',
    '{"k":"q","id":-1,"p":"count","a":[],"kw":{}}',
    '{"k":"q","id":-9007199254740991,"p":"count","a":[],"kw":{}}',
    '{"k":"x","id":0}',
    '{"k":"x","id":-5}',
  ];
  for (const json of cases) {
    await t.step(json, () => {
      assert.throws(() => decodeRecord(rawRecord(json)), FrameError);
    });
  }
  assert.deepEqual(decodeRecord(rawRecord('{"k":"x","id":1}')), { k: "x", id: 1 });
});

Deno.test("decodeRecord() reads a request's t and dl, and rejects malformed ones", async (t) => {
  const request = { k: "q", id: 1, p: "p", a: [], kw: {} };
  assert.deepEqual(
    decodeRecord(rawRecord(JSON.stringify({ ...request, t: 1_700_000_000_123, dl: 0 }))),
    { ...request, t: 1_700_000_000_123, dl: 0 },
  );
  for (const extra of ['"t":"soon"', '"dl":-1', '"dl":null', '"t":[1]', '"dl":"5"']) {
    await t.step(extra, () => {
      const json = `{"k":"q","id":1,"p":"p","a":[],"kw":{},${extra}}`;
      assert.throws(() => decodeRecord(rawRecord(json)), FrameError);
    });
  }
});

Deno.test("stampRequest() adds t and dl to a request without encoding its arguments again", () => {
  const blob = new Uint8Array([1, 2, 3]);
  const record = encodeRecord({ k: "q", id: 4, p: "p", a: [blob, { $b: 1 }], kw: { x: 1 } });
  const stamped = { k: "q", id: 4, p: "p", a: [blob, { $b: 1 }], kw: { x: 1 }, t: 12_345 };
  // An infinite deadline sends no dl.
  for (const [deadline, dl] of [[500, { dl: 500 }], [Infinity, {}]] as const) {
    assert.deepEqual(decodeRecord(stampRequest(record, 12_345, deadline)), { ...stamped, ...dl });
  }
});

Deno.test("decodeBatch() refuses a batch of more than 1024 messages before decoding the rest", () => {
  const envelope = encodeEnvelope({ s: "a", i: "b", w: "c", t: "d" });
  const tiny = encodeRecord({ k: "q", id: 1, p: "p", a: [], kw: {} });
  const full = encodeBatch(envelope, Array(DEFAULT_MAX_BATCH_MESSAGES).fill(tiny));
  assert.equal(decodeBatch(full).messages.length, DEFAULT_MAX_BATCH_MESSAGES);
  // The message past the cap is not even valid: it is never decoded.
  const junk = new Uint8Array([0, 0, 0, 1, 0x7b]);
  const over = encodeBatch(envelope, [...Array(DEFAULT_MAX_BATCH_MESSAGES).fill(tiny), junk]);
  assert.throws(() => decodeBatch(over), /more than 1024 messages/);
  const many = encodeBatch(envelope, Array(256_743).fill(tiny));
  assert.throws(() => decodeBatch(many), FrameError);
  assert.throws(() => decodeBatch(over, 2000), /not valid JSON/, "under a higher cap it is read");
});
