// deno-lint-ignore-file no-console
/**
 * What the test environment offers, and one way to register a test that
 * needs something outside Deno.
 *
 * - `PEERBASE_NETNS=1` is set by `tools/netns.ts` when the suite runs inside
 *   a private network namespace with multicast routed on its loopback. Only
 *   then may a test advertise on UDP multicast.
 * - `PEERBASE_STRICT=1` (set by `.ci/run`) turns every skip into a failure.
 */

/** True when every skip must be a failure instead (CI). */
export const STRICT: boolean = Deno.env.get("PEERBASE_STRICT") === "1";

/** True inside the private network namespace made by `tools/netns.ts`. */
export const IN_NETNS: boolean = Deno.env.get("PEERBASE_NETNS") === "1";

/** Reason used by tests that advertise on UDP multicast. */
export const NETNS_REASON =
  "needs a private network namespace (run through `deno task test`, which needs iproute2 or unshare)";

/**
 * Registers `def` when `available`; otherwise registers it as ignored with
 * the reason in its name and printed once, or, under `PEERBASE_STRICT=1`,
 * as a test that fails with the reason.
 */
export function testIf(available: boolean, reason: string, def: Deno.TestDefinition): void {
  if (available) {
    Deno.test(def);
    return;
  }
  if (STRICT) {
    Deno.test({
      ...def,
      fn: () => {
        throw new Error(`Required by PEERBASE_STRICT=1 but unavailable: ${reason}`);
      },
    });
    return;
  }
  console.warn(`skipped: ${def.name}: ${reason}`);
  Deno.test({ ...def, name: `${def.name} [skipped: ${reason}]`, ignore: true });
}

/** A network name no other test uses, so parallel tests never see each other. */
export function uniqueNetwork(prefix = "test"): string {
  return `${prefix}-${crypto.randomUUID().slice(0, 8)}`;
}

/** What a finished child process printed, and its exit code. */
export interface Output {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `cmd` to completion with no stdin, capturing its output; killed after `timeout` ms. */
export async function runToEnd(
  cmd: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string>; timeout: number },
): Promise<Output> {
  const out = await new Deno.Command(cmd, {
    args,
    ...(options.cwd ? { cwd: options.cwd } : {}),
    ...(options.env ? { env: options.env } : {}),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(options.timeout),
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}
