/**
 * The WebSocket codec's arithmetic: masking at any offset, phase and size
 * (a word at a time past 1 KiB), and the three header length forms both
 * ways.
 */

import { deepStrictEqual, strictEqual } from "node:assert/strict";
import { applyMask, Opcode, WsDecoder, type WsEvent, wsHeader } from "../lib/websocket_codec.ts";

Deno.test("applyMask() equals a byte-by-byte XOR at every memory offset, key phase and size", () => {
  const mask = new Uint8Array([0x12, 0x34, 0x56, 0x78]);
  for (const size of [0, 1, 3, 4, 5, 350, 1023, 1024, 1025, 4099]) {
    for (let offset = 0; offset < 4; offset++) {
      for (let phase = 0; phase < 4; phase++) {
        const backing = new Uint8Array(size + 8).map((_, i) => (i * 37) & 0xff);
        const bytes = backing.subarray(offset, offset + size);
        const expected = bytes.map((b, i) => b ^ mask[(phase + i) & 3]!);
        applyMask(bytes, 0, size, mask, phase);
        deepStrictEqual(bytes, expected, `size ${size}, offset ${offset}, phase ${phase}`);
      }
    }
  }
});

Deno.test("a decoder reads 7-bit, 16-bit and 64-bit payload lengths as wsHeader() writes them", () => {
  for (const length of [0, 125, 126, 65535, 65536, 70_000]) {
    const mask = new Uint8Array([1, 2, 3, 4]);
    const payload = new Uint8Array(length).fill(9);
    const masked = payload.slice();
    applyMask(masked, 0, length, mask, 0);
    const bytes = new Uint8Array([...wsHeader(Opcode.BINARY, true, length, mask), ...masked]);
    const events: WsEvent[] = [];
    new WsDecoder().feed(bytes, 0, bytes.length, events);
    const data = events.filter((e) => e.kind === "data");
    strictEqual(data.reduce((n, e) => n + (e.kind === "data" ? e.end - e.start : 0), 0), length);
    deepStrictEqual(events.at(-1), { kind: "end" });
  }
});
