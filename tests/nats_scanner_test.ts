/** What lib/nats_scanner.ts lets through from a NATS server, and what it refuses. */

import { match, strictEqual } from "node:assert/strict";
import {
  MAX_NATS_CONTROL_LINE,
  MAX_NATS_INFO,
  MAX_NATS_MESSAGE,
  NatsScanner,
} from "../lib/nats_scanner.ts";

const bytes = (s: string) => new TextEncoder().encode(s);

/** Pushes `text` one byte at a time; the first refusal, or null. */
function byteByByte(scanner: NatsScanner, text: string): string | null {
  for (const b of bytes(text)) {
    const why = scanner.push(Uint8Array.of(b));
    if (why !== null) return why;
  }
  return null;
}

Deno.test("a payload containing line ends and op names is skipped, not read as control lines", () => {
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
    "INFO {}\r\nmsg a 1 3\r\nabc\r\nHMSG a 1 r 12 14\r\nNATS/1.0\r\n\r\nhi\r\n+OK\r\nPONG\r\n";
  strictEqual(byteByByte(scanner, text), null);
  match(byteByByte(scanner, "HMSG a 1 12 65\r\n") ?? "", /65 bytes, over its max_payload of 64/);
});

Deno.test("a message over max_payload is refused at its header, before any payload", () => {
  const scanner = new NatsScanner(1024 * 1024);
  match(scanner.push(bytes("MSG a 1 2147483647\r\n")) ?? "", /2147483647 bytes/);
});

Deno.test("max_payload is capped at MAX_NATS_MESSAGE whatever the server announces", () => {
  const scanner = new NatsScanner(Number.MAX_SAFE_INTEGER);
  match(scanner.push(bytes(`MSG a 1 ${MAX_NATS_MESSAGE + 1}\r\n`)) ?? "", /over its max_payload/);
});

Deno.test("a control line longer than MAX_NATS_CONTROL_LINE is refused before its end arrives", () => {
  const scanner = new NatsScanner(1024);
  strictEqual(scanner.push(bytes("MSG a 1 ")), null);
  const endless = new Uint8Array(MAX_NATS_CONTROL_LINE).fill(0x61);
  match(scanner.push(endless) ?? "", new RegExp(`over ${MAX_NATS_CONTROL_LINE} bytes`));
});

Deno.test("an INFO line may be longer than a control line, up to MAX_NATS_INFO", () => {
  const scanner = new NatsScanner(1024);
  const json = `{"x":"${"a".repeat(MAX_NATS_CONTROL_LINE * 2)}"}`;
  strictEqual(scanner.push(bytes(`INFO ${json}\r\n`)), null);
  const huge = new Uint8Array(MAX_NATS_INFO).fill(0x61);
  strictEqual(scanner.push(bytes("info ")), null);
  match(scanner.push(huge) ?? "", new RegExp(`over ${MAX_NATS_INFO} bytes`));
});

Deno.test("a MSG line without a size is refused", () => {
  match(new NatsScanner(1024).push(bytes("MSG a 1 x\r\n")) ?? "", /has no size/);
});
