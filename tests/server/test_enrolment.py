"""Enrolment: tokens (one-time and reusable), a CSR over HTTPS, and an agent
that runs from what ``epns-agent enrol`` wrote. Real broker, real server,
real agents."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from epns import pki
from tests.server.conftest import Stack
from tests.support.agents import AgentProcess, start_agent
from tests.support.processes import ROOT


def _enrol(stack: Stack, token: str, agent_id: str, csr: str | None = None) -> httpx.Response:
    if csr is None:
        csr = pki.create_agent_csr(agent_id)[1].decode()
    # No bearer token: the enrolment token is the only credential.
    with stack.server.client() as client:
        return client.post("/api/v1/enrol", json={"token": token, "agent_id": agent_id,
                                                  "csr": csr})


def _refused(answer: httpx.Response, status: int, code: str) -> str:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code, error
    return str(error["message"])


def _agent_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent_push", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)


def _enrol_cli(stack: Stack, token: str, agent_id: str, directory: Path
               ) -> subprocess.CompletedProcess[str]:
    directory.parent.mkdir(parents=True, exist_ok=True)
    return _agent_cli(directory.parent, "enrol", "--server", stack.server.url, "--token", token,
                      "--ca", str(stack.pki / pki.CA_CERT), "--id", agent_id,
                      "--dir", str(directory))


def _run_from(stack: Stack, directory: Path, elsewhere: Path) -> AgentProcess:
    elsewhere.mkdir(exist_ok=True)
    agent = start_agent(directory / "agent.toml", cwd=elsewhere)
    stack.agents.append(agent)
    return agent


def test_an_installer_enrols_itself_and_runs_from_what_it_wrote(stack: Stack,
                                                                tmp_path: Path) -> None:
    made = stack.enrol_token(groups=["lab"], ttl=600)
    assert made["token"].startswith("epnsenrol_")
    assert made["groups"] == ["lab"]
    directory = tmp_path / "install" / "pc-1"
    done = _enrol_cli(stack, made["token"], "pc-1", directory)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in directory.iterdir()) == [
        "agent.crt", "agent.key", "agent.toml", "ca.crt", "server.pub"]
    assert stat.S_IMODE((directory / "agent.key").stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate((directory / "agent.crt").read_bytes())
    key = serialization.load_pem_private_key((directory / "agent.key").read_bytes(), None)
    assert cert.public_key() == key.public_key()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "pc-1"
    # Known from the enrolment itself, before the agent's first sync reports it.
    with stack.api() as api:
        enrolled = api.get("/api/v1/agents/pc-1").json()
    assert enrolled["identity_expires_at"] == cert.not_valid_after_utc.timestamp()

    agent = _run_from(stack, directory, tmp_path / "elsewhere")
    stack.wait_agent("pc-1", "online")
    assert "status=200" in agent.log_contains(r"sync_done .*reason=connect")
    stack.wait_wakeup(stack.wake("pc-1"), "satisfied")
    with stack.api() as api:
        shown = api.get("/api/v1/agents/pc-1").json()
        history = api.get("/api/v1/agents/pc-1/history").json()
        tokens = api.get("/api/v1/enrol-tokens").json()
        detail = api.get(f"/api/v1/enrol-tokens/{made['id']}").json()
        audit = api.get("/api/v1/audit").json()
    assert (shown["groups"], shown["auth"]) == (["lab"], "certificate")
    assert any(h["kind"] == "created" and made["id"] in h["detail"] for h in history)
    assert [(t["id"], t["state"], t["uses"], t["max_uses"]) for t in tokens] == [
        (made["id"], "used", 1, 1)]
    assert not any(k in tokens[0] for k in ("token", "token_hash"))
    assert [(e["agent_id"], e["state"]) for e in detail["enrolments"]] == [("pc-1", "enrolled")]
    assert {"enrol_token_create", "agent_enrol"} <= {a["action"] for a in audit}


def test_a_token_enrols_exactly_once(stack: Stack, tmp_path: Path) -> None:
    made = stack.enrol_token()
    assert _enrol_cli(stack, made["token"], "once-1", tmp_path / "once-1").returncode == 0
    again = _enrol_cli(stack, made["token"], "once-2", tmp_path / "once-2")
    assert again.returncode == 2
    assert "used already" in again.stderr
    assert not (tmp_path / "once-2" / "agent.key").exists()
    _refused(_enrol(stack, made["token"], "once-3"), 401, "enrol_token_used")


def test_racing_installers_with_one_token_get_one_identity(stack: Stack) -> None:
    made = stack.enrol_token()
    csrs = {f"race-{n}": pki.create_agent_csr(f"race-{n}")[1].decode() for n in range(8)}
    with ThreadPoolExecutor(len(csrs)) as pool:
        answers = list(pool.map(lambda item: _enrol(stack, made["token"], *item), csrs.items()))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] + [401] * 7, [a.text for a in answers]
    winner = next(a.json()["agent_id"] for a in answers if a.status_code == 201)
    with stack.api() as api:
        ids = [a["id"] for a in api.get("/api/v1/agents").json()]
    assert ids == [winner]


def test_racing_installers_with_a_token_of_k_uses_get_k_identities(stack: Stack) -> None:
    """Ten installers of one host name but ten machines race for a token of
    three uses: three identities, three distinct ids made of the name."""
    made = stack.enrol_token(max_uses=3, groups=["fleet"])
    bodies = [{"token": made["token"], "hostname": "Race-Box.lab", "machine": f"{n:064x}",
               "csr": pki.create_agent_csr("x")[1].decode()} for n in range(1, 11)]

    def post(body: dict[str, Any]) -> httpx.Response:
        with stack.server.client() as client:
            return client.post("/api/v1/enrol", json=body)

    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(post, bodies))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] * 3 + [401] * 7, [a.text for a in answers]
    assert all(a.json()["error"]["code"] == "enrol_token_used"
               for a in answers if a.status_code == 401)
    won = sorted(a.json()["agent_id"] for a in answers if a.status_code == 201)
    assert len(set(won)) == 3
    assert "race-box" in won
    assert all(name == "race-box" or name.startswith("race-box-") for name in won)
    with stack.api() as api:
        agents = sorted(a["id"] for a in api.get("/api/v1/agents").json())
        detail = api.get(f"/api/v1/enrol-tokens/{made['id']}").json()
    assert agents == won
    assert (detail["uses"], detail["state"]) == (3, "used")
    assert sorted(e["agent_id"] for e in detail["enrolments"]) == won


def test_unknown_expired_and_revoked_tokens_are_refused(stack: Stack) -> None:
    _refused(_enrol(stack, "epnsenrol_not-a-token", "x1"), 401, "bad_enrol_token")
    expiring = stack.enrol_token(ttl=60)
    with sqlite3.connect(stack.work / "server.db") as db:
        db.execute("UPDATE enrol_tokens SET expires_at = ? WHERE id = ?",
                   (time.time() - 1, expiring["id"]))
    assert "expired" in _refused(_enrol(stack, expiring["token"], "x2"), 401,
                                 "enrol_token_expired")
    revoked = stack.enrol_token(max_uses=None)
    assert _enrol(stack, revoked["token"], "x3").status_code == 201
    with stack.api() as api:
        assert api.delete(f"/api/v1/enrol-tokens/{revoked['id']}").status_code == 204
        again = api.delete(f"/api/v1/enrol-tokens/{revoked['id']}")
        unknown = api.delete("/api/v1/enrol-tokens/nosuchtoken")
        listed = {t["id"]: t for t in api.get("/api/v1/enrol-tokens").json()}
    _refused(again, 409, "enrol_token_revoked")
    _refused(unknown, 404, "unknown_enrol_token")
    assert "revoked" in _refused(_enrol(stack, revoked["token"], "x4"), 401,
                                 "enrol_token_revoked")
    # Revoked, not deleted: still listed, with the use it had.
    assert (listed[revoked["id"]]["state"], listed[revoked["id"]]["uses"]) == ("revoked", 1)
    assert listed[revoked["id"]]["revoked_by"] == "token:tests"


def test_a_refused_enrolment_leaves_the_token_usable(stack: Stack) -> None:
    made = stack.enrol_token()
    message = _refused(_enrol(stack, made["token"], "pc-2", csr="garbage"), 400, "bad_csr")
    assert "CSR" in message
    stack.create_agent("taken")
    _refused(_enrol(stack, made["token"], "taken"), 409, "agent_exists")
    # A CSR that asks for another name still gets the id the installer enrols as.
    other = pki.create_agent_csr("someone-else")[1].decode()
    answer = _enrol(stack, made["token"], "pc-2", csr=other)
    assert answer.status_code == 201, answer.text
    bundle = answer.json()
    assert sorted(bundle["files"]) == ["agent.crt", "agent.toml", "ca.crt", "server.pub"]
    cert = x509.load_pem_x509_certificate(bundle["files"]["agent.crt"].encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "pc-2"
    with stack.api() as api:
        # A used token can be revoked too: it is listed as revoked from then on.
        assert api.delete(f"/api/v1/enrol-tokens/{made['id']}").status_code == 204
        assert api.get(f"/api/v1/enrol-tokens/{made['id']}").json()["state"] == "revoked"


def test_a_token_for_one_agent_id_enrols_only_that_id(stack: Stack) -> None:
    token = stack.server.cli("enrol-token", "create", "--agent-id", "kiosk-1", "--group", "g1",
                             "--ttl", "600").strip()
    assert "for agent 'kiosk-1'" in _refused(_enrol(stack, token, "kiosk-2"), 403,
                                             "enrol_token_other_agent")
    answer = _enrol(stack, token, "kiosk-1")
    assert answer.status_code == 201, answer.text
    assert answer.json()["agent_id"] == "kiosk-1"
    stack.enrol_token(400, agent_id="kiosk-2", max_uses=5)
    with stack.api() as api:
        assert api.get("/api/v1/agents/kiosk-1").json()["groups"] == ["g1"]


def test_enrolment_requests_are_checked_before_anything_is_issued(stack: Stack) -> None:
    with stack.server.client() as client:
        too_big = client.post("/api/v1/enrol", content=b"{" + b" " * 100_000 + b"}",
                              headers={"content-type": "application/json"})
        missing = client.post("/api/v1/enrol", json={"token": "t"})
        unknown = client.post("/api/v1/enrol", json={"token": "t", "agent_id": "a",
                                                     "csr": "c", "admin": True})
        no_admin = client.post("/api/v1/enrol-tokens", json={})
    _refused(too_big, 413, "payload_too_large")
    _refused(missing, 422, "invalid_request")
    _refused(unknown, 422, "invalid_request")
    _refused(no_admin, 401, "unauthorized")
    stack.enrol_token(422, ttl=5)
    stack.enrol_token(422, max_uses=0)
    made = stack.enrol_token()
    csr = pki.create_agent_csr("x")[1].decode()
    with stack.server.client() as client:
        nameless = client.post("/api/v1/enrol", json={"token": made["token"], "csr": csr})
        bad_machine = client.post("/api/v1/enrol", json={
            "token": made["token"], "csr": csr, "hostname": "h", "machine": "not-hex"})
    assert "hostname" in _refused(nameless, 400, "no_agent_id")
    _refused(bad_machine, 422, "invalid_request")
    # Neither spent the use.
    assert _enrol(stack, made["token"], "x5").status_code == 201


def test_enrol_needs_the_fleet_ca_to_trust_the_server(stack: Stack, tmp_path: Path) -> None:
    made = stack.enrol_token()
    stranger = pki.create_ca(tmp_path / "stranger")
    done = _agent_cli(ROOT, "enrol", "--server", stack.server.url, "--token", made["token"],
                      "--ca", str(stranger.cert), "--id", "pc-9", "--dir", str(tmp_path / "pc-9"))
    assert done.returncode == 2
    assert "cannot reach" in done.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in done.stderr
    # Nothing was sent, so the token still works.
    assert _enrol(stack, made["token"], "pc-9").status_code == 201


# Nine CLI processes, each starting Python and checking the schema: 20 s
# alone, past 120 s once on a machine at load 9 (CI with other work running).
@pytest.mark.timeout(360)
def test_the_cli_makes_lists_shows_and_revokes_tokens(stack: Stack) -> None:
    done = subprocess.run([sys.executable, "-m", "server_push", "enrol-token", "create",
                           "--unlimited", "--approval", "--group", "shop", "--ttl", "600"],
                          cwd=ROOT, env=stack.server.env, capture_output=True, text=True,
                          timeout=60, check=True)
    token = done.stdout.strip()
    assert "any number of machines" in done.stderr
    assert "each enrolment waits for approval" in done.stderr
    assert f"epns-agent enrol --server {stack.server.url} --token {token} --ca ca.crt" in (
        done.stderr)
    csr = pki.create_agent_csr("x")[1].decode()
    with stack.server.client() as client:
        pending = client.post("/api/v1/enrol", json={"token": token, "hostname": "till-9",
                                                     "csr": csr}).json()
    token_id = stack.server.cli("enrol-token", "list").split()[0]
    listed = stack.server.cli("enrol-token", "list")
    assert "active   uses 1/unlimited  approval" in listed
    waiting = stack.server.cli("enrolment", "list", "--state", "pending")
    assert pending["id"] in waiting
    assert "asks till-9  host till-9  from 127.0.0.1" in waiting
    assert '"hostname": "till-9"' in stack.server.cli("enrol-token", "show", token_id)
    assert "rejected" in stack.server.cli("enrolment", "reject", pending["id"])
    assert "revoked" in stack.server.cli("enrol-token", "revoke", token_id)
    assert "revoked  uses 0/unlimited" in stack.server.cli("enrol-token", "list")
