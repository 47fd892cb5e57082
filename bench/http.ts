/**
 * The HTTP comparison, "what a user would write instead" of a direct call:
 * plain HTTP/1.1 between two Deno processes, no encryption. The server
 * (`worker_http.ts`, on the server core) is `Deno.serve` with one echo
 * route; the measuring client (`worker_client.ts` task `http`, on the client
 * core) calls it with `fetch`, whose connection pool keeps connections alive.
 *
 * Each call POSTs a JSON body `{"data":"<base64>"}`, the payload as base64
 * (so a 100 B payload is 136 characters of it); the server parses the JSON,
 * decodes the bytes (a handler gets bytes, as a peerbase handler does),
 * encodes them again and answers `{"data":"<base64>"}`; the client parses
 * and decodes the answer and checks its length. Latency and throughput are
 * measured as every other path is (`measure.ts`).
 *
 * @module
 */

import {
  type Call,
  type LatencyPlan,
  measureLatency,
  measureThroughput,
  type PathResult,
  payload,
  type ThroughputPlan,
} from "./measure.ts";
import type { Context } from "./plan.ts";
import { runClient, spawnWorker } from "./proc.ts";

/** The echo route's path. */
export const HTTP_ECHO_PATH = "/echo";

/** The body of a request and of its answer: the payload as base64. */
interface EchoBody {
  data: string;
}

// ---- Server side (inside worker_http.ts) ----

/** The echo handler: JSON in, bytes decoded and encoded again, JSON out. */
export async function echoHandler(request: Request): Promise<Response> {
  if (request.method !== "POST" || new URL(request.url).pathname !== HTTP_ECHO_PATH) {
    return new Response("not found", { status: 404 });
  }
  const body = await request.json() as EchoBody;
  const bytes = Uint8Array.fromBase64(body.data);
  return Response.json({ data: bytes.toBase64() } satisfies EchoBody);
}

// ---- Client side (inside worker_client.ts) ----

/** Parameters of {@linkcode clientHttp}. */
export interface HttpParams {
  port: number;
  latency: LatencyPlan;
  throughput: ThroughputPlan;
}

/** One `fetch` call to the echo route on `port`, checking the answer's length. */
export function httpEchoCall(port: number): Call {
  const url = `http://127.0.0.1:${port}${HTTP_ECHO_PATH}`;
  const headers = { "content-type": "application/json" };
  return async (data) => {
    const response = await fetch(url, {
      method: "POST",
      headers,
      body: JSON.stringify({ data: data.toBase64() } satisfies EchoBody),
    });
    if (!response.ok) {
      await response.body?.cancel();
      throw new Error(`HTTP echo answered ${response.status}`);
    }
    const answer = Uint8Array.fromBase64(((await response.json()) as EchoBody).data);
    if (answer.length !== data.length) {
      throw new Error(`HTTP echo returned ${answer.length} bytes for ${data.length}`);
    }
  };
}

/** Latency per size and throughput in flight of `fetch` calls to the echo route. */
export async function clientHttp(params: HttpParams): Promise<PathResult> {
  const call = httpEchoCall(params.port);
  await call(payload(100));
  return {
    latency: await measureLatency(call, params.latency),
    throughput: await measureThroughput(call, params.throughput),
  };
}

// ---- Bench side ----

/** Measures HTTP calls between a `Deno.serve` process and a `fetch` client, pinned as the others. */
export async function runHttp(ctx: Context): Promise<PathResult> {
  await using server = spawnWorker(ctx.placement, "worker_http.ts", [], {
    side: "server",
    label: "http server",
  });
  const port = Number(await server.line("ready "));
  return await runClient<PathResult>(
    ctx,
    "http",
    {
      port,
      latency: ctx.plan.latency,
      throughput: ctx.plan.throughput,
    } satisfies HttpParams,
  );
}
