// Wake-up history, and one wake-up with every target's state; both follow
// live notices.

import { api, coalesce, el, failed, live, timeCell, wakeBadge, when } from "./common.js";

const $ = (id) => document.getElementById(id);
const wakeupId = $("main").dataset.wakeupId;

function targetText(view) {
  if (view.target_kind === "all") return "all agents";
  if (view.target_kind === "group") return `group ${view.target[0]}`;
  const shown = view.target.slice(0, 5).join(", ");
  return view.target.length > 5 ? `${shown} and ${view.target.length - 5} more` : shown;
}

function stateText(view) {
  if (!view.done) return "in progress";
  return view.counts.expired ? "done, some expired" : "done";
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
    el("td", {}, stateText(view)));
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
    `${c.satisfied} synced, ${c.expired} expired`;
  $("state").textContent = stateText(view);
  $("targets").replaceChildren(...view.targets.map((t) => el("tr", {},
    el("td", {}, el("a", { href: `/console/agents/${encodeURIComponent(t.agent_id)}` }, t.agent_id)),
    el("td", {}, wakeBadge(t.state)), el("td", {}, timeCell(t.requested_at)),
    el("td", {}, timeCell(t.delivered_at)), el("td", {}, timeCell(t.satisfied_at)),
    el("td", {}, timeCell(t.ended_at)))));
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
