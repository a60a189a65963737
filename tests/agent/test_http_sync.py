"""The sync actions against real counterparts: an HTTPS server on 127.0.0.1 with
the session PKI, a real HTTP CONNECT proxy (tinyproxy), real child processes
for the command sync, real imported functions. HttpSync runs its exchange in
this process; the waits between retries of busy answers are checked on the
exchange itself, where they can be recorded."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import pytest

from agent_push import sync
from agent_push.http_exchange import BACKOFF_BASE, ExchangeJob, ExchangeResult, exchange
from agent_push.sync import (
    CommandSync,
    EntryPointSync,
    HttpSync,
    SyncOutcome,
    SyncRequest,
    TlsFiles,
    build_sync_action,
    exchange_deadline,
)
from epns import pki
from epns.agent_config import SyncSettings, TimeoutSettings
from epns.errors import ConfigError
from epns.routes import PathFault, SyncWay, parse_proxy
from epns.sync_contract import (
    MAX_BYTES,
    SyncFormat,
    SyncReason,
    SyncReply,
    Task,
    TaskResult,
    TaskStatus,
)
from tests.support import sync_entry
from tests.support.network import BlackHole, Tinyproxy, start_tinyproxy
from tests.support.processes import free_port
from tests.support.sync_server import Answer, SyncServer

AGENT = "a001"
CHANGES = {"hostname": "pc-1", "disks": [{"mount": "/", "free": 12.5}]}


@pytest.fixture
def server(pki_dir: Path) -> Iterator[SyncServer]:
    with SyncServer(pki_dir) as running:
        yield running


@pytest.fixture
def mtls(pki_dir: Path) -> TlsFiles:
    """The agent's TLS files: the fleet CA, and its client certificate."""
    pair = pki.agent_pair(pki_dir, AGENT)
    return TlsFiles(pki_dir / pki.CA_CERT, pair.cert, pair.key)


class Sleeps:
    """Stands in for asyncio.sleep: records each wait instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def _settings(url: str, **overrides: Any) -> SyncSettings:
    return SyncSettings(**{"url": url, "fetch": True, "timeout": 5.0, "max_retries": 2,
                           "max_retry_after": 60.0, **overrides})


def _http(url: str, tls: TlsFiles, *,
          changes: Callable[[], Mapping[str, Any]] = lambda: CHANGES,
          **overrides: Any) -> HttpSync:
    options = {k: overrides.pop(k) for k in ("token", "inventory") if k in overrides}
    return HttpSync(_settings(url, **overrides), AGENT, tls, changes=changes, **options)


def _job(url: str, tls: TlsFiles, **overrides: Any) -> ExchangeJob:
    fields: dict[str, Any] = {
        "url": url + "/api/v1/agents/a001/sync", "server": url, "format": "json",
        "body": b'{"v": 1, "agent_id": "a001", "sync_id": "s1", "started_at": 1.0, '
                b'"reason": "manual"}',
        "fetch": True, "ca": tls.ca, "cert": tls.cert, "key": tls.key,
        "token": None, "proxy_url": None, "timeout": 5.0, "timeouts": TimeoutSettings(),
        "max_retries": 2,
        "max_retry_after": 60.0}
    return ExchangeJob(**{**fields, **overrides})


def _exchange(job: ExchangeJob, sleeps: Sleeps) -> ExchangeResult:
    result: ExchangeResult = asyncio.run(exchange(job, sleep=sleeps, rng=random.Random(7)))
    return result


def _request(reason: SyncReason = SyncReason.WAKE, command_ids: tuple[str, ...] = ("w1",)
             ) -> SyncRequest:
    return SyncRequest(reason, command_ids, time.time())


def _sync(action: Callable[[SyncRequest], Any], request: SyncRequest | None = None
          ) -> SyncOutcome:
    outcome: SyncOutcome = asyncio.run(action(request or _request()))
    return outcome


# --- the exchange -----------------------------------------------------------------


def test_post_then_get_with_fetch_on(server: SyncServer, mtls: TlsFiles) -> None:
    server.reply = SyncReply(sync_interval=120.0, keepalive={"proxy": 45})
    request = _request(SyncReason.WAKE, ("w1", "w2"))
    outcome = _sync(_http(server.url, mtls), request)
    assert outcome.ok, outcome.detail
    assert outcome.status == 200
    assert outcome.reply == server.reply
    assert outcome.detail == "report accepted, reply with 0 task(s)"
    post, get = server.requests
    assert (post.method, get.method) == ("POST", "GET")
    assert post.path == get.path == "/api/v1/agents/a001/sync"
    assert post.headers["content-type"] == "application/json"
    assert post.headers["user-agent"].startswith("epns-agent/")
    report = post.report
    assert report is not None
    assert (report.agent_id, report.sync_id, report.reason) == (AGENT, request.sync_id, "wake")
    assert report.started_at == request.started_at
    assert report.wakes == ("w1", "w2")
    assert report.changes == CHANGES


def test_no_get_when_fetch_is_off(server: SyncServer, mtls: TlsFiles) -> None:
    outcome = _sync(_http(server.url, mtls, fetch=False))
    assert outcome.ok, outcome.detail
    assert (outcome.status, outcome.reply, outcome.detail) == (204, None, "report accepted")
    assert server.methods() == ["POST"]


def test_the_server_sees_the_agents_certificate(pki_dir: Path, mtls: TlsFiles) -> None:
    with SyncServer(pki_dir, client_certs="required") as strict:
        assert _sync(_http(strict.url, mtls)).ok
    assert {r.client_cn for r in strict.requests} == {AGENT}
    assert all("authorization" not in r.headers for r in strict.requests)


def test_a_token_agent_sends_its_bearer_token(server: SyncServer, pki_dir: Path,
                                              token_for: Callable[..., str]) -> None:
    token = token_for(AGENT)
    no_cert = TlsFiles(pki_dir / pki.CA_CERT)
    assert _sync(_http(server.url, no_cert, token=token)).ok
    assert [r.headers["authorization"] for r in server.requests] == [f"Bearer {token}"] * 2
    assert {r.client_cn for r in server.requests} == {None}


@pytest.mark.parametrize("fmt", list(SyncFormat))
def test_format_round_trip(server: SyncServer, mtls: TlsFiles, fmt: SyncFormat) -> None:
    server.reply = SyncReply(sync_interval=900.0, keepalive={"primary": 240},
                             tasks=(Task("t1", "reboot", {"when": "now"}),))
    outcome = _sync(_http(server.url, mtls, format=fmt.value))
    assert outcome.ok, outcome.detail
    assert outcome.reply == server.reply
    post, get = server.requests
    assert post.headers["content-type"] == fmt.content_type
    assert get.headers["accept"] == fmt.content_type
    assert post.report is not None
    assert post.report.changes == CHANGES


def test_the_reply_format_follows_its_content_type(server: SyncServer,
                                                   mtls: TlsFiles) -> None:
    server.reply = SyncReply(sync_interval=600.0)
    server.reply_format = SyncFormat.XML
    outcome = _sync(_http(server.url, mtls, format="json"))
    assert outcome.ok, outcome.detail
    assert outcome.reply == server.reply


# --- busy servers -----------------------------------------------------------------


def test_429_retry_after_is_honoured_then_the_sync_succeeds(
        server: SyncServer, mtls: TlsFiles, caplog: pytest.LogCaptureFixture) -> None:
    server.script(Answer(429, {"Retry-After": "7"}))
    sleeps = Sleeps()
    with caplog.at_level(logging.INFO, logger="agent_push.http_exchange"):
        result = _exchange(_job(server.url, mtls), sleeps)
    assert result.error is None
    assert (result.posted, result.status) == (True, 200)
    assert server.methods() == ["POST", "POST", "GET"]
    [wait] = sleeps.waits
    assert 7 <= wait <= 7 + 7 * 0.25 + 1
    assert "sync_retry method=POST status=429 retry_after=7" in caplog.text


def test_503_without_retry_after_backs_off_with_jitter(server: SyncServer,
                                                       mtls: TlsFiles) -> None:
    server.script(Answer(204), Answer(503), Answer(503))
    sleeps = Sleeps()
    result = _exchange(_job(server.url, mtls), sleeps)
    assert result.error is None
    assert server.methods() == ["POST", "GET", "GET", "GET"]
    first, second = sleeps.waits
    assert 0 <= first <= BACKOFF_BASE
    assert 0 <= second <= 2 * BACKOFF_BASE


def test_a_server_busy_beyond_max_retries_fails_the_sync(server: SyncServer,
                                                         mtls: TlsFiles) -> None:
    server.script(*[Answer(503, {"Retry-After": "1"})] * 3)
    sleeps = Sleeps()
    result = _exchange(_job(server.url, mtls), sleeps)
    assert (result.posted, result.http_status) == (False, 503)
    assert result.error == "server answered 503: service unavailable, still after 2 retries"
    assert result.retry_after == 1.0  # the agent's retry of the sync waits at least that
    assert len(sleeps.waits) == 2
    assert server.methods() == ["POST"] * 3


def test_a_retry_after_beyond_the_limit_is_not_waited_for(server: SyncServer,
                                                          mtls: TlsFiles) -> None:
    server.script(Answer(429, {"Retry-After": "3600"}))
    sleeps = Sleeps()
    result = _exchange(_job(server.url, mtls), sleeps)
    assert result.error == ("server answered 429: busy, and asks to retry after 3600 s, "
                            "more than sync.max_retry_after (60 s)")
    assert result.retry_after == 3600.0
    assert sleeps.waits == []


def test_a_busy_servers_wait_reaches_the_outcome(server: SyncServer, mtls: TlsFiles) -> None:
    server.script(Answer(503, {"Retry-After": "3600"}), Answer(500))
    busy = _sync(_http(server.url, mtls))
    assert (busy.ok, busy.status, busy.retry_after) == (False, 503, 3600.0)
    failed = _sync(_http(server.url, mtls))
    assert (failed.ok, failed.status, failed.retry_after) == (False, 500, None)


def test_a_503_with_retry_after_then_200_is_one_sync_that_succeeds(
        server: SyncServer, mtls: TlsFiles, caplog: pytest.LogCaptureFixture) -> None:
    server.script(Answer(503, {"Retry-After": "1"}))
    began = time.monotonic()
    with caplog.at_level(logging.INFO, logger="agent_push.http_exchange"):
        outcome = _sync(_http(server.url, mtls))
    took = time.monotonic() - began
    assert outcome.ok, outcome.detail
    assert server.methods() == ["POST", "POST", "GET"]
    # It waited as asked (1 s, plus at most 1 s of jitter), and said so.
    assert 1.0 <= took < 5.0
    [record] = [r for r in caplog.records if "sync_retry" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "method=POST status=503 retry_after=1" in record.getMessage()


# --- failures in plain words ------------------------------------------------------


def test_401_is_a_clear_failure(server: SyncServer, mtls: TlsFiles) -> None:
    server.script(Answer(401))
    outcome = _sync(_http(server.url, mtls))
    assert not outcome.ok
    assert outcome.status == 401
    assert outcome.detail == "server answered 401: the agent's identity was not accepted"
    assert server.methods() == ["POST"]


def test_server_down_is_a_clear_failure(mtls: TlsFiles) -> None:
    port = free_port()
    outcome = _sync(_http(f"https://127.0.0.1:{port}", mtls))
    assert not outcome.ok
    assert outcome.status is None
    # The words the MQTT side uses for the same failure (agent_push.dialer).
    assert outcome.detail == (f"TCP 127.0.0.1:{port} refused: nothing listens there, "
                              "or a firewall rejects the port")


def test_an_unknown_server_certificate_is_a_clear_failure(
        server: SyncServer, rogue_pki_dir: Path) -> None:
    outcome = _sync(_http(server.url, TlsFiles(rogue_pki_dir / pki.CA_CERT)))
    assert not outcome.ok
    assert outcome.detail.startswith("TLS to 127.0.0.1: the server's certificate did not "
                                     "verify (")
    assert server.requests == []


def test_a_missing_client_certificate_is_a_clear_failure(pki_dir: Path) -> None:
    with SyncServer(pki_dir, client_certs="required") as strict:
        outcome = _sync(_http(strict.url, TlsFiles(pki_dir / pki.CA_CERT)))
    assert not outcome.ok
    # With TLS 1.3 the refusal arrives after the client's handshake: as the
    # server's alert, or as the reset of the connection it closed.
    assert outcome.detail in (
        f"TLS: tlsv13 alert certificate required ({strict.url})",
        f"{strict.url} closed the connection without answering",
        f"{strict.url} closed the connection without answering (connection reset by peer)")
    assert strict.requests == []


def test_a_slow_server_times_out(server: SyncServer, mtls: TlsFiles) -> None:
    server.script(Answer(204, delay=30))
    outcome = _sync(_http(server.url, mtls, timeout=0.5))
    assert not outcome.ok
    assert outcome.detail == (f"no answer from {server.url} within 0.5 s "
                              "(timed out waiting for the answer)")


def test_a_login_page_instead_of_a_reply(server: SyncServer, mtls: TlsFiles) -> None:
    server.script(Answer(204), Answer(200, {"Content-Type": "text/html"}, b"<html>login"))
    outcome = _sync(_http(server.url, mtls))
    assert not outcome.ok
    assert outcome.status == 200
    assert outcome.detail.startswith("the server's reply is unusable: content type 'text/html'")


def test_an_oversized_reply_is_refused(server: SyncServer, mtls: TlsFiles) -> None:
    huge = b"[" + b" " * MAX_BYTES + b"]"
    server.script(Answer(204), Answer(200, {"Content-Type": "application/json"}, huge))
    outcome = _sync(_http(server.url, mtls))
    assert not outcome.ok
    assert outcome.detail == f"the server's reply is larger than {MAX_BYTES} bytes"


def test_data_that_cannot_be_collected_fails_the_sync(server: SyncServer,
                                                      mtls: TlsFiles) -> None:
    def broken() -> Mapping[str, Any]:
        raise PermissionError("cannot read /etc/machine-id")

    outcome = _sync(_http(server.url, mtls, changes=broken))
    assert not outcome.ok
    assert outcome.detail == ("collecting the agent's data failed: "
                              "PermissionError: cannot read /etc/machine-id")
    assert server.requests == []


# --- the way, and the connection ------------------------------------------------


class Ways:
    """A SyncWays that records what the sync learnt (as proxy URLs, None for
    direct): the server through ``proxy``, then direct."""

    def __init__(self, server: str, proxy: str | None) -> None:
        self.proxy = proxy
        self._ways = [SyncWay(server, None if proxy is None else parse_proxy(proxy)),
                      SyncWay(server)]
        self.failures: list[tuple[str | None, PathFault, str]] = []
        self.worked_on: list[str | None] = []

    def ways(self) -> list[SyncWay]:
        return self._ways

    def failed(self, way: SyncWay, fault: PathFault, reason: str) -> None:
        self.failures.append((_proxy_url(way), fault, reason))

    def worked(self, way: SyncWay) -> None:
        self.worked_on.append(_proxy_url(way))


def _proxy_url(way: SyncWay) -> str | None:
    return None if way.proxy is None else way.proxy.url()


@pytest.fixture
def tinyproxy(tmp_path: Path) -> Iterator[Tinyproxy]:
    proxy = start_tinyproxy(tmp_path)
    yield proxy
    proxy.stop()


def _proxied_connects(proxy: Tinyproxy, port: int) -> int:
    log = Path(str(proxy.process.args[-1])).parent / "tinyproxy.log"
    return sum("CONNECT" in line and f":{port}" in line
               for line in log.read_text(errors="replace").splitlines())


def test_a_sync_through_a_real_proxy(server: SyncServer, mtls: TlsFiles,
                                     tinyproxy: Tinyproxy) -> None:
    ways = Ways(server.url, tinyproxy.url())
    outcome = _sync(HttpSync(_settings(server.url), AGENT, mtls, changes=lambda: CHANGES,
                             ways=ways))
    assert outcome.ok, outcome.detail
    assert (ways.failures, ways.worked_on) == ([], [tinyproxy.url()])
    assert server.methods() == ["POST", "GET"]
    assert {r.client_cn for r in server.requests} == {AGENT}  # mTLS inside the tunnel
    # One tunnel: the GET went on the POST's keep-alive connection.
    assert _proxied_connects(tinyproxy, int(server.url.rsplit(":", 1)[1])) == 1


def test_a_wrong_proxy_password_is_a_way_fault_and_the_sync_goes_direct(
        server: SyncServer, mtls: TlsFiles, tinyproxy: Tinyproxy) -> None:
    ways = Ways(server.url, tinyproxy.url(password="wrong"))
    outcome = _sync(HttpSync(_settings(server.url), AGENT, mtls, changes=lambda: CHANGES,
                             ways=ways))
    assert outcome.ok, outcome.detail
    [(way, fault, reason)] = ways.failures
    assert (way, fault) == (tinyproxy.url(password="wrong"), PathFault.PROXY_CREDENTIALS)
    assert reason == (f"proxy 127.0.0.1:{tinyproxy.port}: proxy authentication failed (401); "
                      "check the proxy username and password")
    assert ways.worked_on == [None]


def test_a_dead_proxy_is_a_way_fault(server: SyncServer, mtls: TlsFiles) -> None:
    port = free_port()
    ways = Ways(server.url, f"http://127.0.0.1:{port}")
    outcome = _sync(HttpSync(_settings(server.url), AGENT, mtls, changes=lambda: CHANGES,
                             ways=ways))
    assert outcome.ok, outcome.detail
    [(_, fault, reason)] = ways.failures
    assert fault is PathFault.PROXY_DEAD
    assert reason == f"proxy 127.0.0.1:{port} cannot be reached: connection refused"


def test_the_sync_offers_alpn_http_1_1(pki_dir: Path, mtls: TlsFiles) -> None:
    """The broker's one-port listener tells HTTP from MQTT by ALPN."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki_dir / pki.BROKER_CERT, pki_dir / pki.BROKER_KEY)
    context.set_alpn_protocols(["mqtt", "http/1.1"])
    listener = socket.create_server(("127.0.0.1", 0))
    offered: list[str | None] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with context.wrap_socket(conn, server_side=True) as tls:
            offered.append(tls.selected_alpn_protocol())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        _sync(_http(f"https://127.0.0.1:{listener.getsockname()[1]}", mtls))
        thread.join(timeout=10)
    finally:
        listener.close()
    assert offered == ["http/1.1"]


def _connections_to(port: int) -> list[str]:
    """This process's TCP connections to ``port`` that are still open."""
    return [c.status for c in psutil.Process().net_connections(kind="tcp")
            if c.raddr and c.raddr.port == port and c.status != psutil.CONN_TIME_WAIT]


def test_a_cancelled_sync_closes_its_connection_at_once(server: SyncServer,
                                                        mtls: TlsFiles) -> None:
    server.script(Answer(204, delay=30))
    port = int(server.url.rsplit(":", 1)[1])

    async def scenario() -> tuple[list[str], list[str]]:
        running = asyncio.ensure_future(_http(server.url, mtls, timeout=20.0)(_request()))
        while not server.requests:  # the POST is sent: the sync waits for the answer
            await asyncio.sleep(0.01)
        waiting = _connections_to(port)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        return waiting, _connections_to(port)

    waiting, after = asyncio.run(scenario())
    assert waiting == [psutil.CONN_ESTABLISHED]
    assert after == []


def test_a_server_that_never_answers_is_stopped_at_the_deadline(
        mtls: TlsFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    """A middlebox that accepts TCP and is silent: the TLS handshake's own
    timeout (20 s here) is not waited for; the deadline stops the sync and
    the connection is closed (the listener reads the end of it)."""
    monkeypatch.setattr(sync, "exchange_deadline", lambda settings, timeouts: 0.5)
    silent = BlackHole()
    try:
        began = time.monotonic()
        outcome = _sync(_http(f"https://127.0.0.1:{silent.port}", mtls, timeout=20.0))
        took = time.monotonic() - began
        [accepted] = silent.accepted
        accepted.settimeout(5)
        hello = _read_to_the_end(accepted)
    finally:
        silent.close()
    assert not outcome.ok
    assert outcome.detail == (f"the sync with https://127.0.0.1:{silent.port} did not finish "
                              "within 0.5 s and was stopped")
    assert took < 3.0
    assert hello[:1] == b"\x16"  # its TLS ClientHello, then the end of the connection


def _read_to_the_end(conn: socket.socket) -> bytes:
    """What ``conn`` received until its peer closed it (TimeoutError if it does not)."""
    data = bytearray()
    while chunk := conn.recv(65536):
        data += chunk
    return bytes(data)


def test_a_slow_answer_past_the_deadline_stops_the_sync(server: SyncServer, mtls: TlsFiles,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sync, "exchange_deadline", lambda settings, timeouts: 0.3)
    server.script(Answer(204, delay=30))  # the step's own timeout would wait 20 s
    outcome = _sync(_http(server.url, mtls, timeout=20.0))
    assert not outcome.ok
    assert outcome.detail == (f"the sync with {server.url} did not finish within 0.3 s "
                              "and was stopped")
    assert _connections_to(int(server.url.rsplit(":", 1)[1])) == []


def test_unreadable_tls_files_fail_the_sync_in_plain_words(server: SyncServer,
                                                          tmp_path: Path) -> None:
    outcome = _sync(_http(server.url, TlsFiles(tmp_path / "missing-ca.crt")))
    assert not outcome.ok
    assert outcome.detail == (f"cannot load the fleet CA: {tmp_path / 'missing-ca.crt'} "
                              "does not exist")
    assert server.requests == []


def test_the_deadline_covers_every_attempt_and_wait() -> None:
    settings = SyncSettings(url="https://x", fetch=True, timeout=30.0, max_retries=5,
                            max_retry_after=300.0)
    timeouts = TimeoutSettings(tcp_connect=5.0, proxy_connect=8.0, tls_handshake=8.0)
    # Two steps of 6 attempts (connect as push: the proxy's 8 s and TLS 8 s;
    # send and answer: 2 x 30 s) and 5 waits of 300 s.
    assert exchange_deadline(settings, timeouts) == 2 * (6 * 76 + 5 * 300)
    assert exchange_deadline(replace(settings, fetch=False, max_retries=0), timeouts) == 76


# --- tasks ------------------------------------------------------------------------


def test_tasks_are_answered_with_the_next_report(server: SyncServer,
                                                 mtls: TlsFiles) -> None:
    server.reply = SyncReply(sync_interval=600.0, keepalive={"primary": 240}, tasks=(
        Task("t1", "inventory"),
        Task("t2", "set_config", {"keepalive": {"proxy": 45}}),
        Task("t3", "set_config", {"sync_interval": -1}),
        Task("t4", "reboot"),
    ))
    sync = _http(server.url, mtls, inventory=lambda: {"full": True, **CHANGES})
    first = _sync(sync)
    assert first.ok, first.detail
    assert first.reply == replace(server.reply, keepalive={"primary": 240, "proxy": 45})

    server.reply = SyncReply()
    assert _sync(sync).ok
    report = server.requests[2].report
    assert report is not None
    assert report.changes == {"full": True, **CHANGES}
    assert [(r.task_id, r.status) for r in report.results] == [
        ("t1", TaskStatus.DONE), ("t2", TaskStatus.DONE), ("t3", TaskStatus.FAILED),
        ("t4", TaskStatus.UNSUPPORTED)]
    assert "sync_interval" in report.results[2].detail

    assert _sync(sync).ok
    report = server.requests[4].report
    assert report is not None
    assert (report.changes, report.results) == (CHANGES, ())


def test_results_wait_for_a_report_that_is_accepted(server: SyncServer,
                                                    mtls: TlsFiles) -> None:
    server.reply = SyncReply(tasks=(Task("t1", "inventory"),))
    sync = _http(server.url, mtls)
    assert _sync(sync).ok
    server.reply = SyncReply()
    server.script(Answer(500))
    assert _sync(sync).detail == "server answered 500: server error"
    assert _sync(sync).ok
    lost, delivered = server.requests[2].report, server.requests[3].report
    unsupported = [TaskResult("t1", TaskStatus.UNSUPPORTED, "this agent does not run "
                              "'inventory' tasks")]
    assert lost is not None
    assert delivered is not None
    assert list(lost.results) == list(delivered.results) == unsupported


# --- choosing the action ----------------------------------------------------------


def test_build_sync_action_follows_the_settings(mtls: TlsFiles) -> None:
    def build(**fields: Any) -> object:
        return build_sync_action(SyncSettings(**fields), AGENT, tls=mtls,
                                 changes=lambda: {})

    assert isinstance(build(url="https://127.0.0.1:1"), HttpSync)
    assert isinstance(build(action="command", command=("true",)), CommandSync)
    assert isinstance(build(action="entry_point",
                            entry_point="tests.support.sync_entry:replicate"), EntryPointSync)
    with pytest.raises(ConfigError, match=r"sync\.url is required"):
        build()


# --- a program --------------------------------------------------------------------

WRITE_ENV = ("import os, sys; open(sys.argv[1], 'w').write(' '.join(os.environ[k] for k in "
             "('EPNS_AGENT_ID', 'EPNS_SYNC_REASON', 'EPNS_SYNC_WAKES')))")


def test_command_sync_passes_the_request_in_its_environment(tmp_path: Path) -> None:
    out = tmp_path / "env.txt"
    command = CommandSync([sys.executable, "-c", WRITE_ENV, str(out)], 10, AGENT)
    outcome = _sync(command, _request(SyncReason.WAKE, ("w1", "w2")))
    assert outcome.ok, outcome.detail
    assert outcome.detail == f"{sys.executable} exited with 0"
    assert out.read_text() == "a001 wake w1,w2"


def test_command_sync_failure_says_why() -> None:
    script = "import sys; print('connecting…'); sys.exit('replication service is stopped')"
    outcome = _sync(CommandSync([sys.executable, "-c", script], 10, AGENT))
    assert not outcome.ok
    assert outcome.detail == f"{sys.executable} exited with 1: replication service is stopped"


def test_command_sync_past_its_timeout_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = (f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
              "time.sleep(60)")
    outcome = _sync(CommandSync([sys.executable, "-c", script], 1.0, AGENT))
    assert not outcome.ok
    assert outcome.detail == f"{sys.executable} did not finish within 1 s and was killed"
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


def test_a_cancelled_command_sync_kills_the_program_and_what_it_started(
        tmp_path: Path) -> None:
    # The agent stopping mid-sync cancels it: the program (run from a worker
    # thread, see CommandSync) and its child must not outlive the agent.
    pid_file = tmp_path / "pids"
    script = (f"import os, subprocess, sys, time; child = subprocess.Popen([sys.executable, "
              f"'-c', 'import time; time.sleep(60)']); open({str(pid_file)!r}, 'w')"
              ".write(f'{os.getpid()} {child.pid}'); time.sleep(60)")
    command = CommandSync([sys.executable, "-c", script], 60.0, AGENT)

    async def cancel_once_running() -> None:
        task = asyncio.create_task(command(_request()))
        deadline = time.monotonic() + 20
        while not pid_file.exists() or len(pid_file.read_text().split()) < 2:
            assert time.monotonic() < deadline, "the program never started"
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    began = time.monotonic()
    asyncio.run(cancel_once_running())
    assert time.monotonic() - began < 20  # not the program's 60 s
    for pid in map(int, pid_file.read_text().split()):
        deadline = time.monotonic() + 10
        while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, f"process {pid} outlived the cancelled sync"
            time.sleep(0.05)


def test_command_sync_that_cannot_start(tmp_path: Path) -> None:
    outcome = _sync(CommandSync([str(tmp_path / "no-such-program")], 10, AGENT))
    assert not outcome.ok
    assert outcome.detail == f"cannot run {tmp_path / 'no-such-program'}: No such file or directory"


# --- a function -------------------------------------------------------------------


@pytest.mark.parametrize(("name", "in_thread"), [
    ("replicate", True), ("replicate_async", False), ("replicate_later", True)])
def test_entry_point_sync_calls_the_function(name: str, in_thread: bool) -> None:
    sync_entry.calls.clear()
    target = f"tests.support.sync_entry:{name}"
    request = _request()
    outcome = _sync(EntryPointSync(target, 10), request)
    assert outcome.ok, outcome.detail
    assert outcome.detail == f"{target} returned"
    assert sync_entry.calls == [(name, request, in_thread)]


def test_entry_point_sync_exception_is_a_failure() -> None:
    outcome = _sync(EntryPointSync("tests.support.sync_entry:broken", 10))
    assert not outcome.ok
    assert outcome.detail == ("tests.support.sync_entry:broken raised RuntimeError: "
                              "replication service is stopped")


def test_entry_point_sync_past_its_timeout_fails() -> None:
    outcome = _sync(EntryPointSync("tests.support.sync_entry:hangs", 0.2))
    assert not outcome.ok
    assert outcome.detail == "tests.support.sync_entry:hangs did not return within 0.2 s"


@pytest.mark.parametrize(("target", "says"), [
    ("tests.support.sync_entry", "is not 'module:function'"),
    ("no_such_product.agent:sync", "cannot import no_such_product.agent: ModuleNotFoundError"),
    ("tests.support.sync_entry:missing", "has no function missing"),
    ("tests.support.sync_entry:NOT_CALLABLE", "has no function NOT_CALLABLE"),
])
def test_an_unusable_entry_point_is_a_config_error(target: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        EntryPointSync(target, 10)
