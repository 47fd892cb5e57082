// deno-lint-ignore-file no-console
/**
 * The NATS side of the comparison, with the npm `nats` client: an echo
 * responder, or the measuring requester.
 *
 * ```sh
 * deno run -A --lock=bench/deno.lock bench/worker_nats.ts --role responder --port <port>
 * deno run -A --lock=bench/deno.lock bench/worker_nats.ts --role client --port <port> --params <json>
 * ```
 *
 * The responder prints `ready` once subscribed; the client prints
 * `result <json>` ({@linkcode PathResult}). The bench runs it with
 * `--lock=bench/deno.lock --frozen` (see `deps.ts`). Inside the bench's
 * network namespace there is no registry: `deno task bench` caches the
 * module first.
 *
 * @module
 */

import { importNats, NATS_ECHO_SUBJECT as SUBJECT, natsEchoCall } from "./deps.ts";
import {
  type LatencyPlan,
  measureLatency,
  measureThroughput,
  type PathResult,
  payload,
  type ThroughputPlan,
} from "./measure.ts";
import { lifeline, reply, required, workerArgs } from "./proc.ts";

lifeline();
const options = workerArgs();
const { connect } = await importNats();
const nc = await connect({ servers: `127.0.0.1:${required(options, "port")}`, name: "bench" });

if (required(options, "role") === "responder") {
  const subscription = nc.subscribe(SUBJECT);
  void (async () => {
    for await (const message of subscription) message.respond(message.data);
  })();
  await nc.flush();
  console.log("ready");
} else {
  const params = JSON.parse(required(options, "params")) as {
    latency: LatencyPlan;
    throughput: ThroughputPlan;
  };
  const call = natsEchoCall(nc);
  await call(payload(100));
  const result: PathResult = {
    latency: await measureLatency(call, params.latency),
    throughput: await measureThroughput(call, params.throughput),
  };
  await nc.close();
  reply(result);
}
