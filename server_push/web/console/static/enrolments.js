// Enrolment tokens (create, with the install command shown once; the
// machines that used each: host, fingerprint, address, state; revoke after a
// confirmation) and enrolments: the ones waiting for an admin (Accept /
// Reject) and the latest decided; follows live notices, so a new request
// shows up without a reload.

import { api, coalesce, el, failed, live, notify, timeCell, when } from "./common.js";
import { confirmAction, copyButton } from "./confirm.js";

const $ = (id) => document.getElementById(id);
const TONES = { enrolled: "good", rejected: "bad", expired: "bad", pending: "wake-delivered" };
const GROUP_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const MAX_HOURS = 720;
// Tokens whose uses the admin opened: they stay open across reloads of the list.
const opened = new Set();

/** A machine fingerprint, shortened, the whole on hover. */
function fingerprint(machine) {
  return machine ? el("span", { class: "mono", title: machine }, `${machine.slice(0, 12)}…`)
    : el("span", { class: "muted" }, "—");
}

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
    el("td", {}, fingerprint(enrolment.machine)),
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
  const left = token.max_uses === null ? "any number of machines"
    : `${Math.max(0, token.max_uses - token.uses)} more machine(s)`;
  const sure = await confirmAction({
    title: `Revoke enrolment token ${token.id.slice(0, 8)}?`,
    lines: [
      `It has enrolled ${token.uses} machine(s) and could enrol ${left} until `
        + `${when(token.expires_at)}; after this it enrols no one.`,
      "Agents it enrolled keep their identities (revoke them on their own pages).",
      "Installers still waiting for approval with it can still be accepted or rejected here.",
      "It stays listed, marked revoked. This cannot be undone.",
    ],
    confirm: `Revoke token ${token.id.slice(0, 8)}`,
  });
  if (!sure) return;
  button.disabled = true;
  try {
    await api("DELETE", `/api/v1/enrol-tokens/${encodeURIComponent(token.id)}`);
    notify("ok", `Revoked token ${token.id.slice(0, 8)}: it enrols no one any more.`);
  } catch (error) {
    failed("Revoking the token", error);
  }
  load("list");
}

function useRow(enrolment) {
  const agent = enrolment.agent_id
    ? el("a", { href: `/console/agents/${encodeURIComponent(enrolment.agent_id)}` }, enrolment.agent_id)
    : enrolment.requested_id;
  return el("tr", { "data-id": enrolment.id }, el("td", {}, timeCell(enrolment.created_at)),
    el("td", {}, el("span", { class: `badge ${TONES[enrolment.state] ?? ""}` }, enrolment.state)),
    el("td", {}, agent), el("td", {}, enrolment.hostname ?? "—"),
    el("td", {}, fingerprint(enrolment.machine)),
    el("td", { class: "mono" }, enrolment.address ?? "—"),
    el("td", {}, enrolment.decided_by ?? "—"), el("td", {}, enrolment.detail || ""));
}

/** The row under a token that lists the machines that used it. */
async function usesRow(token) {
  const row = el("tr", { class: "uses", "data-uses-of": token.id });
  const cell = el("td", { colspan: 9 }, el("span", { class: "muted" }, "Loading…"));
  row.append(cell);
  try {
    const found = await api("GET", `/api/v1/enrol-tokens/${encodeURIComponent(token.id)}`);
    const uses = found.enrolments;
    cell.replaceChildren(uses.length ? el("table", { class: "grid",
      "aria-label": `Machines that used token ${token.id.slice(0, 8)}` },
    el("thead", {}, el("tr", {}, ...["Asked", "State", "Agent", "Host name", "Machine",
      "From", "Decided by", "Detail"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, ...uses.map(useRow)))
      : el("span", { class: "muted" }, "No machine has used this token yet."));
  } catch (error) {
    cell.replaceChildren(el("span", { class: "form-error" },
      `Loading the uses failed: ${error.message}`));
  }
  return row;
}

function tokenRow(token) {
  const uses = `${token.uses} of ${token.max_uses ?? "unlimited"}`;
  const actions = [];
  const show = el("button", { type: "button", "aria-expanded": String(opened.has(token.id)),
    "aria-label": `Uses of token ${token.id.slice(0, 8)}` },
  opened.has(token.id) ? "Hide uses" : "Uses");
  show.addEventListener("click", () => {
    if (opened.has(token.id)) opened.delete(token.id);
    else opened.add(token.id);
    load("list");
  });
  actions.push(show);
  if (token.state !== "revoked") {
    const button = el("button", { type: "button", class: "danger",
      "aria-label": `Revoke token ${token.id.slice(0, 8)}` }, "Revoke…");
    button.addEventListener("click", () => revoke(token, button));
    actions.push(" ", button);
  }
  return el("tr", { "data-id": token.id }, el("td", {}, timeCell(token.created_at)),
    el("td", { class: "mono", title: `created by ${token.created_by}` }, token.id.slice(0, 8)),
    el("td", {}, el("span", { class: `badge ${token.state === "active" ? "good" : ""}` }, token.state)),
    el("td", {}, uses), el("td", {}, token.approval ? "yes" : "no"),
    el("td", {}, token.groups.join(", ") || "—"), el("td", {}, token.agent_id ?? "any"),
    el("td", {}, timeCell(token.expires_at)), el("td", {}, ...actions));
}

/** The create form's request body, or throws Error saying what to fix. */
function tokenBody(form) {
  const groups = form.groups.value.split(",").map((g) => g.trim()).filter(Boolean);
  const bad = groups.find((g) => !GROUP_NAME.test(g));
  if (bad !== undefined) {
    throw new Error(`"${bad}" is not a group name: up to 64 letters, digits, '.', '_' `
      + "or '-', starting with a letter or digit");
  }
  const uses = form.max_uses.value.trim();
  if (uses !== "" && !/^[1-9][0-9]*$/.test(uses)) {
    throw new Error(`"${uses}" is not a number of machines: a whole number from 1, or `
      + "empty for any number");
  }
  const hours = Number(form.hours.value);
  if (!form.hours.value.trim() || !(hours > 0) || hours > MAX_HOURS) {
    throw new Error(`valid for must be a number of hours above 0, up to ${MAX_HOURS}`);
  }
  const agentId = form.agent_id.value.trim();
  return { groups, max_uses: uses === "" ? null : Number(uses), ttl: hours * 3600,
    approval: form.approval.checked, ...(agentId ? { agent_id: agentId } : {}) };
}

const form = $("new-token");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = form.querySelector(".form-error");
  const button = form.querySelector("button[type=submit]");
  error.hidden = true;
  let body;
  try {
    body = tokenBody(form);
  } catch (problem) {
    error.textContent = `Not created: ${problem.message}.`;
    error.hidden = false;
    return;
  }
  button.disabled = true;
  try {
    const made = await api("POST", "/api/v1/enrol-tokens", body);
    $("made-install").value = made.install_command
      ?? "No one-line installer: set [enrol] packages_dir on the server.";
    $("made-enrol").value = made.enrol_command;
    $("copy-install").replaceChildren(made.install_command
      ? copyButton($("made-install"), "Copy installer") : "");
    $("copy-enrol").replaceChildren(copyButton($("made-enrol"), "Copy command"));
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
  const rows = [];
  for (const token of tokens) {
    rows.push(tokenRow(token));
    if (opened.has(token.id)) rows.push(await usesRow(token));
  }
  $("tokens").replaceChildren(...rows);
  $("no-tokens").hidden = tokens.length > 0;
  const recent = latest.filter((e) => e.state !== "pending");
  $("pending").replaceChildren(...pending.map(pendingRow));
  $("recent").replaceChildren(...recent.map(recentRow));
  $("no-pending").hidden = pending.length > 0;
  $("no-recent").hidden = recent.length > 0;
}, 300);

$("made-done").addEventListener("click", () => {
  $("made-install").value = "";
  $("made-enrol").value = "";
  $("made").hidden = true;
});

live((notice) => {
  if (notice.kind === "enrolment" || notice.kind === "resync") load("list");
});
load("list");
