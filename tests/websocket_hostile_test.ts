/**
 * Hostile input on a relay's WebSocket port (`wsPort`, docs/PROTOCOL.md
 * "Links: TCP, TLS or WebSocket"): raw handshakes and frames from a stranger
 * with no network key, what the relay answers and what it holds meanwhile,
 * and the good connections that must keep working beside the bad ones.
 * Memory figures are the relay process's own resident size
 * (`/proc/<pid>/status`) or `relay.stats.buffered`, asserted as bounds.
 */

import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { Node } from "../mod.ts";
import { Relay } from "../lib/relay_server.ts";
import { encodeBeat } from "../lib/relay_protocol.ts";
import { CloseCode, FrameType } from "../lib/frame.ts";
import type { Message } from "../lib/message.ts";
import { deadline, sealFrame, sleep, testNetwork, waitFor } from "./_fixtures.ts";
import {
  dataFrame,
  rawIdentity,
  rawMember,
  reachesVia,
  registerFrame,
  remoteOptions,
  spawnRelay,
} from "./_relay_fixtures.ts";
import {
  closePayload,
  Op,
  RawWebSocket,
  Rsv,
  upgradeRequest,
  wsFrame,
} from "./_websocket_fixtures.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
/** A peerbase PING frame (19 bytes): the smallest frame a stranger may send. */
const PING_FRAME = encodeBeat(FrameType.PING);
const WS_NORMAL = 1000;
const WS_PROTOCOL_ERROR = 1002;
const WS_UNSUPPORTED_DATA = 1003;

/** The resident size of process `pid`, bytes. */
async function rss(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const kib = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1]);
  ok(Number.isFinite(kib), "no VmRSS in /proc/<pid>/status");
  return kib * 1024;
}

/** A relay process serving WebSocket links: its WebSocket port and pid. */
async function spawnWsRelay() {
  const relay = await spawnRelay({ args: ["--ws-port", "0"] });
  const line = /serving WebSocket links on ws:\/\/127\.0\.0\.1:(\d+)$/m;
  await waitFor(() => line.test(relay.process.stderr), "the WebSocket line");
  return {
    port: Number(line.exec(relay.process.stderr)![1]),
    pid: relay.process.child.pid,
    [Symbol.asyncDispose]: () => relay[Symbol.asyncDispose](),
  };
}

/** An in-process relay on loopback with a WebSocket port. */
async function wsRelay(options: ConstructorParameters<typeof Relay>[0] = {}) {
  const relay = new Relay({ hostname: "127.0.0.1", port: 0, wsPort: 0, ...options });
  await relay.start();
  return {
    relay,
    port: relay.wsAddr!.port,
    tcp: `127.0.0.1:${relay.addr.port}`,
    ws: `ws://127.0.0.1:${relay.wsAddr!.port}`,
    [Symbol.asyncDispose]: () => relay.close(),
  };
}

/** Opens a WebSocket past its 101, sends `bytes`, and waits for the relay to end it. */
async function closedAfter(port: number, bytes: Uint8Array) {
  await using ws = await RawWebSocket.open(port);
  await ws.write(bytes).catch(() => {}); // The relay may have closed already.
  return await ws.outcome();
}

/** `length` bytes of a repeating pattern. */
function pattern(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (i * 31 + seed) & 0xff;
  return out;
}

/** Writes `bytes` in `count` batches, at most until `ms` pass; the bytes written. */
async function flood(ws: RawWebSocket, bytes: Uint8Array, count: number, ms: number) {
  const until = Date.now() + ms;
  let sent = 0;
  for (let i = 0; i < count && Date.now() < until; i++) {
    const written = await deadline(ws.write(bytes).then(() => true, () => false), "a write", ms)
      .catch(() => false);
    if (!written) break;
    sent += bytes.length;
  }
  return sent;
}

// ---- Handshake ----

Deno.test("a WebSocket-port request that does not ask for a WebSocket gets 426 and is closed", async (t) => {
  await using r = await wsRelay();
  const cases: Array<[string, Parameters<typeof upgradeRequest>[0]]> = [
    ["no Upgrade header", { headers: { Upgrade: null, Connection: "keep-alive" } }],
    ["Upgrade: h2c", { headers: { Upgrade: "h2c" } }],
  ];
  for (const [what, request] of cases) {
    await t.step(what, async () => {
      await using ws = await RawWebSocket.connect(r.port);
      strictEqual(await ws.upgrade(request), 426, ws.responseHead);
      ok(/^Upgrade: websocket$/im.test(ws.responseHead), ws.responseHead);
      await ws.outcome();
      strictEqual(ws.frames.length, 0);
    });
  }
  await waitFor(() => r.relay.stats.connections === 0, "the refused connections to be forgotten");
});

Deno.test("a WebSocket-port request from any page's Origin is accepted: admission is by proof, not by origin", async () => {
  await using r = await wsRelay();
  await using ws = await RawWebSocket.connect(r.port);
  strictEqual(await ws.upgrade({ headers: { Origin: "https://elsewhere.example" } }), 101);
});

Deno.test("a WebSocket-port request with a bad or missing key, version or request line gets 400 and is closed", async (t) => {
  await using r = await wsRelay();
  const cases: Array<[string, Parameters<typeof upgradeRequest>[0]]> = [
    ["no Sec-WebSocket-Key", { headers: { "Sec-WebSocket-Key": null } }],
    ["a key that is not base64", { headers: { "Sec-WebSocket-Key": "!!!!!!!!!!!!!!!!!!!!!!==" } }],
    ["a key of 15 bytes", { headers: { "Sec-WebSocket-Key": "AAAAAAAAAAAAAAAAAAAA" } }],
    ["a key of 17 bytes", { headers: { "Sec-WebSocket-Key": "AAAAAAAAAAAAAAAAAAAAAA==x" } }],
    ["no Sec-WebSocket-Version", { headers: { "Sec-WebSocket-Version": null } }],
    ["version 8", { headers: { "Sec-WebSocket-Version": "8" } }],
    ["no Connection: Upgrade", { headers: { Connection: "keep-alive" } }],
    ["a POST", { requestLine: "POST / HTTP/1.1" }],
    ["HTTP/1.0", { requestLine: "GET / HTTP/1.0" }],
    ["a header line without a colon", { headers: { "X-Bad\r\nno colon here": "x" } }],
  ];
  for (const [what, request] of cases) {
    await t.step(what, async () => {
      await using ws = await RawWebSocket.connect(r.port);
      strictEqual(await ws.upgrade(request), 400, `${ws.responseHead}\n${ws.body}`);
      await ws.outcome();
      strictEqual(ws.frames.length, 0);
    });
  }
});

Deno.test("a WebSocket-port request head that reaches 4096 bytes gets 431 without the relay waiting for more", async (t) => {
  await using r = await wsRelay();
  await t.step("exactly 4096 bytes, no blank line yet", async () => {
    const start = "GET / HTTP/1.1\r\nX-Pad: ";
    const head = new TextEncoder().encode(start + "a".repeat(4096 - start.length));
    strictEqual(head.length, 4096);
    await using ws = await RawWebSocket.connect(r.port);
    await ws.write(head);
    strictEqual(await ws.answer(), 431, ws.responseHead);
    await ws.outcome();
  });
  await t.step("1 MiB of header in one write", async () => {
    const head = new TextEncoder().encode(`GET / HTTP/1.1\r\nX-Pad: ${"a".repeat(MiB)}\r\n\r\n`);
    await using ws = await RawWebSocket.connect(r.port);
    await ws.write(head).catch(() => {}); // The relay closes while it is being written.
    await ws.outcome();
    // The 431 may be lost to a reset (unread bytes at close), never replaced by anything else.
    ok(ws.status === 431 || ws.status === null, `status ${ws.status}`);
  });
});

Deno.test("a WebSocket request head that stalls half-way is closed at the registration deadline", async () => {
  await using r = await wsRelay({ registerDeadline: 300 });
  const clients: RawWebSocket[] = [];
  try {
    for (let i = 0; i < 8; i++) {
      const ws = await RawWebSocket.connect(r.port);
      clients.push(ws);
      await ws.write(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: relay\r\nUpg"));
    }
    // One more that sends nothing at all.
    clients.push(await RawWebSocket.connect(r.port));
    for (const ws of clients) {
      const outcome = await ws.outcome();
      strictEqual(outcome.status, null, "no HTTP answer to an unfinished head");
    }
    strictEqual(r.relay.stats.refusals.deadline, clients.length);
    await waitFor(() => r.relay.stats.connections === 0, "the stalled connections to be forgotten");
  } finally {
    for (const ws of clients) await ws[Symbol.asyncDispose]();
  }
});

Deno.test("a WebSocket frame sent right behind the request head is read after the 101", async (t) => {
  await using r = await wsRelay();
  await t.step("a ping in the same write as the head is answered", async () => {
    await using ws = await RawWebSocket.connect(r.port);
    const payload = pattern(100);
    await ws.write(new Uint8Array([...upgradeRequest(), ...wsFrame(Op.PING, payload)]));
    strictEqual(await ws.answer(), 101);
    await waitFor(() => ws.pongs.length > 0, "the pong");
    deepStrictEqual(ws.pongs[0], payload);
    await ws.frame((f) => f.type === FrameType.CHALLENGE, "CHALLENGE");
    strictEqual(ws.ended, false);
  });
  await t.step(
    "an unmasked frame in the same write as the head is refused after the 101",
    async () => {
      await using ws = await RawWebSocket.connect(r.port);
      const bad = wsFrame(Op.BINARY, PING_FRAME, { mask: null });
      await ws.write(new Uint8Array([...upgradeRequest(), ...bad]));
      const outcome = await ws.outcome();
      strictEqual(outcome.status, 101);
      strictEqual(outcome.close?.code, WS_PROTOCOL_ERROR, JSON.stringify(outcome));
    },
  );
  await t.step(
    "after a pipelined PING, a REGISTER in fragments with a ping between them is admitted",
    async () => {
      const net = testNetwork("wshostile");
      const who = await rawIdentity(net, "early");
      await using ws = await RawWebSocket.connect(r.port);
      await ws.write(new Uint8Array([...upgradeRequest(), ...wsFrame(Op.BINARY, PING_FRAME)]));
      const register = await registerFrame(who, await ws.nonce(), ws.address);
      const cut = Math.floor(register.length / 2);
      await ws.send(Op.BINARY, register.subarray(0, 10), { fin: false });
      await ws.send(Op.PING, pattern(5));
      await ws.send(Op.CONTINUATION, register.subarray(10, cut), { fin: false });
      await ws.send(Op.CONTINUATION, new Uint8Array(0), { fin: false });
      await ws.send(Op.CONTINUATION, register.subarray(cut));
      await ws.frame((f) => f.type === FrameType.REGISTERED, "REGISTERED");
      strictEqual(ws.pongs.length, 1, "the ping between the fragments was answered");
    },
  );
});

// ---- Framing ----

Deno.test("an unmasked client frame is closed with 1002", async () => {
  await using r = await wsRelay();
  const outcome = await closedAfter(r.port, wsFrame(Op.BINARY, PING_FRAME, { mask: null }));
  strictEqual(outcome.close?.code, WS_PROTOCOL_ERROR, JSON.stringify(outcome));
});

Deno.test("a text message is closed with 1003", async () => {
  await using r = await wsRelay();
  const text = new TextEncoder().encode("hello");
  const outcome = await closedAfter(r.port, wsFrame(Op.TEXT, text));
  strictEqual(outcome.close?.code, WS_UNSUPPORTED_DATA, JSON.stringify(outcome));
});

Deno.test("a frame with a reserved bit set is closed with 1002", async (t) => {
  await using r = await wsRelay();
  for (const [name, rsv] of Object.entries(Rsv)) {
    await t.step(name, async () => {
      const outcome = await closedAfter(r.port, wsFrame(Op.BINARY, PING_FRAME, { rsv }));
      strictEqual(outcome.close?.code, WS_PROTOCOL_ERROR, JSON.stringify(outcome));
    });
  }
});

Deno.test("a frame with an unknown opcode is closed with 1002", async (t) => {
  await using r = await wsRelay();
  for (const opcode of [0x3, 0x4, 0x5, 0x6, 0x7, 0xb, 0xc, 0xd, 0xe, 0xf]) {
    await t.step(`opcode ${opcode}`, async () => {
      const outcome = await closedAfter(r.port, wsFrame(opcode, PING_FRAME));
      strictEqual(outcome.close?.code, WS_PROTOCOL_ERROR, JSON.stringify(outcome));
    });
  }
});

Deno.test("a control frame over 125 bytes, or fragmented, is closed with 1002", async (t) => {
  await using r = await wsRelay();
  const cases: Array<[string, Uint8Array]> = [
    ["a ping of 126 bytes", wsFrame(Op.PING, pattern(126))],
    ["a pong of 200 bytes", wsFrame(Op.PONG, pattern(200))],
    ["a close of 126 bytes", wsFrame(Op.CLOSE, pattern(126))],
    ["a ping without FIN", wsFrame(Op.PING, pattern(4), { fin: false })],
    ["a close without FIN", wsFrame(Op.CLOSE, closePayload(1000), { fin: false })],
    ["a ping declaring 2^40 bytes", wsFrame(Op.PING, new Uint8Array(0), { declared: 2 ** 40 })],
  ];
  for (const [what, bytes] of cases) {
    await t.step(what, async () => {
      const outcome = await closedAfter(r.port, bytes);
      strictEqual(outcome.close?.code, WS_PROTOCOL_ERROR, JSON.stringify(outcome));
    });
  }
});

Deno.test("a continuation frame without a message, or a new message inside one, is closed with 1002", async (t) => {
  await using r = await wsRelay();
  await t.step("continuation first", async () => {
    const outcome = await closedAfter(r.port, wsFrame(Op.CONTINUATION, PING_FRAME));
    strictEqual(outcome.close?.code, WS_PROTOCOL_ERROR, JSON.stringify(outcome));
  });
  await t.step("continuation after a finished message", async () => {
    const bytes = [
      ...wsFrame(Op.BINARY, PING_FRAME),
      ...wsFrame(Op.CONTINUATION, PING_FRAME),
    ];
    const outcome = await closedAfter(r.port, new Uint8Array(bytes));
    strictEqual(outcome.close?.code, WS_PROTOCOL_ERROR, JSON.stringify(outcome));
  });
  await t.step("binary inside a fragmented message", async () => {
    const bytes = [
      ...wsFrame(Op.BINARY, PING_FRAME.subarray(0, 5), { fin: false }),
      ...wsFrame(Op.BINARY, PING_FRAME.subarray(5)),
    ];
    const outcome = await closedAfter(r.port, new Uint8Array(bytes));
    strictEqual(outcome.close?.code, WS_PROTOCOL_ERROR, JSON.stringify(outcome));
  });
});

Deno.test("a message holding two peerbase frames is closed with 1002", async (t) => {
  await using r = await wsRelay();
  const cases: Array<[string, Uint8Array]> = [
    ["two PINGs in one frame", wsFrame(Op.BINARY, new Uint8Array([...PING_FRAME, ...PING_FRAME]))],
    [
      "a PING and the first byte of another",
      wsFrame(Op.BINARY, new Uint8Array([...PING_FRAME, 0])),
    ],
    [
      "the second PING in a continuation",
      new Uint8Array([
        ...wsFrame(Op.BINARY, PING_FRAME, { fin: false }),
        ...wsFrame(Op.CONTINUATION, PING_FRAME),
      ]),
    ],
  ];
  for (const [what, bytes] of cases) {
    await t.step(what, async () => {
      const outcome = await closedAfter(r.port, bytes);
      strictEqual(outcome.close?.code, WS_PROTOCOL_ERROR, JSON.stringify(outcome));
    });
  }
});

Deno.test("a message that ends inside a peerbase frame, or holds none, is closed with 1002", async (t) => {
  await using r = await wsRelay();
  const cases: Array<[string, Uint8Array]> = [
    ["half a PING", wsFrame(Op.BINARY, PING_FRAME.subarray(0, 9))],
    ["two bytes of a length field", wsFrame(Op.BINARY, PING_FRAME.subarray(0, 2))],
    ["an empty message", wsFrame(Op.BINARY)],
    [
      "half a PING, then the rest in the next message",
      new Uint8Array([
        ...wsFrame(Op.BINARY, PING_FRAME.subarray(0, 9)),
        ...wsFrame(Op.BINARY, PING_FRAME.subarray(9)),
      ]),
    ],
  ];
  for (const [what, bytes] of cases) {
    await t.step(what, async () => {
      const outcome = await closedAfter(r.port, bytes);
      strictEqual(outcome.close?.code, WS_PROTOCOL_ERROR, JSON.stringify(outcome));
    });
  }
});

Deno.test("a ping is answered with a pong carrying the same payload, before and after registering", async () => {
  await using r = await wsRelay();
  await using ws = await RawWebSocket.open(r.port);
  const payloads = [new Uint8Array(0), pattern(1), pattern(125, 9)];
  for (const [i, payload] of payloads.entries()) {
    await ws.send(Op.PING, payload);
    await waitFor(() => ws.pongs.length === i + 1, `pong ${i + 1}`);
    deepStrictEqual(ws.pongs[i], payload);
  }
  await ws.register(await rawIdentity(testNetwork("wshostile"), "pinger"));
  await ws.send(Op.PONG, pattern(20)); // Unsolicited: ignored.
  await ws.send(Op.PING, pattern(50, 3));
  await waitFor(() => ws.pongs.length === 4, "the fourth pong");
  deepStrictEqual(ws.pongs[3], pattern(50, 3));
  for (const frame of ws.frames) {
    strictEqual(frame.masked, false, "server frames are not masked");
    strictEqual(frame.rsv, 0);
  }
  strictEqual(ws.ended, false);
});

Deno.test({
  name: "pings sent back to back get a pong for the last of them (RFC 6455, 5.5.3)",
  async fn() {
    await using r = await wsRelay();
    await using ws = await RawWebSocket.open(r.port);
    const pings = [pattern(10, 1), pattern(10, 2), pattern(10, 3)];
    await ws.write(new Uint8Array(pings.flatMap((payload) => [...wsFrame(Op.PING, payload)])));
    await waitFor(
      () => ws.pongs.some((pong) => pong[0] === pings[2]![0]),
      `the pong of the last ping (got ${ws.pongs.length} pong(s))`,
      2000,
    );
  },
});

Deno.test("a ping over the connection's frame rate is answered once a token is back, and counts as a throttle", async () => {
  await using r = await wsRelay({ senderFrameRate: 1, senderFrameBurst: 3 });
  await using ws = await RawWebSocket.open(r.port);
  // Four pings in one write: the burst answers three, the fourth waits for a token (1 s).
  const pings = [0, 1, 2, 3].map((i) => pattern(8, i));
  await ws.write(new Uint8Array(pings.flatMap((payload) => [...wsFrame(Op.PING, payload)])));
  await waitFor(() => r.relay.stats.throttles === 1, "the fourth ping counted as a throttle");
  await sleep(100);
  ok(ws.pongs.every((pong) => pong[0] !== pings[3]![0]), "the fourth ping was answered at once");
  await waitFor(() => ws.pongs.some((pong) => pong[0] === pings[3]![0]), "the fourth ping's pong");
  ok(ws.pongs.length <= 4, `${ws.pongs.length} pongs for 4 pings`);
  strictEqual(r.relay.stats.throttles, 1);
  strictEqual(ws.ended, false);
});

Deno.test("a connection that keeps pinging over its frame rate for a silence timeout is cut once, as a flooder", async () => {
  // The rate refills many tokens within the timeout: a refill alone must not end the flood.
  await using r = await wsRelay({ senderFrameRate: 50, senderFrameBurst: 5, timeout: 300 });
  await using ws = await RawWebSocket.open(r.port);
  await ws.register(await rawIdentity(testNetwork("wshostile"), "flooder"));
  const ping = wsFrame(Op.PING, pattern(4));
  const peerbasePing = wsFrame(Op.BINARY, PING_FRAME); // Read in the same writes as the pings.
  const pinging = (async () => {
    for (let i = 0; i < 600 && !ws.ended; i++) {
      await ws.write(new Uint8Array([...ping, ...ping, ...peerbasePing])).catch(() => {});
      await sleep(5);
    }
  })();
  const outcome = await ws.outcome(5000);
  await pinging;
  strictEqual(outcome.goaway?.code, CloseCode.POLICY, JSON.stringify(outcome));
  strictEqual(r.relay.stats.disconnects.flood, 1);
});

Deno.test("a connection pinging far over a high frame rate is cut once, after a silence timeout", async () => {
  await using r = await wsRelay({ senderFrameRate: 1000, senderFrameBurst: 5, timeout: 300 });
  await using ws = await RawWebSocket.open(r.port);
  await ws.register(await rawIdentity(testNetwork("wshostile"), "pinger"));
  const pings = new Uint8Array(
    Array.from({ length: 64 }, () => [...wsFrame(Op.PING, pattern(4))]).flat(),
  );
  const pinging = (async () => {
    for (let i = 0; i < 2000 && !ws.ended; i++) {
      await ws.write(pings).catch(() => {});
      await sleep(2);
    }
  })();
  const outcome = await ws.outcome(8000);
  await pinging;
  strictEqual(outcome.goaway?.code, CloseCode.POLICY, JSON.stringify(outcome));
  strictEqual(r.relay.stats.disconnects.flood, 1);
});

Deno.test("what was read before a close frame reaches its receiver even when pings over the rate came with it", async () => {
  await using r = await wsRelay({ senderFrameRate: 1, senderFrameBurst: 3 });
  const net = testNetwork("wshostile");
  const receiver = await rawMember(net, "b", r.tcp);
  await using _receiver = { [Symbol.asyncDispose]: () => receiver.client[Symbol.asyncDispose]() };
  await using sender = await RawWebSocket.open(r.port);
  const a = await rawIdentity(net, "a");
  await sender.register(a);
  const data = dataFrame(a.networkId, receiver.id.pseudonym, a.pseudonym, new Uint8Array(32));
  const pings = Array.from({ length: 4 }, () => [...wsFrame(Op.PING)]).flat();
  await sender.write(
    new Uint8Array([
      ...wsFrame(Op.BINARY, data),
      ...pings,
      ...wsFrame(Op.CLOSE, closePayload(WS_NORMAL)),
    ]),
  );
  await sender.outcome();
  await waitFor(
    () => receiver.client.frames.some((f) => f.type === FrameType.DATA),
    `the DATA frame (forwarded: ${r.relay.stats.framesForwarded})`,
  );
});

Deno.test("a close frame is answered with a close frame, then the relay ends the connection", async (t) => {
  await using r = await wsRelay();
  await t.step("with a code", async () => {
    const outcome = await closedAfter(r.port, wsFrame(Op.CLOSE, closePayload(1001, "bye")));
    strictEqual(outcome.close?.code, WS_NORMAL, JSON.stringify(outcome));
  });
  await t.step("without a code", async () => {
    const outcome = await closedAfter(r.port, wsFrame(Op.CLOSE));
    strictEqual(outcome.close?.code, WS_NORMAL, JSON.stringify(outcome));
  });
  await t.step("from a registered member, which then leaves", async () => {
    await using ws = await RawWebSocket.open(r.port);
    await ws.register(await rawIdentity(testNetwork("wshostile"), "leaver"));
    strictEqual(r.relay.stats.nodes, 1);
    await ws.send(Op.CLOSE, closePayload(1000));
    const outcome = await ws.outcome();
    strictEqual(outcome.close?.code, WS_NORMAL, JSON.stringify(outcome));
    await waitFor(() => r.relay.stats.nodes === 0, "the member to leave");
  });
  await waitFor(() => r.relay.stats.connections === 0, "every connection to be forgotten");
});

// ---- Memory before trust ----

Deno.test("a WebSocket header declaring 2^62 bytes is closed with 1002 before any payload is read", async () => {
  await using r = await wsRelay();
  await using ws = await RawWebSocket.open(r.port);
  await ws.send(Op.BINARY, new Uint8Array(0), { declared: 2n ** 62n });
  const outcome = await ws.outcome();
  strictEqual(outcome.close?.code, WS_PROTOCOL_ERROR, JSON.stringify(outcome));
  strictEqual(r.relay.stats.buffered, 0);
});

Deno.test("WebSocket frames declaring 2^52 bytes, then a trickle, cost what was sent, not what was declared", async () => {
  await using relay = await spawnWsRelay();
  const count = 100;
  const clients: RawWebSocket[] = [];
  try {
    const before = await rss(relay.pid);
    // Each: a frame declaring 2^52 bytes whose payload starts a peerbase frame of 4000 bytes.
    const frameHead = new Uint8Array(PING_FRAME.length);
    frameHead.set(PING_FRAME);
    new DataView(frameHead.buffer).setUint32(0, 3996);
    for (let i = 0; i < count; i++) {
      const ws = await RawWebSocket.open(relay.port);
      clients.push(ws);
      // A zero mask: the trickle below goes on as is.
      await ws.write(wsFrame(Op.BINARY, frameHead, { declared: 2 ** 52, mask: new Uint8Array(4) }));
    }
    for (let round = 0; round < 10; round++) {
      for (const ws of clients) await ws.write(pattern(100, round));
      await sleep(20);
    }
    await sleep(200); // Let the relay read what was sent (loopback: well under this).
    ok(clients.every((ws) => !ws.ended), "a connection within its limits was closed");
    const grown = (await rss(relay.pid)) - before;
    // Declared: 100 × 2^52 bytes. Sent: 100 × ~1 KiB; each may hold a 4000-byte frame buffer.
    ok(
      grown < 24 * MiB,
      `${count} frames declaring 2^52 bytes grew the relay by ${grown / MiB} MiB`,
    );
  } finally {
    for (const ws of clients) await ws[Symbol.asyncDispose]();
  }
});

Deno.test("a WebSocket member that stalls inside a frame holds what it sent, and is cut like a TCP one", async () => {
  await using r = await wsRelay({ timeout: 500 });
  await using ws = await RawWebSocket.open(r.port);
  const who = await rawIdentity(testNetwork("wshostile"), "staller");
  await ws.register(who);
  // A WebSocket frame declaring 2^52 bytes that starts a 1 MiB DATA frame, then nothing more.
  const frame = dataFrame(who.networkId, "*", who.pseudonym, new Uint8Array(MiB));
  const zero = new Uint8Array(4); // A zero mask: the bytes go on as they are.
  await ws.write(wsFrame(Op.BINARY, frame.subarray(0, 2000), { declared: 2 ** 52, mask: zero }));
  await waitFor(() => r.relay.stats.buffered > 0, "the partial frame to be held");
  const held = r.relay.stats.buffered;
  ok(held <= 16 * KiB, `a 1 MiB frame of which 2000 bytes came holds ${held} bytes`);
  const outcome = await ws.outcome();
  strictEqual(outcome.goaway?.code, CloseCode.POLICY, JSON.stringify(outcome));
  strictEqual(r.relay.stats.disconnects.stalledFrame, 1);
  strictEqual(r.relay.stats.buffered, 0);
});

Deno.test("many stalled 4000-byte request heads cost the relay about their size", async () => {
  await using relay = await spawnWsRelay();
  const count = 200;
  const clients: RawWebSocket[] = [];
  try {
    const before = await rss(relay.pid);
    const start = "GET / HTTP/1.1\r\nX-Pad: ";
    const head = new TextEncoder().encode(start + "a".repeat(4000 - start.length));
    for (let i = 0; i < count; i++) {
      const ws = await RawWebSocket.connect(relay.port);
      clients.push(ws);
      await ws.write(head);
    }
    await sleep(200); // Let the relay read what was sent (loopback: well under this).
    ok(clients.every((ws) => !ws.ended && ws.status === null), "a stalled head was answered");
    const grown = (await rss(relay.pid)) - before;
    // 200 × 4 KiB = 800 KiB of heads, plus each connection's own state.
    ok(grown < 24 * MiB, `${count} stalled heads grew the relay by ${grown / MiB} MiB`);
  } finally {
    for (const ws of clients) await ws[Symbol.asyncDispose]();
  }
});

Deno.test("a peerbase frame over 4096 bytes before registering gets GOAWAY 2 in a binary message, then close 1000", async () => {
  await using r = await wsRelay();
  await using ws = await RawWebSocket.open(r.port);
  const big = dataFrame("net", "b", "a", pattern(5000));
  await ws.send(Op.BINARY, big.subarray(0, 64), { fin: false, declared: 64 });
  await ws.send(Op.CONTINUATION, big.subarray(64)).catch(() => {});
  const outcome = await ws.outcome();
  strictEqual(outcome.goaway?.code, CloseCode.TOO_LARGE, JSON.stringify(outcome));
  strictEqual(outcome.close?.code, WS_NORMAL, JSON.stringify(outcome));
  strictEqual(ws.badMessages, 0, "every message the relay sent held one frame");
  const goawayAt = ws.frames.findIndex((f) =>
    f.opcode === Op.BINARY && f.payload[5] === FrameType.GOAWAY
  );
  const closeAt = ws.frames.findIndex((f) => f.opcode === Op.CLOSE);
  ok(goawayAt >= 0 && goawayAt < closeAt, "the GOAWAY comes before the close frame");
});

Deno.test("a fifth PING before registering gets GOAWAY 6 over WebSocket, as over TCP", async () => {
  await using r = await wsRelay();
  await using ws = await RawWebSocket.open(r.port);
  for (let i = 0; i < 5; i++) await ws.sendMessage(PING_FRAME).catch(() => {});
  const outcome = await ws.outcome();
  strictEqual(outcome.goaway?.code, CloseCode.POLICY, JSON.stringify(outcome));
  strictEqual(outcome.close?.code, WS_NORMAL, JSON.stringify(outcome));
});

Deno.test("the per-address connection cap counts TCP and WebSocket connections together and closes one over it before answering", async () => {
  await using r = await wsRelay({ maxConnectionsPerAddress: 4, registerDeadline: 3000 });
  const tcp: Deno.TcpConn[] = [];
  const ws: RawWebSocket[] = [];
  try {
    for (let i = 0; i < 2; i++) {
      tcp.push(await Deno.connect({ hostname: "127.0.0.1", port: r.relay.addr.port }));
    }
    for (let i = 0; i < 2; i++) ws.push(await RawWebSocket.open(r.port));
    const over = await RawWebSocket.connect(r.port);
    ws.push(over);
    await over.write(upgradeRequest()).catch(() => {});
    const outcome = await over.outcome();
    strictEqual(outcome.status, null, "no answer over the cap");
    deepStrictEqual(r.relay.stats.connectionsRefused, { total: 0, perAddress: 1 });
    ok(ws.slice(0, 2).every((w) => !w.ended), "the connections within the cap stay open");
  } finally {
    for (const conn of tcp) conn.close();
    for (const w of ws) await w[Symbol.asyncDispose]();
  }
  await waitFor(() => r.relay.stats.connections === 0, "every connection to be forgotten");
});

Deno.test("half-open WebSocket handshakes beyond a source's unproven slots are closed at once, the rest at the deadline", async () => {
  const slots = 8;
  await using r = await wsRelay({ maxUnproven: slots, registerDeadline: 1500 });
  const clients: RawWebSocket[] = [];
  try {
    for (let i = 0; i < slots + 4; i++) {
      const ws = await RawWebSocket.connect(r.port);
      clients.push(ws);
      await ws.write(new TextEncoder().encode("GET / HTTP/1.1\r\n"));
    }
    await waitFor(() => r.relay.stats.refusals.rate === 4, "four connections refused");
    await waitFor(() => clients.filter((ws) => ws.ended).length === 4, "four closed at once");
    strictEqual(r.relay.stats.refusals.deadline, 0);
    for (const ws of clients) await ws.outcome();
    strictEqual(r.relay.stats.refusals.deadline, slots);
    ok(clients.every((ws) => ws.status === null), "no half-open handshake was answered");
  } finally {
    for (const ws of clients) await ws[Symbol.asyncDispose]();
  }
});

Deno.test("a stranger flooding pings and never reading the pongs costs the relay less than it sent", async () => {
  // Each ping once queued a pong of its own: 37 MiB of pings grew the relay by 385 MiB.
  await using relay = await spawnWsRelay();
  const before = await rss(relay.pid);
  await using ws = await RawWebSocket.open(relay.port, { read: false });
  const one = wsFrame(Op.PING, pattern(125));
  const batch = new Uint8Array(one.length * 8192);
  for (let i = 0; i < 8192; i++) batch.set(wsFrame(Op.PING, pattern(125, i)), i * one.length);
  // At most 32 MiB, within 2.5 s: before the registration deadline (5 s) closes it.
  const sent = await flood(ws, batch, Math.ceil(32 * MiB / batch.length), 2500);
  await sleep(300); // Let the relay read what was sent.
  const grown = (await rss(relay.pid)) - before;
  ok(sent >= 4 * MiB, `only ${sent / MiB} MiB could be sent`);
  ok(
    grown < Math.max(16 * MiB, sent),
    `${sent / MiB} MiB of pings grew the relay by ${grown / MiB} MiB`,
  );
});

// ---- Good connections beside bad ones ----

Deno.test("nodes on ws:// links keep calling each other while other WebSocket connections misbehave", async () => {
  await using r = await wsRelay();
  const net = testNetwork("wshostile");
  const commands = { echo: (_node: Node, args: unknown[]) => args[0] ?? null };
  await using a = new Node(remoteOptions(net, "a", r.ws, { commands }));
  await using b = new Node(remoteOptions(net, "b", r.ws, { commands }));
  await deadline(Promise.all([a.start(), b.start()]), "both nodes to start");
  await waitFor(() => reachesVia(a, "b", r.ws) && reachesVia(b, "a", r.ws), "a and b to meet");
  const attacks: Array<[string, Uint8Array, number]> = [
    ["unmasked", wsFrame(Op.BINARY, PING_FRAME, { mask: null }), WS_PROTOCOL_ERROR],
    [
      "2^62 bytes",
      wsFrame(Op.BINARY, new Uint8Array(0), { declared: 2n ** 62n }),
      WS_PROTOCOL_ERROR,
    ],
    ["text", wsFrame(Op.TEXT, new TextEncoder().encode("hi")), WS_UNSUPPORTED_DATA],
    [
      "two frames",
      wsFrame(Op.BINARY, new Uint8Array([...PING_FRAME, ...PING_FRAME])),
      WS_PROTOCOL_ERROR,
    ],
    ["continuation", wsFrame(Op.CONTINUATION, PING_FRAME), WS_PROTOCOL_ERROR],
  ];
  const bad = await Promise.all(attacks.map(() => RawWebSocket.open(r.port)));
  try {
    let calls = 0;
    for (const [i, [, bytes]] of attacks.entries()) {
      await bad[i]!.write(bytes).catch(() => {});
      strictEqual(await a.command<string>("echo", { target: "b", args: [`x${i}`] }), `x${i}`);
      strictEqual(await b.command<string>("echo", { target: "a", args: [`y${i}`] }), `y${i}`);
      calls += 2;
    }
    for (const [i, [what, , code]] of attacks.entries()) {
      const outcome = await bad[i]!.outcome();
      strictEqual(outcome.close?.code, code, `${what}: ${JSON.stringify(outcome)}`);
    }
    strictEqual(calls, 2 * attacks.length);
    strictEqual(r.relay.stats.nodes, 2, "the good nodes stay registered");
    strictEqual(a.relays[0]?.up, true);
    strictEqual(b.relays[0]?.up, true);
  } finally {
    for (const ws of bad) await ws[Symbol.asyncDispose]();
  }
});

// ---- Closing ----

Deno.test("relay.close() sends open WebSocket links a GOAWAY and a close frame, and ends unfinished handshakes", async () => {
  const r = await wsRelay();
  const net = testNetwork("wshostile");
  await using node = new Node(remoteOptions(net, "web", r.ws));
  await using member = await RawWebSocket.open(r.port);
  await using stranger = await RawWebSocket.open(r.port);
  await using halfway = await RawWebSocket.connect(r.port);
  try {
    await node.start();
    await member.register(await rawIdentity(net, "raw"));
    await stranger.nonce();
    await halfway.write(new TextEncoder().encode("GET / HTTP/1.1\r\n"));
    await waitFor(() => r.relay.stats.connections === 4, "four connections");
  } finally {
    await r.relay.close();
  }
  for (const [what, ws] of [["member", member], ["stranger", stranger]] as const) {
    const outcome = await ws.outcome();
    strictEqual(outcome.goaway?.code, CloseCode.NORMAL, `${what}: ${JSON.stringify(outcome)}`);
    strictEqual(outcome.close?.code, WS_NORMAL, `${what}: ${JSON.stringify(outcome)}`);
    const goawayAt = ws.frames.findIndex((f) =>
      f.opcode === Op.BINARY && f.payload[5] === FrameType.GOAWAY
    );
    const closeAt = ws.frames.findIndex((f) => f.opcode === Op.CLOSE);
    ok(goawayAt >= 0 && goawayAt < closeAt, `${what}: the GOAWAY comes before the close frame`);
  }
  strictEqual((await halfway.outcome()).status, null);
  await waitFor(() => node.relays[0]?.up === false, "the node to see its relay gone");
  strictEqual(r.relay.stats.connections, 0);
});

// ---- Large frames, fragmented ----

Deno.test("a 1 MiB frame reaches a WebSocket member in unmasked fragments, intact and as one message", async () => {
  await using r = await wsRelay();
  const net = testNetwork("wshostile");
  const sender = await rawMember(net, "tcp", r.tcp);
  await using _sender = { [Symbol.asyncDispose]: () => sender.client[Symbol.asyncDispose]() };
  const who = await rawIdentity(net, "web");
  await using ws = await RawWebSocket.open(r.port);
  await ws.register(who);
  const frame = dataFrame(sender.id.networkId, who.pseudonym, sender.id.pseudonym, pattern(MiB));
  await sender.client.write(frame);
  await waitFor(() => ws.peerbase.some((f) => f.type === FrameType.DATA), "the 1 MiB frame");
  const message = ws.messages.find((m) => m.bytes[5] === FrameType.DATA)!;
  deepStrictEqual(message.bytes, frame);
  ok(message.fragments > 1, `the relay sent it in ${message.fragments} fragment(s)`);
  const fragments = ws.frames.filter((f) => f.opcode === Op.BINARY || f.opcode === Op.CONTINUATION);
  ok(fragments.every((f) => !f.masked && f.rsv === 0), "server frames are plain");
  strictEqual(ws.badMessages, 0);
});

Deno.test("1 MiB and 8 MiB calls between nodes on ws:// links arrive intact", async () => {
  await using r = await wsRelay();
  const net = testNetwork("wshostile");
  const commands = {
    size: (_node: Node, args: unknown[]) => (args[0] as Uint8Array).length,
    echo: (_node: Node, args: unknown[]) => args[0],
  };
  await using a = new Node(remoteOptions(net, "a", r.ws, { commands }));
  await using b = new Node(remoteOptions(net, "b", r.ws, { commands }));
  await deadline(Promise.all([a.start(), b.start()]), "both nodes to start");
  await waitFor(() => reachesVia(a, "b", r.ws) && reachesVia(b, "a", r.ws), "a and b to meet");
  for (const size of [MiB, 8 * MiB]) {
    const bytes = pattern(size, size);
    const back = await a.command<Uint8Array>("echo", { target: "b", args: [bytes] });
    strictEqual(back.length, size);
    ok(back.every((byte, i) => byte === bytes[i]), `the ${size}-byte echo came back changed`);
    strictEqual(await b.command<number>("size", { target: "a", args: [bytes] }), size);
  }
});

Deno.test("a sealed 1 MiB request in one frame reaches a node on a ws:// link in fragments and is answered", async () => {
  await using r = await wsRelay();
  const net = testNetwork("wshostile");
  const commands = { size: (_node: Node, args: unknown[]) => (args[0] as Uint8Array).length };
  await using web = new Node(remoteOptions(net, "web", r.ws, { commands }));
  await web.start();
  const raw = await rawMember(net, "raw", r.tcp);
  await using _raw = { [Symbol.asyncDispose]: () => raw.client[Symbol.asyncDispose]() };
  await waitFor(() => r.relay.stats.nodes === 2, "both to register");
  const from = { name: "raw", instance: raw.id.credentials.instance.id };
  const request: Message = { k: "q", id: 1, p: "size", a: [pattern(MiB)], kw: {} };
  const frame = await sealFrame(net, from, "web", [request]);
  ok(frame.length > MiB, "one frame, not chunks");
  await raw.client.write(frame);
  const [answer] = await raw.client.messages(net, 1);
  deepStrictEqual(answer, { k: "r", id: 1, v: MiB });
  strictEqual(web.relays[0]?.up, true, "the node keeps its link");
});
