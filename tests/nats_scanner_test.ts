/** What lib/nats_scanner.ts lets through from a NATS server, and what it refuses. */

import { match, strictEqual } from "node:assert/strict";
import { MAX_NATS_LINE, MAX_NATS_MESSAGE, NatsScanner } from "../lib/nats_scanner.ts";

const bytes = (s: string) => new TextEncoder().encode(s);

/** Pushes `text` one byte at a time; the first refusal, or null. */
function byteByByte(scanner: NatsScanner, text: string): string | null {
  for (const b of bytes(text)) {
    const why = scanner.push(Uint8Array.of(b));
    if (why !== null) return why;
  }
  return null;
}

Deno.test("a payload containing line ends and op names is skipped, not read as lines", () => {
  const scanner = new NatsScanner(1024);
  const payload = `MSG x 1 999999\r\n${"A".repeat(20)}`;
  strictEqual(
    scanner.push(bytes(`MSG a.b 7 r.1 ${payload.length}\r\n${payload}\r\nPING\r\n`)),
    null,
  );
});

Deno.test("messages, HMSG included, are followed across chunks of one byte", () => {
  const scanner = new NatsScanner(64);
  const text =
    "INFO {}\r\nmsg a 1 3\r\nabc\r\nHMSG a 1 r 12 14\r\nNATS/1.0\r\n\r\nhi\r\n+OK\r\nPONG\r\n" +
    "-ERR 'Unknown Protocol Operation'\r\nMSG a 1 0\r\n\r\n";
  strictEqual(byteByByte(scanner, text), null);
  match(byteByByte(scanner, "HMSG a 1 12 65\r\n") ?? "", /65 bytes, over 64/);
});

Deno.test("a message over the bound is refused at its header, before any payload", () => {
  match(new NatsScanner().push(bytes("MSG a 1 2147483647\r\n")) ?? "", /2147483647 bytes/);
});

Deno.test("the bound is MAX_NATS_MESSAGE at most, whatever a caller asks for", () => {
  const scanner = new NatsScanner(Number.MAX_SAFE_INTEGER);
  strictEqual(scanner.push(bytes(`MSG a 1 ${MAX_NATS_MESSAGE}\r\n`)), null);
  const other = new NatsScanner(Number.MAX_SAFE_INTEGER);
  match(other.push(bytes(`MSG a 1 ${MAX_NATS_MESSAGE + 1}\r\n`)) ?? "", /bytes, over/);
});

Deno.test("a payload not followed by CRLF is refused: the parser and the scanner would part ways", () => {
  // After 'abc' the parser skips to the next LF, so the MSG line below would be part of a payload
  // to it while the scanner took it for a header: a hostile server's way past the size bound.
  const scanner = new NatsScanner(1024);
  match(scanner.push(bytes("MSG a 1 3\r\nabcXXMSG s 1 1000\r\n")) ?? "", /did not end with CRLF/);
  match(byteByByte(new NatsScanner(1024), "MSG a 1 3\r\nabc\rX") ?? "", /did not end with CRLF/);
});

Deno.test("a line longer than MAX_NATS_LINE is refused before its end arrives", () => {
  const scanner = new NatsScanner(1024);
  strictEqual(scanner.push(bytes("MSG a 1 ")), null);
  const endless = new Uint8Array(MAX_NATS_LINE).fill(0x61);
  match(scanner.push(endless) ?? "", new RegExp(`over ${MAX_NATS_LINE} bytes`));
});

Deno.test("an INFO line of many KiB passes in chunks split anywhere", () => {
  const line = bytes(`INFO {"connect_urls":["${"a".repeat(7000)}"]}\r\nPING\r\n`);
  for (const splits of [[4500], [3000, 5000, 8000], [4096, 4097]]) {
    const scanner = new NatsScanner(1024);
    let at = 0;
    for (const split of [...splits, line.length]) {
      strictEqual(scanner.push(line.subarray(at, split)), null, `split at ${splits}`);
      at = split;
    }
  }
});

Deno.test("a MSG line without a size is refused", () => {
  match(new NatsScanner(1024).push(bytes("MSG a 1 x\r\n")) ?? "", /has no size/);
});
