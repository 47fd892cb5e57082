/**
 * What admission costs: registrations at a relay process with admission on
 * (the relay's defaults), timed from the connect to REGISTERED, one after
 * another, over TCP and over TLS; and, in one process, the proof's parts
 * alone: the credentials a node makes at each start, signing one REGISTER,
 * and the relay's verification of one.
 *
 * The registering client is a raw one, as a node registers: it dials (TCP
 * with Nagle off, or `dialTls`), reads CHALLENGE, signs with
 * `signRegistration` (network and instance signatures over the nonce),
 * sends REGISTER and waits for REGISTERED, then closes. Each registration
 * is a new name with credentials made beforehand (untimed), so no
 * registration waits on the relay noticing the previous one's close.
 *
 * @module
 */

import { importNetworkId, signRegistration, verifyRegistration } from "../lib/admission.ts";
import { type Credentials, makeCredentials } from "../lib/credentials.ts";
import { fromBase64Url } from "../lib/encoding.ts";
import { Fernet, generateKey } from "../lib/fernet.ts";
import { decodeGoaway, type Frame, FrameDecoder, FrameType } from "../lib/frame.ts";
import { DEFAULT_KEEPALIVE_TICK } from "../lib/options.ts";
import { decodeChallenge, encodeControl, NONCE_BYTES } from "../lib/relay_protocol.ts";
import { dialEcho, type Duplex, type EchoTarget, writeAll } from "./floor.ts";
import type { Context } from "./plan.ts";
import { runClient } from "./proc.ts";
import { spawnRelay } from "./peerbase.ts";
import { percentile } from "./stats.ts";

// ---- Client side (inside worker_client.ts) ----

/** Parameters of {@linkcode clientRegister}. */
export interface RegisterParams extends EchoTarget {
  /** The relay address as nodes write it (`host:port` or `tls://host:port`): the proof names it. */
  address: string;
  rounds: number;
  /** Registrations timed per round. */
  count: number;
  /** Untimed registrations first. */
  warmup: number;
}

/** Per round: p50 and p99 of the registrations, ms, and the p50 of their dial alone. */
export interface RegistrationTimes {
  p50: number[];
  p99: number[];
  /** p50 of connect (and, over TLS, the handshake) alone, ms. */
  dial: number[];
  /** Registrations timed. */
  count: number[];
}

/** Per round: p50 of each part of a proof alone, µs. */
export interface ProofTimes {
  /** A node's credentials at start: network identity, instance key, sealed member card. */
  credentials: number[];
  /** One signed REGISTER body (two Ed25519 signatures). */
  sign: number[];
  /** The relay's check of one (two Ed25519 verifications, instance key import, instance id). */
  verify: number[];
}

async function* frames(conn: Duplex): AsyncGenerator<Frame> {
  const decoder = new FrameDecoder();
  const buffer = new Uint8Array(16_384);
  for (;;) {
    const n = await conn.read(buffer);
    if (n === null) return;
    yield* decoder.push(buffer.subarray(0, n));
  }
}

/** The next frame of `type`; throws on GOAWAY (with the relay's reason) or the end of the stream. */
async function expectFrame(
  from: AsyncGenerator<Frame>,
  type: number,
  what: string,
): Promise<Frame> {
  for (;;) {
    const { value, done } = await from.next();
    if (done) throw new Error(`Cannot register: the relay closed the connection before ${what}`);
    if (value.type === type) return value;
    if (value.type === FrameType.GOAWAY) {
      throw new Error(`Cannot register: the relay refused: ${decodeGoaway(value.body).reason}`);
    }
  }
}

/** One registration of `name`: from the connect to REGISTERED, ms, and the dial alone. */
async function registerOnce(
  params: RegisterParams,
  credentials: Credentials,
  name: string,
): Promise<{ total: number; dial: number }> {
  const start = performance.now();
  const conn = await dialEcho(params);
  const dialled = performance.now();
  try {
    const from = frames(conn);
    const challenge = await expectFrame(from, FrameType.CHALLENGE, "CHALLENGE");
    const body = await signRegistration({
      ...credentials,
      name,
      nonce: fromBase64Url(decodeChallenge(challenge).n),
      address: params.address,
      tick: DEFAULT_KEEPALIVE_TICK,
      clientOnly: false,
    });
    const { identity } = credentials;
    await writeAll(
      conn,
      encodeControl(FrameType.REGISTER, identity.id, identity.pseudonyms.of(name), body),
    );
    await expectFrame(from, FrameType.REGISTERED, "REGISTERED");
    return { total: performance.now() - start, dial: dialled - start };
  } finally {
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }
}

/** Times `count` registrations one after another per round, at the relay `params` names. */
export async function clientRegister(params: RegisterParams): Promise<RegistrationTimes> {
  const key = generateKey();
  const fernet = new Fernet(key);
  const network = `bench-register-${crypto.randomUUID().slice(0, 8)}`;
  const made = (names: string[]) =>
    Promise.all(names.map((name) => makeCredentials(key, network, name, fernet)));
  const warm = Array.from({ length: params.warmup }, (_, i) => `w${i}`);
  for (const [i, credentials] of (await made(warm)).entries()) {
    await registerOnce(params, credentials, warm[i]!);
  }
  const out: RegistrationTimes = { p50: [], p99: [], dial: [], count: [] };
  for (let round = 0; round < params.rounds; round++) {
    const names = Array.from({ length: params.count }, (_, i) => `r${round}-${i}`);
    const credentials = await made(names);
    const totals: number[] = [];
    const dials: number[] = [];
    for (const [i, name] of names.entries()) {
      const { total, dial } = await registerOnce(params, credentials[i]!, name);
      totals.push(total);
      dials.push(dial);
    }
    out.p50.push(percentile(totals, 50));
    out.p99.push(percentile(totals, 99));
    out.dial.push(percentile(dials, 50));
    out.count.push(totals.length);
  }
  return out;
}

/** Times `body` `count` times per round; the p50 of each round, µs. */
async function timeEach(
  rounds: number,
  count: number,
  body: (i: number) => Promise<unknown>,
): Promise<number[]> {
  const out: number[] = [];
  for (let round = 0; round < rounds; round++) {
    const samples: number[] = [];
    for (let i = 0; i < count; i++) {
      const start = performance.now();
      await body(i);
      samples.push((performance.now() - start) * 1000);
    }
    out.push(percentile(samples, 50));
  }
  return out;
}

/** The parts of a proof alone, in this process: credentials, signing, verifying. */
export async function clientProofs(params: { rounds: number; count: number }): Promise<ProofTimes> {
  const key = generateKey();
  const fernet = new Fernet(key);
  const network = "bench-proofs";
  const name = "node";
  const address = "127.0.0.1:7000";
  const credentials = await makeCredentials(key, network, name, fernet);
  const { identity } = credentials;
  const networkKey = await importNetworkId(identity.id);
  if (!networkKey) throw new Error("Cannot time proofs: the network id is not an Ed25519 key");
  const pseudonym = identity.pseudonyms.of(name);
  const nonces = Array.from(
    { length: params.count },
    () => crypto.getRandomValues(new Uint8Array(NONCE_BYTES)),
  );
  const sign = (i: number) =>
    signRegistration({
      ...credentials,
      name,
      nonce: nonces[i]!,
      address,
      tick: DEFAULT_KEEPALIVE_TICK,
      clientOnly: false,
    });
  const bodies = await Promise.all(nonces.map((_, i) => sign(i)));
  // Warm every path once.
  await makeCredentials(key, network, name, fernet);
  const header = (i: number) => ({
    nonce: nonces[i]!,
    networkId: identity.id,
    networkKey,
    pseudonym,
  });
  if (await verifyRegistration(bodies[0]!, header(0)) === null) {
    throw new Error("Cannot time proofs: a signed REGISTER does not verify");
  }
  return {
    credentials: await timeEach(
      params.rounds,
      Math.max(1, Math.floor(params.count / 4)),
      () => makeCredentials(key, network, name, fernet),
    ),
    sign: await timeEach(params.rounds, params.count, sign),
    verify: await timeEach(
      params.rounds,
      params.count,
      (i) => verifyRegistration(bodies[i]!, header(i)),
    ),
  };
}

// ---- Bench side ----

/** Registration with admission on: over TCP, over TLS, and the proof's parts alone. */
export interface RegisterResult {
  tcp: RegistrationTimes;
  tls: RegistrationTimes;
  proofs: ProofTimes;
}

/** Registrations at a TCP relay, at a TLS relay (a new relay each), and the proof's parts. */
export async function runRegister(ctx: Context): Promise<RegisterResult> {
  const tlsFiles = await ctx.tls();
  const plan = { rounds: ctx.plan.rounds, ...ctx.plan.register };
  const times: Partial<Record<"tcp" | "tls", RegistrationTimes>> = {};
  for (const kind of ["tcp", "tls"] as const) {
    const tls = kind === "tls" ? tlsFiles : undefined;
    const relay = await spawnRelay(ctx, tls);
    try {
      ctx.log(`register: ${kind}`);
      const port = Number(relay.address.slice(relay.address.lastIndexOf(":") + 1));
      times[kind] = await runClient<RegistrationTimes>(
        ctx,
        "register",
        {
          port,
          address: relay.address,
          ...(tls ? { caCerts: [tls.ca] } : {}),
          ...plan,
        } satisfies RegisterParams,
      );
    } finally {
      await relay.proc.stop();
    }
  }
  ctx.log("register: proofs alone");
  const proofs = await runClient<ProofTimes>(ctx, "proofs", {
    rounds: ctx.plan.rounds,
    count: ctx.plan.proofs,
  });
  return { tcp: times.tcp!, tls: times.tls!, proofs };
}
