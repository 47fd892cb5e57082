// deno-lint-ignore-file no-console
/**
 * A small headless-Chromium driver for tests, speaking the DevTools protocol
 * (CDP) over Deno's built-in WebSocket client; no npm package.
 *
 * ```ts ignore
 * await using browser = await launchChromium();
 * const page = await browser.newPage("http://127.0.0.1:8000/");
 * await withScreenshotOnFailure(page, "join", async () => {
 *   await page.evaluate("document.querySelector('button').click()");
 *   await page.waitFor("document.body.textContent.includes('joined')");
 * });
 * ```
 *
 * Chromium gets a fresh profile in a temporary directory and
 * `--remote-debugging-port=0`; the port is read from the profile's
 * `DevToolsActivePort`. The browser endpoint (from `/json/version`) creates
 * targets; each page has its own CDP WebSocket. Every request has a deadline
 * and rejects at once when its socket closes. Closing sends `Browser.close`,
 * waits for the process (then SIGKILLs its process group) and removes the
 * profile.
 *
 * @module
 */

import { deadline, sleep } from "./_fixtures.ts";

/** The Chromium binary: env `CHROMIUM_BIN`, else Debian's `/usr/bin/chromium`. */
export const CHROMIUM_BIN: string = Deno.env.get("CHROMIUM_BIN") ?? "/usr/bin/chromium";
/** Deadline for Chromium to write `DevToolsActivePort`, in ms. */
export const DEFAULT_LAUNCH_TIMEOUT = 20_000;
/** Deadline for one CDP request and for a page load, in ms. */
export const DEFAULT_CDP_TIMEOUT = 10_000;
/** Time Chromium gets to exit after `Browser.close` before SIGKILL, in ms. */
export const DEFAULT_EXIT_TIMEOUT = 5_000;
/** Console messages kept per page; the oldest are dropped. */
export const DEFAULT_CONSOLE_LIMIT = 1_000;
const STDERR_TAIL = 4_000;
const FLAGS = [
  ...["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"],
  ...["--disable-background-networking", "--disable-component-update", "--disable-sync"],
  ...["--disable-dev-shm-usage", "--remote-debugging-port=0", "--window-size=1280,900"],
];

/** Why Chromium cannot run here (no binary), or null when it can. */
export async function chromiumMissing(binary: string = CHROMIUM_BIN): Promise<string | null> {
  const found = await Deno.stat(binary).then((info) => info.isFile, () => false);
  if (found) return null;
  return `needs Chromium at ${binary} (apt-get install chromium, or set CHROMIUM_BIN)`;
}

type Params = Record<string, unknown>;
type Timer = ReturnType<typeof setTimeout>;
type Pending = { method: string; resolve(r: Params): void; reject(e: Error): void; timer: Timer };
type Reply = { id?: number; method?: string; params?: Params; result?: Params };

/** One CDP WebSocket: numbered requests, each with a deadline, and event listeners. */
class CdpSocket {
  readonly #ws: WebSocket;
  readonly #pending = new Map<number, Pending>();
  readonly #listeners = new Map<string, ((params: Params) => void)[]>();
  readonly #closed: Promise<void>;
  #nextId = 1;

  private constructor(readonly url: string) {
    this.#ws = new WebSocket(url);
    this.#closed = new Promise((resolve) => this.#ws.addEventListener("close", () => resolve()));
    this.#closed.then(() => this.#failAll());
    this.#ws.addEventListener("message", (event) => this.#onMessage(String(event.data)));
  }

  /** Opens a socket to `url` (a `ws://` DevTools endpoint). */
  static async open(url: string): Promise<CdpSocket> {
    const socket = new CdpSocket(url);
    const opened = new Promise<void>((resolve, reject) => {
      socket.#ws.addEventListener("open", () => resolve());
      socket.#closed.then(() => reject(new Error(`Cannot open CDP socket ${url}`)));
    });
    await deadline(opened, `CDP socket ${url} to open`, DEFAULT_CDP_TIMEOUT).catch(async (e) => {
      await socket.close();
      throw e;
    });
    return socket;
  }

  on(method: string, listener: (params: Params) => void): void {
    this.#listeners.set(method, [...this.#listeners.get(method) ?? [], listener]);
  }

  send(method: string, params: Params = {}, ms = DEFAULT_CDP_TIMEOUT): Promise<Params> {
    if (this.#ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new Error(`Cannot send CDP ${method}: socket closed`));
    }
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`Timed out after ${ms} ms waiting for CDP ${method}`));
      }, ms);
      this.#pending.set(id, { method, resolve, reject, timer });
      this.#ws.send(JSON.stringify({ id, method, params }));
    });
  }

  #onMessage(text: string): void {
    const reply = JSON.parse(text) as Reply & { error?: { message: string } };
    if (reply.id === undefined) {
      for (const listener of this.#listeners.get(reply.method!) ?? []) listener(reply.params ?? {});
      return;
    }
    const pending = this.#pending.get(reply.id);
    if (!pending) return; // Timed out already.
    this.#pending.delete(reply.id);
    clearTimeout(pending.timer);
    if (!reply.error) pending.resolve(reply.result ?? {});
    else pending.reject(new Error(`Cannot run CDP ${pending.method}: ${reply.error.message}`));
  }

  #failAll(): void {
    for (const pending of this.#pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(new Error(`Cannot finish CDP ${pending.method}: socket closed`));
    }
    this.#pending.clear();
  }

  /** Closes the socket, rejects what is pending and waits (bounded) for the close event. */
  async close(): Promise<void> {
    if (this.#ws.readyState !== WebSocket.CLOSED) this.#ws.close();
    await deadline(this.#closed, `CDP socket ${this.url} to close`, DEFAULT_CDP_TIMEOUT);
  }
}

type Details = { text?: string; exception?: { description?: string; value?: unknown } };
const describe = (d: Details) => d.exception?.description ?? String(d.exception?.value ?? d.text);

/** A tab with its own CDP socket. Made by {@linkcode Browser.newPage}. */
export class Page {
  readonly #cdp: CdpSocket;
  readonly #messages: string[] = [];

  /** Use {@linkcode Browser.newPage}. */
  constructor(cdp: CdpSocket, readonly screenshotsDir: string | undefined) {
    this.#cdp = cdp;
    cdp.on("Runtime.consoleAPICalled", (p) => {
      const args = p.args as { value?: unknown; description?: string }[];
      this.#log(`${p.type}: ${args.map((a) => a.description ?? String(a.value)).join(" ")}`);
    });
    cdp.on(
      "Runtime.exceptionThrown",
      (p) => this.#log(`uncaught: ${describe(p.exceptionDetails!)}`),
    );
  }

  #log(line: string): void {
    if (this.#messages.push(line) > DEFAULT_CONSOLE_LIMIT) this.#messages.shift();
  }

  /** Console messages (`<type>: <args>`) and uncaught exceptions so far, oldest first. */
  consoleMessages(): string[] {
    return [...this.#messages];
  }

  /** Evaluates `expression`, awaiting a promise, and returns its JSON value; rethrows page errors. */
  async evaluate<T>(expression: string, timeoutMs = DEFAULT_CDP_TIMEOUT): Promise<T> {
    const params = { expression, awaitPromise: true, returnByValue: true };
    const reply = await this.#cdp.send("Runtime.evaluate", params, timeoutMs);
    const details = reply.exceptionDetails as Details | undefined;
    if (details) throw new Error(`Cannot evaluate ${expression}: ${describe(details)}`);
    return (reply.result as { value?: T }).value as T;
  }

  /** Polls `expression` every 50 ms until it is truthy and returns it; rejects after `timeoutMs`. */
  async waitFor<T = unknown>(expression: string, timeoutMs = DEFAULT_CDP_TIMEOUT): Promise<T> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const last = await this.evaluate<T>(expression, Math.max(1, end - Date.now())).then(
        (value) => value ? { value } : `last value ${JSON.stringify(value)}`,
        (error: Error) => error.message,
      );
      if (typeof last === "object") return last.value;
      if (Date.now() >= end) {
        throw new Error(`Timed out after ${timeoutMs} ms waiting for ${expression} (${last})`);
      }
      await sleep(50);
    }
  }

  /** Saves a PNG screenshot of the page to `path`. */
  async screenshot(path: string): Promise<void> {
    const { data } = await this.#cdp.send("Page.captureScreenshot", { format: "png" });
    await Deno.writeFile(path, Uint8Array.from(atob(data as string), (c) => c.charCodeAt(0)));
  }
}

/** Running Chromiums (group id → profile), killed and removed if we exit without closing them. */
const RUNNING = new Map<number, string>();
globalThis.addEventListener("unload", () => {
  for (const [pid, profile] of RUNNING) {
    killGroup(pid);
    try {
      Deno.removeSync(profile, { recursive: true });
    } catch { /* Best effort. */ }
  }
});

function killGroup(pid: number): void {
  try {
    Deno.kill(-pid, "SIGKILL");
  } catch { /* Gone already. */ }
}

/** Chromium (leader of its own process group), its profile and a bounded tail of its stderr. */
class ChromiumProcess {
  readonly #child: Deno.ChildProcess;
  readonly #stderr: ReadableStreamDefaultReader<Uint8Array>;
  readonly #drained: Promise<void>;
  exited = false;
  tail = "";

  constructor(binary: string, args: string[], readonly profile: string) {
    const options = { args, stdin: "null", stdout: "null", stderr: "piped" } as const;
    this.#child = new Deno.Command(binary, { ...options, detached: true }).spawn();
    this.#child.status.finally(() => this.exited = true);
    RUNNING.set(this.#child.pid, profile);
    this.#stderr = this.#child.stderr.getReader();
    this.#drained = this.#drain();
  }

  get status(): Promise<Deno.CommandStatus> {
    return this.#child.status;
  }

  async #drain(): Promise<void> {
    const decoder = new TextDecoder();
    for (;;) {
      const read = await this.#stderr.read().catch(() => ({ done: true, value: undefined }));
      if (read.done || !read.value) return;
      this.tail = (this.tail + decoder.decode(read.value, { stream: true })).slice(-STDERR_TAIL);
    }
  }

  /** Waits `graceMs` for exit and EOF on stderr (then SIGKILLs the group); removes the profile. */
  async stop(graceMs: number): Promise<void> {
    const both = Promise.all([this.#child.status, this.#drained]);
    if (!await deadline(both, "Chromium to exit", graceMs).then(() => true, () => false)) {
      killGroup(this.#child.pid); // Its renderers too: they hold stderr open.
      await deadline(this.#child.status, "Chromium to exit after SIGKILL", DEFAULT_EXIT_TIMEOUT);
      await this.#stderr.cancel().catch(() => {});
      await this.#drained;
    }
    RUNNING.delete(this.#child.pid);
    await Deno.remove(this.profile, { recursive: true });
  }
}

/** A running Chromium. Made by {@linkcode launchChromium}; dispose of it to stop it. */
export class Browser implements AsyncDisposable {
  readonly #sockets: CdpSocket[] = [];
  #closing: Promise<void> | null = null;

  /** Use {@linkcode launchChromium}. */
  constructor(
    /** The DevTools port on 127.0.0.1. */
    readonly port: number,
    /** The temporary profile directory, removed by {@linkcode Browser.close}. */
    readonly profile: string,
    readonly screenshotsDir: string | undefined,
    private readonly process: ChromiumProcess,
    private readonly cdp: CdpSocket,
  ) {}

  /** Opens `url` in a new tab and resolves after its load event. */
  async newPage(url: string, timeoutMs = DEFAULT_CDP_TIMEOUT): Promise<Page> {
    const { targetId } = await this.cdp.send("Target.createTarget", { url: "about:blank" });
    const cdp = await CdpSocket.open(`ws://127.0.0.1:${this.port}/devtools/page/${targetId}`);
    this.#sockets.push(cdp);
    const page = new Page(cdp, this.screenshotsDir);
    await cdp.send("Runtime.enable");
    await cdp.send("Page.enable");
    // The load event of this navigation (by loaderId, in either order), not about:blank's.
    await cdp.send("Page.setLifecycleEventsEnabled", { enabled: true });
    let loads: Set<unknown> | null = new Set();
    cdp.on("Page.lifecycleEvent", (p) => p.name === "load" && loads?.add(p.loaderId));
    const { errorText, loaderId } = await cdp.send("Page.navigate", { url });
    if (errorText) throw new Error(`Cannot open ${url}: ${errorText}`);
    const end = Date.now() + timeoutMs;
    while (!loads.has(loaderId)) {
      if (Date.now() > end) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${url}`);
      await sleep(20);
    }
    loads = null; // Later navigations are the caller's business.
    return page;
  }

  /** Closes every CDP socket, stops Chromium and removes its profile. Safe to call twice. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    await Promise.allSettled(this.#sockets.map((socket) => socket.close()));
    await this.cdp.send("Browser.close", {}, 1_000).catch(() => {}); // May close first.
    await this.cdp.close().catch(() => {});
    await this.process.stop(DEFAULT_EXIT_TIMEOUT);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** Reads the DevTools port from `<profile>/DevToolsActivePort`, polling until the deadline. */
async function readPort(process: ChromiumProcess, timeoutMs: number): Promise<number> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    const text = await Deno.readTextFile(`${process.profile}/DevToolsActivePort`).catch(() => "");
    const [port, path] = text.split("\n");
    if (path && Number(port) > 0) return Number(port);
    if (process.exited) throw new Error(`it exited with code ${(await process.status).code}`);
    await sleep(50);
  }
  throw new Error(`no DevToolsActivePort after ${timeoutMs} ms`);
}

/** Options of {@linkcode launchChromium}. */
export interface LaunchOptions {
  /** Where {@linkcode withScreenshotOnFailure} saves. @default env PEERBASE_SCREENSHOTS, else a temp dir */
  screenshotsDir?: string;
  /** The binary to run. @default CHROMIUM_BIN */
  binary?: string;
  /** Deadline for the DevTools port, in ms. @default DEFAULT_LAUNCH_TIMEOUT */
  timeout?: number;
}

/** Starts headless Chromium with a fresh profile; rejects with its stderr tail when it cannot. */
export async function launchChromium(options: LaunchOptions = {}): Promise<Browser> {
  const profile = await Deno.makeTempDir({ prefix: "peerbase-chromium-" });
  const args = [...FLAGS, `--user-data-dir=${profile}`, "about:blank"];
  const process = new ChromiumProcess(options.binary ?? CHROMIUM_BIN, args, profile);
  let cdp: CdpSocket | null = null;
  try {
    const port = await readPort(process, options.timeout ?? DEFAULT_LAUNCH_TIMEOUT);
    const response = await fetch(`http://127.0.0.1:${port}/json/version`, {
      signal: AbortSignal.timeout(DEFAULT_CDP_TIMEOUT),
    });
    const { webSocketDebuggerUrl } = await response.json() as { webSocketDebuggerUrl: string };
    cdp = await CdpSocket.open(webSocketDebuggerUrl);
    return new Browser(port, profile, options.screenshotsDir, process, cdp);
  } catch (error) {
    await cdp?.close().catch(() => {});
    await process.stop(0);
    const stderr = process.tail.trim().slice(-1_500) || "(empty)";
    const message = `Cannot launch Chromium: ${(error as Error).message}; its stderr: ${stderr}`;
    throw new Error(message, { cause: error });
  }
}

/**
 * Runs `fn`; when it throws, saves `<dir>/<name>.png` of `page` (dir: the
 * browser's `screenshotsDir`, env `PEERBASE_SCREENSHOTS` or a new temporary
 * directory), prints its path and the page's console, and rethrows.
 */
export async function withScreenshotOnFailure<T>(
  page: Page,
  name: string,
  fn: () => Promise<T>,
): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    try {
      const dir = page.screenshotsDir ?? Deno.env.get("PEERBASE_SCREENSHOTS") ??
        await Deno.makeTempDir({ prefix: "peerbase-screenshots-" });
      await Deno.mkdir(dir, { recursive: true });
      const path = `${dir}/${name.replace(/[^\w.-]+/g, "_")}.png`;
      await page.screenshot(path);
      console.error(`Screenshot of failed '${name}': ${path}`);
    } catch (screenshotError) {
      console.error(`Cannot save a screenshot of failed '${name}': ${screenshotError}`);
    }
    const lines = page.consoleMessages();
    if (lines.length > 0) console.error(`Page console of '${name}':\n${lines.join("\n")}`);
    throw error;
  }
}
