/**
 * Membership proofs for relay registration (docs/PROTOCOL.md,
 * "Registration"): a node signs the relay's nonce, the network id, its
 * pseudonym, its instance key, the relay address it dialled and its
 * client-only flag, once with the network's signing key (it holds the key)
 * and once with its instance key (it is that instance). A relay verifies
 * both with public keys only, so it never holds anything from which the
 * network key, a token or another proof can be made.
 *
 * @module
 */

import type { NetworkIdentity } from "./network_identity.ts";
import { concatBytes, fromBase64Url, textEncoder, toBase64UrlBare } from "./encoding.ts";
import type { InstanceKey } from "./instance_key.ts";
import { instanceIdOf } from "./instance_key.ts";
import { type RegisterBody, RELAY_PROTOCOL_VERSION } from "./relay_protocol.ts";

/** What both signatures of a registration cover. */
export interface ProofFields {
  /** The relay's CHALLENGE nonce (32 bytes). */
  nonce: Uint8Array;
  /** The network id (header network field). */
  networkId: string;
  /** The node's pseudonym (header sender field). */
  pseudonym: string;
  /** The instance public key (32 bytes). */
  instanceKey: Uint8Array;
  /** The relay address the node dialled, canonical. */
  address: string;
  /** Registering as a client-only member. */
  clientOnly: boolean;
}

/** The bytes `P(role)` that the `role` signature covers. */
export function proofMessage(
  role: "network" | "instance",
  fields: ProofFields,
): Uint8Array<ArrayBuffer> {
  const context = textEncoder.encode(`peerbase/2/register/${role}\0`);
  const id = textEncoder.encode(fields.networkId);
  const pseudonym = textEncoder.encode(fields.pseudonym);
  const address = textEncoder.encode(fields.address);
  const parts = [
    context,
    fields.nonce,
    Uint8Array.of(id.length),
    id,
    Uint8Array.of(pseudonym.length),
    pseudonym,
    fields.instanceKey,
    Uint8Array.of(address.length >> 8, address.length & 0xff),
    address,
    Uint8Array.of(fields.clientOnly ? 1 : 0),
  ];
  return concatBytes(parts);
}

/** What a node needs to register at one relay. */
export interface RegistrationInput {
  /** The network's identity (signing key, id, pseudonyms). */
  identity: NetworkIdentity;
  /** This start's instance key. */
  instance: InstanceKey;
  /** The node's name. */
  name: string;
  /** The relay's nonce. */
  nonce: Uint8Array;
  /** The relay address dialled, canonical. */
  address: string;
  /** Keepalive tick, ms. */
  tick: number;
  /** Register as a client-only member. */
  clientOnly: boolean;
  /** The member card (base64url Fernet token). */
  card: string;
}

/** Builds a signed REGISTER body. */
export async function signRegistration(input: RegistrationInput): Promise<RegisterBody> {
  const fields: ProofFields = {
    nonce: input.nonce,
    networkId: input.identity.id,
    pseudonym: input.identity.pseudonyms.of(input.name),
    instanceKey: input.instance.publicKey,
    address: input.address,
    clientOnly: input.clientOnly,
  };
  const [ns, is] = await Promise.all([
    input.identity.sign(proofMessage("network", fields)),
    input.instance.sign(proofMessage("instance", fields)),
  ]);
  return {
    v: RELAY_PROTOCOL_VERSION,
    tick: input.tick,
    ...(input.clientOnly ? { c: 1 as const } : {}),
    k: toBase64UrlBare(input.instance.publicKey),
    a: input.address,
    card: input.card,
    ns: toBase64UrlBare(ns),
    is: toBase64UrlBare(is),
  };
}

/** Imports a network id as an Ed25519 public key; null when it is not one. */
export async function importNetworkId(id: string): Promise<CryptoKey | null> {
  try {
    const raw = fromBase64Url(id) as Uint8Array<ArrayBuffer>;
    if (raw.length !== 32 || id.length !== 43) return null;
    return await crypto.subtle.importKey("raw", raw, "Ed25519", false, ["verify"]);
  } catch {
    return null;
  }
}

/**
 * Checks a REGISTER body's proof against the relay's `nonce`, the header's
 * network id (imported as `networkKey`) and pseudonym. Resolves to the
 * proven instance id, or null when anything fails (the caller says only
 * "admission proof rejected").
 */
export async function verifyRegistration(
  body: RegisterBody,
  header: { nonce: Uint8Array; networkId: string; networkKey: CryptoKey; pseudonym: string },
): Promise<string | null> {
  const instanceKey = fromBase64Url(body.k) as Uint8Array<ArrayBuffer>;
  const fields: ProofFields = {
    nonce: header.nonce,
    networkId: header.networkId,
    pseudonym: header.pseudonym,
    instanceKey,
    address: body.a,
    clientOnly: body.c === 1,
  };
  try {
    const instancePublic = await crypto.subtle.importKey("raw", instanceKey, "Ed25519", false, [
      "verify",
    ]);
    const [network, instance] = await Promise.all([
      crypto.subtle.verify(
        "Ed25519",
        header.networkKey,
        fromBase64Url(body.ns) as Uint8Array<ArrayBuffer>,
        proofMessage("network", fields),
      ),
      crypto.subtle.verify(
        "Ed25519",
        instancePublic,
        fromBase64Url(body.is) as Uint8Array<ArrayBuffer>,
        proofMessage("instance", fields),
      ),
    ]);
    return network && instance ? await instanceIdOf(instanceKey) : null;
  } catch {
    return null;
  }
}
