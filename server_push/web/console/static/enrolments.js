// Enrolment tokens (create, with the install command shown once; revoke)
// and enrolments: the ones waiting for an admin (Accept / Reject) and the
// latest decided; follows live notices, so a new request shows up without a
// reload.

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

async function revoke(token, button) {
  button.disabled = true;
  try {
    await api("DELETE", `/api/v1/enrol-tokens/${encodeURIComponent(token.id)}`);
    notify("ok", `Revoked token ${token.id.slice(0, 8)}: it enrols no one any more.`);
  } catch (error) {
    failed("Revoking the token", error);
  }
  load("list");
}

function tokenRow(token) {
  const uses = `${token.uses} of ${token.max_uses ?? "unlimited"}`;
  const button = el("button", { type: "button" }, "Revoke");
  button.addEventListener("click", () => revoke(token, button));
  return el("tr", { "data-id": token.id }, el("td", {}, timeCell(token.created_at)),
    el("td", { class: "mono" }, token.id.slice(0, 8)),
    el("td", {}, el("span", { class: `badge ${token.state === "active" ? "good" : ""}` }, token.state)),
    el("td", {}, uses), el("td", {}, token.approval ? "yes" : "no"),
    el("td", {}, token.groups.join(", ") || "—"), el("td", {}, timeCell(token.expires_at)),
    el("td", {}, token.state === "revoked" ? null : button));
}

function tokenBody(form) {
  const groups = form.groups.value.split(",").map((g) => g.trim()).filter(Boolean);
  const uses = form.max_uses.value.trim();
  return { groups, max_uses: uses === "" ? null : Number(uses),
    ttl: Number(form.hours.value) * 3600, approval: form.approval.checked };
}

const form = $("new-token");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = form.querySelector(".form-error");
  const button = form.querySelector("button[type=submit]");
  error.hidden = true;
  button.disabled = true;
  try {
    const made = await api("POST", "/api/v1/enrol-tokens", tokenBody(form));
    $("made-install").value = made.install_command
      ?? "No one-line installer: set [enrol] packages_dir on the server.";
    $("made-enrol").value = made.enrol_command;
    $("made").hidden = false;
  } catch (failure) {
    error.textContent = `Not created: ${failure.message}`;
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
  load("list");
});

const load = coalesce(async () => {
  let pending;
  let latest;
  let tokens;
  try {
    [pending, latest, tokens] = await Promise.all([
      api("GET", "/api/v1/enrolments?state=pending&limit=1000"),
      api("GET", "/api/v1/enrolments?limit=100"), api("GET", "/api/v1/enrol-tokens")]);
  } catch (error) {
    failed("Loading the enrolments", error);
    return;
  }
  $("tokens").replaceChildren(...tokens.map(tokenRow));
  $("no-tokens").hidden = tokens.length > 0;
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
