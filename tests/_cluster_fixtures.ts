/**
 * Relay clusters in tests: relay processes started with `--cluster` and the
 * cluster lock, the NATS agent (tests/fixtures/nats_probe.ts, its own
 * process: npm `nats` never loads in a test process), raw members, and what
 * they received.
 *
 * @module
 */

import { ok } from "node:assert/strict";
import { natsModuleMissing } from "../bench/nats.ts";
import { LOCK_ARGS } from "../bench/deps.ts";
import { FrameType } from "../lib/frame.ts";
import { decodeMembers } from "../lib/relay_protocol.ts";
import { sleep, Spawned, waitFor } from "./_fixtures.ts";
import { findNatsServer } from "./_nats_fixtures.ts";
import {
  type RawIdentity,
  type RelayProcess,
  RelayRawClient,
  spawnRelay,
} from "./_relay_fixtures.ts";

/** The lock a clustered relay runs with. */
export const CLUSTER_LOCK: string = new URL("../relay/cluster.lock", import.meta.url).pathname;
const AGENT = new URL("./fixtures/nats_probe.ts", import.meta.url);

async function natsProblem(): Promise<string | null> {
  if (await findNatsServer() === null) return "needs nats-server (apt-get install nats-server)";
  return await natsModuleMissing();
}

/** Why relay clusters cannot be tested here, or null when they can. */
export const CLUSTER_PROBLEM: string | null = await natsProblem();

/** Prints a probe's figures (shown by `deno test` as the test's output). */
export function note(line: string): void {
  // deno-lint-ignore no-console
  console.log(line);
}

/** A relay of the cluster on NATS `url`. */
export function clusterRelay(url: string, args: string[] = []): Promise<RelayProcess> {
  return spawnRelay({
    denoArgs: [`--lock=${CLUSTER_LOCK}`, "--frozen", "--cached-only"],
    args: ["--cluster", url, ...args],
  });
}

/** A relay's counter from its `--metrics` endpoint: the line that starts with `name`. */
export async function metric(relay: RelayProcess, name: string): Promise<number> {
  const serving = /serving counters at (http:\/\/\S+)$/m;
  await waitFor(() => serving.test(relay.process.stderr), "the relay's metrics line");
  const url = serving.exec(relay.process.stderr)![1]!;
  const text = await (await fetch(url, { signal: AbortSignal.timeout(5000) })).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  ok(line, `${name} in ${text}`);
  return Number(line.slice(name.length + 1));
}

/** The NATS agent process: one JSON command per line, one `result <id>` line each. */
export class Agent implements AsyncDisposable {
  readonly #process: Spawned;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #next = 0;

  private constructor(process: Spawned) {
    this.#process = process;
    this.#stdin = process.child.stdin.getWriter();
  }

  static async start(url: string): Promise<Agent> {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", ...LOCK_ARGS, "--cached-only", AGENT.pathname, url],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const agent = new Agent(new Spawned(child));
    await agent.#process.line("ready", 20_000);
    return agent;
  }

  async run<T>(op: string, args: Record<string, unknown> = {}, ms = 20_000): Promise<T> {
    const id = ++this.#next;
    await this.#stdin.write(new TextEncoder().encode(`${JSON.stringify({ id, op, ...args })}\n`));
    const line = await this.#process.line(`result ${id} `, ms);
    const value = JSON.parse(line.slice(`result ${id} `.length));
    if (value && typeof value === "object" && "error" in value) {
      throw new Error(`agent ${op}: ${value.error}`);
    }
    return value as T;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#stdin.close().catch(() => {});
    await this.#process.stop().catch(() => {});
  }
}

/** Starts a relay on `url` and returns it with its relay id (the lease it added). */
export async function relayWithId(
  agent: Agent | null,
  url: string,
  known: Set<string>,
  args: string[] = [],
): Promise<RelayProcess & { id: string }> {
  const relay = await clusterRelay(url, args);
  if (!agent) return Object.assign(relay, { id: "" });
  let id = "";
  for (let i = 0; i < 50 && id === ""; i++) {
    id = (await agent.run<string[]>("relays")).find((k) => !known.has(k)) ?? "";
    if (id === "") await sleep(100);
  }
  ok(id !== "", "the relay's lease");
  known.add(id);
  return Object.assign(relay, { id });
}

/** A raw connection registered as `who` at `address` (tick 60 s: no PINGs needed). */
export async function raw(
  who: RawIdentity,
  address: string,
  options: { clientOnly?: boolean } = {},
): Promise<RelayRawClient> {
  const client = await RelayRawClient.connect(address);
  try {
    await client.register(who, { tick: 60_000, ...options });
  } catch (error) {
    await client[Symbol.asyncDispose]();
    throw error;
  }
  return client;
}

/** DATA frames `client` received with frame id `id`. */
export function got(client: RelayRawClient, id: number): number {
  return client.frames.filter((f) => f.type === FrameType.DATA && f.id === id).length;
}

/** Every [kind, pseudonym] change in the MEMBERS frames `client` received. */
export function changes(client: RelayRawClient): [string, string][] {
  const out: [string, string][] = [];
  for (const frame of client.frames) {
    if (frame.type !== FrameType.MEMBERS) continue;
    const body = decodeMembers(frame);
    for (const [name] of body.leave) out.push(["leave", name]);
    for (const [name] of body.join) out.push(["join", name]);
  }
  return out;
}

/** Closes every client and relay given, ignoring errors. */
export async function closeAll(...things: (AsyncDisposable | undefined)[]): Promise<void> {
  await Promise.all(things.map((t) => Promise.resolve(t?.[Symbol.asyncDispose]()).catch(() => {})));
}
