// Shared by every console page: REST API calls that carry the session's CSRF
// token, feedback messages, time formatting, DOM building, and the live
// event stream. Data is always put in the page with textContent, never as HTML.

const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";

/** An API refusal, with the server's own message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** What to tell the admin about a refused request: the server's message,
 *  plus what to do where the server cannot know it. */
function explain(status, error) {
  const message = error.message || `the server answered HTTP ${status}`;
  if (status === 401) {
    return "Your session has ended: reload the page and log in again.";
  }
  if (status === 404 && error.code === "not_found") {
    return `${message}: this server does not offer that function (it may be older ` +
      "than the console); update the server.";
  }
  return message;
}

/** Call the REST API; resolves to the JSON answer, or throws ApiError. */
export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "network", "The server did not answer. Check that it is running " +
      "and that this computer can reach it, then try again.");
  }
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    const error = data?.error ?? {};
    throw new ApiError(response.status, error.code ?? `http_${response.status}`,
      explain(response.status, error));
  }
  return data;
}

/** Build an element: el("td", {class: "x"}, "text", childNode, …). */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === true) node.setAttribute(name, "");
    else if (value !== false && value !== null && value !== undefined) {
      node.setAttribute(name, String(value));
    }
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const feedback = () => document.getElementById("feedback");

/** Tell the admin how an action went: kind is "ok", "info" or "error".
 *  Errors stay until dismissed; other messages go away by themselves. */
export function notify(kind, text) {
  const close = el("button", { type: "button", class: "dismiss" }, "Dismiss");
  const item = el("p", { class: `message ${kind}`, role: kind === "error" ? "alert" : "status" },
    el("span", {}, text), close);
  close.addEventListener("click", () => item.remove());
  feedback().prepend(item);
  if (kind !== "error") setTimeout(() => item.remove(), 10000);
  return item;
}

/** Report a failed action: what failed, then the server's explanation. */
export function failed(action, error) {
  notify("error", `${action} failed: ${error.message}`);
}

/** "12 s ago", "5 min ago", … for a UNIX time in seconds. */
export function ago(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  const delta = Math.max(0, Date.now() / 1000 - seconds);
  if (delta < 60) return `${Math.round(delta)} s ago`;
  if (delta < 3600) return `${Math.round(delta / 60)} min ago`;
  if (delta < 86400) return `${Math.round(delta / 3600)} h ago`;
  return when(seconds);
}

/** A local date and time for a UNIX time in seconds. */
export function when(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  return new Date(seconds * 1000).toLocaleString();
}

/** A <time> element showing how long ago, with the exact time on hover. */
export function timeCell(seconds) {
  if (seconds === null || seconds === undefined) return el("span", { class: "muted" }, "never");
  return el("time", { datetime: new Date(seconds * 1000).toISOString(), title: when(seconds),
    "data-at": seconds }, ago(seconds));
}

// Relative times stay true without a reload.
setInterval(() => {
  for (const node of document.querySelectorAll("time[data-at]")) {
    node.textContent = ago(Number(node.dataset.at));
  }
}, 5000);

/** When an agent's identity expires, with a badge once it is within
 *  ``soon`` seconds (identity.expiring_soon) or past; renewals are shown
 *  on hover. An expiry not known yet (issued before it was recorded) says so. */
export function expiryCell(agent, soon) {
  const at = agent.identity_expires_at;
  if (at === null || at === undefined) {
    return el("span", { class: "muted", title: "learnt at the agent's next sync" }, "not known yet");
  }
  const left = at - Date.now() / 1000;
  const title = `${when(at)}; renewed ${agent.renewals} time(s)`
    + (agent.renewed_at ? `, last ${when(agent.renewed_at)}` : "");
  const text = el("span", { title }, when(at));
  if (left <= 0) return el("span", {}, text, " ", el("span", { class: "badge bad expiry" }, "expired"));
  if (left < soon) {
    const days = Math.max(1, Math.ceil(left / 86400));
    return el("span", {}, text, " ",
      el("span", { class: "badge expiry presence-stale" }, `expires in < ${days} day${days === 1 ? "" : "s"}`));
  }
  return text;
}

/** A presence badge: colour and the word, never colour alone. */
export function presenceBadge(presence) {
  return el("span", { class: `badge presence-${presence}` }, presence);
}

const WAKE_WORDS = {
  requested: "wake requested", delivered: "delivered", satisfied: "synced", expired: "expired",
  cancelled: "cancelled",
};

/** The words for a wake-up target's state. */
export function wakeWords(state) {
  return WAKE_WORDS[state] ?? state;
}

/** A wake-up target's state as a badge. */
export function wakeBadge(state) {
  return el("span", { class: `badge wake-${state}` }, wakeWords(state));
}

function showLive(state, text) {
  const node = document.getElementById("live");
  if (!node) return;
  node.dataset.state = state;
  node.textContent = text;
}

function showLink(up) {
  const banner = document.getElementById("link-banner");
  if (banner) banner.hidden = up;
}

/** Follow the server's live notices; onNotice gets each one, and a
 *  {kind: "resync"} whenever notices may have been missed. */
export function live(onNotice) {
  const source = new EventSource("/console/events");
  let opened = false;
  source.onopen = () => {
    showLive("open", "Live updates: on");
    if (opened) onNotice({ kind: "resync" });  // back after a gap: re-read everything
    opened = true;
  };
  source.onmessage = (message) => {
    const notice = JSON.parse(message.data);
    if (notice.kind === "link") showLink(notice.up);
    onNotice(notice);
  };
  source.addEventListener("closing", () => {
    showLive("closed", "Live updates: the server is restarting; they resume when it is back");
  });
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) {
      showLive("closed", "Live updates stopped: reload the page (log in again if asked)");
    } else {
      showLive("connecting", "Live updates: reconnecting…");
    }
  };
  api("GET", "/api/v1/health").then((health) => showLink(health.broker)).catch(() => {});
  return source;
}

/** Run fn at most once per delay per key, coalescing calls in between. */
export function coalesce(fn, delay = 200) {
  const timers = new Map();
  return (key, ...args) => {
    if (timers.has(key)) return;
    timers.set(key, setTimeout(() => {
      timers.delete(key);
      fn(key, ...args);
    }, delay));
  };
}
