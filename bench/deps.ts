/**
 * The bench's one dependency outside Deno, npm `nats` (the NATS column), and
 * the lock that pins it: `bench/deno.lock`. It is kept apart from the
 * repository's `deno.lock` because `deno task` installs every npm package of
 * that lock before any task: the library, relay, demo and examples must need
 * nothing but Deno.
 *
 * Every bench process runs with {@linkcode LOCK_ARGS} (`--lock=bench/deno.lock
 * --frozen`): the cache step, the "is it cached" probe and every worker. Never
 * `--no-lock`: without the lock Deno asks the registry for package metadata
 * that a lock-driven cache never stored, and inside the bench's network
 * namespace there is no registry.
 *
 * `npm:nats` is imported at run time through a variable, so it is not part of
 * the static module graph and `deno check bench/` (the `check` task) never
 * writes it into the root `deno.lock`. The price is that its types are the
 * few declared here.
 *
 * ```sh
 * deno run --lock=bench/deno.lock --frozen bench/deps.ts                # cache it (deno task bench does)
 * deno run --lock=bench/deno.lock --frozen --cached-only bench/deps.ts  # exits 0 when it is cached
 * ```
 *
 * To move to another version, change {@linkcode NATS_MODULE}, delete
 * `bench/deno.lock`, run the first command once without `--frozen`, and
 * commit the new lock.
 *
 * @module
 */

/**
 * The npm client the NATS column is measured with, on its own node:net
 * transport as a NATS user gets it (a clustered relay runs the same client
 * on lib/nats_transport.ts).
 */
export { NATS_MODULE } from "../lib/nats_backplane.ts";
import { NATS_MODULE } from "../lib/nats_backplane.ts";
import type { Call } from "./measure.ts";

/** The subject a `worker_nats.ts` responder echoes. */
export const NATS_ECHO_SUBJECT = "bench.echo";

/** An echo through a `worker_nats.ts` responder on `nc`, checking the answer's size. */
export function natsEchoCall(nc: NatsConnection): Call {
  return async (data) => {
    const answer = await nc.request(NATS_ECHO_SUBJECT, data, { timeout: 30_000 });
    if (answer.data.length !== data.length) {
      throw new Error(`NATS echo returned ${answer.data.length} bytes for ${data.length}`);
    }
  };
}

/** Path of the bench's own lock file. */
export const BENCH_LOCK: string = new URL("./deno.lock", import.meta.url).pathname;

/** Deno flags every bench process runs with: the bench lock, which must not change. */
export const LOCK_ARGS: readonly string[] = [`--lock=${BENCH_LOCK}`, "--frozen"];

/** A received NATS message (the part of npm `nats`'s `Msg` the bench uses). */
export interface NatsMessage {
  readonly data: Uint8Array;
  respond(data?: Uint8Array): boolean;
}

/** A NATS connection (the part of npm `nats`'s `NatsConnection` the bench uses). */
export interface NatsConnection {
  subscribe(subject: string): AsyncIterable<NatsMessage>;
  request(subject: string, data: Uint8Array, options: { timeout: number }): Promise<NatsMessage>;
  flush(): Promise<void>;
  close(): Promise<void>;
}

/** The part of npm `nats` the bench uses. */
export interface NatsModule {
  connect(options: { servers: string; name: string }): Promise<NatsConnection>;
}

/** Loads npm `nats` (cached through `bench/deno.lock`; see the module doc). */
export async function importNats(): Promise<NatsModule> {
  const specifier: string = NATS_MODULE; // a variable keeps it out of the static graph
  return await import(specifier) as NatsModule;
}

if (import.meta.main) await importNats();
