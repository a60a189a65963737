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

live((notice) => {
  if (notice.kind === "wol" || notice.kind === "resync") load("list");
});
load("list");
