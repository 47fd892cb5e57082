/**
 * What a node proves itself with at relays, made at each start: the
 * network's identity (derived from the key), a fresh instance key (whose
 * hash is the instance id), and the member card (the node's name and
 * instance sealed under the network key, which relays hand to members
 * without being able to read it).
 *
 * @module
 */

import { NetworkIdentity } from "./network_identity.ts";
import { InstanceKey } from "./instance_key.ts";
import type { Fernet } from "./fernet.ts";
import { textEncoder, toBase64Url } from "./encoding.ts";

/** A node's proofs for one start. */
export interface Credentials {
  /** The network's identity. */
  identity: NetworkIdentity;
  /** This start's instance key. */
  instance: InstanceKey;
  /** This start's member card (base64url Fernet token sealing name and instance). */
  card: string;
}

/**
 * Makes the credentials of node `name` of `network` under `key` (sealing
 * the card with `fernet`), with a new instance key unless `instance` is
 * given (a node registering under two keys keeps one instance).
 */
export async function makeCredentials(
  key: string,
  network: string,
  name: string,
  fernet: Fernet,
  instance?: InstanceKey,
): Promise<Credentials> {
  const [identity, instanceKey] = await Promise.all([
    NetworkIdentity.derive(key, network),
    instance ?? InstanceKey.generate(),
  ]);
  return { identity, instance: instanceKey, card: await sealCard(fernet, name, instanceKey.id) };
}

/** The member card of `name`'s instance `instance`, sealed with `fernet` (base64url). */
export async function sealCard(fernet: Fernet, name: string, instance: string): Promise<string> {
  const sealed = await fernet.encryptBytes(
    textEncoder.encode(JSON.stringify({ n: name, i: instance })),
  );
  return toBase64Url(sealed);
}
