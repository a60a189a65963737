// Wake-up history, and one wake-up with every target's state (with why a
// target waits: its agent offline, and until when), which an admin can
// cancel; both follow live notices.

import { api, coalesce, el, failed, live, notify, timeCell, wakeBadge, when } from "./common.js";
import { describeFilter } from "./wake.js";

const $ = (id) => document.getElementById(id);
const wakeupId = $("main").dataset.wakeupId;

function targetText(view) {
  if (view.target_kind === "all") return "all agents";
  if (view.target_kind === "group") return `group ${view.target[0]}`;
  if (view.target_kind === "filter") return describeFilter(view.target[0]);
  const shown = view.target.slice(0, 5).join(", ");
  return view.target.length > 5 ? `${shown} and ${view.target.length - 5} more` : shown;
}

function stateText(view) {
  if (view.cancelled_at) {
    return view.done ? `cancelled by ${view.cancelled_by} at ${clock(view.cancelled_at)}`
      : "cancelling";
  }
  if (!view.done) return "in progress";
  return view.counts.expired ? "done, some expired" : "done";
}

/** Hours and minutes of a UNIX time, in the browser's time zone. */
function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

const PENDING = new Set(["requested", "delivered"]);

/** Why a pending target waits, and until when; what its agent is doing now. */
function waitText(target, view) {
  const until = `until ${clock(view.expires_at)} (expiry)`;
  const online = target.agent_online;
  if (!PENDING.has(target.state)) return null;
  if (!online) {
    const since = target.last_seen ? ` since ${clock(target.last_seen)}` : "";
    const word = target.presence === "stale" ? "not heard from" : "offline";
    return `${word}${since} — will be delivered when it reconnects, ${until}`;
  }
  return target.state === "requested" ? `online — waiting for its acknowledgement, ${until}`
    : `delivered — waiting for its sync, ${until}`;
}

function presenceCell(target, view) {
  const wait = waitText(target, view);
  const then = target.presence_at_request && target.presence_at_request !== target.presence
    ? el("div", { class: "muted" }, `${target.presence_at_request} when requested`) : null;
  return el("td", { class: "agent-now" },
    el("span", { class: `badge presence-${target.presence ?? "unknown"}` },
      target.presence ?? "unknown"),
    wait ? el("div", { class: target.agent_online ? "muted wait" : "wait offline-hint" }, wait)
      : null,
    then);
}

// --- the list ----------------------------------------------------------------

let shown = [];

function listRow(view) {
  const link = el("a", { href: `/console/wakeups/${encodeURIComponent(view.id)}`, class: "mono" },
    view.id.slice(0, 12));
  return el("tr", {}, el("td", {}, timeCell(view.created_at)), el("td", {}, link),
    el("td", {}, view.requested_by), el("td", {}, targetText(view)),
    el("td", {}, view.counts.requested), el("td", {}, view.counts.delivered),
    el("td", {}, view.counts.satisfied), el("td", {}, view.counts.expired),
    el("td", {}, view.counts.cancelled ?? 0), el("td", {}, stateText(view)));
}

const loadList = coalesce(async () => {
  try {
    shown = await api("GET", "/api/v1/wakeups?limit=100");
  } catch (error) {
    failed("Loading the wake-ups", error);
    return;
  }
  $("wakeups").replaceChildren(...shown.map(listRow));
  $("empty").hidden = shown.length > 0;
}, 300);

// --- one wake-up -------------------------------------------------------------

let current = null;

function showOne(view) {
  current = view;
  const c = view.counts;
  $("created").textContent = when(view.created_at);
  $("by").textContent = view.requested_by;
  $("target").textContent = targetText(view);
  $("expires").textContent = when(view.expires_at);
  $("counts").textContent = `${c.requested} waiting for delivery, ${c.delivered} delivered, ` +
    `${c.satisfied} synced, ${c.expired} expired` +
    (c.cancelled ? `, ${c.cancelled} cancelled` : "");
  $("state").textContent = stateText(view);
  const pending = c.requested + c.delivered;
  $("cancel-wakeup").hidden = view.done;
  $("cancel-note").textContent = view.done ? ""
    : `${pending} target(s) still waiting; the wake-up expires at ${clock(view.expires_at)}.`;
  $("targets").replaceChildren(...view.targets.map((t) => el("tr", { "data-agent-id": t.agent_id },
    el("td", {}, el("a", { href: `/console/agents/${encodeURIComponent(t.agent_id)}` }, t.agent_id)),
    el("td", { class: "state" }, wakeBadge(t.state)), el("td", {}, timeCell(t.requested_at)),
    presenceCell(t, view),
    el("td", {}, timeCell(t.delivered_at)), el("td", {}, timeCell(t.satisfied_at)),
    el("td", {}, timeCell(t.ended_at)))));
}

// Cancel: a confirmation that names what it ends, then the request.
function askCancel() {
  if (current === null || current.done) return;
  const pending = current.counts.requested + current.counts.delivered;
  $("cancel-question").textContent = `${pending} of ${current.targets.length} target(s) are ` +
    "still waiting; they will end as cancelled and no longer count.";
  $("cancel-dialog").showModal();
}

async function cancelConfirmed() {
  const button = $("cancel-wakeup");
  button.disabled = true;
  try {
    const view = await api("POST", `/api/v1/wakeups/${encodeURIComponent(wakeupId)}/cancel`);
    showOne(view);
    notify("ok", `Wake-up cancelled: ${view.counts.cancelled} target(s) will no longer count.`);
  } catch (error) {
    failed("Cancelling the wake-up", error);
    loadOne("one");
  } finally {
    button.disabled = false;
  }
}

const loadOne = coalesce(async () => {
  try {
    showOne(await api("GET", `/api/v1/wakeups/${encodeURIComponent(wakeupId)}`));
  } catch (error) {
    failed("Loading the wake-up", error);
  }
}, 200);

function concernsOne(notice) {
  if (notice.kind === "wakeup") return notice.id === wakeupId;
  // An ack announces only the agent: re-read while a target may still move.
  return notice.kind === "agent" && current !== null && !current.done
    && current.targets.some((t) => t.agent_id === notice.id);
}

function concernsList(notice) {
  return notice.kind === "wakeup" || (notice.kind === "agent" && shown.some((v) => !v.done));
}

if (wakeupId) {
  $("cancel-wakeup").addEventListener("click", askCancel);
  $("cancel-dialog").addEventListener("close", () => {
    if ($("cancel-dialog").returnValue === "confirm") cancelConfirmed();
  });
  live((notice) => {
    if (notice.kind === "resync" || concernsOne(notice)) loadOne("one");
  });
  loadOne("one");
} else {
  live((notice) => {
    if (notice.kind === "resync" || concernsList(notice)) loadList("list");
  });
  loadList("list");
}
