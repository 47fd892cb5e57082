/**
 * Runs a system command for tests and the bench (nft, iptables, ip): its
 * output is captured, and a failure throws with the command's own message.
 *
 * @module
 */

/**
 * Runs `cmd` with `args`, writing `stdin` to it when given; resolves once it
 * exits successfully, and throws naming the command and its stderr otherwise.
 *
 * @example
 * ```ts
 * import { runCommand } from "./command.ts";
 * import { rejects } from "node:assert/strict";
 *
 * await runCommand("true", []);
 * await rejects(runCommand("false", []), /false.* failed/);
 * ```
 */
export async function runCommand(cmd: string, args: string[], stdin?: string): Promise<void> {
  const child = new Deno.Command(cmd, {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const out = await child.output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}
