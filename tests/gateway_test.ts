/**
 * `examples/gateway.ts` under `deno serve`, driven with `fetch`: a relay
 * process, a remote-only node in this process serving `math.*`, and the
 * gateway process, configured through its environment variables.
 */

import { deepStrictEqual, match, ok, strictEqual } from "node:assert/strict";
import { type CallContext, type CommandTree, Node } from "../mod.ts";
import { deadline, HANG_TIMEOUT, sleep, Spawned, testNetwork, waitFor } from "./_fixtures.ts";
import { type RelayProcess, remoteOptions, spawnRelay } from "./_relay_fixtures.ts";

const GATEWAY = new URL("../examples/gateway.ts", import.meta.url);
/** The line `deno serve` prints on stderr once it listens. */
const LISTENING = /Listening on (http:\/\/\S+)/;
/** The gateway's `PEERBASE_TIMEOUT`, ms: short, so the timeout and relay-down steps end soon. */
const CALL_TIMEOUT = 2000;
/** The gateway's `PEERBASE_GATEWAY_TOKEN`. */
const TOKEN = "gateway-test-token";
/** Bounds of the retry loop after the relay restarts (its backoff reaches 5 s): hangs only. */
const RECOVERY_DEADLINE = 30_000;
const RECOVERY_ATTEMPTS = 60;
/** Every variable the gateway reads, empty: only what a test sets reaches it. */
const NO_CONFIG = Object.fromEntries(
  ["NETWORK", "KEY", "SERVERS", "NAME", "TIMEOUT", "GATEWAY_TOKEN"].map((
    v,
  ) => [`PEERBASE_${v}`, ""]),
);

/** `math.add` sums, `math.fail` throws, `math.slow` answers only when the caller gives up. */
const COMMANDS: CommandTree<Node> = {
  math: {
    add: (_node, args) => (args as number[]).reduce((a, b) => a + b, 0),
    fail: () => {
      throw new RangeError("Division by zero");
    },
    slow: (_node, _args, _kwargs, ctx: CallContext) =>
      new Promise((resolve) => {
        const done = () => {
          clearTimeout(timer);
          resolve(null);
        };
        const timer = setTimeout(done, HANG_TIMEOUT);
        ctx.signal.addEventListener("abort", done, { once: true });
      }),
  },
};

/** A gateway process and its base URL; disposing stops it. */
interface GatewayProcess extends AsyncDisposable {
  url: string;
  process: Spawned;
}

/** Starts `deno serve` on the gateway on a free loopback port with `env`, and waits until it listens. */
async function spawnGateway(env: Record<string, string>): Promise<GatewayProcess> {
  const args = ["serve", "--allow-net", "--allow-env", "--host", "127.0.0.1", "--port", "0"];
  const process = new Spawned(
    new Deno.Command(Deno.execPath(), {
      args: [...args, GATEWAY.href],
      env: { ...NO_CONFIG, ...env },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn(),
  );
  await waitFor(() => LISTENING.test(process.stderr) || process.exited, "the gateway to listen")
    .catch(() => {});
  const url = LISTENING.exec(process.stderr)?.[1];
  if (url === undefined) {
    await process.stop("SIGKILL").catch(() => {});
    throw new Error(`The gateway did not start; stderr: ${process.stderr}`);
  }
  return { url, process, [Symbol.asyncDispose]: () => process[Symbol.asyncDispose]() };
}

/** An answer of the gateway: its status, `Allow` and `Retry-After` headers and JSON body. */
interface Answer {
  status: number;
  allow: string | null;
  retryAfter: string | null;
  // deno-lint-ignore no-explicit-any
  body: any;
}

/** Sends `method path` with `body` (JSON unless a string) and the token (10 s cap beyond the call's). */
async function send(
  gateway: GatewayProcess,
  method: string,
  path: string,
  body?: unknown,
  token: string | null = TOKEN,
): Promise<Answer> {
  const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  const init: RequestInit = { method, headers };
  if (body !== undefined) init.body = typeof body === "string" ? body : JSON.stringify(body);
  const response = await deadline(
    fetch(new URL(path, gateway.url), init),
    `${method} ${path}`,
    HANG_TIMEOUT + CALL_TIMEOUT,
  );
  return {
    status: response.status,
    allow: response.headers.get("allow"),
    retryAfter: response.headers.get("retry-after"),
    body: await response.json(),
  };
}

/** Asserts `answer` is the error `name` with `status`, showing the answer when not. */
function assertError(answer: Answer, status: number, name: string): void {
  const shown = JSON.stringify(answer);
  strictEqual(answer.status, status, shown);
  strictEqual(answer.body?.error?.name, name, shown);
  strictEqual(typeof answer.body.error.message, "string", shown);
}

Deno.test({
  name: "examples/gateway.ts bridges HTTP calls to the network under deno serve",
  async fn(t) {
    const net = testNetwork("gw");
    let relay: RelayProcess = await spawnRelay();
    let calc: Node | undefined;
    let gateway: GatewayProcess | undefined;
    try {
      calc = new Node(remoteOptions(net, "calc", relay.address, { commands: COMMANDS }));
      await calc.start();
      gateway = await spawnGateway({
        PEERBASE_NETWORK: net.network,
        PEERBASE_KEY: net.networkKey,
        PEERBASE_SERVERS: relay.address,
        PEERBASE_TIMEOUT: String(CALL_TIMEOUT),
        PEERBASE_GATEWAY_TOKEN: TOKEN,
      });
      const gw = gateway;

      await t.step("concurrent first requests start one node and share it", async () => {
        const answers = await Promise.all([1, 2, 3, 4].map(() => send(gw, "GET", "/")));
        for (const answer of answers) strictEqual(answer.status, 200, JSON.stringify(answer));
        strictEqual(new Set(answers.map((answer) => answer.body.name)).size, 1);
      });

      await t.step("GET / reports the node, its network, the relay up and the peers", async () => {
        const { status, body } = await send(gw, "GET", "/");
        strictEqual(status, 200);
        match(body.name, /^gateway-/);
        strictEqual(body.network, net.network);
        strictEqual(body.relaysUp, 1);
        deepStrictEqual(body.relays, [{ address: relay.address, up: true }]);
        deepStrictEqual(body.peers, ["calc"]);
      });

      await t.step("POST /call/math.add to one peer answers 200 with the result", async () => {
        const answer = await send(gw, "POST", "/call/math.add", { target: "calc", args: [2, 3] });
        deepStrictEqual(answer, {
          status: 200,
          allow: null,
          retryAfter: null,
          body: { result: 5 },
        });
      });

      await t.step("a list of targets answers 200 with the results by peer", async () => {
        const answer = await send(gw, "POST", "/call/math.add", { target: ["calc"], args: [4, 5] });
        deepStrictEqual(answer.body, { results: { calc: 9 } });
      });

      await t.step("an unknown command answers 404 UnknownCommandError", async () => {
        const answer = await send(gw, "POST", "/call/math.pow", { target: "calc", args: [2] });
        assertError(answer, 404, "UnknownCommandError");
        strictEqual(answer.body.error.path, "math.pow");
      });

      await t.step("an unknown peer answers 404 PeerNotFoundError", async () => {
        const answer = await send(gw, "POST", "/call/math.add", { target: "ghost", args: [] });
        assertError(answer, 404, "PeerNotFoundError");
        strictEqual(answer.body.error.peer, "ghost");
      });

      await t.step("a handler that throws answers 502 RemoteError with its error", async () => {
        const answer = await send(gw, "POST", "/call/math.fail", { target: "calc" });
        assertError(answer, 502, "RemoteError");
        strictEqual(answer.body.error.remoteName, "RangeError");
        strictEqual(answer.body.error.remoteMessage, "Division by zero");
      });

      await t.step(
        "a list with a failed target answers 502 CommandError with each result",
        async () => {
          const body = { target: ["calc", "ghost"], args: [1, 1] };
          const answer = await send(gw, "POST", "/call/math.add", body);
          assertError(answer, 502, "CommandError");
          strictEqual(answer.body.error.results.calc, 2);
          strictEqual(answer.body.error.results.ghost.error.name, "PeerNotFoundError");
        },
      );

      await t.step(
        "a call slower than PEERBASE_TIMEOUT answers 504 CommandTimeoutError",
        async () => {
          const answer = await send(gw, "POST", "/call/math.slow", { target: "calc" });
          assertError(answer, 504, "CommandTimeoutError");
          strictEqual(answer.body.error.peer, "calc");
        },
      );

      await t.step("a bad body, path or target answers 400 naming what is wrong", async () => {
        const self = (await send(gw, "GET", "/")).body.name;
        const deep = `{"target": "calc", "args": ${"[".repeat(1001)}${"]".repeat(1001)}}`;
        const cases: Array<[string, unknown, string, RegExp]> = [
          ["/call/math.add", "{not json", "SyntaxError", /JSON/],
          ["/call/math.add", { args: [1] }, "TypeError", /target/],
          ["/call/math.add", { target: 5 }, "TypeError", /target/],
          ["/call/math.add", { target: "calc", args: { a: 1 } }, "TypeError", /args/],
          ["/call/math.add", { target: "calc", kwargs: [1] }, "TypeError", /kwargs/],
          ["/call/math..add", { target: "calc" }, "TypeError", /path/],
          ["/call/", { target: "calc" }, "TypeError", /path/],
          ["/call/math.%E0%A4%A", { target: "calc" }, "TypeError", /path/],
          ["/call/math.add", { target: ["calc", self] }, "RangeError", /this gateway/],
          // Refused by the node, by its peerbase error name: still the client's request.
          ["/call/math.add", deep, "EncodeError", /nested deeper/],
        ];
        for (const [path, body, name, message] of cases) {
          const answer = await send(gw, "POST", path, body);
          assertError(answer, 400, name);
          match(answer.body.error.message, message);
        }
      });

      await t.step("another method answers 405 with Allow, another route 404", async () => {
        const get = await send(gw, "GET", "/call/math.add");
        assertError(get, 405, "MethodNotAllowedError");
        strictEqual(get.allow, "POST");
        const post = await send(gw, "POST", "/", {});
        assertError(post, 405, "MethodNotAllowedError");
        strictEqual(post.allow, "GET");
        assertError(await send(gw, "GET", "/elsewhere"), 404, "NotFoundError");
      });

      await t.step("a request without the right bearer token answers 401", async () => {
        const body = { target: "calc", args: [2, 3] };
        assertError(await send(gw, "POST", "/call/math.add", body, null), 401, "UnauthorizedError");
        assertError(await send(gw, "GET", "/", undefined, "wrong"), 401, "UnauthorizedError");
      });

      await t.step(
        "with the relay down, a call answers 503 NoRelayError with Retry-After instead of hanging",
        async () => {
          await relay.process.stop("SIGKILL");
          const end = Date.now() + HANG_TIMEOUT;
          let down: Answer;
          while ((down = await send(gw, "GET", "/")).status !== 503) {
            if (Date.now() > end) throw new Error("The gateway still reports its relay up");
            await sleep(50);
          }
          strictEqual(down.retryAfter, "2", JSON.stringify(down));
          // One name, a list and "*": each waits for a relay, then answers 503 without calling.
          for (const target of ["calc", ["calc", "ghost"], "*"]) {
            const body = { target, args: [1, 2] };
            const answer = await send(gw, "POST", "/call/math.add", body);
            assertError(answer, 503, "NoRelayError");
            match(answer.body.error.message, /no relay is up.*PEERBASE_TIMEOUT \(2000 ms\)/);
            strictEqual(answer.retryAfter, "2", JSON.stringify(answer));
          }
        },
      );

      await t.step("after the relay restarts on its port, a later call succeeds", async () => {
        relay = await spawnRelay({ port: relay.port });
        const end = Date.now() + RECOVERY_DEADLINE;
        const failures: string[] = [];
        for (let attempt = 0; attempt < RECOVERY_ATTEMPTS && Date.now() < end; attempt++) {
          const answer = await send(gw, "POST", "/call/math.add", { target: "calc", args: [3, 4] });
          if (answer.status === 200) {
            deepStrictEqual(answer.body, { result: 7 });
            return;
          }
          // Until the gateway and calc are back at the relay: a typed error, never a hang.
          ok([404, 502, 503, 504].includes(answer.status), JSON.stringify(answer));
          ok(typeof answer.body.error?.name === "string", JSON.stringify(answer));
          failures.push(`${answer.status} ${answer.body.error.name}`);
          await sleep(100);
        }
        throw new Error(`No call succeeded after the relay restarted: ${failures.join(", ")}`);
      });

      await t.step("SIGTERM closes the node, so deno serve exits cleanly", async () => {
        const status = await gw.process.stop("SIGTERM");
        strictEqual(status.code, 0, gw.process.stderr);
      });
    } finally {
      await gateway?.[Symbol.asyncDispose]();
      await calc?.close();
      await relay[Symbol.asyncDispose]();
    }
  },
});

Deno.test({
  name: "examples/gateway.ts answers 500 ConfigError naming a missing or refused variable",
  async fn(t) {
    const net = testNetwork("gw");
    const cases: Array<[string, Record<string, string>, RegExp]> = [
      ["a missing key", { PEERBASE_NETWORK: net.network }, /PEERBASE_KEY is not set/],
      [
        "a key that is not one",
        { PEERBASE_NETWORK: net.network, PEERBASE_KEY: "abc", PEERBASE_SERVERS: "127.0.0.1:9" },
        /PEERBASE_KEY is refused/,
      ],
      [
        "a timeout that is not a number",
        {
          PEERBASE_NETWORK: net.network,
          PEERBASE_KEY: net.networkKey,
          PEERBASE_SERVERS: "127.0.0.1:9",
          PEERBASE_TIMEOUT: "soon",
        },
        /PEERBASE_TIMEOUT must be/,
      ],
    ];
    for (const [what, env, message] of cases) {
      await t.step(what, async () => {
        await using gateway = await spawnGateway(env);
        // Twice: a bad configuration does not crash the isolate, and is read again.
        const requests = [["POST", "/call/math.add", { target: "calc" }], ["GET", "/"]] as const;
        for (const [method, path, body] of requests) {
          const answer = await send(gateway, method, path, body);
          assertError(answer, 500, "ConfigError");
          match(answer.body.error.message, message);
          ok(!answer.body.error.message.includes(net.networkKey), "the key is never shown");
        }
      });
    }
  },
});

Deno.test({
  name: "examples/gateway.ts starts its node again after a failed start",
  async fn() {
    const net = testNetwork("gw");
    await using relay = await spawnRelay();
    const holder = new Node(remoteOptions(net, "gw-fixed", relay.address));
    try {
      await holder.start();
      await using gateway = await spawnGateway({
        PEERBASE_NETWORK: net.network,
        PEERBASE_KEY: net.networkKey,
        PEERBASE_SERVERS: relay.address,
        PEERBASE_NAME: "gw-fixed",
      });
      // The relay refuses a second live node of that name: the start fails.
      assertError(await send(gateway, "GET", "/"), 500, "NameTakenError");
      await holder.close();
      const { status, body } = await send(gateway, "GET", "/");
      strictEqual(status, 200, JSON.stringify(body));
      strictEqual(body.name, "gw-fixed");
    } finally {
      await holder.close();
    }
  },
});
