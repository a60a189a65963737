// The agents page at fleet scale: one page of the API's list at a time,
// sorted and filtered by the server, with totals by presence; the filter,
// sort and page live in the URL, so reload and Back keep them.
//
// Live updates never re-read the fleet: a notice about an agent on this page
// marks the page stale, any agent notice marks the totals stale, and each is
// re-read at a bounded rate (one request per interval however many notices
// came), then only the rows whose data changed are redrawn, in one frame.
//
// "Select all matching" selects every agent the filter matches, not just this
// page; a wake-up of that selection names the filter (or the group, or all),
// and the server resolves it when it accepts the request.

import {
  api, el, expiryCell, failed, live, notify, presenceBadge, timeCell, wakeBadge,
} from "./common.js";
import { WakeTracker, WolPanel, describeTarget } from "./wake.js";

const $ = (id) => document.getElementById(id);

/** Actions on more agents than this, or on the whole fleet, ask first,
 *  naming the count. Small enough that a mis-click on a page of agents is
 *  caught, large enough that everyday wakes of a few machines are not. */
export const CONFIRM_ABOVE = 50;
// Re-read the visible page at most this often while notices about it arrive.
const PAGE_REFRESH_MS = 1000;
// Re-read the totals at most this often while agent notices arrive.
const TOTALS_REFRESH_MS = 2000;
// Wake-on-LAN requests name at most this many machines (the API's limit).
const WOL_MAX = 64;
const PAGE_SIZES = [25, 50, 100, 200, 500];
const DEFAULT_SIZE = 50;
const PRESENCES = ["online", "stale", "offline", "unknown"];
const SEEN = { "1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400 };
const number = new Intl.NumberFormat("en");

const rows = $("agents");
const expiringSoon = Number($("main").dataset.expiringSoon);
const inputs = {
  q: $("search"), presence: $("filter-presence"), group: $("filter-group"),
  route: $("filter-route"), version: $("filter-version"), seen: $("filter-seen"),
  expiring: $("filter-expiring"),
};

const shown = new Map();       // agent id -> its view, for the rows on this page
const signatures = new Map();  // agent id -> what its row was drawn from
const wakeStates = new Map();  // agent id -> state in the newest wake-up of this page
const versions = new Set();
let state = readUrl();
let total = 0;                 // agents matching the filter, from the last summary
let fleetTotal = 0;
let selection = { mode: "ids", ids: new Set() };
let firstRender = true;

const tracker = new WakeTracker(showWakeup);
const wol = new WolPanel({ confirm: (count) => mayAct(count,
  `Send magic packets to ${plural(count, "machine")}?`, `Send to ${plural(count, "machine")}`) });

function plural(count, word) {
  return `${number.format(count)} ${word}${count === 1 ? "" : "s"}`;
}

// --- the URL: filter, sort, page ---------------------------------------------

function readUrl() {
  const url = new URLSearchParams(location.search);
  const size = Number(url.get("size"));
  const page = Number(url.get("page"));
  return {
    q: url.get("q") ?? "", presence: url.get("presence") ?? "", group: url.get("group") ?? "",
    route: url.get("route") ?? "", version: url.get("version") ?? "",
    seen: url.get("seen") ?? "", expiring: url.get("expiring") === "1",
    sort: url.get("sort") || "id",
    size: PAGE_SIZES.includes(size) ? size : DEFAULT_SIZE,
    page: Number.isInteger(page) && page > 0 ? page : 1,
  };
}

/** The page's state as a URL query: only what differs from the defaults. */
function urlQuery(s) {
  const url = new URLSearchParams();
  for (const name of ["q", "presence", "group", "route", "version", "seen"]) {
    if (s[name]) url.set(name, s[name]);
  }
  if (s.expiring) url.set("expiring", "1");
  if (s.sort !== "id") url.set("sort", s.sort);
  if (s.size !== DEFAULT_SIZE) url.set("size", String(s.size));
  if (s.page !== 1) url.set("page", String(s.page));
  const text = url.toString();
  return text ? `?${text}` : location.pathname;
}

/** The API's filters for the page's state (the same for list, totals and wake). */
function filterObject(s) {
  const now = Date.now() / 1000;
  const filter = {};
  if (s.q.trim()) filter.q = s.q.trim();
  for (const name of ["presence", "group", "route", "version"]) {
    if (s[name].trim()) filter[name] = [s[name].trim()];
  }
  if (s.seen) {
    const within = SEEN[s.seen.replace(/^-/, "")];
    if (within) {
      if (s.seen.startsWith("-")) filter.last_seen_before = Math.floor(now - within);
      else filter.last_seen_after = Math.floor(now - within);
    }
  }
  if (s.expiring) filter.expiring_within = expiringSoon;
  return filter;
}

function filterQuery(filter) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(filter)) {
    for (const one of Array.isArray(value) ? value : [value]) params.append(name, String(one));
  }
  return params;
}

function filtered(s) {
  return Object.keys(filterObject(s)).length > 0;
}

/** Words for a filter: "group floor-2, presence online". */
function describeFilter(s) {
  const parts = [];
  if (s.q.trim()) parts.push(`text "${s.q.trim()}"`);
  for (const name of ["presence", "group", "route", "version"]) {
    if (s[name].trim()) parts.push(`${name} ${s[name].trim()}`);
  }
  if (s.seen) parts.push(`last seen ${inputs.seen.selectedOptions[0]?.textContent ?? s.seen}`);
  if (s.expiring) parts.push("identity expiring soon");
  return parts.join(", ");
}

/** Put the state in the form controls. */
function showState() {
  for (const name of ["q", "presence", "group", "route", "version", "seen"]) {
    const input = inputs[name];
    if (input.tagName === "SELECT" && state[name]
        && ![...input.options].some((o) => o.value === state[name])) {
      input.append(el("option", { value: state[name] }, state[name]));
    }
    input.value = state[name];
  }
  inputs.expiring.checked = state.expiring;
  $("page-size").value = String(state.size);
  const [field, descending] = state.sort.startsWith("-")
    ? [state.sort.slice(1), true] : [state.sort, false];
  for (const th of document.querySelectorAll("th[data-sort]")) {
    const active = th.dataset.sort === field;
    th.setAttribute("aria-sort", active ? (descending ? "descending" : "ascending") : "none");
  }
}

/** Change the state (a user's action): the URL first, then the data. */
function navigate(changes, { push = true } = {}) {
  const before = state;
  state = { ...state, ...changes };
  const filterChanged = JSON.stringify(filterKey(before)) !== JSON.stringify(filterKey(state));
  if (filterChanged) {
    state.page = 1;
    clearSelection(selection.mode === "matching" || selection.ids.size > 0
      ? "The filter changed: the selection was cleared." : null);
  }
  const url = urlQuery(state);
  if (push) history.pushState(null, "", url);
  else history.replaceState(null, "", url);
  showState();
  load();
}

function filterKey(s) {
  return [s.q.trim(), s.presence, s.group, s.route, s.version.trim(), s.seen, s.expiring];
}

// --- reading: the page and the totals ----------------------------------------

let loading = null;

/** Read the page and the totals for the state now; a newer call wins. */
async function load() {
  const wanted = state;
  const filter = filterObject(wanted);
  const list = filterQuery(filter);
  list.set("sort", wanted.sort);
  list.set("limit", String(wanted.size));
  list.set("offset", String((wanted.page - 1) * wanted.size));
  const ticket = {};
  loading = ticket;
  rows.closest("table").setAttribute("aria-busy", "true");
  let page;
  let summary;
  try {
    [page, summary] = await Promise.all([
      api("GET", `/api/v1/agents?${list}`),
      api("GET", `/api/v1/fleet/summary?${filterQuery(filter)}`),
    ]);
  } catch (error) {
    if (loading === ticket) failed("Loading the agents", error);
    return;
  }
  if (loading !== ticket) return;  // the admin moved on meanwhile
  const pages = Math.max(1, Math.ceil(summary.total / wanted.size));
  if (wanted.page > pages) {
    // Fewer matches than the page asked for (a bookmark, a shrunk filter).
    navigate({ page: pages }, { push: false });
    return;
  }
  pageRead = performance.now();
  totalsRead = performance.now();
  frame(() => {
    showTotals(summary);
    showPage(page);
    if (firstRender) {
      firstRender = false;
      performance.mark("agents:first-render");
      // The group names need a pass over the fleet on the server: asked for
      // after the first page is drawn, so they never delay it.
      loadGroups();
    }
    performance.mark("agents:rendered");
    rows.closest("table").setAttribute("aria-busy", "false");
  });
}

/** Re-read only the visible page (live: a row on it changed). */
async function refreshPage() {
  const filter = filterObject(state);
  const list = filterQuery(filter);
  list.set("sort", state.sort);
  list.set("limit", String(state.size));
  list.set("offset", String((state.page - 1) * state.size));
  const ticket = loading;
  try {
    const page = await api("GET", `/api/v1/agents?${list}`);
    if (loading === ticket) frame(() => showPage(page));
  } catch (error) {
    failed("Updating the agents", error);
  }
}

/** Re-read the totals (live: some agent changed). */
async function refreshTotals() {
  const ticket = loading;
  try {
    const summary = await api("GET", `/api/v1/fleet/summary?${filterQuery(filterObject(state))}`);
    if (loading !== ticket) return;
    const moved = summary.total !== total;
    frame(() => showTotals(summary));
    // Agents entered or left the filter: the page's members may have changed.
    if (moved) pageStale = true;
  } catch (error) {
    failed("Updating the totals", error);
  }
}

// Rendering waits for the next frame, and one frame draws whatever arrived.
let frameJobs = [];
function frame(job) {
  frameJobs.push(job);
  if (frameJobs.length === 1) {
    requestAnimationFrame(() => {
      const jobs = frameJobs;
      frameJobs = [];
      for (const run of jobs) run();
    });
  }
}

// --- live notices: coalesced, at a bounded rate ---------------------------------

let pageStale = false;
let totalsStale = false;
let pageRead = 0;
let totalsRead = 0;
let timer = null;
let busy = false;

function schedule() {
  if (timer !== null || busy) return;
  const now = performance.now();
  const due = Math.min(
    pageStale ? pageRead + PAGE_REFRESH_MS : Infinity,
    totalsStale ? totalsRead + TOTALS_REFRESH_MS : Infinity);
  if (due === Infinity) return;
  timer = setTimeout(flush, Math.max(0, due - now));
}

async function flush() {
  timer = null;
  busy = true;
  const now = performance.now();
  const jobs = [];
  if (pageStale && now >= pageRead + PAGE_REFRESH_MS) {
    pageStale = false;
    pageRead = now;
    jobs.push(refreshPage());
  }
  if (totalsStale && now >= totalsRead + TOTALS_REFRESH_MS) {
    totalsStale = false;
    totalsRead = now;
    jobs.push(refreshTotals());
  }
  await Promise.all(jobs);
  busy = false;
  schedule();
}

function onNotice(notice) {
  tracker.notice(notice);
  if (notice.kind === "agent") {
    totalsStale = true;
    if (shown.has(notice.id)) pageStale = true;
    schedule();
  } else if (notice.kind === "resync" || notice.kind === "link") {
    pageStale = totalsStale = true;
    loadGroups();
    schedule();
  }
}

// --- drawing -------------------------------------------------------------------

function chips(counts, onlyFilter) {
  return PRESENCES.map((name) => {
    const chip = el("button", { type: "button", class: `chip presence-${name}`,
      "data-presence": name, title: `Show only ${name} agents` },
    `${name} ${number.format(counts[name] ?? 0)}`);
    chip.addEventListener("click", () => navigate(onlyFilter ? { presence: name }
      : { presence: name, q: "", group: "", route: "", version: "", seen: "", expiring: false }));
    return chip;
  });
}

function showTotals(summary) {
  total = summary.total;
  fleetTotal = summary.fleet.total;
  $("fleet-total").textContent = plural(fleetTotal, "agent");
  $("fleet-presence").replaceChildren(...chips(summary.fleet.presence, false));
  const narrowed = filtered(state);
  $("matching-row").hidden = !narrowed;
  if (narrowed) {
    $("matching-total").textContent = plural(total, "agent");
    $("matching-presence").replaceChildren(...chips(summary.presence, true));
  }
  if (selection.mode === "matching") selection.count = total;
  showPager();
  showSelection();
}

function showPager() {
  const pages = Math.max(1, Math.ceil(total / state.size));
  const first = total === 0 ? 0 : (state.page - 1) * state.size + 1;
  const last = Math.min(total, state.page * state.size);
  $("page-of").textContent = `Page ${number.format(state.page)} of ${number.format(pages)}`;
  $("page-range").textContent = total === 0 ? "" : `Agents ${number.format(first)}–` +
    `${number.format(last)} of ${number.format(total)}`;
  $("page-first").disabled = $("page-prev").disabled = state.page <= 1;
  $("page-next").disabled = $("page-last").disabled = state.page >= pages;
  $("empty").hidden = total > 0;
}

function syncCell(agent) {
  if (agent.last_sync_at === null) return [el("span", { class: "muted" }, "never")];
  const ok = agent.last_sync_result === "ok";
  return [timeCell(agent.last_sync_at), " ",
    el("span", { class: `badge ${ok ? "good" : "bad"}`, title: agent.last_sync_result },
      ok ? "ok" : "failed"),
    agent.last_sync_reason ? el("span", { class: "muted" }, ` ${agent.last_sync_reason}`) : null];
}

/** The contents of a row's cells after the checkbox, in column order. */
function cells(agent) {
  const wake = wakeStates.get(agent.id);
  return [
    [el("a", { href: `/console/agents/${encodeURIComponent(agent.id)}` }, agent.id),
      agent.revoked ? el("span", { class: "badge bad" }, " revoked") : null],
    [presenceBadge(agent.presence)],
    [wake ? wakeBadge(wake) : ""],
    [agent.route ?? "—"],
    [agent.version ?? "—"],
    [agent.hostname ?? "—"],
    [timeCell(agent.last_seen)],
    syncCell(agent),
    [expiryCell(agent, expiringSoon)],
    [agent.groups.join(", ")],
  ];
}

const CELL_CLASSES = [null, "presence", "wake", null, null, null, null, null, "expiry", null];

function newRow(agent) {
  const box = el("input", { type: "checkbox", "aria-label": `Select ${agent.id}` });
  box.addEventListener("change", () => toggle(agent.id, box.checked));
  return el("tr", { "data-agent-id": agent.id }, el("td", {}, box),
    ...CELL_CLASSES.map((name) => el("td", { class: name })));
}

/** Draw one row's cells from ``agent``, unless it looks as drawn already. */
function drawRow(tr, agent) {
  const signature = JSON.stringify(agent) + (wakeStates.get(agent.id) ?? "");
  if (signatures.get(agent.id) === signature) return;
  signatures.set(agent.id, signature);
  tr.dataset.presence = agent.presence;
  const contents = cells(agent);
  const tds = tr.children;
  for (let i = 0; i < contents.length; i += 1) tds[i + 1].replaceChildren(...contents[i].filter((c) => c !== null));
}

/** Show a page: rows kept where the agent stays, drawn again only if changed. */
function showPage(list) {
  const before = new Map([...rows.children].map((tr) => [tr.dataset.agentId, tr]));
  const ordered = list.map((agent) => {
    const tr = before.get(agent.id) ?? newRow(agent);
    drawRow(tr, agent);
    return tr;
  });
  shown.clear();
  for (const agent of list) {
    shown.set(agent.id, agent);
    if (agent.version) versions.add(agent.version);
  }
  for (const id of before.keys()) if (!shown.has(id)) signatures.delete(id);
  const same = ordered.length === rows.children.length
    && ordered.every((tr, i) => rows.children[i] === tr);
  if (!same) rows.replaceChildren(...ordered);
  showVersions();
  showSelection();
}

function showVersions() {
  const list = $("versions");
  if (list.children.length === versions.size) return;
  list.replaceChildren(...[...versions].sort().map((v) => el("option", { value: v })));
}

/** The groups of the fleet, for the group filter (GET /api/v1/groups). */
async function loadGroups() {
  let groups;
  try {
    groups = await api("GET", "/api/v1/groups");
  } catch (error) {
    if (error.status !== 404) failed("Loading the groups", error);
    return;
  }
  const select = inputs.group;
  const chosen = state.group;
  const names = Object.keys(groups);
  if (chosen && !names.includes(chosen)) names.push(chosen);
  select.replaceChildren(select.options[0], ...names.sort().map((name) => el("option",
    { value: name }, groups[name] === undefined ? name : `${name} (${number.format(groups[name])})`)));
  select.value = chosen;
}

// --- selection -----------------------------------------------------------------

function isSelected(id) {
  return selection.mode === "matching" || selection.ids.has(id);
}

function selectedCount() {
  return selection.mode === "matching" ? selection.count : selection.ids.size;
}

function describeSelection() {
  if (selection.mode === "matching") {
    const scope = selection.filtered ? "matching agents" : "agents in the fleet";
    return `All ${number.format(selection.count)} ${scope} selected`;
  }
  const ids = [...selection.ids];
  if (!ids.length) return "Nothing selected";
  const names = ids.slice(0, 5).join(", ") + (ids.length > 5 ? ", …" : "");
  return `${plural(ids.length, "agent")} selected: ${names}`;
}

function showSelection() {
  $("selection").textContent = describeSelection();
  let ticked = 0;
  for (const tr of rows.children) {
    const on = isSelected(tr.dataset.agentId);
    tr.firstChild.firstChild.checked = on;
    tr.classList.toggle("selected", on);
    if (on) ticked += 1;
  }
  const page = $("select-page");
  page.checked = ticked > 0 && ticked === rows.children.length;
  page.indeterminate = ticked > 0 && ticked < rows.children.length;
  const button = $("select-matching");
  button.disabled = total === 0;
  button.textContent = filtered(state)
    ? `Select all ${number.format(total)} matching`
    : `Select all ${number.format(total)} agents`;
}

function clearSelection(why) {
  const had = selection.mode === "matching" || selection.ids.size > 0;
  selection = { mode: "ids", ids: new Set() };
  if (had && why) notify("info", why);
  showSelection();
}

function toggle(id, checked) {
  if (selection.mode === "matching") {
    // Unticking one after "all matching" keeps what is ticked on this page.
    selection = { mode: "ids", ids: new Set(shown.keys()) };
  }
  if (checked) selection.ids.add(id);
  else selection.ids.delete(id);
  showSelection();
}

function togglePage(checked) {
  if (selection.mode === "matching") selection = { mode: "ids", ids: new Set() };
  for (const id of shown.keys()) {
    if (checked) selection.ids.add(id);
    else selection.ids.delete(id);
  }
  showSelection();
}

/** What a wake-up of the selection names: the agents, or the filter, a group, all. */
function wakeBody() {
  if (selection.mode === "ids") {
    return selection.ids.size ? { agents: [...selection.ids] } : null;
  }
  const filter = selection.filter;
  const names = Object.keys(filter);
  if (!names.length) return { all: true };
  // A group alone is a group wake-up: one command to the group's topic.
  if (names.length === 1 && filter.group?.length === 1) return { group: filter.group[0] };
  return { filter };
}

/** How many agents a matching selection names now, as the server counts them. */
async function countNow() {
  if (selection.mode !== "matching") return selection.ids.size;
  const summary = await api("GET", `/api/v1/fleet/summary?${filterQuery(selection.filter)}`);
  selection.count = summary.total;
  fleetTotal = summary.fleet.total;
  showSelection();
  return summary.total;
}

function wholeFleet(count) {
  return (selection.mode === "matching" && !selection.filtered)
    || (fleetTotal > 0 && count >= fleetTotal);
}

// --- confirmation ----------------------------------------------------------------

/** Ask before acting; resolves true when the admin confirmed. */
function confirmAction(title, detail, action) {
  const dialog = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-detail").textContent = detail;
  $("confirm-ok").textContent = action;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

/** Whether an action on ``count`` agents may go ahead: asks (``title``,
 *  ``action`` on the button) when it is more than CONFIRM_ABOVE or the
 *  whole fleet. */
async function mayAct(count, title, action) {
  if (count <= CONFIRM_ABOVE && !wholeFleet(count)) return true;
  const scope = selection.mode === "matching"
    ? (selection.filtered ? `Every agent matching ${selection.words}.`
      : "Every agent in the fleet.")
    : "The agents ticked on the list.";
  return confirmAction(title, scope, action);
}

// --- wake-ups ----------------------------------------------------------------

function counted(view) {
  const c = view.counts;
  const all = Object.values(c).reduce((a, b) => a + b, 0);
  return { total: all, delivered: c.delivered + c.satisfied, satisfied: c.satisfied,
    expired: c.expired, waiting: c.requested };
}

function showProgress(view) {
  const n = counted(view);
  $("progress").hidden = false;
  const target = view.target_kind === "agents" ? { agents: view.target }
    : view.target_kind === "group" ? { group: view.target[0] }
      : view.target_kind === "filter" ? { filter: view.target[0] } : { all: true };
  $("progress-link").textContent = `Wake-up of ${describeTarget(target)}`;
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
    const agent = shown.get(target.agent_id);
    const tr = rows.querySelector(`tr[data-agent-id="${CSS.escape(target.agent_id)}"]`);
    if (agent && tr) drawRow(tr, agent);
  }
  if (view.id === tracker.newest) showProgress(view);
}

async function wake() {
  const body = wakeBody();
  if (!body) {
    notify("error", "Select agents first: tick their boxes, or press \"Select all\".");
    return;
  }
  $("wake").disabled = true;
  try {
    const count = await countNow();
    if (count === 0) {
      notify("error", "No agent matches the filter any more: nothing to wake.");
      return;
    }
    if (!await mayAct(count, `Wake up ${plural(count, "agent")}?`,
      `Wake up ${plural(count, "agent")}`)) {
      notify("info", "Nothing was sent.");
      return;
    }
    const view = await tracker.start(body);
    const sent = counted(view).total;
    notify("ok", `Wake-up sent to ${describeTarget(body)} (${plural(sent, "agent")}).` +
      " Their rows turn \"synced\" as each one syncs.");
  } catch (error) {
    failed("Wake up", error);
  } finally {
    $("wake").disabled = false;
  }
}

/** The ids a Wake-on-LAN of the selection names (at most WOL_MAX + 1). */
async function wolIds() {
  if (selection.mode === "ids") return [...selection.ids];
  const query = filterQuery(selection.filter);
  query.set("limit", String(WOL_MAX + 1));
  query.set("sort", "id");
  return (await api("GET", `/api/v1/agents?${query}`)).map((agent) => agent.id);
}

async function wakeOnLan() {
  let ids;
  try {
    ids = await wolIds();
  } catch (error) {
    failed("Wake on LAN", error);
    return;
  }
  if (ids.length > WOL_MAX) {
    notify("error", `Wake on LAN sends to at most ${WOL_MAX} machines per request, and the ` +
      `selection has ${plural(selectedCount(), "agent")}: narrow the filter (a group or a ` +
      "subnet's agents), or tick the machines.");
    return;
  }
  await wol.open(ids);
}

// --- wiring ------------------------------------------------------------------

// Search as the admin types, once typing pauses (SEARCH_PAUSE_MS): one request
// per pause, not per keystroke. A search pushes one history entry; the rest
// of its typing replaces it.
const SEARCH_PAUSE_MS = 200;
let typing = null;
let searching = null;
let pushSearch = false;
inputs.q.addEventListener("input", () => {
  pushSearch ||= typing === null;
  clearTimeout(typing);
  typing = setTimeout(() => { typing = null; }, 1500);
  clearTimeout(searching);
  searching = setTimeout(() => {
    navigate({ q: inputs.q.value }, { push: pushSearch });
    pushSearch = false;
  }, SEARCH_PAUSE_MS);
});
inputs.version.addEventListener("change", () => navigate({ version: inputs.version.value.trim() }));
for (const name of ["presence", "group", "route", "seen"]) {
  inputs[name].addEventListener("change", () => navigate({ [name]: inputs[name].value }));
}
inputs.expiring.addEventListener("change", () => navigate({ expiring: inputs.expiring.checked }));
$("filters").addEventListener("submit", (event) => event.preventDefault());
$("filters").addEventListener("reset", (event) => {
  event.preventDefault();
  navigate({ q: "", presence: "", group: "", route: "", version: "", seen: "", expiring: false });
});
for (const th of document.querySelectorAll("th[data-sort]")) {
  const field = th.dataset.sort;
  const button = el("button", { type: "button", class: "sort" }, ...th.childNodes);
  th.replaceChildren(button);
  button.addEventListener("click", () => {
    const sort = state.sort === field ? `-${field}` : field;
    navigate({ sort, page: 1 });
  });
}
const pages = () => Math.max(1, Math.ceil(total / state.size));
$("page-first").addEventListener("click", () => navigate({ page: 1 }));
$("page-prev").addEventListener("click", () => navigate({ page: Math.max(1, state.page - 1) }));
$("page-next").addEventListener("click", () => navigate({ page: Math.min(pages(), state.page + 1) }));
$("page-last").addEventListener("click", () => navigate({ page: pages() }));
$("page-size").addEventListener("change", (event) => {
  // Keep the first agent shown on the page that now holds it.
  const first = (state.page - 1) * state.size;
  const size = Number(event.target.value);
  navigate({ size, page: Math.floor(first / size) + 1 });
});
$("select-page").addEventListener("change", (event) => togglePage(event.target.checked));
$("select-matching").addEventListener("click", () => {
  selection = { mode: "matching", filter: filterObject(state), filtered: filtered(state),
    words: describeFilter(state), count: total };
  showSelection();
});
$("select-none").addEventListener("click", () => clearSelection(null));
$("wake").addEventListener("click", wake);
$("wol").addEventListener("click", wakeOnLan);
$("progress-close").addEventListener("click", () => { $("progress").hidden = true; });
window.addEventListener("popstate", () => {
  const before = state;
  state = readUrl();
  if (JSON.stringify(filterKey(before)) !== JSON.stringify(filterKey(state))) {
    clearSelection(null);
  }
  showState();
  load();
});

showState();
live(onNotice);
load();
