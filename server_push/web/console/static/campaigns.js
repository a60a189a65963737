// Wake campaigns: the list with the cap's pacing, the create/edit form with a
// preview of the next runs, run now, pause, delete; and one run's report.
// Both follow live notices ({kind: "campaign"}) and, while a run is under
// way, re-read the pacing every two seconds (the cap frees slots by itself).

import { api, coalesce, el, failed, live, notify, timeCell, when } from "./common.js";

const $ = (id) => document.getElementById(id);
const runId = $("main").dataset.runId;
const POLL = 2000;

/** "paced: 1,000/30 s, 2,400 queued, ETA 02:01:30", or what the cap has used. */
function pacingText(pacing) {
  if (!pacing) return "—";
  if (pacing.queued > 0) {
    const eta = new Date(pacing.eta * 1000).toLocaleTimeString();
    return `paced: ${pacing.cap}, ${pacing.queued.toLocaleString()} queued, ETA ${eta}`;
  }
  return `cap ${pacing.cap}: ${pacing.used.toLocaleString()} used in the current interval, ` +
    "nothing queued";
}

function countsText(c) {
  const parts = [`${c.synced}/${c.targets} synced`];
  if (c.queued) parts.push(`${c.queued} queued`);
  if (c.waiting) parts.push(`${c.waiting} waiting for their sync`);
  if (c.wol_sent) parts.push(`Wake-on-LAN ${c.wol_sent} (woke ${c.woke})`);
  if (c.expired) parts.push(`${c.expired} expired`);
  if (c.cancelled) parts.push(`${c.cancelled} cancelled`);
  if (c.not_sent) parts.push(`${c.not_sent} not sent`);
  return parts.join(", ");
}

function runLink(run) {
  if (!run) return el("span", { class: "muted" }, "none yet");
  const words = run.state === "running" || run.state === "pending"
    ? `running: ${countsText(run.counts)}` : `${run.state}: ${countsText(run.counts)}`;
  return el("a", { href: `/console/campaign-runs/${encodeURIComponent(run.id)}`,
    class: "run-link" }, words);
}

// --- the list and the form ----------------------------------------------------

let campaigns = [];
let editing = null;

function targetsText(targets) {
  const parts = [];
  if (targets.groups.length) parts.push(`groups ${targets.groups.join(", ")}`);
  if (targets.agents.length) {
    const shown = targets.agents.slice(0, 5).join(", ");
    parts.push(targets.agents.length > 5 ? `${shown} and ${targets.agents.length - 5} more`
      : shown);
  }
  return parts.join("; ");
}

function row(campaign) {
  const run = el("button", { type: "button", class: "run-now" }, "Run now");
  run.addEventListener("click", () => runNow(campaign, run));
  const edit = el("button", { type: "button" }, "Edit");
  edit.addEventListener("click", () => startEdit(campaign));
  const pause = el("button", { type: "button" }, campaign.enabled ? "Pause" : "Resume");
  pause.addEventListener("click", () => save(campaign.id, { ...bodyOf(campaign),
    enabled: !campaign.enabled }));
  const remove = el("button", { type: "button" }, "Delete");
  remove.addEventListener("click", () => askDelete(campaign));
  const history = el("button", { type: "button", class: "show-runs" }, "Runs");
  history.addEventListener("click", () => { showing = campaign; loadRuns("runs"); });
  const next = campaign.enabled ? (campaign.next_runs_local[0] ?? "no more runs") : "paused";
  return el("tr", { "data-campaign-id": campaign.id },
    el("td", {}, campaign.name), el("td", {}, targetsText(campaign.targets)),
    el("td", {}, campaign.description), el("td", { class: "next-run" }, next),
    el("td", { class: "latest-run" }, runLink(campaign.latest_run)),
    el("td", { class: "actions" }, run, history, edit, pause, remove));
}

const loadList = coalesce(async () => {
  try {
    campaigns = await api("GET", "/api/v1/campaigns");
  } catch (error) {
    failed("Loading the campaigns", error);
    return;
  }
  $("campaigns").replaceChildren(...campaigns.map(row));
  $("empty").hidden = campaigns.length > 0;
  loadPacing("pacing");
  loadRuns("runs");
}, 200);

// A campaign's runs, missed ones too, newest first.
let showing = null;

const loadRuns = coalesce(async () => {
  if (showing === null) return;
  let runs;
  try {
    runs = await api("GET",
      `/api/v1/campaigns/${encodeURIComponent(showing.id)}/runs?limit=20`);
  } catch (error) {
    failed(`Loading the runs of ${showing.name}`, error);
    return;
  }
  $("runs-title").textContent = `Runs of ${showing.name} (newest first)`;
  $("runs").replaceChildren(...runs.map((r) => el("tr", { "data-run-id": r.id },
    el("td", {}, el("a", { href: `/console/campaign-runs/${encodeURIComponent(r.id)}` },
      when(r.slot))),
    el("td", {}, r.trigger === "manual" ? `by hand (${r.requested_by})` : "scheduled"),
    el("td", { class: "run-state" }, r.state),
    el("td", {}, r.state === "missed" ? "—" : countsText(r.counts)),
    el("td", { class: "muted" }, r.detail))));
  $("runs-panel").hidden = false;
}, 200);

const loadPacing = coalesce(async () => {
  try {
    $("pacing").textContent = pacingText(await api("GET", "/api/v1/campaigns/pacing"));
  } catch (error) {
    $("pacing").textContent = `The cap could not be read: ${error.message}`;
  }
}, 200);

function bodyOf(campaign) {
  return { name: campaign.name, targets: campaign.targets, schedule: campaign.schedule,
    options: campaign.options, enabled: campaign.enabled };
}

function listed(text) {
  return text.split(",").map((item) => item.trim()).filter(Boolean);
}

function scheduleFromForm() {
  const kind = $("kind").value;
  return { kind, at: $("at").value.trim(), timezone: $("timezone").value.trim(),
    window: Number($("window").value) * 60,
    days: kind === "weekly" ? [...document.querySelectorAll('input[name="day"]:checked')]
      .map((box) => Number(box.value)) : [] };
}

function formBody() {
  const options = editing ? { ...editing.options } : {};
  return { name: $("name").value.trim(),
    targets: { groups: listed($("groups").value), agents: listed($("agents").value) },
    schedule: scheduleFromForm(),
    options: { ...options, wol: $("wol").checked, settle: Number($("settle").value) },
    enabled: $("enabled").checked };
}

function showKind() {
  $("days").hidden = $("kind").value !== "weekly";
}

const refreshPreview = coalesce(async () => {
  const schedule = scheduleFromForm();
  const query = new URLSearchParams({ kind: schedule.kind, at: schedule.at,
    timezone: schedule.timezone, window: String(schedule.window) });
  for (const day of schedule.days) query.append("days", String(day));
  try {
    const shown = await api("GET", `/api/v1/campaigns/preview?${query}`);
    const next = shown.next_runs_local.slice(0, 3).join(", ") || "none (it has passed)";
    $("preview").textContent = `${shown.description}. Next runs: ${next}`;
    $("preview").dataset.ok = "true";
  } catch (error) {
    $("preview").textContent = error.message;
    $("preview").dataset.ok = "false";
  }
}, 250);

function startEdit(campaign) {
  editing = campaign;
  $("form-title").textContent = `Edit ${campaign.name}`;
  $("save").textContent = "Save changes";
  $("cancel-edit").hidden = false;
  $("name").value = campaign.name;
  $("groups").value = campaign.targets.groups.join(", ");
  $("agents").value = campaign.targets.agents.join(", ");
  $("kind").value = campaign.schedule.kind;
  $("at").value = campaign.schedule.at;
  $("timezone").value = campaign.schedule.timezone;
  $("window").value = String(Math.round(campaign.schedule.window / 60));
  for (const box of document.querySelectorAll('input[name="day"]')) {
    box.checked = campaign.schedule.days.includes(Number(box.value));
  }
  $("wol").checked = Boolean(campaign.options.wol);
  $("settle").value = String(campaign.options.settle ?? 120);
  $("enabled").checked = campaign.enabled;
  showKind();
  refreshPreview("preview");
  $("name").focus();
}

function stopEdit() {
  editing = null;
  $("campaign-form").reset();
  $("timezone").value = Intl.DateTimeFormat().resolvedOptions().timeZone;
  $("form-title").textContent = "New campaign";
  $("save").textContent = "Create campaign";
  $("cancel-edit").hidden = true;
  showKind();
  refreshPreview("preview");
}

async function save(campaignId, body) {
  $("form-error").hidden = true;
  try {
    const saved = campaignId
      ? await api("PUT", `/api/v1/campaigns/${encodeURIComponent(campaignId)}`, body)
      : await api("POST", "/api/v1/campaigns", body);
    notify("ok", `Campaign ${saved.name} saved: ${saved.description}.`);
    return saved;
  } catch (error) {
    $("form-error").textContent = error.message;
    $("form-error").hidden = false;
    return null;
  } finally {
    loadList("list");
  }
}

async function submit(event) {
  event.preventDefault();
  $("save").disabled = true;
  try {
    if (await save(editing?.id, formBody())) stopEdit();
  } finally {
    $("save").disabled = false;
  }
}

async function runNow(campaign, button) {
  button.disabled = true;
  try {
    const run = await api("POST", `/api/v1/campaigns/${encodeURIComponent(campaign.id)}/run`);
    notify("ok", `Campaign ${campaign.name} started: ${run.id.slice(0, 12)}.`);
  } catch (error) {
    failed(`Running ${campaign.name}`, error);
  } finally {
    button.disabled = false;
    loadList("list");
  }
}

let deleting = null;

function askDelete(campaign) {
  deleting = campaign;
  $("delete-question").textContent = `${campaign.name} will not run again. Its runs and ` +
    "their reports are kept; a run under way stops sending.";
  $("delete-dialog").showModal();
}

async function deleteConfirmed() {
  if (deleting === null) return;
  try {
    await api("DELETE", `/api/v1/campaigns/${encodeURIComponent(deleting.id)}`);
    notify("ok", `Campaign ${deleting.name} deleted.`);
  } catch (error) {
    failed(`Deleting ${deleting.name}`, error);
  } finally {
    deleting = null;
    loadList("list");
  }
}

function startList() {
  const zones = typeof Intl.supportedValuesOf === "function"
    ? Intl.supportedValuesOf("timeZone") : ["UTC"];
  $("zones").replaceChildren(...zones.map((zone) => el("option", { value: zone })));
  $("timezone").value = Intl.DateTimeFormat().resolvedOptions().timeZone;
  $("campaign-form").addEventListener("submit", submit);
  $("cancel-edit").addEventListener("click", stopEdit);
  for (const id of ["kind", "at", "timezone", "window"]) {
    $(id).addEventListener("input", () => refreshPreview("preview"));
  }
  $("kind").addEventListener("change", showKind);
  for (const box of document.querySelectorAll('input[name="day"]')) {
    box.addEventListener("change", () => refreshPreview("preview"));
  }
  $("delete-dialog").addEventListener("close", () => {
    if ($("delete-dialog").returnValue === "confirm") deleteConfirmed();
    else deleting = null;
  });
  showKind();
  refreshPreview("preview");
  loadList("list");
  live((notice) => {
    if (notice.kind === "campaign" || notice.kind === "resync") loadList("list");
  });
  // The cap frees slots with time, without a notice.
  setInterval(() => {
    if (campaigns.some((c) => ["running", "pending"].includes(c.latest_run?.state))) {
      loadList("list");
    }
  }, POLL);
}

// --- one run ---------------------------------------------------------------------

const OUTCOMES = {
  synced: "synced", queued: "queued (paced)", wol_sent: "Wake-on-LAN sent",
  wake_queued: "waiting for the cap", wake_sending: "sending", requested: "wake-up sent",
  delivered: "delivered, waiting for its sync", expired: "expired", cancelled: "cancelled",
  not_sent: "not sent",
};

let running = false;

function showRun(report) {
  running = report.state === "running" || report.state === "pending";
  $("campaign-name").textContent = report.campaign;
  $("started").textContent = report.started_at ? when(report.started_at)
    : `waiting for the scheduler (slot ${when(report.slot)})`;
  $("trigger").textContent = report.trigger === "manual" ? `by hand, by ${report.requested_by}`
    : `scheduled for ${when(report.slot)}`;
  $("window-end").textContent = when(report.window_end);
  $("run-state").textContent = report.state;
  $("run-counts").textContent = countsText(report.counts);
  $("run-pacing").textContent = running ? pacingText(report.pacing) : "—";
  const shownTargets = report.targets.length < report.counts.targets
    ? ` (the first ${report.targets.length} of ${report.counts.targets} agents are listed ` +
      "below; the CSV has them all)" : "";
  $("run-detail").textContent = (report.detail || "—") + shownTargets;
  $("csv").href = `/api/v1/campaign-runs/${encodeURIComponent(report.id)}?format=csv`;
  $("run-targets").replaceChildren(...report.targets.map((t) => el("tr",
    { "data-agent-id": t.agent_id },
    el("td", {}, el("a", { href: `/console/agents/${encodeURIComponent(t.agent_id)}` },
      t.agent_id)),
    el("td", { class: "outcome" }, el("span", { class: `badge outcome-${t.outcome}` },
      OUTCOMES[t.outcome] ?? t.outcome)),
    el("td", {}, t.presence_at_start ?? "—"), el("td", {}, timeCell(t.wol_sent_at)),
    el("td", {}, timeCell(t.woke_at)), el("td", {}, timeCell(t.wake_sent_at)),
    el("td", {}, timeCell(t.synced_at)), el("td", { class: "muted" }, t.detail))));
}

const loadRun = coalesce(async () => {
  try {
    showRun(await api("GET", `/api/v1/campaign-runs/${encodeURIComponent(runId)}`));
  } catch (error) {
    failed("Loading the run", error);
  }
}, 200);

function startRun() {
  loadRun("run");
  live((notice) => {
    if ((notice.kind === "campaign" && notice.run === runId) || notice.kind === "resync") {
      loadRun("run");
    }
  });
  setInterval(() => { if (running) loadRun("run"); }, POLL);
}

if (runId) startRun();
else startList();
