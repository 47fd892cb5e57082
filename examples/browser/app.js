// The page's logic: join a peerbase network through a relay's WebSocket port, list peers, call
// their commands, and chat. peerbase.js is the browser bundle (`deno task bundle`), served by
// serve.ts; nothing else is loaded.
import { generateKey, Node, NodeEvent } from "./peerbase.js";

const $ = (id) => document.getElementById(id);
/** The node once joined; the test and the console can reach it as globalThis.peerbaseNode. */
let node = null;

/** Messages received or sent, newest last (the chat panel). */
function addMessage(from, text) {
  const item = document.createElement("li");
  const who = document.createElement("b");
  who.textContent = from;
  item.append(who, text);
  $("messages").append(item);
  item.scrollIntoView({ block: "nearest" });
}

function setStatus(text, kind) {
  $("status").textContent = text;
  $("status").className = `status ${kind}`;
}

/** Redraws the peer list and the call form's targets from node.peers. */
function showPeers() {
  const peers = node ? node.peers : [];
  $("peer-count").textContent = peers.length ? `(${peers.length})` : "";
  $("peers").replaceChildren(
    ...(peers.length ? peers : [null]).map((peer) => {
      const item = document.createElement("li");
      if (!peer) {
        item.className = "empty";
        item.textContent = "nobody yet";
        return item;
      }
      item.textContent = peer.name;
      const via = document.createElement("span");
      via.className = "via";
      via.textContent = `via ${peer.relays.join(", ")}`;
      item.append(via);
      return item;
    }),
  );
  const chosen = $("target").value;
  $("target").replaceChildren(...peers.map((peer) => new Option(peer.name, peer.name)));
  if (peers.some((peer) => peer.name === chosen)) $("target").value = chosen;
}

/** Commands this page serves to the rest of the network. */
const commands = {
  chat: {
    post: (_node, args, _kwargs, ctx) => {
      addMessage(ctx.caller, String(args[0] ?? ""));
      return "received";
    },
  },
  page: {
    title: () => document.title,
  },
};

async function join(event) {
  event.preventDefault();
  $("join-button").disabled = true;
  setStatus("connecting…", "off");
  try {
    node = new Node({
      name: $("name").value.trim(),
      network: $("network").value.trim(),
      networkKey: $("key").value.trim(),
      servers: $("relay").value.trim(),
      commands,
    });
    globalThis.peerbaseNode = node;
    for (const type of [NodeEvent.PEER_JOIN, NodeEvent.PEER_LEAVE]) {
      node.addEventListener(type, showPeers);
    }
    node.addEventListener(NodeEvent.RELAY_UP, () => setStatus(`joined as ${node.name}`, "on"));
    node.addEventListener(
      NodeEvent.RELAY_DOWN,
      () => setStatus("relay lost: reconnecting…", "bad"),
    );
    node.addEventListener(NodeEvent.RELAY_REFUSED, (e) => setStatus(e.detail.reason, "bad"));
    await node.start();
    setStatus(`joined as ${node.name}`, "on");
    for (const input of $("join").elements) input.disabled = true;
    $("call-button").disabled = false;
    $("say-button").disabled = false;
    showPeers();
  } catch (error) {
    setStatus(`${error.name}: ${error.message}`, "bad");
    await node?.close();
    node = null;
    $("join-button").disabled = false;
  }
}

/**
 * Back to "not connected" with the form as it was: the page came back from the back/forward cache,
 * and its node closed itself when the page was hidden (a closed node never reopens).
 */
async function reset() {
  const closed = node;
  node = globalThis.peerbaseNode = null;
  await closed?.close(); // Already closed on pagehide; closing twice is safe.
  for (const input of $("join").elements) input.disabled = false;
  $("call-button").disabled = true;
  $("say-button").disabled = true;
  showPeers();
  setStatus("not connected", "off");
}

/** Restored from the back/forward cache while joined: join again with the same name and key. */
async function restored(event) {
  if (!event.persisted || !node) return;
  await reset();
  $("join").requestSubmit();
}

async function call(event) {
  event.preventDefault();
  const result = $("result");
  result.className = "result";
  result.textContent = "calling…";
  try {
    const args = JSON.parse($("args").value || "[]");
    if (!Array.isArray(args)) throw new TypeError("Arguments must be a JSON array, e.g. [2, 3]");
    const value = await node.command($("path").value.trim(), { target: $("target").value, args });
    result.textContent = JSON.stringify(value, null, 2);
  } catch (error) {
    result.className = "result error";
    result.textContent = `${error.name}: ${error.message}`;
  }
}

async function say(event) {
  event.preventDefault();
  const text = $("say").value.trim();
  if (!text) return;
  $("say").value = "";
  addMessage(`${node.name} (you)`, text);
  // Everyone at once; a peer without chat.post answers with an error, which is fine to ignore.
  await node.command("chat.post", { target: "*", args: [text] }).catch(() => {});
}

async function prefill() {
  const config = await fetch("config.json").then((r) => r.ok ? r.json() : {}).catch(() => ({}));
  const hash = new URLSearchParams(location.hash.slice(1));
  $("relay").value = hash.get("relay") ?? config.relay ?? "";
  $("network").value = hash.get("network") ?? config.network ?? "demo";
  $("key").value = hash.get("key") ?? "";
  $("name").value = hash.get("name") ?? `tab-${Math.random().toString(36).slice(2, 6)}`;
}

$("generate").addEventListener("click", () => $("key").value = generateKey());
$("join").addEventListener("submit", join);
$("call").addEventListener("submit", call);
$("chat").addEventListener("submit", say);
// No pagehide handler needed: in a page, a node closes itself when the page goes away (its peers
// hear a bye) and retries its relays at once when the network comes back or the tab wakes. A page
// the browser restores from its back/forward cache (pageshow, persisted) needs a new node.
addEventListener("pageshow", restored);
await prefill();
document.body.dataset.ready = "true";
