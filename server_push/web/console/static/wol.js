// Wake-on-LAN history: each target machine's request, who sent packets, and
// whether it came online before the deadline; follows live notices.

import { api, coalesce, el, failed, live, timeCell } from "./common.js";

const $ = (id) => document.getElementById(id);
const STATES = { sent: ["sent, waiting", "wake-delivered"], woke: ["woke", "good"],
  not_woken: ["did not wake", "bad"] };

function stateCell(request) {
  const [words, tone] = STATES[request.state] ?? [request.state, ""];
  return el("td", {}, el("span", { class: `badge ${tone}` }, words),
    request.warning ? el("div", { class: "muted" }, request.warning) : null);
}

function row(request) {
  const agent = request.agent_id
    ? el("a", { href: `/console/agents/${encodeURIComponent(request.agent_id)}` }, request.agent_id)
    : "—";
  return el("tr", {}, el("td", {}, timeCell(request.created_at)), el("td", {}, agent),
    el("td", { class: "mono" }, request.mac), el("td", {}, request.requested_by),
    el("td", {}, request.sends.map((send) => send.by).join(", ") || "nobody yet"),
    stateCell(request), el("td", {}, timeCell(request.woke_at)));
}

const load = coalesce(async () => {
  let list;
  try {
    list = await api("GET", "/api/v1/wol?limit=100");
  } catch (error) {
    failed("Loading the Wake-on-LAN history", error);
    return;
  }
  $("wol-history").replaceChildren(...list.map(row));
  $("empty").hidden = list.length > 0;
}, 300);

// --- subnets: their relays, and the agent kept awake in each ------------------

function keeperCell(subnet, enabled) {
  if (!enabled) return el("td", { class: "muted" }, "—");
  if (!subnet.keeper) return el("td", {}, el("span", { class: "badge bad" }, "nobody"));
  const link = el("a", { href: `/console/agents/${encodeURIComponent(subnet.keeper)}` },
    subnet.keeper);
  const [words, tone] = subnet.keeper_holding === true ? ["holding", "good"]
    : subnet.keeper_holding === false ? ["not holding", "bad"] : ["asked", ""];
  return el("td", {}, link, " ", el("span", { class: `badge ${tone}` }, words));
}

function subnetRow(subnet, enabled) {
  return el("tr", { "data-subnet": subnet.subnet },
    el("td", { class: "mono" }, subnet.subnet), el("td", {}, subnet.agents),
    el("td", {}, el("span", { class: `badge ${subnet.online ? "good" : "bad"}` },
      String(subnet.online))),
    keeperCell(subnet, enabled), el("td", { class: "warning" }, subnet.warning ?? ""));
}

const loadSubnets = coalesce(async () => {
  let answer;
  try {
    answer = await api("GET", "/api/v1/wol/subnets");
  } catch (error) {
    failed("Loading the subnets", error);
    return;
  }
  const { keep_awake: enabled, subnets } = answer;
  $("keep-awake-state").textContent = enabled
    ? "Keep-awake is on: one agent per subnet holds off sleep, so a relay stays awake."
    : "Keep-awake is off (Settings → Wake-on-LAN): a subnet has a relay only while one of " +
      "its agents happens to be awake.";
  $("subnets").replaceChildren(...subnets.map((subnet) => subnetRow(subnet, enabled)));
  $("no-subnets").hidden = subnets.length > 0;
  const blind = subnets.filter((subnet) => subnet.online === 0);
  $("subnet-warnings").hidden = blind.length === 0;
  $("subnet-warnings").textContent = blind.length
    ? `${blind.length} subnet(s) have no relay: every agent there is asleep or offline ` +
      `(${blind.map((subnet) => subnet.subnet).join(", ")}).` : "";
}, 300);

live((notice) => {
  if (notice.kind === "wol" || notice.kind === "resync") load("list");
  if (["wol_subnets", "agent", "resync"].includes(notice.kind)) loadSubnets("subnets");
});
load("list");
loadSubnets("subnets");
