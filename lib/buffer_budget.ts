/**
 * One budget per process for the bytes its connections make it hold: the
 * partial frames being read and, at a relay, what a sender has queued for
 * other members (docs/PROTOCOL.md, "Memory: bytes received, never bytes
 * declared"). Each connection has an account; when the total passes the
 * budget, the account holding the most is cut first, whoever it is, and its
 * bytes stop counting at once (they are freed as it closes).
 *
 * @module
 */

/** Default budget of a node, bytes: 256 MiB. */
export const DEFAULT_NODE_BUFFER_BUDGET: number = 256 * 1024 * 1024;

/** Default budget of a relay, bytes: 512 MiB. */
export const DEFAULT_RELAY_BUFFER_BUDGET: number = 512 * 1024 * 1024;

/**
 * The bytes one connection makes the process hold. Created by
 * {@linkcode BufferBudget.open}; close it when the connection closes.
 */
export class BufferAccount {
  readonly #budget: BufferBudget;
  /** Cuts the connection; called at most once, when it is the worst holder of an exceeded budget. */
  readonly cut: () => void;
  /**
   * Bytes it holds that were declared but never sent (the unfilled part of
   * its partial frame's buffer): what makes it the first to cut.
   */
  unfilled: () => number = () => 0;
  #input = 0;
  #queued = 0;
  #assembling = 0;
  #open = true;

  /** Use {@linkcode BufferBudget.open}. */
  constructor(budget: BufferBudget, cut: () => void) {
    this.#budget = budget;
    this.cut = cut;
  }

  /**
   * What makes it the first to cut, bytes: what it holds only because its
   * peer did not follow through (declared and not sent, or queued for it and
   * not taken).
   */
  get blame(): number {
    return this.#open ? this.unfilled() + this.#queued : 0;
  }

  /** What it holds now, bytes (0 once cut or closed). */
  get bytes(): number {
    return this.#open ? this.#input + this.#queued + this.#assembling : 0;
  }

  /** Sets the bytes held for its partial frame being read. */
  setInput(bytes: number): void {
    this.#change(bytes - this.#input, () => this.#input = bytes);
  }

  /** Sets the bytes held for the unfinished chunked messages it sent (docs/PROTOCOL.md, "Chunks"). */
  setAssembling(bytes: number): void {
    this.#change(bytes - this.#assembling, () => this.#assembling = bytes);
  }

  /** Adds `delta` (negative: written or dropped) to the bytes it has queued for others. */
  addQueued(delta: number): void {
    this.#change(delta, () => this.#queued = Math.max(0, this.#queued + delta));
  }

  /** Stops counting it (its connection closed). Safe to call twice. */
  close(): void {
    if (!this.#open) return;
    this.#budget.release(this, this.bytes);
    this.#open = false;
  }

  #change(delta: number, apply: () => void): void {
    const before = this.bytes;
    apply();
    if (this.#open) this.#budget.adjust(this.bytes - before, delta > 0);
  }
}

/**
 * The process's budget for buffered bytes. Past it, the account with the
 * most {@linkcode BufferAccount.blame} is cut first (bytes declared and not
 * sent, or queued and not taken), then the one holding the most; between
 * equals, the newest.
 *
 * @example Past the budget, the holder of bytes it was never sent goes first
 * ```ts
 * import assert from "node:assert/strict";
 * import { BufferBudget } from "./buffer_budget.ts";
 *
 * const budget = new BufferBudget(1000);
 * const cut: string[] = [];
 * const honest = budget.open(() => cut.push("honest"));
 * const trickler = budget.open(() => cut.push("trickler"));
 * honest.setInput(600); // A frame arriving at full speed.
 * trickler.setInput(300); // A buffer for a frame it declared...
 * trickler.unfilled = () => 290; // ...and sent 10 bytes of.
 * honest.setInput(800); // 1100 > 1000: not the largest, the one that did not follow through.
 * assert.deepEqual(cut, ["trickler"]);
 * assert.equal(budget.used, 800);
 * assert.equal(budget.cuts, 1);
 * ```
 */
export class BufferBudget {
  /** The budget, bytes. */
  readonly limit: number;
  readonly #accounts = new Set<BufferAccount>();
  #used = 0;
  #cuts = 0;

  /** A budget of `limit` bytes. */
  constructor(limit: number) {
    this.limit = limit;
  }

  /** Bytes held by every open account. */
  get used(): number {
    return this.#used;
  }

  /** Connections cut because the budget was passed. */
  get cuts(): number {
    return this.#cuts;
  }

  /** Opens an account for a connection; `cut` closes that connection. */
  open(cut: () => void): BufferAccount {
    const account = new BufferAccount(this, cut);
    this.#accounts.add(account);
    return account;
  }

  /** An account's bytes changed by `delta`; past the budget, cuts the largest holders. */
  adjust(delta: number, grew: boolean): void {
    this.#used += delta;
    if (!grew) return;
    // A scan per cut, and cuts are rare: only a process past its budget pays it.
    while (this.#used > this.limit && this.#accounts.size > 0) {
      let largest: BufferAccount | null = null;
      let worst = -1;
      for (const account of this.#accounts) {
        const blame = account.blame;
        if (
          blame > worst || (blame === worst && account.bytes >= largest!.bytes)
        ) [largest, worst] = [account, blame];
      }
      this.#cuts++;
      largest!.close();
      largest!.cut();
    }
  }

  /** Forgets an account holding `bytes` (called by {@linkcode BufferAccount.close}). */
  release(account: BufferAccount, bytes: number): void {
    if (this.#accounts.delete(account)) this.#used -= bytes;
  }
}
