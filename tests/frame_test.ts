import assert from "node:assert/strict";
import {
  buildFrame,
  CloseCode,
  decodeGoaway,
  DEFAULT_MAX_FRAME_SIZE,
  encodeFrame,
  encodeFrameAround,
  encodeGoaway,
  encodeName,
  type Frame,
  FRAME_BUFFER_START,
  FrameDecoder,
  frameSize,
  FrameType,
  parseFrame,
  PROTOCOL_VERSION,
} from "../lib/frame.ts";
import { FrameError, MessageTooLargeError, ProtocolVersionError } from "../lib/errors.ts";

const EMPTY = new Uint8Array(0);

const sample: Frame = {
  type: FrameType.DATA,
  id: 2 ** 40 + 7,
  network: "office",
  target: "bob",
  sender: "alice ✓",
  body: new Uint8Array([1, 2, 3, 4, 5]),
};

Deno.test("buildFrame() lays out length, version, type, id, names and body", () => {
  const bytes = buildFrame(sample);
  const view = new DataView(bytes.buffer);
  assert.equal(view.getUint32(0), bytes.length - 4);
  assert.equal(bytes[4], PROTOCOL_VERSION);
  assert.equal(bytes[5], FrameType.DATA);
  assert.equal(view.getUint16(6), 0);
  assert.equal(view.getUint32(8) * 2 ** 32 + view.getUint32(12), sample.id);
  assert.equal(bytes[16], 6);
  assert.equal(new TextDecoder().decode(bytes.subarray(17, 23)), "office");
  assert.deepEqual([...bytes.subarray(-5)], [1, 2, 3, 4, 5]);
});

const sampleHeader = {
  network: encodeName(sample.network, "network"),
  target: encodeName(sample.target, "target"),
  sender: encodeName(sample.sender, "sender"),
};

Deno.test("encodeFrameAround() writes the same frame as encodeFrame() into the room before the body", () => {
  const room = frameSize(sampleHeader, 0);
  const buffer = new ArrayBuffer(room + sample.body.length);
  const body = new Uint8Array(buffer, room);
  body.set(sample.body);
  const frame = encodeFrameAround(FrameType.DATA, sample.id, sampleHeader, body);
  assert.equal(frame.buffer, buffer); // The body was not copied.
  assert.deepEqual(frame, encodeFrame(FrameType.DATA, sample.id, sampleHeader, sample.body));
});

Deno.test("encodeFrameAround() refuses a body without exactly the header's room before it, writing nothing", () => {
  const room = frameSize(sampleHeader, 0);
  for (const [before, after] of [[room - 1, 0], [room + 1, 0], [room, 1]] as const) {
    const bytes = new Uint8Array(before + sample.body.length + after).fill(9);
    const body = bytes.subarray(before, before + sample.body.length);
    assert.throws(
      () => encodeFrameAround(FrameType.DATA, 1, sampleHeader, body),
      /needs \d+ bytes of room before it/,
    );
    assert.ok(bytes.every((b) => b === 9));
  }
  const roomy = new Uint8Array(room + 10).subarray(room);
  assert.throws(
    () => encodeFrameAround(FrameType.DATA, 1, sampleHeader, roomy, room + 9),
    MessageTooLargeError,
  );
});

Deno.test("parseFrame() reads back what buildFrame() wrote", () => {
  const bytes = buildFrame(sample);
  const { raw, ...frame } = parseFrame(bytes);
  assert.deepEqual({ ...frame, body: [...frame.body] }, { ...sample, body: [...sample.body] });
  assert.equal(raw, bytes);
});

Deno.test("parseFrame() reads each frame's own names when names of the same length alternate", () => {
  // Names decoded lately are remembered by their bytes: a change in one byte is a new name.
  const names = ["aaaa", "aaab", "baaa", "aaaa", "é", "\u00e8", "aaab", ""];
  for (let i = 0; i < 40; i++) {
    const name = names[i % names.length]!;
    const other = names[(i * 3 + 1) % names.length]!;
    const frame = { ...sample, network: name, target: other, sender: `${name}${other}` };
    const parsed = parseFrame(buildFrame(frame));
    assert.deepEqual([parsed.network, parsed.target, parsed.sender], [
      name,
      other,
      `${name}${other}`,
    ]);
  }
});

Deno.test("FrameDecoder reads frames fed one byte at a time", () => {
  const bytes = new Uint8Array([...buildFrame(sample), ...buildFrame({ ...sample, id: 1 })]);
  const decoder = new FrameDecoder();
  const frames: Frame[] = [];
  for (const byte of bytes) frames.push(...decoder.push(new Uint8Array([byte])));
  assert.deepEqual(frames.map((f) => f.id), [sample.id, 1]);
  assert.equal(decoder.idle, true);
});

Deno.test("FrameDecoder reads several frames from one chunk and a split remainder", () => {
  const one = buildFrame(sample);
  const decoder = new FrameDecoder();
  const joined = new Uint8Array([...one, ...one, ...one.subarray(0, 10)]);
  assert.equal(decoder.push(joined).length, 2);
  assert.equal(decoder.idle, false);
  assert.equal(decoder.push(one.subarray(10)).length, 1);
});

Deno.test("FrameDecoder rejects a length above the limit before allocating", () => {
  const decoder = new FrameDecoder(1024);
  const header = new Uint8Array(4);
  new DataView(header.buffer).setUint32(0, 0xffff_fff0);
  assert.throws(
    () => decoder.push(header),
    (e) => e instanceof FrameError && /exceeds the limit/.test(e.message),
  );
});

Deno.test("FrameDecoder rejects a length shorter than the minimal header", () => {
  assert.throws(() => new FrameDecoder().push(new Uint8Array([0, 0, 0, 3])), FrameError);
});

Deno.test("parseFrame() names both versions for an unknown protocol version", () => {
  const bytes = buildFrame(sample);
  bytes[4] = 9;
  assert.throws(
    () => parseFrame(bytes),
    (e) =>
      e instanceof ProtocolVersionError && e.received === 9 && e.supported === PROTOCOL_VERSION,
  );
});

Deno.test("parseFrame() rejects an unknown frame type", () => {
  const bytes = buildFrame(sample);
  bytes[5] = 0x7e;
  assert.throws(() => parseFrame(bytes), /unknown frame type 126/);
});

Deno.test("parseFrame() rejects names that run past the frame or are not UTF-8", async (t) => {
  await t.step("name length past the end", () => {
    const bytes = buildFrame({ ...sample, body: new Uint8Array(0) });
    bytes[16] = 250;
    assert.throws(() => parseFrame(bytes), /runs past the end/);
  });
  await t.step("invalid UTF-8", () => {
    const bytes = buildFrame(sample);
    bytes[17] = 0xff;
    assert.throws(() => parseFrame(bytes), /not valid UTF-8/);
  });
});

Deno.test("buildFrame() throws MessageTooLargeError above the limit", () => {
  assert.throws(
    () => buildFrame({ ...sample, body: new Uint8Array(2000) }, 1024),
    (e) => e instanceof MessageTooLargeError && e.limit === 1024 && e.size > 2000,
  );
});

Deno.test("buildFrame() refuses names longer than 255 UTF-8 bytes", () => {
  assert.throws(() => buildFrame({ ...sample, target: "é".repeat(200) }), RangeError);
});

Deno.test("the default maximum frame size is 16 MiB", () => {
  assert.equal(DEFAULT_MAX_FRAME_SIZE, 16 * 1024 * 1024);
});

Deno.test("GOAWAY bodies carry a code and a reason", () => {
  assert.deepEqual(decodeGoaway(encodeGoaway(CloseCode.AUTH, "bad key")), {
    code: CloseCode.AUTH,
    reason: "bad key",
  });
  assert.equal(decodeGoaway(new Uint8Array(1)).code, CloseCode.MALFORMED);
});

Deno.test("FrameDecoder lets a reader fill a frame body in place", () => {
  const bytes = buildFrame({ ...sample, body: new Uint8Array(1000).fill(7) });
  const decoder = new FrameDecoder();
  assert.equal(decoder.writable(), null);
  assert.deepEqual(decoder.push(bytes.subarray(0, 20)), []);
  const rest = decoder.writable()!;
  assert.equal(rest.length, bytes.length - 20);
  rest.set(bytes.subarray(20, 520));
  assert.deepEqual(decoder.commit(500), []);
  decoder.writable()!.set(bytes.subarray(520));
  const [frame] = decoder.commit(bytes.length - 520);
  assert.equal(frame?.body.length, 1000);
  assert.equal(decoder.idle, true);
});

Deno.test("FrameDecoder gives a large frame its full buffer at once when the chunk with its header holds a sixteenth of it", () => {
  const body = new Uint8Array(100_000).map((_, i) => i & 255);
  const bytes = encodeFrame(
    FrameType.DATA,
    9,
    { network: EMPTY, target: EMPTY, sender: EMPTY },
    body,
  );
  const sizes = (first: number) => {
    const decoder = new FrameDecoder();
    const buffers: number[] = [];
    decoder.onBuffered = (size) => buffers.push(size);
    const frames = [
      ...decoder.push(bytes.subarray(0, first)),
      ...decoder.push(bytes.subarray(first)),
    ];
    assert.equal(frames.length, 1);
    assert.deepEqual(frames[0]!.body, body);
    return buffers.filter((size) => size > 0);
  };
  assert.deepEqual(sizes(Math.ceil(bytes.length / 16)), [bytes.length], "one buffer, the full one");
  // Less than a sixteenth: the first buffer, then the full one once a sixteenth is in.
  assert.deepEqual(sizes(1_000), [FRAME_BUFFER_START, bytes.length]);
});
