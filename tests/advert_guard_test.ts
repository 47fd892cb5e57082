import { deepStrictEqual, strictEqual } from "node:assert/strict";
import { type Advert, type AdvertProof, decodeAdvert, encodeAdvert } from "../lib/advert.ts";
import { ADVERT_MEMORY, AdvertGuard } from "../lib/advert_guard.ts";
import { Fernet, generateKey } from "../lib/fernet.ts";
import { InstanceKey } from "../lib/instance_key.ts";

const fernet = new Fernet(generateKey());

/** A signed advert of `key`'s instance, opened as a receiver opens it. */
async function opened(
  key: InstanceKey,
  overrides: Partial<Advert> = {},
): Promise<{ advert: Advert; proof: AdvertProof }> {
  const advert: Advert = {
    kind: "announce",
    network: "office",
    name: "bob",
    instance: key.id,
    seq: 1,
    port: 7000,
    interval: 1000,
    ...overrides,
  };
  const decoded = await decodeAdvert(await encodeAdvert(advert, fernet, key), fernet, "office");
  if (!decoded.ok) throw new Error(`not opened: ${decoded.drop}`);
  return decoded;
}

Deno.test("AdvertGuard accepts growing sequence numbers and drops replays", async () => {
  const key = await InstanceKey.generate();
  const guard = new AdvertGuard();
  const first = await opened(key, { seq: 1 });
  const second = await opened(key, { seq: 2 });
  strictEqual(await guard.admit(first.advert, first.proof, "10.0.0.2", 0), "accept");
  strictEqual(await guard.admit(first.advert, first.proof, "10.0.0.2", 1), "replay");
  strictEqual(await guard.admit(first.advert, first.proof, "10.0.0.66", 1), "replay");
  strictEqual(await guard.admit(second.advert, second.proof, "10.0.0.2", 2), "accept");
  strictEqual(await guard.admit(first.advert, first.proof, "10.0.0.2", 3), "replay");
});

Deno.test("AdvertGuard drops every advert of an instance after its bye", async () => {
  const key = await InstanceKey.generate();
  const guard = new AdvertGuard();
  const bye = await opened(key, { kind: "bye", seq: 5 });
  const later = await opened(key, { seq: 6 });
  strictEqual(await guard.admit(bye.advert, bye.proof, "10.0.0.2", 0), "accept");
  strictEqual(await guard.admit(later.advert, later.proof, "10.0.0.2", 1), "gone");
});

Deno.test("AdvertGuard drops an advert signed by another instance than it names", async () => {
  const bob = await InstanceKey.generate();
  const mallory = await InstanceKey.generate();
  const guard = new AdvertGuard();
  const real = await opened(bob, { seq: 1 });
  const theirs = await opened(mallory, { seq: 50 });
  // Mallory's advert, relabelled with bob's instance: her key does not hash to it.
  const relabelled = { ...theirs.advert, instance: bob.id };
  strictEqual(await guard.admit(relabelled, theirs.proof, "10.0.0.66", 0), "forged");
  strictEqual(await guard.admit(real.advert, real.proof, "10.0.0.2", 0), "accept");
  // Once bob is known, another key for his instance is refused before any check.
  strictEqual(await guard.admit(relabelled, theirs.proof, "10.0.0.66", 1), "forged");
  // Bob's key with mallory's signature does not verify.
  const borrowed = { ...theirs.proof, publicKey: real.proof.publicKey };
  strictEqual(await guard.admit(relabelled, borrowed, "10.0.0.66", 1), "forged");
  const next = await opened(bob, { seq: 2 });
  strictEqual(await guard.admit(next.advert, next.proof, "10.0.0.2", 2), "accept");
});

Deno.test("AdvertGuard bounds signature checks per source address", async () => {
  const key = await InstanceKey.generate();
  const guard = new AdvertGuard({ ratePerSource: 2, rate: 1000 });
  const results: string[] = [];
  for (let seq = 1; seq <= 6; seq++) {
    const { advert, proof } = await opened(key, { seq });
    results.push(await guard.admit(advert, proof, "10.0.0.66", 0));
  }
  // Burst of twice the rate, then nothing until time passes.
  deepStrictEqual(results, ["accept", "accept", "accept", "accept", "limited", "limited"]);
  const { advert, proof } = await opened(key, { seq: 7 });
  strictEqual(await guard.admit(advert, proof, "10.0.0.2", 0), "accept", "another source");
  const late = await opened(key, { seq: 8 });
  strictEqual(await guard.admit(late.advert, late.proof, "10.0.0.66", 1000), "accept");
});

Deno.test("AdvertGuard forgets an instance silent for longer than any advert of it can live", async () => {
  const key = await InstanceKey.generate();
  const guard = new AdvertGuard();
  const first = await opened(key, { seq: 9 });
  strictEqual(await guard.admit(first.advert, first.proof, "10.0.0.2", 0), "accept");
  strictEqual(guard.size, 1);
  strictEqual(
    await guard.admit(first.advert, first.proof, "10.0.0.2", ADVERT_MEMORY + 1),
    "accept",
    "a token that old no longer opens, so a restarted guard state is safe",
  );
});
