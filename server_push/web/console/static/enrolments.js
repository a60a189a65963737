// Enrolments: the ones waiting for an admin (Accept / Reject) and the latest
// decided; follows live notices, so a new request shows up without a reload.

import { api, coalesce, el, failed, live, notify, timeCell } from "./common.js";

const $ = (id) => document.getElementById(id);
const TONES = { enrolled: "good", rejected: "bad", expired: "bad", pending: "wake-delivered" };

async function decide(enrolment, action, button) {
  const body = action === "reject" ? { reason: "rejected in the console" } : undefined;
  button.disabled = true;
  try {
    const done = await api("POST", `/api/v1/enrolments/${encodeURIComponent(enrolment.id)}/${action}`, body);
    notify("ok", action === "accept"
      ? `Accepted: agent ${done.agent_id} is enrolled; the installer picks up its certificate.`
      : `Rejected the enrolment of ${enrolment.hostname ?? enrolment.requested_id}.`);
  } catch (error) {
    failed(action === "accept" ? "Accepting the enrolment" : "Rejecting the enrolment", error);
  }
  load("list");
}

function pendingRow(enrolment) {
  const accept = el("button", { type: "button", class: "primary" }, "Accept");
  const reject = el("button", { type: "button" }, "Reject");
  accept.addEventListener("click", () => decide(enrolment, "accept", accept));
  reject.addEventListener("click", () => decide(enrolment, "reject", reject));
  return el("tr", { "data-id": enrolment.id }, el("td", {}, timeCell(enrolment.created_at)),
    el("td", {}, enrolment.requested_id), el("td", {}, enrolment.hostname ?? "—"),
    el("td", { class: "mono" }, enrolment.address ?? "—"),
    el("td", { class: "mono" }, enrolment.token_id.slice(0, 8)),
    el("td", {}, timeCell(enrolment.expires_at)), el("td", {}, accept, " ", reject));
}

function recentRow(enrolment) {
  const agent = enrolment.agent_id
    ? el("a", { href: `/console/agents/${encodeURIComponent(enrolment.agent_id)}` }, enrolment.agent_id)
    : "—";
  return el("tr", {}, el("td", {}, timeCell(enrolment.created_at)),
    el("td", {}, el("span", { class: `badge ${TONES[enrolment.state] ?? ""}` }, enrolment.state)),
    el("td", {}, agent), el("td", {}, enrolment.hostname ?? "—"),
    el("td", { class: "mono" }, enrolment.address ?? "—"),
    el("td", {}, enrolment.decided_by ?? "—"), el("td", {}, enrolment.detail || ""));
}

const load = coalesce(async () => {
  let pending;
  let latest;
  try {
    [pending, latest] = await Promise.all([
      api("GET", "/api/v1/enrolments?state=pending&limit=1000"),
      api("GET", "/api/v1/enrolments?limit=100")]);
  } catch (error) {
    failed("Loading the enrolments", error);
    return;
  }
  const recent = latest.filter((e) => e.state !== "pending");
  $("pending").replaceChildren(...pending.map(pendingRow));
  $("recent").replaceChildren(...recent.map(recentRow));
  $("no-pending").hidden = pending.length > 0;
  $("no-recent").hidden = recent.length > 0;
}, 300);

live((notice) => {
  if (notice.kind === "enrolment" || notice.kind === "resync") load("list");
});
load("list");
