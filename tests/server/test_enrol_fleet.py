"""Enrolling a fleet with one command: ``epns-agent enrol`` without ``--id``
on machines of their own (a UTS and mount namespace each: its own host name
and /etc/machine-id), ids made unique across machines, re-installs, and
enrolments that wait for an admin's approval. Real server, real broker, the
agent command as a real process, and the enrolled agent answering a wake-up."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from epns import machine, pki
from tests.server.conftest import Stack
from tests.support.agents import AgentProcess, start_agent
from tests.support.processes import ROOT

# Runs the rest of its arguments as another machine: host name $0, machine id in $1.
_AS_MACHINE = ('hostname "$0" && mount --bind "$1" /etc/machine-id && shift && '
               'exec "$@"')


def _why_no_machines() -> str | None:
    if shutil.which("unshare") is None:
        return "no unshare"
    if not Path("/etc/machine-id").is_file():
        return "no /etc/machine-id to stand in for"
    done = subprocess.run(["unshare", "--uts", "--mount", "true"], capture_output=True,
                          check=False)
    return None if done.returncode == 0 else "cannot make UTS and mount namespaces here"


pytestmark = pytest.mark.skipif(_why_no_machines() is not None,
                                reason=str(_why_no_machines()))


class Machine:
    """A stand-in machine: a host name and a machine id of its own."""

    def __init__(self, work: Path, hostname: str, machine_id: str) -> None:
        self.hostname = hostname
        self.id_file = work / f"machine-id-{hostname}-{machine_id[:6]}"
        self.id_file.write_text(machine_id + "\n")
        self.fingerprint = machine.fingerprint(machine_id)

    def agent(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``epns-agent ARGS`` run on this machine."""
        return subprocess.run(
            ["unshare", "--uts", "--mount", "sh", "-c", _AS_MACHINE, self.hostname,
             str(self.id_file), sys.executable, "-m", "agent_push", *args],
            cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)

    def enrol(self, stack: Stack, token: str, directory: Path, *extra: str,
              ca: Path | None = None) -> subprocess.CompletedProcess[str]:
        return self.agent("enrol", "--server", stack.server.url, "--token", token,
                          "--ca", str(ca or stack.pki / pki.CA_CERT), "--dir", str(directory),
                          *extra)


def _agent_id(directory: Path) -> str:
    for line in (directory / "agent.toml").read_text().splitlines():
        if line.startswith("agent_id = "):
            return line.split('"')[1]
    raise AssertionError(f"no agent_id in {directory / 'agent.toml'}")


def _run_and_wake(stack: Stack, directory: Path, agent_id: str) -> AgentProcess:
    """Run the agent from what enrol wrote; it must come online and satisfy a wake-up."""
    agent = start_agent(directory / "agent.toml", cwd=directory)
    stack.agents.append(agent)
    stack.wait_agent(agent_id, "online")
    stack.wait_wakeup(stack.wake(agent_id), "satisfied")
    return agent


def test_one_command_enrols_every_machine_under_its_host_name(stack: Stack,
                                                              tmp_path: Path) -> None:
    made = stack.enrol_token(max_uses=None, groups=["lab"])
    first = Machine(tmp_path, "Lab-PC.example.org", "11" * 16)
    twin = Machine(tmp_path, "lab-pc", "22" * 16)
    other = Machine(tmp_path, "PRINTER-7", "33" * 16)
    done = {m.hostname: m.enrol(stack, made["token"], tmp_path / m.hostname)
            for m in (first, twin, other)}
    for name, result in done.items():
        assert result.returncode == 0, f"{name}: {result.stderr}"
    ids = {name: _agent_id(tmp_path / name) for name in done}
    assert twin.fingerprint is not None
    # The twin's name was taken by another machine: its id gets the first six
    # hex digits of its own fingerprint, the same on any re-install.
    assert ids == {"Lab-PC.example.org": "lab-pc", "lab-pc": f"lab-pc-{twin.fingerprint[:6]}",
                   "PRINTER-7": "printer-7"}
    assert f"enrolled as lab-pc-{twin.fingerprint[:6]}" in done["lab-pc"].stdout
    with stack.api() as api:
        shown = {a["id"]: a for a in api.get("/api/v1/agents").json()}
        detail = api.get(f"/api/v1/enrol-tokens/{made['id']}").json()
    assert sorted(shown) == sorted(ids.values())
    assert all(shown[i]["groups"] == ["lab"] for i in ids.values())
    assert (detail["uses"], detail["max_uses"], detail["state"]) == (3, None, "active")
    by_agent = {e["agent_id"]: e for e in detail["enrolments"]}
    assert by_agent["lab-pc"]["hostname"] == "Lab-PC.example.org"
    assert by_agent["lab-pc"]["machine"] == first.fingerprint
    assert by_agent["lab-pc"]["address"] == "127.0.0.1"
    # Never the raw machine id.
    with sqlite3.connect(stack.work / "server.db") as db:
        dump = "\n".join(db.iterdump())
    assert "11" * 16 not in dump
    _run_and_wake(stack, tmp_path / "lab-pc", ids["lab-pc"])


def test_a_reinstall_is_refused_until_the_old_identity_is_revoked(stack: Stack,
                                                                  tmp_path: Path) -> None:
    made = stack.enrol_token(max_uses=None)
    box = Machine(tmp_path, "kiosk", "44" * 16)
    assert box.enrol(stack, made["token"], tmp_path / "one").returncode == 0
    # The same machine, its identity lost (a re-install): refused, saying how.
    again = box.enrol(stack, made["token"], tmp_path / "two")
    assert again.returncode == 2
    assert "enrolled already, as agent 'kiosk'" in again.stderr
    assert "epns-server agent revoke kiosk" in again.stderr
    assert not (tmp_path / "two" / "agent.key").exists()
    # An enrolled directory is refused before the server is asked.
    here = box.enrol(stack, made["token"], tmp_path / "one")
    assert "holds an enrolled agent already" in here.stderr
    stack.server.cli("agent", "revoke", "kiosk")
    third = box.enrol(stack, made["token"], tmp_path / "three")
    assert third.returncode == 0, third.stderr
    assert box.fingerprint is not None
    # A revocation holds for the id: the machine comes back under a new one.
    assert _agent_id(tmp_path / "three") == f"kiosk-{box.fingerprint[:6]}"
    with stack.api() as api:
        assert api.get(f"/api/v1/enrol-tokens/{made['id']}").json()["uses"] == 2
    _run_and_wake(stack, tmp_path / "three", f"kiosk-{box.fingerprint[:6]}")


def _pending(stack: Stack) -> list[dict[str, Any]]:
    with stack.api() as api:
        answer = api.get("/api/v1/enrolments", params={"state": "pending"})
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()
    return rows


@pytest.mark.timeout(180)
def test_an_enrolment_waits_for_approval_then_runs(stack: Stack, tmp_path: Path) -> None:
    made = stack.enrol_token(max_uses=10, approval=True, groups=["branch"])
    box = Machine(tmp_path, "till-3", "55" * 16)
    directory = tmp_path / "till-3"
    # The CA as the one-line installer brings it: in a temporary directory,
    # gone by the time the enrolment is resumed.
    given = tmp_path / "given-ca.crt"
    shutil.copy(stack.pki / pki.CA_CERT, given)
    waited = box.enrol(stack, made["token"], directory, "--no-wait", ca=given)
    given.unlink()
    assert waited.returncode == 4, waited.stderr
    assert f"epns-agent enrol --resume --dir {directory}" in waited.stdout
    kept = json.loads((directory / "enrolment.json").read_text())
    assert (directory / "enrolment.json").stat().st_mode & 0o777 == 0o600
    assert not (directory / "agent.crt").exists()
    pending = _pending(stack)
    assert [(p["id"], p["requested_id"], p["hostname"]) for p in pending] == [
        (kept["id"], "till-3", "till-3")]
    with stack.api() as api:
        assert api.get("/api/v1/agents/till-3").status_code == 404
        assert api.get(f"/api/v1/enrol-tokens/{made['id']}").json()["uses"] == 1
    # Polling while pending says so, without spending anything.
    still = box.agent("enrol", "--resume", "--dir", str(directory), "--no-wait")
    assert still.returncode == 4, still.stderr
    # The installer waits (as the one-line installer does); an admin accepts meanwhile.
    waiting = subprocess.Popen(
        ["unshare", "--uts", "--mount", "sh", "-c", _AS_MACHINE, box.hostname,
         str(box.id_file), sys.executable, "-m", "agent_push", "enrol", "--resume", "--dir",
         str(directory), "--wait", "120"], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        accepted = stack.server.cli("enrolment", "accept", kept["id"])
        assert "accepted: agent till-3" in accepted
        out, err = waiting.communicate(timeout=60)
    finally:
        waiting.kill()
        waiting.wait()
    assert waiting.returncode == 0, err
    assert "waits for an admin's approval" in err
    assert "enrolled as till-3" in out
    assert not (directory / "enrolment.json").exists()
    with stack.api() as api:
        assert api.get("/api/v1/agents/till-3").json()["groups"] == ["branch"]
        audit = {a["action"] for a in api.get("/api/v1/audit").json()}
    assert {"enrolment_request", "enrolment_accept"} <= audit
    assert _pending(stack) == []
    _run_and_wake(stack, directory, "till-3")


def test_a_rejected_or_expired_enrolment_is_refused_plainly(stack: Stack,
                                                             tmp_path: Path) -> None:
    made = stack.enrol_token(max_uses=1, approval=True)
    box = Machine(tmp_path, "stranger", "66" * 16)
    assert box.enrol(stack, made["token"], tmp_path / "a", "--no-wait").returncode == 4
    enrolment = json.loads((tmp_path / "a" / "enrolment.json").read_text())["id"]
    # Its one use is held by the pending request.
    late = Machine(tmp_path, "late", "77" * 16).enrol(stack, made["token"], tmp_path / "b",
                                                     "--no-wait")
    assert "used already" in late.stderr
    with stack.api() as api:
        rejected = api.post(f"/api/v1/enrolments/{enrolment}/reject",
                            json={"reason": "not one of ours"})
        twice = api.post(f"/api/v1/enrolments/{enrolment}/accept")
        token = api.get(f"/api/v1/enrol-tokens/{made['id']}").json()
    assert rejected.status_code == 200, rejected.text
    assert twice.status_code == 409
    assert twice.json()["error"]["code"] == "enrolment_rejected"
    # A rejected request gives its use back.
    assert (token["uses"], token["state"]) == (0, "active")
    resumed = box.agent("enrol", "--resume", "--dir", str(tmp_path / "a"))
    assert resumed.returncode == 2
    assert "rejected" in resumed.stderr
    assert "not one of ours" in resumed.stderr
    assert not (tmp_path / "a" / "enrolment.json").exists()
    assert not (tmp_path / "a" / "agent.key").exists()

    # Expired: nobody decided within [enrol] pending_ttl.
    again = Machine(tmp_path, "slow", "88" * 16)
    assert again.enrol(stack, made["token"], tmp_path / "c", "--no-wait").returncode == 4
    with sqlite3.connect(stack.work / "server.db") as db:
        db.execute("UPDATE enrolments SET expires_at = ? WHERE state = 'pending'",
                   (time.time() - 1,))
    expired = again.agent("enrol", "--resume", "--dir", str(tmp_path / "c"))
    assert expired.returncode == 2
    assert "expired" in expired.stderr
    with stack.api() as api:
        rows = {r["requested_id"]: r for r in api.get("/api/v1/enrolments").json()}
        token = api.get(f"/api/v1/enrol-tokens/{made['id']}").json()
        audit = {a["action"] for a in api.get("/api/v1/audit").json()}
    assert (rows["stranger"]["state"], rows["slow"]["state"]) == ("rejected", "expired")
    assert token["uses"] == 0
    assert {"enrolment_request", "enrolment_reject", "enrolment_expire"} <= audit
