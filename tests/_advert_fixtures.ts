/**
 * Helpers for the discovery tests that build LAN adverts themselves: hand-made
 * datagrams a member with the network key could send (a signed plaintext
 * around arbitrary JSON, sealed behind a valid header), and the announces of
 * a node that no one runs.
 *
 * The layouts are those of `lib/advert.ts` and docs/PROTOCOL.md, written out
 * again on purpose: a test that builds them by hand can break one field
 * while keeping the others valid.
 *
 * @module
 */

import { encodeAdvert } from "../lib/advert.ts";
import { textEncoder } from "../lib/encoding.ts";
import type { Fernet } from "../lib/fernet.ts";
import { InstanceKey } from "../lib/instance_key.ts";

/**
 * The version 2 advert plaintext around arbitrary JSON bytes: length, JSON,
 * `publicKey` and a valid signature of the JSON by `signer` (so only what the
 * test chose is at fault).
 */
export async function signedPlaintext(
  json: Uint8Array,
  signer: InstanceKey,
  publicKey: Uint8Array = signer.publicKey,
): Promise<Uint8Array> {
  const message = new Uint8Array([...textEncoder.encode("peerbase/2/advert\0"), ...json]);
  const signature = await signer.sign(message);
  const out = new Uint8Array(2 + json.length + 96);
  new DataView(out.buffer).setUint16(0, json.length);
  out.set(json, 2);
  out.set(publicKey, 2 + json.length);
  out.set(signature, 2 + json.length + 32);
  return out;
}

/**
 * A datagram with a valid header (magic, `version`, `kind`, `network`)
 * around an arbitrary plaintext sealed with `fernet`, as a member with the
 * network key can build it.
 */
export async function sealedDatagram(
  fernet: Fernet,
  network: string,
  kind: number,
  plaintext: Uint8Array,
  version = 2,
): Promise<Uint8Array> {
  const net = textEncoder.encode(network);
  const token = await fernet.encryptBytes(plaintext);
  const out = new Uint8Array(7 + net.length + token.length);
  out.set(textEncoder.encode("PBAD"), 0);
  out.set([version, kind, net.length], 4);
  out.set(net, 7);
  out.set(token, 7 + net.length);
  return out;
}

/** The node a {@linkcode fakeAnnouncer} speaks for. */
export interface FakeNode {
  network: string;
  name: string;
  /** The host its adverts seal. */
  host: string;
  /** The advert interval it announces (ms). */
  interval: number;
}

/**
 * The announces of a node that no one runs, on TCP port 7000 under a fresh
 * instance key: each call of the returned function encodes the next one
 * (sequence numbers 1, 2, …).
 */
export async function fakeAnnouncer(
  fernet: Fernet,
  node: FakeNode,
): Promise<() => Promise<Uint8Array>> {
  const key = await InstanceKey.generate();
  const { network, name, host, interval } = node;
  let seq = 0;
  return () =>
    encodeAdvert(
      { kind: "announce", network, name, instance: key.id, seq: ++seq, port: 7000, host, interval },
      fernet,
      key,
    );
}
