// Wake-ups and Wake-on-LAN from the console: sending them through the API,
// and following a wake-up's targets as live notices arrive.

import { api, coalesce, el, failed, notify } from "./common.js";

/** Follows the wake-ups this page started. onChange(view) gets a wake-up
 *  (with its targets) each time it may have moved. */
export class WakeTracker {
  constructor(onChange) {
    this.onChange = onChange;
    this.active = new Set();   // wake-up ids with targets still pending
    this.order = new Map();    // wake-up id -> when this page started it
    this.byAgent = new Map();  // agent id -> its newest wake-up from this page
    this.newest = null;        // the wake-up this page started last
    this.refresh = coalesce((id) => this.load(id), 150);
  }

  /** Send a wake-up for body ({agents}, {group} or {all: true}); its view. */
  async start(body) {
    const view = await api("POST", "/api/v1/wakeups", body);
    this.active.add(view.id);
    this.order.set(view.id, this.order.size);
    this.newest = view.id;
    await this.load(view.id);
    return view;
  }

  /** The newest wake-up this page sent that targets agentId, or undefined. */
  latest(agentId) {
    return this.byAgent.get(agentId);
  }

  async load(id) {
    let view;
    try {
      view = await api("GET", `/api/v1/wakeups/${encodeURIComponent(id)}`);
    } catch (error) {
      failed("Reading the wake-up's progress", error);
      return;
    }
    for (const target of view.targets) {
      const current = this.byAgent.get(target.agent_id);
      if (current === undefined || this.order.get(current) <= this.order.get(id)) {
        this.byAgent.set(target.agent_id, id);
      }
    }
    if (view.done) this.active.delete(id);
    this.onChange(view);
  }

  /** Feed a live notice; wake-ups it may concern are re-read. An ack only
   *  announces the agent, so an agent notice re-reads its pending wake-up. */
  notice(notice) {
    if (notice.kind === "wakeup" && this.active.has(notice.id)) {
      this.refresh(notice.id);
    } else if (notice.kind === "agent" && this.active.has(this.byAgent.get(notice.id))) {
      this.refresh(this.byAgent.get(notice.id));
    } else if (notice.kind === "resync") {
      for (const id of this.active) this.refresh(id);
    }
  }
}

/** Words for what a wake-up request reached. */
export function describeTarget(body) {
  if (body.all) return "all agents";
  if (body.group) return `group ${body.group}`;
  if (body.filter) return describeFilter(body.filter);
  return body.agents.length === 1 ? body.agents[0] : `${body.agents.length} agents`;
}

const FILTER_WORDS = {
  q: "text", presence: "presence", group: "group", route: "route", version: "version",
  last_seen_before: "last seen before", last_seen_after: "last seen since",
  expiring_within: "identity expiring within",
};

/** Words for a wake-up's filter target (POST /api/v1/wakeups {"filter"}):
 *  "agents matching group lab, presence online". */
export function describeFilter(filter) {
  const parts = Object.entries(filter).map(([name, value]) => {
    let text = Array.isArray(value) ? value.join(" or ") : String(value);
    if (name.startsWith("last_seen")) text = new Date(value * 1000).toLocaleString();
    if (name === "expiring_within") text = `${Math.round(value / 86400)} days`;
    return `${FILTER_WORDS[name] ?? name} ${text}`;
  });
  return parts.length ? `agents matching ${parts.join(", ")}` : "all agents";
}

/** The preflight's query: agent ids as repeated, comma-separated ``agents``
 *  values of at most 512 characters each (the API's bound per value). */
function preflightQuery(ids) {
  const params = new URLSearchParams();
  let chunk = [];
  for (const id of ids) {
    if (chunk.length && [...chunk, id].join(",").length > 512) {
      params.append("agents", chunk.join(","));
      chunk = [];
    }
    chunk.push(id);
  }
  if (chunk.length) params.append("agents", chunk.join(","));
  return params;
}

function relayCell(check) {
  const ok = check.relays_online > 0;
  return el("td", {},
    el("span", { class: `badge ${ok ? "good" : "bad"}` }, ok ? `yes (${check.relays_online})` : "no"),
    ok ? ` ${check.relays.join(", ")}` : null);
}

/** The Wake-on-LAN panel: a preflight of the targets, then the request.
 *  ``confirm(count)``, if given, may stop a send (resolves false). */
export class WolPanel {
  constructor({ confirm = null } = {}) {
    this.confirm = confirm;
    this.panel = document.getElementById("wol-panel");
    this.rows = document.getElementById("wol-targets");
    this.summary = document.getElementById("wol-summary");
    this.sendButton = document.getElementById("wol-send");
    this.blocked = document.getElementById("wol-blocked");
    this.ids = [];
    this.sendButton.addEventListener("click", () => this.send());
    document.getElementById("wol-cancel").addEventListener("click", () => this.close());
  }

  /** Check the machines behind these agent ids and show what a send would do. */
  async open(ids) {
    if (!ids.length) {
      notify("error", "Select the agents of the machines to wake first (tick their boxes, " +
        "or choose a group or All).");
      return;
    }
    let checks;
    try {
      checks = await api("GET", `/api/v1/wol/preflight?${preflightQuery(ids)}`);
    } catch (error) {
      failed("Wake on LAN", error);
      return;
    }
    this.ids = ids;
    this.rows.replaceChildren(...checks.map((check) => el("tr", {},
      el("td", {}, check.agent_id ?? "—"), el("td", { class: "mono" }, check.mac ?? "unknown"),
      el("td", {}, check.subnet ?? "unknown"), relayCell(check),
      el("td", {}, check.warning ?? ""))));
    const blind = checks.filter((check) => check.relays_online === 0).length;
    this.summary.textContent = `${checks.length} machine(s) to wake. ` + (blind
      ? `${blind} have no relay online in their subnet: only the server's own addresses ` +
        "(Settings → Wake-on-LAN) reach them."
      : "Every one has a relay online in its subnet.");
    this.reason = blockedReason(checks);
    this.blocked.textContent = this.reason ?? "";
    this.blocked.hidden = this.reason === null;
    this.sendButton.disabled = this.reason !== null;
    this.panel.hidden = false;
    (this.reason === null ? this.sendButton : document.getElementById("wol-cancel")).focus();
  }

  close() {
    this.panel.hidden = true;
  }

  async send() {
    if (this.confirm && !await this.confirm(this.ids.length)) {
      notify("info", "No magic packet was sent.");
      return;
    }
    this.sendButton.disabled = true;
    try {
      const made = await api("POST", "/api/v1/wol", { agents: this.ids });
      const warnings = made.requests.map((request) => request.warning).filter(Boolean);
      notify("ok", `Magic packets requested for ${made.requests.length} machine(s); ` +
        "follow them on the Wake-on-LAN page." + (warnings.length ? ` ${warnings.join(" ")}` : ""));
      this.close();
    } catch (error) {
      failed("Wake on LAN", error);
    } finally {
      this.sendButton.disabled = this.reason !== null;
    }
  }
}

/** Why sending would put out no packet or be refused, or null when it may go.
 *  The preflight says it per machine (``packets``): an agent whose MAC is
 *  not known is refused by the request, and a machine with no relay online
 *  and no server address configured gets nothing. */
function blockedReason(checks) {
  const unknown = checks.filter((check) => check.agent_id && !check.mac);
  if (unknown.length) {
    return `Nothing can be sent: the MAC address of ${unknown.map((c) => c.agent_id).join(", ")} ` +
      "is not known (its agent has not reported an IPv4 interface with a MAC). Deselect it, " +
      "or send with its MAC through the API.";
  }
  if (checks.some((check) => check.packets)) return null;
  const first = checks.find((check) => check.warning);
  return "No magic packet would go out: " + (first ? first.warning
    : "no relay is online and the settings name no server addresses") + ".";
}
