/**
 * The network keys a node holds: the current one, and the previous one
 * while the network's key is rotated (docs/PROTOCOL.md, "Key rotation").
 * Each becomes a {@linkcode WireKey} for links (Fernet, network id,
 * pseudonyms) and, at each start, credentials for relays; both keys share
 * the start's one instance key.
 *
 * @module
 */

import { Fernet } from "./fernet.ts";
import { Pseudonyms } from "./network_identity.ts";
import { InstanceKey } from "./instance_key.ts";
import { type Credentials, makeCredentials } from "./credentials.ts";
import type { WireKey } from "./link.ts";

/** The keys of one node. */
export class Keyring {
  /** Wire keys, the current one first. Their ids are set by {@linkcode prepare}. */
  readonly keys: readonly WireKey[];
  readonly #network: string;
  readonly #secrets: readonly string[];
  #credentials: Credentials[] = [];

  /** Holds `current` and, while rotating, `previous` (base64url network keys) of `network`. */
  constructor(network: string, current: string, previous?: string) {
    this.#network = network;
    this.#secrets = previous ? [current, previous] : [current];
    this.keys = this.#secrets.map((secret) => ({
      fernet: new Fernet(secret),
      id: "",
      pseudonyms: Pseudonyms.fromKey(secret, network),
    }));
  }

  /** The current key. */
  get current(): WireKey {
    return this.keys[0]!;
  }

  /** The previous key while rotating, else undefined. */
  get previous(): WireKey | undefined {
    return this.keys[1];
  }

  /**
   * Makes this start's credentials for node `name` (a new instance key) and
   * sets each wire key's network id. Resolves to the instance id.
   */
  async prepare(name: string): Promise<string> {
    const instance = await InstanceKey.generate();
    this.#credentials = await Promise.all(
      this.#secrets.map((secret, index) =>
        makeCredentials(secret, this.#network, name, this.keys[index]!.fernet, instance)
      ),
    );
    this.#credentials.forEach((credentials, index) => {
      (this.keys[index] as WireKey).id = credentials.identity.id;
    });
    return instance.id;
  }

  /** This start's credentials under `keys[index]`; throws before {@linkcode prepare}. */
  credentials(index: number): Credentials {
    const credentials = this.#credentials[index];
    if (!credentials) throw new Error("Cannot register at a relay before the node has started");
    return credentials;
  }
}
