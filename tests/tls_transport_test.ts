/**
 * The TLS transport: a round trip, a refused certificate, and a relay that
 * forwards frames between two members over TLS.
 */

import { deepStrictEqual, ok, rejects, strictEqual } from "node:assert/strict";
import { TlsTransport } from "../lib/tls_transport.ts";
import { FramedConnection } from "../lib/connection.ts";
import { type Frame, FrameType } from "../lib/frame.ts";
import { Relay } from "../lib/relay_server.ts";
import { challengeNonce, dataFrame, rawIdentity, registerFrame } from "./_relay_fixtures.ts";
import { testNetwork } from "./_fixtures.ts";
import { selfSigned } from "./_tls_fixtures.ts";

const LOOPBACK = { hostname: "127.0.0.1", port: 0 };

Deno.test("a TLS stream carries bytes both ways between a dialler and a listener", async () => {
  const { cert, key } = await selfSigned();
  const tls = new TlsTransport({ cert, key, caCerts: [cert], serverName: "localhost" });
  const listener = await tls.listen(LOOPBACK);
  try {
    const accepted = listener.accept();
    const client = await tls.dial(listener.address);
    const server = await accepted;
    await client.write(new Uint8Array([1, 2, 3]));
    const buffer = new Uint8Array(16);
    strictEqual(await server.read(buffer), 3);
    deepStrictEqual([...buffer.subarray(0, 3)], [1, 2, 3]);
    await server.write(new Uint8Array([9]));
    strictEqual(await client.read(buffer), 1);
    strictEqual(buffer[0], 9);
    client.close();
    strictEqual(await server.read(buffer), null);
    server.close();
  } finally {
    listener.close();
  }
});

Deno.test("a TLS dial rejects a certificate it does not trust", async () => {
  const { cert, key } = await selfSigned();
  const listener = await new TlsTransport({ cert, key }).listen(LOOPBACK);
  try {
    const accepted = listener.accept().catch(() => null);
    await rejects(new TlsTransport({ serverName: "localhost" }).dial(listener.address));
    listener.close();
    strictEqual(await accepted, null);
  } finally {
    listener.close();
  }
});

Deno.test("listening with TLS without cert and key is a TypeError naming them", async () => {
  await rejects(new TlsTransport().listen(LOOPBACK), /pass cert and key/);
});

Deno.test("a relay on the TLS transport forwards a frame between two members", async () => {
  const { cert, key } = await selfSigned();
  const tls = new TlsTransport({ cert, key, caCerts: [cert], serverName: "localhost" });
  await using relay = new Relay({ hostname: "127.0.0.1", port: 0, transport: tls });
  await relay.start();
  const net = testNetwork("tlsnet");
  const member = async (name: string) => {
    const connection = new FramedConnection(await tls.dial(relay.addr));
    const frames: Frame[] = [];
    let arrived = () => {};
    connection.start((frame) => {
      frames.push(frame);
      arrived();
    });
    const next = async (type: number) => {
      for (let i = 0; i < 100 && !frames.some((f) => f.type === type); i++) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 50);
          arrived = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
      return frames.find((f) => f.type === type);
    };
    const who = await rawIdentity(net, name);
    const challenge = await next(FrameType.CHALLENGE);
    ok(challenge, `${name} was challenged`);
    const address = `tls://127.0.0.1:${relay.addr.port}`;
    await connection.write(await registerFrame(who, challengeNonce(challenge), address));
    ok(await next(FrameType.REGISTERED), `${name} was registered`);
    return { who, connection, next };
  };
  const alice = await member("alice");
  const bob = await member("bob");
  await alice.connection.write(
    dataFrame(alice.who.networkId, bob.who.pseudonym, alice.who.pseudonym, new Uint8Array([7, 7])),
  );
  const data = await bob.next(FrameType.DATA);
  ok(data, "bob got the frame");
  strictEqual(data.sender, alice.who.pseudonym);
  deepStrictEqual([...data.body], [7, 7]);
  await alice.connection.close();
  await bob.connection.close();
});

Deno.test("a TLS listener cuts a client that never finishes its handshake, and close() drops it", async (t) => {
  const { cert, key } = await selfSigned();
  const tls = new TlsTransport({ cert, key, handshakeTimeout: 200 });
  await t.step("the handshake timeout", async () => {
    const listener = await tls.listen(LOOPBACK);
    const silent = await Deno.connect(listener.address);
    try {
      const buffer = new Uint8Array(64);
      const started = performance.now();
      strictEqual(await silent.read(buffer), null);
      ok(performance.now() - started < 5000, "cut well before node:tls's own 120 s");
    } finally {
      silent.close();
      listener.close();
    }
  });
  await t.step("close()", async () => {
    const listener = await new TlsTransport({ cert, key }).listen(LOOPBACK);
    const silent = await Deno.connect(listener.address);
    try {
      listener.close();
      strictEqual(await silent.read(new Uint8Array(64)), null);
    } finally {
      silent.close();
    }
  });
});

Deno.test("a TLS dial gives up when its signal aborts during a handshake that never ends", async () => {
  const mute = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = mute.accept();
  try {
    const signal = AbortSignal.timeout(200);
    const error = await new TlsTransport({ serverName: "localhost" })
      .dial({ hostname: "127.0.0.1", port: mute.addr.port }, signal)
      .catch((e) => e);
    ok(error instanceof DOMException && error.name === "TimeoutError", String(error));
  } finally {
    (await accepted).close();
    mute.close();
  }
});

/** The most a loopback TCP connection may hold in kernel buffers: receive plus send maximum. */
async function kernelBufferBound(): Promise<number> {
  const most = async (file: string) =>
    Number((await Deno.readTextFile(file)).trim().split(/\s+/)[2] ?? 0);
  return await most("/proc/sys/net/ipv4/tcp_rmem") + await most("/proc/sys/net/ipv4/tcp_wmem");
}

Deno.test("a TLS listener's stream that is not read stops taking bytes from its peer", async () => {
  const { cert, key } = await selfSigned();
  const tls = new TlsTransport({ cert, key, caCerts: [cert], serverName: "localhost" });
  const listener = await tls.listen(LOOPBACK);
  const accepted = listener.accept();
  const client = await tls.dial(listener.address);
  const server = await accepted;
  try {
    // What the kernel can hold, plus 8 MiB: a listener that kept reading would take it all.
    const chunk = new Uint8Array(256 * 1024);
    const attempted = await kernelBufferBound() + (8 << 20);
    let written = 0;
    while (written < attempted) {
      // A write the listener's side takes nothing from for 2 s: the peer is held back.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const done = await Promise.race([
        client.write(chunk).then(() => true, () => false),
        new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), 2000)),
      ]);
      clearTimeout(timer);
      if (!done) break;
      written += chunk.length;
    }
    ok(written < attempted, `the peer handed over all of ${written} bytes unread`);
    // Reading again drains what was held and takes the rest.
    const buffer = new Uint8Array(1 << 20);
    let read = 0;
    while (read < written) {
      const n = await server.read(buffer);
      if (n === null) break;
      read += n;
    }
    ok(read >= written, `${read} of ${written} bytes read`);
  } finally {
    client.close();
    server.close();
    listener.close();
  }
});
