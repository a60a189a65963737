// API tokens: create one (its secret shown once, with a copy button), list
// them with when they were made, last used and expire, and revoke one after
// a confirmation. The create form's fields map to POST /api/v1/tokens in
// tokenBody: a new property of tokens (scopes) is a field there and a line
// in tokenBody.

import { api, el, failed, live, notify, timeCell, when } from "./common.js";
import { confirmAction, copyButton } from "./confirm.js";

const $ = (id) => document.getElementById(id);
const DAY = 86400;
const TONES = { active: "good", expired: "bad", revoked: "" };
const form = $("new-token");

/** The request body of the create form, or throws Error saying what to fix. */
function tokenBody() {
  const name = form.name.value.trim();
  if (!name) throw new Error("give the token a name: who or what will use it");
  const body = { name };
  const expiry = form.expiry.value;
  if (expiry === "date") {
    if (!form.date.value) throw new Error("pick the expiry date, or another choice");
    // The end of the chosen day, local time.
    const end = new Date(`${form.date.value}T23:59:59`).getTime() / 1000;
    body.ttl = Math.round(end - Date.now() / 1000);
    if (body.ttl < 60) throw new Error(`${form.date.value} is past: pick a later date`);
  } else if (expiry !== "") {
    body.ttl = Number(expiry) * DAY;
  }
  return body;
}

form.expiry.addEventListener("change", () => {
  const custom = form.expiry.value === "date";
  $("token-date").hidden = !custom;
  $("token-date-label").hidden = !custom;
});

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = form.querySelector(".form-error");
  const button = form.querySelector("button[type=submit]");
  error.hidden = true;
  let body;
  try {
    body = tokenBody();
  } catch (problem) {
    error.textContent = `Not created: ${problem.message}.`;
    error.hidden = false;
    return;
  }
  button.disabled = true;
  try {
    const made = await api("POST", "/api/v1/tokens", body);
    showSecret(made);
    form.name.value = "";
  } catch (failure) {
    error.textContent = `Not created: ${failure.message}`;
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
  load();
});

function showSecret(made) {
  $("made-name").textContent = `"${made.name}"`;
  $("made-token").value = made.token;
  $("made-copy").replaceChildren(copyButton($("made-token"), "Copy token"));
  $("made-example").textContent =
    `curl -H "Authorization: Bearer ${made.token}" ${location.origin}/api/v1/agents`;
  $("made").hidden = false;
  $("made-token").focus();
  $("made-token").select();
}

$("made-done").addEventListener("click", () => {
  $("made-token").value = "";
  $("made-example").textContent = "";
  $("made").hidden = true;
});

async function revoke(token, button) {
  const sure = await confirmAction({
    title: `Revoke API token "${token.name}"?`,
    lines: [
      "Every request with it is refused from now on (401): integrations that use it stop "
        + "working until they get another token.",
      "It stays listed here, marked revoked. This cannot be undone.",
    ],
    confirm: `Revoke "${token.name}"`,
  });
  if (!sure) return;
  button.disabled = true;
  try {
    await api("DELETE", `/api/v1/tokens/${encodeURIComponent(token.id)}`);
    notify("ok", `API token "${token.name}" revoked: requests with it are refused.`);
  } catch (error) {
    failed(`Revoking API token "${token.name}"`, error);
  }
  load();
}

function tokenRow(token) {
  let revokeCell = null;
  if (token.state !== "revoked") {
    const button = el("button", { type: "button", class: "danger",
      "aria-label": `Revoke ${token.name}` }, "Revoke…");
    button.addEventListener("click", () => revoke(token, button));
    revokeCell = button;
  }
  const expires = token.expires_at === null ? el("span", { class: "muted" }, "never")
    : el("span", { title: when(token.expires_at) }, when(token.expires_at));
  const state = token.state === "revoked"
    ? `revoked ${when(token.revoked_at)}` : token.state;
  return el("tr", { "data-id": token.id }, el("td", {}, token.name),
    el("td", {}, timeCell(token.created_at)), el("td", {}, token.created_by),
    el("td", {}, timeCell(token.last_used)), el("td", {}, expires),
    el("td", {}, el("span", { class: `badge ${TONES[token.state] ?? ""}` }, state)),
    el("td", {}, revokeCell));
}

async function load() {
  let tokens;
  try {
    tokens = await api("GET", "/api/v1/tokens");
  } catch (error) {
    failed("Loading the API tokens", error);
    return;
  }
  // Newest first; revoked ones after the others.
  tokens.sort((a, b) => (a.state === "revoked") - (b.state === "revoked")
    || b.created_at - a.created_at);
  $("tokens").replaceChildren(...tokens.map(tokenRow));
  $("no-tokens").hidden = tokens.length > 0;
}

live((notice) => {
  if (notice.kind === "resync") load();
});
load();
