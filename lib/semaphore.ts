/**
 * A counting semaphore for bounded concurrency.
 *
 * @module
 */

/** Limits how many holders run at once; the rest wait in FIFO order. */
export class Semaphore {
  #free: number;
  #waiters: Array<() => void> = [];

  /** Creates a semaphore with `permits` slots. */
  constructor(permits: number) {
    this.#free = permits;
  }

  /** Takes a slot if one is free at once; true when it did. */
  tryAcquire(): boolean {
    if (this.#free === 0) return false;
    this.#free--;
    return true;
  }

  /** Waits for a slot. Rejects with `signal.reason` if `signal` aborts first. */
  acquire(signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    if (this.#free > 0) {
      this.#free--;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const wake = () => {
        signal?.removeEventListener("abort", abort);
        resolve();
      };
      const abort = () => {
        const index = this.#waiters.indexOf(wake);
        if (index >= 0) this.#waiters.splice(index, 1);
        reject(signal!.reason);
      };
      signal?.addEventListener("abort", abort, { once: true });
      this.#waiters.push(wake);
    });
  }

  /** Frees a slot, waking the oldest waiter. */
  release(): void {
    const next = this.#waiters.shift();
    if (next) next();
    else this.#free++;
  }
}
