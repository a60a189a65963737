"""epns behind Debian's nginx, ending TLS: MQTT over WebSocket to the
broker's ws-front listener and HTTPS to the server's front socket, with the
shipped site config (docker/nginx/epns.conf). Real nginx, broker, server and
agent; the agent proves itself with its certificate, through nginx."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from epns import pki
from tests.support import nginx
from tests.support.agents import AgentProcess, start_agent, write_agent_config
from tests.support.processes import BrokerProcess, free_port, start_epns, wait_until
from tests.support.server import ServerProcess, request_wakeup, start_server

NGINX = nginx.BINARY
pytestmark = pytest.mark.skipif(NGINX is None, reason=nginx.WHY_NOT or "")


@dataclass
class Front:
    """nginx in front of a broker and a server."""

    port: int
    pki: Path
    work: Path
    broker: BrokerProcess
    server: ServerProcess
    token: str

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def client(self, **options: object) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.pki / pki.CA_CERT))
        return httpx.Client(base_url=self.url, verify=context, timeout=10, **options)  # type: ignore[arg-type]


@pytest.fixture
def front(pki_dir: Path, tmp_path: Path) -> Iterator[Front]:
    work = tmp_path / "server"
    work.mkdir()
    broker = start_epns(pki_dir, listeners__front__enabled="true",
                        listeners__front__unix_socket=str(work / "broker-front.sock"))
    server = start_server(pki_dir, work, broker.port)
    port = free_port()
    conf = nginx.write_conf(tmp_path, nginx.render_site(pki_dir, work, f"127.0.0.1:{port}"))
    assert NGINX is not None
    checked = subprocess.run([NGINX, "-t", "-c", str(conf)], capture_output=True, text=True,
                             check=False)
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen([NGINX, "-c", str(conf)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _listens(port), "nginx listening", 10)
        yield Front(port, pki_dir, work, broker, server,
                    server.api_token())
    finally:
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        server.stop()
        broker.stop()


def _listens(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _start_agent(front: Front, agent_id: str) -> AgentProcess:
    with front.server.client(front.token) as api:
        created = api.post("/api/v1/agents", json={"id": agent_id})
    assert created.status_code == 201, created.text
    bundle = front.work / "agents" / agent_id
    bundle.mkdir(parents=True)
    for name, text in created.json()["files"].items():
        (bundle / name).write_text(text)
    # No MQTT port answers: the agent goes to WebSocket through nginx, and
    # its sync to nginx too.
    closed = free_port()
    config = write_agent_config(
        front.work / f"{agent_id}.toml", front.pki, agent_id, [closed],
        identity={"cert": str(bundle / "agent.crt"), "key": str(bundle / "agent.key")},
        broker={"websocket_url": f"wss://127.0.0.1:{front.port}/mqtt"},
        sync={"action": "http", "url": front.url, "fetch": True,
              "ca": str(front.pki / pki.CA_CERT)})
    return start_agent(config)


def test_an_agent_pushes_and_syncs_through_nginx_with_its_certificate(front: Front) -> None:
    agent = _start_agent(front, "behind-nginx-1")
    try:
        agent.log_contains(r"\bconnected route=direct:wss\b", timeout=20)
        agent.log_contains(r"sync_done .*status=200", timeout=15)
        with front.server.client(front.token) as api:
            wakeup = request_wakeup(api, "behind-nginx-1")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                seen = api.get(f"/api/v1/wakeups/{wakeup}").json()
                if seen["counts"].get("satisfied"):
                    break
                time.sleep(0.1)
            assert seen["counts"].get("satisfied") == 1, seen
            shown = api.get("/api/v1/agents/behind-nginx-1").json()
        assert shown["presence"] == "online"
        assert shown["route"] == "direct:wss"
    finally:
        agent.stop()


def test_the_api_answers_through_nginx(front: Front) -> None:
    with front.client(headers={"Authorization": f"Bearer {front.token}"}) as client:
        health = client.get("/api/v1/health")
        agents = client.get("/api/v1/agents")
    assert health.status_code == 200
    assert agents.status_code == 200


def test_a_header_cannot_claim_a_certificate_through_nginx(front: Front) -> None:
    """nginx sets X-Client-Cert itself: a client's own header never passes."""
    with front.server.client(front.token) as api:
        created = api.post("/api/v1/agents", json={"id": "victim-3"})
    pem = created.json()["files"]["agent.crt"]
    forged = httpx.URL("", params={"c": pem}).query.decode()[2:]
    with front.client() as client:
        answer = client.post("/api/v1/agents/victim-3/sync", json={},
                             headers={"X-Client-Cert": forged})
    assert answer.status_code == 401, answer.text
