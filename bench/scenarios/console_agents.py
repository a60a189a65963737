"""The console's agents page at fleet scale, in Chromium (issue 20, item 1).

A server (``epns-server run`` with its embedded broker, on 127.0.0.1) whose
database holds 10,000 agents, 1,000 of them online; Playwright drives Debian's
chromium, logged in as an admin:

1. Load: the agents page opened ``--loads`` times; per load, the time from
   navigation start to the first page of rows drawn with its totals (the
   page's ``agents:first-render`` mark), DOMContentLoaded, and the JS heap
   after it (CDP ``Performance.getMetrics``).
2. Clicks: the time from a click to the redrawn page (the next
   ``agents:rendered`` mark): a column sort, the next page, a presence filter.
3. Live: ``--stream-agents`` real MQTT clients (certificates issued by the
   server; their ids sort first, so every one is on the visible page) publish
   ``--rate`` presence changes per second in all, online and offline in turn,
   for ``--stream-s`` seconds. The server turns each into a notice on the
   console's event stream. Measured in the page: notices received, the API
   requests it made, long tasks (> 50 ms, PerformanceObserver), the time
   between animation frames, CPU time in script, style and layout (CDP), and
   the heap at the end.

The 10,000 rows are written straight into the server's SQLite database (as
``tests/server/test_api_paging.py`` does), after the server made the schema;
the 20 streaming agents are created through the API. Every wait is bounded;
every process is stopped at the end, also on error.

    python -m bench console-agents                    # 10,000 agents, 1,000 online
    python -m bench console-agents --agents 2000 --online 200 --stream-s 10

Prints a markdown table and writes ``bench/results/console-agents-<stamp>.json``.
Mosquitto is not compared: the page and the server's API are the same
whichever broker carries the presence messages.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import random
import ssl
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from paho.mqtt.enums import CallbackAPIVersion
from playwright.sync_api import sync_playwright
from sqlalchemy import create_engine, insert

from bench import ROOT
from bench.brokers import free_port
from bench.processes import stop_process
from bench.results_io import command_line, fmt, machine_info, save_and_print
from bench.scenarios.end_to_end import Server, create_agents, fresh_work, start_server
from epns import pki, topics
from epns.envelope import Presence, PresenceState, encode_presence
from server_push.store.models import Agent

CHROMIUM = Path("/usr/bin/chromium")
USER, PASSWORD = "bench", "bench console password"
ROUTES = ("primary", "fallback", "websocket")
VERSIONS = ("1.4.0", "1.5.0", "2.0.0")
GROUPS = ("floor-1", "floor-2", "floor-3", "lab", "servers")
# Bounds on every wait.
PAGE_TIMEOUT_MS = 30_000
CONNECT_TIMEOUT_S = 30.0

# Counts what the page's event stream delivers, installed before its scripts run.
COUNT_NOTICES = """
(() => {
  const Original = window.EventSource;
  window.__notices = 0;
  window.EventSource = class extends Original {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", () => { window.__notices += 1; });
    }
  };
})();
"""

# Long tasks and frame intervals from now on, for the live phase.
WATCH = """
() => {
  window.__longTasks = [];
  window.__frames = [];
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) window.__longTasks.push(entry.duration);
  }).observe({ type: "longtask" });
  let last = performance.now();
  const tick = (now) => {
    window.__frames.push(now - last);
    last = now;
    if (!window.__stopFrames) requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}
"""

# Until the page's first render (its mark), however long after the load.
FIRST_RENDER = """
() => new Promise((resolve, reject) => {
  const done = () => performance.getEntriesByName("agents:first-render").length > 0;
  if (done()) return resolve(true);
  const watch = new PerformanceObserver(() => {
    if (done()) { watch.disconnect(); resolve(true); }
  });
  watch.observe({ type: "mark" });
  setTimeout(() => reject(new Error("no first render in 30 s")), 30000);
})
"""

# Click, then wait for the next redraw of the page: the milliseconds between.
CLICK_TO_RENDER = """
([selector, value]) => new Promise((resolve, reject) => {
  const start = performance.now();
  const watch = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      if (entry.name === "agents:rendered" && entry.startTime >= start) {
        watch.disconnect();
        resolve(entry.startTime - start);
      }
    }
  });
  watch.observe({ type: "mark" });
  const target = document.querySelector(selector);
  if (value === null) {
    target.click();
  } else {
    target.value = value;
    target.dispatchEvent(new Event("change"));
  }
  setTimeout(() => reject(new Error(`no redraw after ${selector}`)), 30000);
})
"""


def _fleet_rows(count: int, online: int, skip: set[str], now: float) -> list[dict[str, Any]]:
    """``count`` agents, ``online`` of them online (heard from seconds ago),
    the rest offline or never seen; ids in ``skip`` are left out."""
    chance = random.Random(20)
    rows = []
    online_ids = set(chance.sample(range(count), online))
    for n in range(count):
        name = f"pc-{n:05d}"
        if name in skip:
            continue
        stored = "online" if n in online_ids else chance.choice(("offline", "unknown"))
        seen = None if stored == "unknown" else (
            now - chance.uniform(1, 300) if stored == "online" else now - chance.uniform(1e3, 1e6))
        rows.append({
            "id": name, "auth": "certificate", "created_at": now - 86400,
            "groups": sorted(chance.sample(GROUPS, chance.randint(0, 2))),
            "presence": stored, "presence_at": seen, "last_seen": seen,
            "route": None if seen is None else chance.choice(ROUTES),
            "version": None if seen is None else chance.choice(VERSIONS),
            "hostname": f"host-{n}.example", "interfaces": [], "inventory": {},
            "renewals": 0, "identity_expires_at": now + chance.uniform(1e5, 3e7)})
    return rows


def _insert(database: Path, rows: list[dict[str, Any]]) -> float:
    """Write the rows in one transaction; the seconds it took."""
    started = time.monotonic()
    engine = create_engine(f"sqlite:///{database}")
    try:
        with engine.begin() as connection:
            connection.execute(insert(Agent), rows)
    finally:
        engine.dispose()
    return time.monotonic() - started


class PresenceStream:
    """Real MQTT clients, one per agent, that publish presence changes at a
    bounded total rate: each agent online and offline in turn, retained, on
    its own presence topic (the broker's ACL allows nothing else)."""

    def __init__(self, names: list[str], pki_dir: Path, bundles: Path, port: int) -> None:
        self.names = names
        self.sent = 0
        self.online = dict.fromkeys(names, True)
        self.clients: dict[str, mqtt.Client] = {}
        for name in names:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name,
                                 clean_session=False)
            client.tls_set(ca_certs=str(pki_dir / pki.CA_CERT),
                           certfile=str(bundles / name / "agent.crt"),
                           keyfile=str(bundles / name / "agent.key"),
                           cert_reqs=ssl.CERT_REQUIRED)
            client.will_set(topics.agent_presence(name), self._payload(False), qos=1,
                            retain=True)
            client.connect("127.0.0.1", port, keepalive=60)
            client.loop_start()
            self.clients[name] = client
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while not all(c.is_connected() for c in self.clients.values()):
            if time.monotonic() > deadline:
                raise RuntimeError("the streaming agents did not connect")
            time.sleep(0.05)
        for name in names:
            self._publish(name, True)

    @staticmethod
    def _payload(online: bool) -> bytes:
        state = PresenceState.ONLINE if online else PresenceState.OFFLINE
        return encode_presence(Presence(state, at=time.time(), route="primary",
                                        version="2.0.0", hostname=None))

    def _publish(self, name: str, online: bool) -> None:
        info = self.clients[name].publish(topics.agent_presence(name), self._payload(online),
                                          qos=1, retain=True)
        info.wait_for_publish(timeout=5)
        self.online[name] = online
        self.sent += 1

    def run(self, rate: float, seconds: float) -> float:
        """Flip agents, round robin, at ``rate`` per second for ``seconds``;
        returns the seconds it took."""
        started = time.monotonic()
        count = int(rate * seconds)
        for n in range(count):
            wait = started + n / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            name = self.names[n % len(self.names)]
            self._publish(name, not self.online[name])
        return time.monotonic() - started

    def close(self) -> None:
        for client in self.clients.values():
            client.disconnect()
            client.loop_stop()


def _spki_pin(cert: Path) -> str:
    key = x509.load_pem_x509_certificate(cert.read_bytes()).public_key()
    der = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def _metrics(cdp: Any) -> dict[str, float]:
    return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}


def _quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]

    return {"p50": round(pick(0.5), 1), "p99": round(pick(0.99), 1),
            "max": round(ordered[-1], 1)}


DRAIN_QUIET_S = 10.0
DRAIN_MAX_S = 120.0


def _drain(page: Any, wanted: int) -> float | None:
    """Wait until the page has received ``wanted`` notices in all (bounded);
    the seconds from now until its last one arrived, None if none came."""
    started = time.monotonic()
    seen, last = page.evaluate("window.__notices"), None
    while seen < wanted and time.monotonic() - started < DRAIN_MAX_S:
        page.wait_for_timeout(250)
        now = page.evaluate("window.__notices")
        if now != seen:
            seen, last = now, time.monotonic() - started
        elif time.monotonic() - started - (last or 0.0) > DRAIN_QUIET_S:
            break
    return None if last is None else round(last, 1)


def measure(server: Server, stream: PresenceStream, args: argparse.Namespace) -> dict[str, Any]:
    """Drive Chromium through the three phases; the figures."""
    result: dict[str, Any] = {}
    pin = _spki_pin(Path(server.env["EPNS_SERVER_HTTP__CERT"]))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update",
            "--enable-precise-memory-info", f"--ignore-certificate-errors-spki-list={pin}"])
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.add_init_script(COUNT_NOTICES)
            page = context.new_page()
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            page.goto(f"{server.url}/console/login")
            page.fill("#username", USER)
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url("**/console/agents")
            cdp = context.new_cdp_session(page)
            cdp.send("Performance.enable")
            loads = []
            for _ in range(args.loads):
                page.goto(f"{server.url}/console/agents")
                # A predicate polled by wait_for_function would be eval'd: the CSP refuses it.
                page.evaluate(FIRST_RENDER)
                timing = page.evaluate("""() => {
                  const nav = performance.getEntriesByType("navigation")[0];
                  return { first_render_ms: performance.getEntriesByName(
                             "agents:first-render")[0].startTime,
                           dom_content_loaded_ms: nav.domContentLoadedEventEnd,
                           rows: document.querySelectorAll("#agents tr").length,
                           totals: document.getElementById("fleet-total").textContent };
                }""")
                timing["js_heap_used_mib"] = round(_metrics(cdp)["JSHeapUsedSize"] / 2**20, 2)
                loads.append(timing)
            result["loads"] = loads
            result["first_render_ms"] = statistics.median(x["first_render_ms"] for x in loads)
            result["clicks_ms"] = {
                "sort by last seen": page.evaluate(
                    CLICK_TO_RENDER, ['th[data-sort="last_seen"] button', None]),
                "next page": page.evaluate(CLICK_TO_RENDER, ["#page-next", None]),
                "presence filter: online": page.evaluate(
                    CLICK_TO_RENDER, ["#filter-presence", "online"]),
                "back to every agent, by id": page.evaluate(
                    CLICK_TO_RENDER, ["#clear-filters", None]),
            }
            page.evaluate(CLICK_TO_RENDER, ['th[data-sort="id"] button', None])
            result["visible_stream_agents"] = page.evaluate(
                "names => names.filter(n => document.querySelector("
                "`tr[data-agent-id='${n}']`)).length", stream.names)

            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url) if "/api/v1/" in r.url else None)
            page.evaluate(WATCH)
            before = _metrics(cdp)
            notices_before = page.evaluate("window.__notices")
            sent_before = stream.sent
            load_before = os.getloadavg()[0]
            started = time.monotonic()
            took = stream.run(args.rate, args.stream_s)
            # The server may turn the changes into notices later than they were
            # sent: the window lasts until every one reached the page (or none
            # came for DRAIN_QUIET_S, at most DRAIN_MAX_S), then the last
            # coalesced reads and frames.
            drained = _drain(page, notices_before + stream.sent - sent_before)
            page.wait_for_timeout(3000)
            window_s = time.monotonic() - started
            after = _metrics(cdp)
            watched = page.evaluate("""() => { window.__stopFrames = true;
              return { long: window.__longTasks, frames: window.__frames,
                       notices: window.__notices }; }""")
            busy = {name: round((after[key] - before[key]) * 1000, 1) for name, key in (
                ("script_ms", "ScriptDuration"), ("style_ms", "RecalcStyleDuration"),
                ("layout_ms", "LayoutDuration"), ("task_ms", "TaskDuration"))}
            changes = stream.sent - sent_before
            result["live"] = {
                "presence_changes_sent": changes, "stream_s": round(took, 1),
                "window_s": round(window_s, 1), "last_notice_after_s": drained,
                "notices_received": watched["notices"] - notices_before,
                "api_requests": len(requests),
                "list_requests": sum("/api/v1/agents?" in url for url in requests),
                "summary_requests": sum("/fleet/summary" in url for url in requests),
                "long_tasks": len(watched["long"]),
                "long_task_ms": _quantiles(watched["long"]),
                "frame_interval_ms": _quantiles(watched["frames"]),
                "frames_over_50ms": sum(f > 50 for f in watched["frames"]),
                "busy": busy,
                "main_thread_busy_pct": round(busy["task_ms"] / (window_s * 1000) * 100, 1),
                "task_ms_per_change": round(busy["task_ms"] / max(1, changes), 2),
                "js_heap_used_mib": round(after["JSHeapUsedSize"] / 2**20, 2),
                "rows": page.evaluate("document.querySelectorAll('#agents tr').length"),
                # The machine's 1-minute load average before and after: other
                # work on it shows up as long tasks and late frames here.
                "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
            }
        finally:
            browser.close()
    return result


def table(data: dict[str, Any]) -> str:
    """The figures as markdown."""
    r = data["result"]
    live = r["live"]
    lines = [
        "| figure | value |", "|---|---|",
        f"| agents registered / online | {fmt(data['settings']['agents'])} / "
        f"{fmt(data['settings']['online'])} |",
        f"| first page (50 rows) drawn with its totals, from navigation start, median of "
        f"{len(r['loads'])} loads | {fmt(r['first_render_ms'])} ms "
        f"(each: {', '.join(fmt(x['first_render_ms']) for x in r['loads'])}) |",
        f"| DOMContentLoaded | {', '.join(fmt(x['dom_content_loaded_ms']) for x in r['loads'])}"
        " ms |",
        f"| JS heap after load | {', '.join(fmt(x['js_heap_used_mib'], 2) for x in r['loads'])}"
        " MiB |",
    ]
    lines += [f"| click to redrawn page: {name} | {fmt(ms)} ms |"
              for name, ms in r["clicks_ms"].items()]
    lines += [
        f"| live: presence changes sent (all on the visible page: "
        f"{r['visible_stream_agents']} agents) | {fmt(live['presence_changes_sent'])} in "
        f"{fmt(live['stream_s'])} s |",
        f"| live: notices the page received (the last {fmt(live['last_notice_after_s'])} s "
        f"after the stream ended; window {fmt(live['window_s'])} s) | "
        f"{fmt(live['notices_received'])} |",
        f"| live: API requests the page made (list pages / totals) | "
        f"{fmt(live['api_requests'])} ({fmt(live['list_requests'])} / "
        f"{fmt(live['summary_requests'])}) |",
        f"| live: long tasks (> 50 ms) | {fmt(live['long_tasks'])}, max "
        f"{fmt(live['long_task_ms']['max'])} ms |",
        f"| live: frame interval p50 / p99 / max | {fmt(live['frame_interval_ms']['p50'])} / "
        f"{fmt(live['frame_interval_ms']['p99'])} / {fmt(live['frame_interval_ms']['max'])} ms"
        f" ({fmt(live['frames_over_50ms'])} frames over 50 ms) |",
        f"| live: main thread busy (script / style / layout) | "
        f"{fmt(live['main_thread_busy_pct'])} % ({fmt(live['busy']['script_ms'])} / "
        f"{fmt(live['busy']['style_ms'])} / {fmt(live['busy']['layout_ms'])} ms) |",
        f"| live: main-thread time per presence change | {fmt(live['task_ms_per_change'], 2)}"
        " ms |",
        f"| live: JS heap at the end | {fmt(live['js_heap_used_mib'], 2)} MiB |",
        f"| machine load average (1 min) before / after the stream | "
        f"{' / '.join(fmt(x) for x in live['load_average'])} |",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Server, fleet, stream, browser; teardown; the figures."""
    work = args.work_dir
    pki_dir = fresh_work(work)
    server: Server | None = None
    stream: PresenceStream | None = None
    settings = {"agents": args.agents, "online": args.online, "stream_agents": args.stream_agents,
                "rate_per_s": args.rate, "stream_s": args.stream_s, "loads": args.loads}
    try:
        server = start_server(pki_dir, work, free_port(), None)
        subprocess.run([sys.executable, "-m", "server_push", "admin", "password", USER],
                       cwd=ROOT, env={**server.env, "EPNS_ADMIN_PASSWORD": PASSWORD},
                       check=True, capture_output=True, timeout=60)
        token = server.cli("token", "create", "bench").strip()
        names = [f"pc-{n:05d}" for n in range(args.stream_agents)]
        create_agents(server, token, names, work / "agents")
        inserted = _insert(work / "server.db", _fleet_rows(
            args.agents, args.online - args.stream_agents, set(names), time.time()))
        mqtt_port = int(server.env["EPNS_SERVER_MQTT__PORT"])
        stream = PresenceStream(names, pki_dir, work / "agents", mqtt_port)
        result = measure(server, stream, args)
        result["insert_s"] = round(inserted, 2)
    finally:
        if stream is not None:
            stream.close()
        if server is not None:
            stop_process(server.process)
    return {"settings": settings, "result": result}


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``python -m bench console-agents``."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--online", type=int, default=1_000)
    parser.add_argument("--stream-agents", type=int, default=20,
                        help="real MQTT clients that change presence (their ids sort first)")
    parser.add_argument("--rate", type=float, default=50.0,
                        help="presence changes per second, all agents together")
    parser.add_argument("--stream-s", type=float, default=20.0)
    parser.add_argument("--loads", type=int, default=3)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/epns-bench-console"))
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        print("needs Debian's chromium: apt-get install chromium", file=sys.stderr)
        return 2
    if not 0 < args.stream_agents <= args.online <= args.agents:
        parser.error("need 0 < --stream-agents <= --online <= --agents")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    data: dict[str, Any] = {"command": command_line(),
                            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                            "machine": machine_info(None)}
    data.update(run(args))
    save_and_print(data, f"console-agents-{stamp}", table(data))
    return 0
