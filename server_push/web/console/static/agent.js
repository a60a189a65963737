// One agent: its status, addresses, pending wake-ups and history, kept
// current by live notices; "Wake up" and "Wake on LAN" for it alone; and its
// administration: groups (edited, then saved in one request), revoke and
// retire, each confirmed with what it does. A retired agent's page still
// shows its history, marked retired, without the actions.

import {
  api, coalesce, el, expiryCell, failed, live, notify, presenceBadge, timeCell, wakeBadge, when,
} from "./common.js";
import { confirmAction } from "./confirm.js";
import { WakeTracker, WolPanel } from "./wake.js";

const $ = (id) => document.getElementById(id);
const agentId = $("main").dataset.agentId;
const path = `/api/v1/agents/${encodeURIComponent(agentId)}`;
const expiringSoon = Number($("main").dataset.expiringSoon);
const tracker = new WakeTracker(showWakeup);
const wol = new WolPanel();

function emptyRow(columns, text) {
  return el("tr", {}, el("td", { colspan: columns, class: "muted" }, text));
}

// The API's rule for a group name (NAME in server_push/web/api.py).
const GROUP_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const MAX_GROUPS = 32;
let current = null;  // the agent as last read
let savedGroups = [];
let draftGroups = [];

function showFacts(agent) {
  current = agent;
  $("presence").replaceChildren(presenceBadge(agent.presence),
    agent.revoked ? el("span", { class: "badge bad" }, " revoked") : "",
    agent.retired_at ? el("span", { class: "badge" }, " retired") : "");
  $("route").textContent = agent.route ?? "— (not connected yet)";
  $("version").textContent = agent.version ?? "—";
  $("hostname").textContent = agent.hostname ?? "—";
  $("last-seen").replaceChildren(timeCell(agent.last_seen));
  $("last-sync").replaceChildren(agent.last_sync_at === null ? "never"
    : el("span", {}, timeCell(agent.last_sync_at),
      ` · ${agent.last_sync_result ?? ""}` + (agent.last_sync_reason
        ? ` (${agent.last_sync_reason})` : "")));
  $("groups").textContent = agent.groups.length ? agent.groups.join(", ") : "none";
  $("auth").textContent = `${agent.auth}, created ${when(agent.created_at)}`;
  $("expiry").replaceChildren(expiryCell(agent, expiringSoon));
  $("interfaces").replaceChildren(...(agent.interfaces.length
    ? agent.interfaces.map((i) => el("tr", {}, el("td", { class: "mono" }, i.address),
      el("td", {}, i.prefix ?? "—"), el("td", { class: "mono" }, i.mac ?? "—")))
    : [emptyRow(3, "No addresses reported yet: the agent sends them when it comes online.")]));
  showAdmin(agent);
}

function showAdmin(agent) {
  const retired = agent.retired_at !== null && agent.retired_at !== undefined;
  $("retired-banner").hidden = !retired;
  if (retired) {
    $("retired-banner").textContent = `Retired ${when(agent.retired_at)}: its identity is `
      + "revoked and it is left out of the agent list and the totals. Its history is kept below.";
  }
  $("wake-actions").hidden = retired;
  $("admin").hidden = retired;
  $("revoke-part").hidden = agent.revoked;
  $("revoked-note").hidden = !agent.revoked;
  // Live updates do not overwrite groups the admin is editing.
  const editing = !sameGroups(draftGroups, savedGroups);
  savedGroups = [...agent.groups];
  if (!editing) draftGroups = [...agent.groups];
  showGroups();
}

function sameGroups(a, b) {
  return a.length === b.length && a.every((name, i) => name === b[i]);
}

function showGroups() {
  const chips = draftGroups.map((name) => {
    const remove = el("button", { type: "button", "aria-label": `Remove group ${name}`,
      title: `Remove group ${name}` }, "×");
    remove.addEventListener("click", () => {
      draftGroups = draftGroups.filter((g) => g !== name);
      showGroups();
    });
    return el("li", { class: savedGroups.includes(name) ? "chip" : "chip added",
      "data-group": name }, el("span", {}, name), remove);
  });
  $("group-chips").replaceChildren(...(chips.length ? chips
    : [el("li", { class: "muted" }, "In no group.")]));
  const changed = !sameGroups(draftGroups, savedGroups);
  $("groups-save").disabled = !changed;
  $("groups-undo").disabled = !changed;
  $("groups-state").replaceChildren(changed
    ? el("span", { class: "unsaved" }, "Unsaved changes") : "");
}

function groupsError(text) {
  $("groups-error").textContent = text;
  $("groups-error").hidden = !text;
}

$("group-add").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("group-new").value.trim();
  if (!name) {
    groupsError("Type a group name to add, or pick one of the suggested names.");
  } else if (!GROUP_NAME.test(name)) {
    groupsError(`"${name}" is not a group name: up to 64 letters, digits, '.', '_' or '-', `
      + "starting with a letter or digit.");
  } else if (draftGroups.includes(name)) {
    groupsError(`${agentId} is in ${name} already.`);
  } else if (draftGroups.length >= MAX_GROUPS) {
    groupsError(`An agent can be in at most ${MAX_GROUPS} groups.`);
  } else {
    groupsError("");
    draftGroups = [...draftGroups, name];
    $("group-new").value = "";
    showGroups();
  }
});

$("groups-undo").addEventListener("click", () => {
  draftGroups = [...savedGroups];
  groupsError("");
  showGroups();
});

$("groups-save").addEventListener("click", async () => {
  $("groups-save").disabled = true;
  groupsError("");
  try {
    const saved = await api("PUT", `${path}/groups`, { groups: draftGroups });
    savedGroups = [...saved.groups];
    draftGroups = [...saved.groups];
    notify("ok", `Groups of ${agentId} saved: ${saved.groups.join(", ") || "none"}.`);
    loadGroupNames();
  } catch (error) {
    groupsError(`Groups not saved: ${error.message}`);
  }
  showGroups();
  load("agent");
});

async function loadGroupNames() {
  try {
    const groups = await api("GET", "/api/v1/groups");
    $("group-names").replaceChildren(...Object.entries(groups).map(([name, members]) =>
      el("option", { value: name }, `${members} agent${members === 1 ? "" : "s"}`)));
  } catch {
    // Suggestions only: typing a name still works.
  }
}

$("revoke-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const reason = $("revoke-reason").value.trim() || "revoked by an admin";
  const sure = await confirmAction({
    title: `Revoke agent ${agentId}?`,
    lines: [
      "Its connection is closed now; the broker refuses it from then on and the server "
        + "refuses its syncs and wake-ups.",
      `Reason recorded in its history and the audit log: "${reason}".`,
      "It stays in the agent list, marked revoked, with its history. This cannot be undone: "
        + "to bring the machine back, enrol it again.",
    ],
    confirm: `Revoke ${agentId}`,
  });
  if (!sure) return;
  $("revoke").disabled = true;
  try {
    await api("POST", `${path}/revoke`, { reason });
    notify("ok", `Agent ${agentId} revoked: the broker closes its connection within seconds.`);
  } catch (error) {
    failed(`Revoking ${agentId}`, error);
  } finally {
    $("revoke").disabled = false;
  }
  load("agent");
});

$("retire").addEventListener("click", async () => {
  const sure = await confirmAction({
    title: `Retire agent ${agentId}?`,
    lines: [
      current?.revoked ? "Its identity is revoked already and stays so."
        : "Its identity is revoked: its connection is closed now and refused from then on.",
      "Its history is kept: this page still shows it, marked retired.",
      "It leaves the agent list and the totals (the API still lists it with "
        + "retired=include). This cannot be undone.",
    ],
    confirm: `Retire ${agentId}`,
  });
  if (!sure) return;
  $("retire").disabled = true;
  try {
    await api("DELETE", path);
    notify("ok", `Agent ${agentId} retired: identity revoked, history kept, out of the lists.`);
  } catch (error) {
    failed(`Retiring ${agentId}`, error);
  } finally {
    $("retire").disabled = false;
  }
  load("agent");
});

function showPending(targets) {
  $("pending").replaceChildren(...(targets.length
    ? targets.map((t) => el("tr", {}, el("td", {}, wakeBadge(t.state)),
      el("td", {}, timeCell(t.requested_at)), el("td", {}, timeCell(t.delivered_at))))
    : [emptyRow(3, "None.")]));
}

function showHistory(lines) {
  $("history").replaceChildren(...(lines.length
    ? lines.map((line) => el("tr", {}, el("td", {}, timeCell(line.at)),
      el("td", {}, line.kind), el("td", {}, line.detail)))
    : [emptyRow(3, "Nothing yet.")]));
}

const load = coalesce(async () => {
  try {
    const [agent, pending, history] = await Promise.all([
      api("GET", path), api("GET", `${path}/wakeups`), api("GET", `${path}/history?limit=200`)]);
    showFacts(agent);
    showPending(pending);
    showHistory(history);
  } catch (error) {
    failed(`Loading agent ${agentId}`, error);
  }
}, 200);

function showWakeup(view) {
  const target = view.targets.find((t) => t.agent_id === agentId);
  if (target) $("wake-status").replaceChildren(wakeBadge(target.state));
}

$("wake").addEventListener("click", async () => {
  $("wake").disabled = true;
  try {
    await tracker.start({ agents: [agentId] });
    notify("ok", `Wake-up sent to ${agentId}; the badge turns "synced" when it has synced.`);
  } catch (error) {
    failed("Wake up", error);
  } finally {
    $("wake").disabled = false;
  }
});
$("wol").addEventListener("click", () => wol.open([agentId]));

loadGroupNames();
live((notice) => {
  tracker.notice(notice);
  if ((notice.kind === "agent" && notice.id === agentId) || notice.kind === "resync"
      || notice.kind === "link") {
    load("agent");
  }
});
load("agent");
