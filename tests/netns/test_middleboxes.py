"""More middleboxes in the firewall matrix (issue 13's proof): Debian's
tinyproxy as the only way out, a proxy black-holed mid-session, mitmproxy
inspecting TLS, a broker restart under five agents, and 30 % packet loss on
the router. Same lab and bar as ``test_firewall_matrix``: first connect
within 15 s of the agent's first log line, a wake-up satisfied in under a
second once connected. Each test adds a row to the matrix.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.netns.conftest import (
    FALLBACK,
    MATRIX,
    PRIMARY,
    PROXY_PASSWORD,
    PROXY_USER,
    SQUID_PORT,
    Lab,
)
from tests.support import mitmproxy, netns
from tests.support.agents import AgentProcess
from tests.support.processes import ROOT

CONNECT_BAR = 15.0
SATISFIED_BAR = 1.0
TINYPROXY_PORT = 8888
MITM_PORT = 8080
# The product's reconnect backoff (the suite's agent configs use 0.5 s and a
# 3 s cap): the rows that reconnect measure what a fleet gets.
PRODUCT_RECONNECT = {"base": 1.0, "cap": 120.0, "stable_after": 60.0}


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A folder a proxy that drops root (tinyproxy) may write its files in:
    pytest's temporary folders are 0700."""
    where = Path(tempfile.mkdtemp(prefix="epns-middlebox-"))
    where.chmod(0o777)
    yield where
    shutil.rmtree(where, ignore_errors=True)


@pytest.fixture(scope="module")
def mitmdump() -> str:
    binary, why = mitmproxy.mitmdump()
    if binary is None:
        pytest.skip(why)
    return binary


def _seconds(took: float | None, timeout: float) -> str:
    return f"never ({timeout:g} s)" if took is None else f"{took:.2f} s"


def _route(line: str) -> str:
    return line.split("route=")[1].split(maxsplit=1)[0]


def _connect(agent: AgentProcess) -> tuple[float, str]:
    """Seconds from the agent's first log line to ``connected``, and its route."""
    agent.log_contains(r" starting agent=", timeout=30)
    began = time.monotonic()
    line = agent.log_contains(r"\bconnected route=\S+ ", timeout=CONNECT_BAR + 5)
    return time.monotonic() - began, _route(line)


def _wake_many(lab: Lab, agent_ids: list[str]) -> str:
    with lab.api() as api:
        answer = api.post("/api/v1/wakeups", json={"agents": agent_ids})
    assert answer.status_code == 202, answer.text
    wakeup_id: str = answer.json()["id"]
    return wakeup_id


def _reached(lab: Lab, wakeup_id: str, state: str, timeout: float) -> dict[str, float | None]:
    """Per target, seconds from request to ``state`` (delivered or satisfied;
    a satisfied target counts as delivered), None for those that did not
    get there within ``timeout``."""
    states = ("delivered", "satisfied") if state == "delivered" else (state,)
    deadline = time.monotonic() + timeout
    while True:
        with lab.api() as api:
            targets = api.get(f"/api/v1/wakeups/{wakeup_id}").json()["targets"]
        reached = {t["agent_id"]: (t[f"{state}_at"] - t["requested_at"]
                                   if t["state"] in states else None) for t in targets}
        if all(took is not None for took in reached.values()) or time.monotonic() > deadline:
            return reached
        time.sleep(0.2)


def _epns_check(lab: Lab, agent: AgentProcess, *args: str) -> tuple[int, dict[str, Any]]:
    """``epns-check --json`` on the agent host with the agent's config,
    without taking the agent's session over."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("EPNS_") and k.lower() not in ("https_proxy", "no_proxy")}
    done = subprocess.run([*lab.net.exec_prefix(lab.net.agent), sys.executable, "-m",
                           "epns_check", "--config", str(agent.config), "--json",
                           "--no-takeover", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=90, check=False)
    report: dict[str, Any] = json.loads(done.stdout)
    return done.returncode, report


def _intercepted(report: dict[str, Any]) -> list[str]:
    """The routes whose TLS line names mitmproxy's interception."""
    return [row["subject"] for row in report["steps"] if row["step"] == "tls"
            and row["detail"].startswith("TLS interception by 'mitmproxy'")]


def _verdict(code: int, report: dict[str, Any]) -> str:
    return f"epns-check exit {code}: {report['verdict']['summary']}"


# tinyproxy as the only way out


def _start_tinyproxy(lab: Lab, where: Path, auth: bool) -> str:
    """Debian's tinyproxy on the router with Debian's own settings, placed on
    the lab's address, and the CONNECT ports an operator opens for the fleet;
    the proxy URL."""
    stock = Path("/etc/tinyproxy/tinyproxy.conf").read_text()
    placed = ("Port", "Listen", "Allow", "PidFile", "LogFile")
    kept = [line for line in stock.splitlines()
            if line.strip() and not line.startswith("#") and line.split()[0] not in placed]
    conf = where / "tinyproxy.conf"
    conf.write_text("\n".join([
        *kept, f"Port {TINYPROXY_PORT}", f"Listen {netns.ROUTER_AGENT_SIDE}",
        f"Allow {netns.AGENT_IP.rsplit('.', 1)[0]}.0/24",
        f'PidFile "{where / "tinyproxy.pid"}"', f'LogFile "{where / "tinyproxy.log"}"',
        # The stock file's commented "#ConnectPort 443" taken in, and MQTT's port.
        "ConnectPort 443", f"ConnectPort {PRIMARY}",
        *([f"BasicAuth {PROXY_USER} {PROXY_PASSWORD}"] if auth else []),
    ]) + "\n")
    lab.middleboxes.append(lab.net.start(
        lab.net.router, ["tinyproxy", "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, text=True))
    assert lab.listening(lab.net.router, netns.ROUTER_AGENT_SIDE, TINYPROXY_PORT, 10), \
        "tinyproxy did not start"
    credentials = f"{PROXY_USER}:{PROXY_PASSWORD}@" if auth else ""
    return f"http://{credentials}{netns.ROUTER_AGENT_SIDE}:{TINYPROXY_PORT}"


@pytest.mark.parametrize("auth", [False, True], ids=["no-auth", "basic-auth"])
def test_tinyproxy_as_the_only_way_out(clean_lab: Lab, scratch: Path, auth: bool) -> None:
    """tinyproxy is the only way out: push connects through it on 8883 (which
    the operator allowed); the sync, refused on 9443, reaches the one port
    443 through it; a wake-up is delivered and satisfied."""
    clean_lab.net.forward_only()
    agent_id = f"tiny-{'auth' if auth else 'open'}"
    url = _start_tinyproxy(clean_lab, scratch, auth)
    agent = clean_lab.start_agent(agent_id, proxy={"url": url})
    connected, route = _connect(agent)
    agent.log_contains(r"sync_done .*reason=connect", timeout=30)
    wakeup_id = clean_lab.wake(agent_id)
    delivered = _reached(clean_lab, wakeup_id, "delivered", 10)[agent_id]
    satisfied = _reached(clean_lab, wakeup_id, "satisfied", 10)[agent_id]
    MATRIX.append({
        "condition": f"proxy only: Debian tinyproxy (ConnectPort 443, 8883)"
                     f"{' + Basic auth' if auth else ''}, no direct route",
        "connected": f"{connected:.2f} s", "route": route,
        "satisfied": f"{_seconds(satisfied, 10)} (delivered {_seconds(delivered, 10)})"})
    assert route == f"proxy:{PRIMARY}"
    assert connected <= CONNECT_BAR
    assert delivered is not None
    assert satisfied is not None
    assert satisfied < SATISFIED_BAR


# A proxy black-holed mid-session


@pytest.mark.timeout(200)  # the default liveness takes up to 45 s + 22.5 s to notice
def test_a_proxy_black_holed_mid_session(clean_lab: Lab) -> None:
    """Squid stops passing anything, either way, while the agent is connected
    through it (direct allowed): the agent's ping goes unanswered, it
    reconnects direct, and the wake-up requested while it was deaf is
    satisfied by the sync after the reconnect."""
    agent = clean_lab.start_agent("holed-1", proxy={"url": clean_lab.start_squid()},
                                  reconnect=PRODUCT_RECONNECT)
    agent.log_contains(rf"\bconnected route=proxy:{FALLBACK} ", timeout=CONNECT_BAR + 5)
    agent.log_contains(r"sync_done .*reason=connect", timeout=15)
    seen = len(agent.lines)
    for chain, way in (("INPUT", "--dport"), ("OUTPUT", "--sport")):
        clean_lab.net.iptables("-A", chain, "-p", "tcp", way, str(SQUID_PORT), "-j", "DROP")
    holed = time.monotonic()
    while_deaf = clean_lab.wake("holed-1")
    agent.log_contains(r"\bdisconnected ", after=seen, timeout=100)
    noticed = time.monotonic() - holed
    line = agent.log_contains(r"\bconnected route=\S+ ", after=seen, timeout=60)
    back = time.monotonic() - holed
    tried = [_route(failed) for failed in agent.lines[seen:] if " route_failed " in failed]
    agent.log_contains(r"sync_done .*reason=connect", after=seen, timeout=15)
    deaf = clean_lab.satisfied(while_deaf, timeout=20)
    took = clean_lab.satisfied(clean_lab.wake("holed-1"), timeout=20)
    MATRIX.append({
        "condition": "stock Squid black-holed mid-session (DROP both ways), direct allowed",
        "connected": f"{back:.2f} s after the black hole (noticed after {noticed:.2f} s; "
                     f"failed first: {', '.join(tried) or 'none'})",
        "route": _route(line),
        "satisfied": f"{_seconds(took, 20)}; one requested at the black hole: "
                     f"{_seconds(deaf, 20)}"})
    assert _route(line) == f"direct:{PRIMARY}"
    assert deaf is not None
    assert took is not None
    assert took < SATISFIED_BAR
    # The deaf wake-up is satisfied by the sync right after the reconnect.
    assert deaf - back < SATISFIED_BAR


# mitmproxy inspecting TLS


def _start_mitmdump(lab: Lab, binary: str, where: Path) -> str:
    """mitmdump on the router as the agent's (inspecting) proxy; its URL."""
    with (where / "mitmdump.log").open("w") as log:
        lab.middleboxes.append(lab.net.start(
            lab.net.router, mitmproxy.command(binary, netns.ROUTER_AGENT_SIDE, MITM_PORT,
                                              where / "mitmproxy"),
            stdout=log, stderr=subprocess.STDOUT, text=True))
    if not lab.listening(lab.net.router, netns.ROUTER_AGENT_SIDE, MITM_PORT, 20):
        raise RuntimeError(f"mitmdump did not start: {(where / 'mitmdump.log').read_text()}")
    return f"http://{netns.ROUTER_AGENT_SIDE}:{MITM_PORT}"


def test_mitmproxy_inspecting_with_a_direct_route(clean_lab: Lab, scratch: Path,
                                                  mitmdump: str) -> None:
    """The configured proxy inspects TLS: the agent refuses its certificate
    (the chain is not the fleet CA's) and connects direct; epns-check agrees
    (only a fallback route works) and names the interception."""
    url = _start_mitmdump(clean_lab, mitmdump, scratch)
    agent = clean_lab.start_agent("mitm-direct", proxy={"url": url})
    connected, route = _connect(agent)
    agent.log_contains(r"sync_done .*reason=connect", timeout=15)
    took = clean_lab.satisfied(clean_lab.wake("mitm-direct"), timeout=20)
    code, report = _epns_check(clean_lab, agent)
    MATRIX.append({"condition": "mitmproxy inspecting TLS as the proxy, direct allowed",
                   "connected": f"{connected:.2f} s", "route": route,
                   "satisfied": f"{_seconds(took, 20)}; {_verdict(code, report)}"})
    assert route == f"direct:{PRIMARY}"
    assert agent.count(r"route_failed route=proxy:\S+ step=tls") == 2, agent.lines
    assert took is not None
    assert took < SATISFIED_BAR
    assert _intercepted(report) == [f"proxy:{PRIMARY}", f"proxy:{FALLBACK}"], report
    assert code == 1, report
    assert report["verdict"]["route"] == f"direct:{PRIMARY}", report


def test_mitmproxy_inspecting_without_a_direct_route(clean_lab: Lab, scratch: Path,
                                                     mitmdump: str) -> None:
    """Only the inspecting proxy leads out: the agent never connects (it must
    not trust another CA), and epns-check names the interception on both
    proxy routes; its summary, what a support person reads first, should too."""
    clean_lab.net.forward_only()
    url = _start_mitmdump(clean_lab, mitmdump, scratch)
    agent = clean_lab.start_agent("mitm-only", proxy={"url": url})
    agent.log_contains(r" starting agent=", timeout=30)
    began = time.monotonic()
    code, report = _epns_check(clean_lab, agent)
    # Every route tried once (the direct ones time out), before "never".
    agent.log_contains(r"reconnect_scheduled ", timeout=30)
    MATRIX.append({"condition": "mitmproxy inspecting TLS as the proxy, no direct route",
                   "connected": f"never ({time.monotonic() - began:.0f} s, every route "
                                "tried)", "route": "-",
                   "satisfied": f"- ; {_verdict(code, report)}"})
    assert agent.count(r"\bconnected route=") == 0
    # Every proxy attempt failed at TLS, the certificate: none at the proxy itself.
    assert agent.count(r"route_failed route=proxy:\S+ step=tls") >= 2, agent.lines
    assert agent.count(r"route_failed route=proxy:\S+ step=(?!tls)") == 0, agent.lines
    assert code == 2, report
    assert _intercepted(report) == [f"proxy:{PRIMARY}", f"proxy:{FALLBACK}"], report
    assert "TLS interception by 'mitmproxy'" in report["verdict"]["summary"], report


# The broker restarted under connected agents


def test_a_broker_restart_loses_no_wakeup(clean_lab: Lab) -> None:
    """Five agents connected; the broker is restarted (SIGTERM, start), and a
    wake-up for all five is requested while it is down: all reconnect, and
    it is satisfied on every one of them."""
    ids = [f"restart-{n}" for n in range(5)]
    agents = [clean_lab.start_agent(agent_id, reconnect=PRODUCT_RECONNECT) for agent_id in ids]
    for agent in agents:
        agent.log_contains(r"sync_done .*reason=connect", timeout=30)
    seen = [len(agent.lines) for agent in agents]
    links = len(clean_lab.server.lines)
    clean_lab.stop_broker()
    wakeup_id = _wake_many(clean_lab, ids)
    clean_lab.start_broker()
    up = time.monotonic()
    back = []
    for agent, after in zip(agents, seen, strict=True):
        agent.log_contains(r"\bconnected route=", after=after, timeout=60)
        back.append(time.monotonic() - up)
    satisfied = _reached(clean_lab, wakeup_id, "satisfied", 30)
    clean_lab.server.log_contains(r"broker_link_up", after=links, timeout=30)
    took = [t for t in satisfied.values() if t is not None]
    MATRIX.append({
        "condition": "broker restarted under 5 connected agents; one wake-up for all "
                     "requested while it was down",
        "connected": f"all 5 within {max(back):.2f} s of the broker's ready",
        "route": f"direct:{PRIMARY}",
        "satisfied": f"{len(took)}/5, {max(took, default=0):.2f} s at most after the request"})
    assert all(t is not None for t in satisfied.values()), satisfied


# 30 % loss on the router


@pytest.mark.timeout(150)
def test_30_percent_loss_for_20_s(clean_lab: Lab) -> None:
    """Both router links lose 30 % of the packets for 20 s, with two agents
    connected and a wake-up requested at the start of it. Once the loss
    ends, each agent is connected (at once, or after a reconnect) and a
    wake-up is satisfied within the bar; the one requested during the loss
    is satisfied too."""
    ids = ["loss-0", "loss-1"]
    agents = [clean_lab.start_agent(agent_id, reconnect=PRODUCT_RECONNECT) for agent_id in ids]
    for agent in agents:
        agent.log_contains(r"sync_done .*reason=connect", timeout=30)
    seen = [len(agent.lines) for agent in agents]
    how = clean_lab.net.impair(30)
    try:
        began = time.monotonic()
        during = _wake_many(clean_lab, ids)
        time.sleep(max(0.0, 20 - (time.monotonic() - began)))
    finally:
        clean_lab.net.impair(None)
    ended = time.monotonic()
    recovery = [_recovered(agent, after, ended) for agent, after in zip(agents, seen,
                                                                        strict=True)]
    after_loss = _reached(clean_lab, _wake_many(clean_lab, ids), "satisfied", 20)
    in_loss = _reached(clean_lab, during, "satisfied", 30)
    drops = sum(agent.count(r"\bdisconnected ") for agent in agents)
    stalled = sum(agent.count(r"\bsync_failed ") for agent in agents)
    MATRIX.append({
        "condition": f"30 % loss both ways on the router ({how}) for 20 s, 2 agents",
        "connected": f"{max(recovery):.2f} s after the loss ended ({drops} disconnects)",
        "route": f"direct:{PRIMARY}",
        "satisfied": f"{_worst(after_loss)}; one requested at the loss's start: "
                     f"{_worst(in_loss)} after the request ({stalled} syncs failed)"})
    assert all(t is not None and t < SATISFIED_BAR for t in after_loss.values()), after_loss
    assert all(t is not None for t in in_loss.values()), in_loss


def _recovered(agent: AgentProcess, after: int, ended: float) -> float:
    """Seconds from ``ended`` until the agent is connected with its
    on-connect sync done: 0 when its connection lived through the loss."""
    drops = [i for i, line in enumerate(agent.lines) if i >= after
             and re.search(r"\bdisconnected ", line)]
    if not drops:
        return 0.0
    agent.log_contains(r"\bconnected route=", after=drops[-1] + 1, timeout=60)
    agent.log_contains(r"sync_done .*reason=connect", after=drops[-1] + 1, timeout=30)
    return time.monotonic() - ended


def _worst(reached: dict[str, float | None]) -> str:
    if any(t is None for t in reached.values()):
        return f"{sum(t is not None for t in reached.values())}/{len(reached)} satisfied"
    return f"{max(t for t in reached.values() if t is not None):.2f} s at most"
