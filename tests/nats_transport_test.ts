/**
 * The relay cluster's NATS connection on Deno sockets (lib/nats_transport.ts):
 * what it refuses from a server that is not NATS, and what a NATS server
 * that stops reading costs a relay.
 */

import { match, ok, rejects, strictEqual } from "node:assert/strict";
import { DenoNatsTransport, MAX_NATS_TRANSPORT_QUEUE } from "../lib/nats_transport.ts";
import { MAX_NATS_LINE } from "../lib/nats_scanner.ts";
import { MAX_NATS_BACKLOG } from "../lib/nats_backplane.ts";
import { testIf } from "./_env.ts";
import { sleep, testNetwork, waitFor } from "./_fixtures.ts";
import { startNatsCluster } from "./_nats_fixtures.ts";
import { dataFrame, rawIdentity } from "./_relay_fixtures.ts";
import {
  changes,
  closeAll,
  CLUSTER_PROBLEM,
  clusterRelay,
  got,
  metric,
  note,
  raw,
} from "./_cluster_fixtures.ts";

/** A TCP server on loopback that writes `bytes` to its first connection, then closes it. */
async function serveOnce(bytes: Uint8Array, run: (port: number) => Promise<void>): Promise<void> {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = listener.accept().then(async (conn) => {
    try {
      for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
    } catch {
      // The client hung up first.
    } finally {
      conn.close();
    }
  });
  try {
    await run(listener.addr.port);
  } finally {
    await served;
  }
}

/** Polls `predicate` every 100 ms until it holds; throws naming `what` after `ms`. */
async function until(predicate: () => Promise<boolean>, what: string, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!(await predicate())) {
    if (Date.now() > end) throw new Error(`Timed out after ${ms} ms waiting for ${what}`);
    await sleep(100);
  }
}

const at = (port: number) => ({ hostname: "127.0.0.1", port, tlsName: "" });
const text = (s: string) => new TextEncoder().encode(s);

Deno.test("a server whose first line is not INFO is refused as not a NATS server", async () => {
  await serveOnce(text("SSH-2.0-OpenSSH_9.2\r\n"), async (port) => {
    await rejects(
      new DenoNatsTransport(() => {}).connect(at(port), {}),
      /not a NATS server .*SSH-2\.0.*check the --cluster URL/,
    );
  });
});

Deno.test("a server that closes before its INFO line is refused", async () => {
  await serveOnce(text("INFO {"), async (port) => {
    await rejects(new DenoNatsTransport(() => {}).connect(at(port), {}), /closed before its INFO/);
  });
});

Deno.test("an INFO line longer than MAX_NATS_LINE is refused without reading on", async () => {
  const endless = new Uint8Array(MAX_NATS_LINE + 4096).fill(0x41);
  await serveOnce(endless, async (port) => {
    await rejects(
      new DenoNatsTransport(() => {}).connect(at(port), {}),
      new RegExp(`INFO line is over ${MAX_NATS_LINE} bytes`),
    );
  });
});

Deno.test("the INFO line is checked against the options, and yielded first", async () => {
  const info = 'INFO {"server_id":"x","max_payload":1048576}\r\n';
  await serveOnce(text(info), async (port) => {
    const seen: Record<string, unknown>[] = [];
    const transport = new DenoNatsTransport((i) => void seen.push(i));
    await transport.connect(at(port), {});
    strictEqual(seen[0]?.server_id, "x");
    const chunks: string[] = [];
    for await (const chunk of transport) chunks.push(new TextDecoder().decode(chunk));
    strictEqual(chunks.join(""), info);
    ok(transport.isClosed);
    strictEqual(await transport.closed(), undefined);
  });
});

Deno.test("a check that throws refuses the server and closes the socket", async () => {
  await serveOnce(text('INFO {"tls_required":true}\r\n'), async (port) => {
    await rejects(
      new DenoNatsTransport(() => {
        throw new Error("tls refused by the options");
      }).connect(at(port), {}),
      /tls refused/,
    );
  });
});

/**
 * A server on loopback whose first connection `serve` handles; resolves with
 * what `run` returns once both are done.
 */
async function withServer<T>(
  serve: (conn: Deno.Conn) => Promise<unknown>,
  run: (port: number) => Promise<T>,
): Promise<T> {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = listener.accept().then(async (conn) => {
    try {
      await serve(conn);
    } catch {
      // The client hung up.
    } finally {
      try {
        conn.close();
      } catch {
        // Closed already.
      }
    }
  });
  try {
    return await run(listener.addr.port);
  } finally {
    await served;
  }
}

/** Reads from `conn` until it ends; resolves with every byte. */
async function drain(conn: Deno.Conn): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  const buffer = new Uint8Array(64 * 1024);
  for (let n = await conn.read(buffer); n !== null; n = await conn.read(buffer)) {
    parts.push(buffer.slice(0, n));
  }
  return new Uint8Array(parts.flatMap((p) => [...p]));
}

const INFO = text('INFO {"server_id":"x","max_payload":1024}\r\n');

Deno.test("a client that stops reading (its parser threw) ends the connection with an error", async () => {
  await withServer(async (conn) => {
    await conn.write(INFO);
    await drain(conn);
  }, async (port) => {
    const transport = new DenoNatsTransport(() => {});
    await transport.connect(at(port), {});
    for await (const _ of transport) break;
    ok(transport.isClosed);
    match(String(await transport.closed()), /stopped reading/);
  });
});

Deno.test("a message over MAX_NATS_MESSAGE ends the connection, naming its size", async () => {
  await withServer(async (conn) => {
    await conn.write(INFO);
    await conn.write(text(`MSG a 1 ${64 * 1024 * 1024 + 1}\r\n`));
    await drain(conn);
  }, async (port) => {
    const transport = new DenoNatsTransport(() => {});
    await transport.connect(at(port), {});
    const chunks: Uint8Array[] = [];
    for await (const chunk of transport) chunks.push(chunk);
    ok(
      !chunks.some((c) => new TextDecoder().decode(c).includes("MSG")),
      "the oversized header never reaches the parser",
    );
    match(String(await transport.closed()), /67108865 bytes, over 67108864/);
  });
});

Deno.test("a dial the client gives up on before INFO is closed, and connect() rejects", async () => {
  let hungUp = false;
  await withServer(async (conn) => {
    await drain(conn);
    hungUp = true;
  }, async (port) => {
    const transport = new DenoNatsTransport(() => {});
    const connecting = transport.connect(at(port), {});
    await sleep(100);
    await transport.close(new Error("timeout"));
    await rejects(connecting);
    ok(transport.isClosed);
  });
  ok(hungUp, "the server saw the socket close");
});

Deno.test("a server that sends no INFO within the client's timeout is hung up on", async () => {
  await withServer(drain, async (port) => {
    await rejects(new DenoNatsTransport(() => {}).connect(at(port), { timeout: 200 }));
  });
});

Deno.test("a server offering TLS gets a TLS handshake unless the options say tls: null", async () => {
  const offer = text('INFO {"server_id":"x","tls_available":true}\r\n');
  let first = -1;
  await withServer(async (conn) => {
    await conn.write(offer);
    const buffer = new Uint8Array(1);
    if (await conn.read(buffer) === 1) first = buffer[0]!;
  }, async (port) => {
    await rejects(new DenoNatsTransport(() => {}).connect(at(port), { timeout: 2000 }));
  });
  strictEqual(first, 0x16, "a TLS ClientHello, not CONNECT in the clear");
  await withServer(async (conn) => {
    await conn.write(offer);
    await drain(conn);
  }, async (port) => {
    const transport = new DenoNatsTransport(() => {});
    await transport.connect(at(port), { tls: null });
    ok(!transport.isEncrypted());
    await transport.close();
  });
});

Deno.test("a server that reads nothing while MAX_NATS_TRANSPORT_QUEUE waits for it is dropped", async () => {
  await withServer(async (conn) => {
    await conn.write(INFO);
    await sleep(3000); // Reads nothing meanwhile.
  }, async (port) => {
    const transport = new DenoNatsTransport(() => {});
    await transport.connect(at(port), {});
    const reading = (async () => {
      for await (const _ of transport) { /* INFO, then the end */ }
    })();
    const piece = new Uint8Array(1024 * 1024);
    for (let i = 0; i * piece.length <= MAX_NATS_TRANSPORT_QUEUE && !transport.isClosed; i++) {
      transport.send(piece);
    }
    ok(transport.isClosed, "dropped once the queue is full");
    match(String(await transport.closed()), /has not read 128 MiB/);
    await reading;
  });
});

testIf(CLUSTER_PROBLEM === null, CLUSTER_PROBLEM ?? "", {
  name:
    "a NATS server that stops reading (SIGSTOP) holds at most MAX_NATS_BACKLOG of a relay's frames: the rest are dropped and counted, the sender stays, and frames pass again after SIGCONT",
  async fn() {
    await using nats = await startNatsCluster({ servers: 1 });
    const url = nats.urls[0]!;
    const net = testNetwork("backlog");
    await using a = await clusterRelay(url, ["--metrics", "127.0.0.1:0"]);
    await using b = await clusterRelay(url);
    const x = await rawIdentity(net, "x");
    const y = await rawIdentity(net, "y");
    const xc = await raw(x, a.address);
    const yc = await raw(y, b.address);
    const pid = nats.pid(0)!;
    let stopped = false;
    try {
      await waitFor(
        () => changes(xc).some(([k, n]) => k === "join" && n === y.pseudonym),
        "x lists y",
      );
      const size = 1000 * 1024;
      const frame = dataFrame(x.networkId, y.pseudonym, x.pseudonym, new Uint8Array(size), 7);
      Deno.kill(pid, "SIGSTOP");
      stopped = true;
      // The backlog, plus what the kernel's socket buffers take first (a few MiB on loopback).
      const sent = Math.ceil((2 * MAX_NATS_BACKLOG) / size);
      for (let i = 0; i < sent && !xc.closed; i++) await xc.write(frame);
      // Until relay a has handled every frame: the count stays put for a second.
      const unroutedNow = () => metric(a, "peerbase_relay_cluster_unrouted_total");
      let unrouted = -1, still = 0;
      await until(
        async () => {
          const now = await unroutedNow();
          still = now === unrouted && now > 0 ? still + 1 : 0;
          unrouted = now;
          return still >= 10;
        },
        "relay a's unrouted count to settle",
        20_000,
      );
      note(`SIGSTOP: x wrote ${sent} frames of 1000 KiB; relay a counted ${unrouted} unrouted`);
      ok(!xc.closed, "the sender is not cut");
      const taken = sent - unrouted;
      ok(
        taken * size <= MAX_NATS_BACKLOG + 16 * 1024 * 1024,
        `relay a took ${taken} frames for a stopped server`,
      );
      ok(
        taken * size >= MAX_NATS_BACKLOG - 2 * size,
        `relay a took only ${taken} frames: it refused early`,
      );
      Deno.kill(pid, "SIGCONT");
      stopped = false;
      const small = dataFrame(x.networkId, y.pseudonym, x.pseudonym, new Uint8Array(100), 8);
      await until(
        async () => {
          await xc.write(small);
          await sleep(100);
          return got(yc, 8) > 0;
        },
        "a frame from x reaches y after SIGCONT",
        20_000,
      );
    } finally {
      if (stopped) Deno.kill(pid, "SIGCONT");
      await closeAll(xc, yc);
    }
  },
});
