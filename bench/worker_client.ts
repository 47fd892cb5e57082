/**
 * The measuring client process: runs one task and prints `result <json>`.
 *
 * ```sh
 * PEERBASE_KEY=<key> deno run -A --unstable-net bench/worker_client.ts \
 *   --task <task> --params <json>
 * ```
 *
 * Tasks: `echo`, `echo-fanout` (floors, TCP or TLS), `fernet`, `fernet-seal`
 * (one encrypt alone at the largest size), `path`
 * (peerbase direct or relayed, TCP, TLS or WebSocket), `http` (`fetch` to the HTTP
 * comparison's server), `fanout`, `discovery`,
 * `failover`, `failover-silent` (a relay's packets dropped with nft), `wait-cpu`, `register` (registrations at a relay), `proofs`
 * (admission proofs alone), `attack-partial`, `attack-idle` (key-less
 * connections, `attack.ts`), `soak` (calls through a relay for minutes,
 * `soak.ts`), `hol` (small calls beside 16 MiB ones, `hol.ts`), `cross-relay`
 * (calls from one relay of a cluster to a node on another, `cluster.ts`),
 * `paired` (direct, relayed, HTTP and NATS calls timed in turn, `paired.ts`).
 *
 * @module
 */

import { attackIdle, attackPartial } from "./attack.ts";
import { callerCrossRelay } from "./cluster.ts";
import { clientEcho, clientEchoFanout } from "./floor.ts";
import { clientFernet, clientSeal } from "./fernet.ts";
import { clientHttp } from "./http.ts";
import { callerSilentFailover } from "./failover_silent.ts";
import { callerHol } from "./hol.ts";
import { callerPaired } from "./paired.ts";
import {
  callerDiscovery,
  callerFailover,
  callerFanout,
  callerPath,
  callerWaitCpu,
} from "./peerbase.ts";
import { lifeline, reply, required, workerArgs } from "./proc.ts";
import { clientProofs, clientRegister } from "./register.ts";
import { callerSoak } from "./soak.ts";

// deno-lint-ignore no-explicit-any
const TASKS: Record<string, (params: any) => Promise<unknown>> = {
  "echo": clientEcho,
  "echo-fanout": clientEchoFanout,
  "fernet": clientFernet,
  "fernet-seal": clientSeal,
  "path": callerPath,
  "http": clientHttp,
  "fanout": callerFanout,
  "discovery": callerDiscovery,
  "failover": callerFailover,
  "failover-silent": callerSilentFailover,
  "wait-cpu": callerWaitCpu,
  "register": clientRegister,
  "proofs": clientProofs,
  "attack-partial": attackPartial,
  "attack-idle": attackIdle,
  "soak": callerSoak,
  "hol": callerHol,
  "cross-relay": callerCrossRelay,
  "paired": callerPaired,
};

lifeline();
const options = workerArgs();
const task = TASKS[required(options, "task")];
if (!task) throw new Error(`Cannot run task '${options.get("task")}': unknown task`);
reply(await task(JSON.parse(required(options, "params"))));
