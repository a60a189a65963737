// The audit log: a page of entries with the API's filters (actor, action,
// target, a time range), paged with X-Total-Count, and a CSV link that
// exports every entry the same filters match. The filters live in the
// page's address, so a filtered view can be reloaded, bookmarked and shared.

import { ApiError, el, live, when } from "./common.js";

const $ = (id) => document.getElementById(id);
const form = $("filters");
const LISTS = ["actor", "action", "target"];
let offset = 0;

/** Comma-separated values of a field, trimmed, empty ones dropped. */
function values(text) {
  return text.split(",").map((v) => v.trim()).filter(Boolean);
}

/** datetime-local text → UNIX seconds; "" → null. */
function seconds(text) {
  if (!text) return null;
  const at = new Date(text).getTime();
  if (Number.isNaN(at)) throw new Error(`"${text}" is not a date and time`);
  return at / 1000;
}

/** UNIX seconds → datetime-local text, local time. */
function localText(at) {
  const date = new Date(at * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T`
    + `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

/** The API's query for the form's filters (without paging). */
function filterQuery() {
  const query = new URLSearchParams();
  for (const name of LISTS) {
    for (const value of values(form[name].value)) query.append(name, value);
  }
  const since = seconds(form.since.value);
  const until = seconds(form.until.value);
  if (since !== null && until !== null && until <= since) {
    throw new Error("\"Until\" must be after \"From\"");
  }
  if (since !== null) query.set("since", String(since));
  if (until !== null) query.set("until", String(until));
  if (form.sort.value !== "-at") query.set("sort", form.sort.value);
  return query;
}

/** Fill the form from the page's address (a reload, a bookmark). */
function readAddress() {
  const query = new URLSearchParams(location.search);
  for (const name of LISTS) form[name].value = query.getAll(name).join(", ");
  form.since.value = query.get("since") ? localText(Number(query.get("since"))) : "";
  form.until.value = query.get("until") ? localText(Number(query.get("until"))) : "";
  form.sort.value = query.get("sort") === "at" ? "at" : "-at";
  const limit = query.get("limit");
  if ([...form.limit.options].some((option) => option.value === limit)) form.limit.value = limit;
  offset = Math.max(0, Number(query.get("offset")) || 0);
}

async function getPage(url) {
  let response;
  try {
    response = await fetch(url, { headers: { Accept: "application/json" },
      credentials: "same-origin" });
  } catch {
    throw new ApiError(0, "network", "The server did not answer. Check that it is running "
      + "and that this computer can reach it, then try again.");
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = data?.error ?? {};
    throw new ApiError(response.status, error.code ?? `http_${response.status}`,
      response.status === 401 ? "Your session has ended: reload the page and log in again."
        : error.message || `the server answered HTTP ${response.status}`);
  }
  return { entries: data, total: Number(response.headers.get("X-Total-Count")) };
}

function entryRow(entry) {
  const ref = entry.ref ? el("span", { class: "mono", title: entry.ref },
    entry.ref.length > 12 ? `${entry.ref.slice(0, 12)}…` : entry.ref) : "—";
  const targets = entry.targets.length > 5
    ? `${entry.targets.slice(0, 5).join(", ")} and ${entry.targets.length - 5} more`
    : entry.targets.join(", ");
  return el("tr", {}, el("td", {}, el("time", {
    datetime: new Date(entry.at * 1000).toISOString() }, when(entry.at))),
  el("td", {}, entry.actor), el("td", { class: "mono" }, entry.action),
  el("td", { title: entry.targets.join(", ") }, targets || "—"),
  el("td", { class: "outcome" }, entry.outcome), el("td", {}, ref));
}

function showError(text) {
  $("filter-error").textContent = text;
  $("filter-error").hidden = !text;
}

async function load() {
  let query;
  try {
    query = filterQuery();
  } catch (problem) {
    showError(`Filters not applied: ${problem.message}.`);
    return;
  }
  const limit = Number(form.limit.value);
  const csv = new URLSearchParams(query);
  csv.set("format", "csv");
  $("csv").href = `/api/v1/audit?${csv}`;
  const page = new URLSearchParams(query);
  page.set("limit", String(limit));
  page.set("offset", String(offset));
  history.replaceState(null, "", `?${page}`);
  let answer;
  try {
    answer = await getPage(`/api/v1/audit?${page}`);
  } catch (error) {
    showError(`Loading the audit log failed: ${error.message}`);
    return;
  }
  showError("");
  const { entries, total } = answer;
  $("entries").replaceChildren(...entries.map(entryRow));
  $("no-entries").hidden = entries.length > 0;
  $("shown").textContent = entries.length
    ? `Entries ${offset + 1}–${offset + entries.length} of ${total}` : `0 of ${total}`;
  $("prev").disabled = offset === 0;
  $("next").disabled = offset + entries.length >= total;
  const actors = new Set([...$("actors").options].map((o) => o.value));
  for (const entry of entries) actors.add(entry.actor);
  $("actors").replaceChildren(...[...actors].sort().map((a) => el("option", { value: a })));
}

async function loadActions() {
  try {
    const { entries } = await getPage("/api/v1/audit/actions");
    $("actions").replaceChildren(...entries.map((a) => el("option", { value: a })));
  } catch {
    // Suggestions only: typing an action still filters.
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  offset = 0;
  load();
});
form.sort.addEventListener("change", () => { offset = 0; load(); });
form.limit.addEventListener("change", () => { offset = 0; load(); });
$("clear").addEventListener("click", () => {
  form.reset();
  offset = 0;
  load();
});
$("prev").addEventListener("click", () => {
  offset = Math.max(0, offset - Number(form.limit.value));
  load();
});
$("next").addEventListener("click", () => {
  offset += Number(form.limit.value);
  load();
});

readAddress();
loadActions();
load();
live(() => {});
