// The agents table: filters, selection, "Wake up" and "Wake on LAN", and
// live rows. Rows change in place as notices arrive; nothing reloads the page.

import {
  api, coalesce, el, expiryCell, failed, live, notify, presenceBadge, timeCell, wakeBadge,
} from "./common.js";
import { WakeTracker, WolPanel, describeTarget } from "./wake.js";

const $ = (id) => document.getElementById(id);
const rows = $("agents");
const filters = { q: $("search"), presence: $("filter-presence"), group: $("filter-group") };
const agents = new Map();      // agent id -> its last known view
const wakeStates = new Map();  // agent id -> state in the newest wake-up of this page
const groups = new Set();
const expiringSoon = Number($("main").dataset.expiringSoon);
let selection = { kind: "agents", ids: new Set(), group: null };

const tracker = new WakeTracker(showWakeup);
const wol = new WolPanel();

function matches(agent) {
  const q = filters.q.value.trim().toLowerCase();
  return (!q || agent.id.toLowerCase().includes(q)
      || (agent.hostname ?? "").toLowerCase().includes(q))
    && (!filters.presence.value || agent.presence === filters.presence.value)
    && (!filters.group.value || agent.groups.includes(filters.group.value));
}

function isSelected(agent) {
  return selection.kind === "all"
    || (selection.kind === "group" && agent.groups.includes(selection.group))
    || selection.ids.has(agent.id);
}

function syncCell(agent) {
  if (agent.last_sync_at === null) return el("td", {}, el("span", { class: "muted" }, "never"));
  const ok = agent.last_sync_result === "ok";
  return el("td", {}, timeCell(agent.last_sync_at), " ",
    el("span", { class: `badge ${ok ? "good" : "bad"}`, title: agent.last_sync_result },
      ok ? "ok" : "failed"),
    agent.last_sync_reason ? el("span", { class: "muted" }, ` ${agent.last_sync_reason}`) : null);
}

function row(agent) {
  const box = el("input", { type: "checkbox", "aria-label": `Select ${agent.id}`,
    checked: isSelected(agent) });
  box.addEventListener("change", () => toggle(agent.id, box.checked));
  const wake = wakeStates.get(agent.id);
  return el("tr", { "data-agent-id": agent.id, "data-presence": agent.presence },
    el("td", {}, box),
    el("td", {}, el("a", { href: `/console/agents/${encodeURIComponent(agent.id)}` }, agent.id),
      agent.revoked ? el("span", { class: "badge bad" }, " revoked") : null),
    el("td", { class: "presence" }, presenceBadge(agent.presence)),
    el("td", { class: "wake" }, wake ? wakeBadge(wake) : ""),
    el("td", {}, agent.route ?? "—"),
    el("td", {}, agent.version ?? "—"),
    el("td", {}, agent.hostname ?? "—"),
    el("td", {}, timeCell(agent.last_seen)),
    syncCell(agent),
    el("td", { class: "expiry" }, expiryCell(agent, expiringSoon)),
    el("td", {}, agent.groups.join(", ")));
}

function rowOf(id) {
  return rows.querySelector(`tr[data-agent-id="${CSS.escape(id)}"]`);
}

function showCount() {
  const shown = rows.children.length;
  $("agent-count").textContent = `${shown} agent${shown === 1 ? "" : "s"} shown`;
  $("empty").hidden = shown > 0;
}

function learnGroups(list) {
  const before = groups.size;
  for (const agent of list) for (const group of agent.groups) groups.add(group);
  if (groups.size === before) return;
  for (const select of [filters.group, $("select-group")]) {
    const chosen = select.value;
    const first = select.options[0];
    select.replaceChildren(first, ...[...groups].sort().map((g) => el("option", { value: g }, g)));
    select.value = chosen;
  }
}

/** Show one agent's new view: update, add or drop its row. */
function upsert(agent) {
  agents.set(agent.id, agent);
  learnGroups([agent]);
  const old = rowOf(agent.id);
  if (!matches(agent)) {
    old?.remove();
  } else if (old) {
    old.replaceWith(row(agent));
  } else {
    const next = [...rows.children].find((tr) => tr.dataset.agentId > agent.id);
    rows.insertBefore(row(agent), next ?? null);
  }
  showCount();
}

const reload = coalesce(async () => {
  const params = new URLSearchParams();
  if (filters.q.value.trim()) params.set("q", filters.q.value.trim());
  if (filters.presence.value) params.set("presence", filters.presence.value);
  if (filters.group.value) params.set("group", filters.group.value);
  let list;
  try {
    list = await api("GET", `/api/v1/agents?${params}`);
  } catch (error) {
    failed("Loading the agents", error);
    return;
  }
  for (const agent of list) agents.set(agent.id, agent);
  learnGroups(list);
  rows.replaceChildren(...list.map(row));
  showCount();
}, 250);

const refreshAgent = coalesce(async (id) => {
  try {
    upsert(await api("GET", `/api/v1/agents/${encodeURIComponent(id)}`));
  } catch (error) {
    if (error.status === 404) {
      rowOf(id)?.remove();
      showCount();
    } else {
      failed(`Updating agent ${id}`, error);
    }
  }
}, 200);

// --- selection ---------------------------------------------------------------

function describeSelection() {
  if (selection.kind === "all") return "All agents selected";
  if (selection.kind === "group") return `Group "${selection.group}" selected`;
  const ids = [...selection.ids];
  if (!ids.length) return "Nothing selected";
  const names = ids.slice(0, 5).join(", ") + (ids.length > 5 ? ", …" : "");
  return `${ids.length} agent${ids.length === 1 ? "" : "s"} selected: ${names}`;
}

function showSelection() {
  $("selection").textContent = describeSelection();
  for (const tr of rows.children) {
    tr.querySelector("input[type=checkbox]").checked = isSelected(agents.get(tr.dataset.agentId));
  }
  if (selection.kind !== "group") $("select-group").value = "";
}

function toggle(id, checked) {
  if (selection.kind !== "agents") {
    // Ticking a box after "All" or a group edits what is ticked on screen.
    const ticked = [...rows.children].map((tr) => tr.dataset.agentId)
      .filter((agentId) => isSelected(agents.get(agentId)));
    selection = { kind: "agents", ids: new Set(ticked), group: null };
  }
  if (checked) selection.ids.add(id);
  else selection.ids.delete(id);
  showSelection();
}

function wakeBody() {
  if (selection.kind === "all") return { all: true };
  if (selection.kind === "group") return { group: selection.group };
  return selection.ids.size ? { agents: [...selection.ids] } : null;
}

async function selectedIds() {
  if (selection.kind === "agents") return [...selection.ids];
  const query = selection.kind === "group" ? `?group=${encodeURIComponent(selection.group)}` : "";
  return (await api("GET", `/api/v1/agents${query}`)).map((agent) => agent.id);
}

// --- wake-ups ----------------------------------------------------------------

function counted(view) {
  const c = view.counts;
  const total = Object.values(c).reduce((a, b) => a + b, 0);
  return { total, delivered: c.delivered + c.satisfied, satisfied: c.satisfied,
    expired: c.expired, waiting: c.requested };
}

function showProgress(view) {
  const n = counted(view);
  $("progress").hidden = false;
  $("progress-link").textContent = `Wake-up of ${describeTarget(
    view.target_kind === "agents" ? { agents: view.target }
      : view.target_kind === "group" ? { group: view.target[0] } : { all: true })}`;
  $("progress-link").href = `/console/wakeups/${encodeURIComponent(view.id)}`;
  $("count-total").textContent = n.total;
  $("count-delivered").textContent = n.delivered;
  $("count-satisfied").textContent = n.satisfied;
  $("count-expired").textContent = n.expired;
  $("progress-bar").max = Math.max(1, n.total);
  $("progress-bar").value = n.satisfied + n.expired;
  $("progress-state").textContent = view.done
    ? `Done: ${n.satisfied} of ${n.total} synced` + (n.expired ? `, ${n.expired} expired ` +
      "(offline agents did not return in time; Wake on LAN wakes powered-off machines)" : ".")
    : `In progress: ${n.waiting} not yet delivered, ${n.delivered - n.satisfied} delivered ` +
      "and syncing.";
}

function showWakeup(view) {
  for (const target of view.targets) {
    if (tracker.latest(target.agent_id) !== view.id) continue;
    wakeStates.set(target.agent_id, target.state);
    const cell = rowOf(target.agent_id)?.querySelector("td.wake");
    cell?.replaceChildren(wakeBadge(target.state));
  }
  if (view.id === tracker.newest) showProgress(view);
}

async function wake() {
  const body = wakeBody();
  if (!body) {
    notify("error", "Select agents first: tick their boxes, choose a group, or press All.");
    return;
  }
  $("wake").disabled = true;
  try {
    const view = await tracker.start(body);
    const total = counted(view).total;
    notify("ok", `Wake-up sent to ${describeTarget(body)} (${total} agent${total === 1 ? "" : "s"}).` +
      " Their rows turn \"synced\" as each one syncs.");
  } catch (error) {
    failed("Wake up", error);
  } finally {
    $("wake").disabled = false;
  }
}

async function wakeOnLan() {
  let ids;
  try {
    ids = await selectedIds();
  } catch (error) {
    failed("Wake on LAN", error);
    return;
  }
  await wol.open(ids);
}

// --- wiring ------------------------------------------------------------------

filters.q.addEventListener("input", () => reload("list"));
filters.presence.addEventListener("change", () => reload("list"));
filters.group.addEventListener("change", () => reload("list"));
$("select-group").addEventListener("change", (event) => {
  const group = event.target.value;
  selection = group ? { kind: "group", ids: new Set(), group }
    : { kind: "agents", ids: new Set(), group: null };
  showSelection();
});
$("select-all").addEventListener("click", () => {
  selection = { kind: "all", ids: new Set(), group: null };
  showSelection();
});
$("select-none").addEventListener("click", () => {
  selection = { kind: "agents", ids: new Set(), group: null };
  showSelection();
});
$("wake").addEventListener("click", wake);
$("wol").addEventListener("click", wakeOnLan);
$("progress-close").addEventListener("click", () => { $("progress").hidden = true; });

live((notice) => {
  tracker.notice(notice);
  if (notice.kind === "agent") refreshAgent(notice.id);
  else if (notice.kind === "resync" || notice.kind === "link") reload("list");
});
reload("list");
