/**
 * The commands every node serves: `__echo__`, `__list_commands__` and
 * `__peers__`. A user's command at the same path replaces a built-in.
 *
 * @module
 */

import type { CommandRegistry } from "./commands.ts";
import type { PeerInfo } from "./peers.ts";

/** What the built-ins read of their node. */
export interface BuiltinHost {
  readonly name: string;
  readonly commands: string[];
  readonly peers: PeerInfo[];
}

/** Registers the built-in commands in `registry`. */
export function registerBuiltins<N extends BuiltinHost>(registry: CommandRegistry<N>): void {
  registry.register("__echo__", (node, args, kwargs) => ({
    node: node.name,
    time: new Date().toISOString(),
    args,
    kwargs,
  }));
  registry.register("__list_commands__", (node) => node.commands);
  registry.register("__peers__", (node) => node.peers);
}
