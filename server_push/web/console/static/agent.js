// One agent: its status, addresses, pending wake-ups and history, kept
// current by live notices; "Wake up" and "Wake on LAN" for it alone.

import {
  api, coalesce, el, expiryCell, failed, live, notify, presenceBadge, timeCell, wakeBadge, when,
} from "./common.js";
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

function showFacts(agent) {
  $("presence").replaceChildren(presenceBadge(agent.presence),
    agent.revoked ? el("span", { class: "badge bad" }, " revoked") : "");
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
}

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

live((notice) => {
  tracker.notice(notice);
  if ((notice.kind === "agent" && notice.id === agentId) || notice.kind === "resync"
      || notice.kind === "link") {
    load("agent");
  }
});
load("agent");
