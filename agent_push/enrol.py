"""``epns-agent enrol``: trade an enrolment token for this machine's identity.

The key is made here and never leaves the machine: the server gets a CSR over
HTTPS (verified against the fleet CA the installer brings) and answers the
certificate, the CA, the server's public key and an ``agent.toml`` that names
them, all written next to the key. ``epns-agent run --config DIR/agent.toml``
then runs the agent unchanged.

Without ``--id`` the request carries the host name and a fingerprint of the
machine id (``epns.machine``; never the id itself): the server makes the
agent id of them, unique across machines, and the answer says which. When the
token needs an admin's approval the answer is a pending enrolment: its id and
poll secret are kept in ``enrolment.json`` (0600) beside the key, and the
command polls, backing off, until an admin decides or ``--wait`` runs out;
``--resume`` takes it up again later.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_push import platform
from epns import machine, pki, tls
from epns.errors import EnrolFailed

KEY_FILE = "agent.key"
PENDING_FILE = "enrolment.json"
# What the server's answer may write, and nothing else: its file names are not
# trusted to stay inside the directory.
BUNDLE_FILES = ("agent.crt", "ca.crt", "server.pub", "agent.toml")
ENROL_PATH = "/api/v1/enrol"
FIRST_POLL = 1.0
STILL_WAITING_EVERY = 60.0


@dataclass(frozen=True, slots=True)
class Enrolled:
    """Done: the agent's id and its ``agent.toml``."""

    agent_id: str
    config: Path


@dataclass(frozen=True, slots=True)
class StillPending:
    """An admin has not decided yet: resume with ``epns-agent enrol --resume``."""

    enrolment_id: str
    directory: Path


def machine_identity() -> tuple[str, str | None]:
    """This machine's host name and the fingerprint of its machine id (None
    where there is none to read: ``platform.machine_id``)."""
    found = platform.machine_id()
    return socket.gethostname(), None if found is None else machine.fingerprint(found)


def enrol(server: str, token: str, ca: Path, agent_id: str | None, directory: Path, *,
          wait: float, say: Callable[[str], None], timeout: float = 30.0
          ) -> Enrolled | StillPending:
    """Enrol with the server at ``server`` (``https://HOST:PORT``) as
    ``agent_id``, or as the id the server makes of this machine's name when
    None. Waits up to ``wait`` seconds for an approval (0: not at all).
    EnrolFailed says why it could not."""
    if (directory / "agent.crt").exists():
        raise EnrolFailed(f"{directory} holds an enrolled agent already (agent.crt); "
                          "remove it, or choose another --dir, to enrol again")
    if (directory / PENDING_FILE).exists():
        raise EnrolFailed(f"{directory} holds an enrolment waiting for approval; take it up "
                          f"with  epns-agent enrol --resume --dir {directory}")
    url = _url(server, ENROL_PATH)
    key_pem, csr_pem = pki.create_agent_csr(agent_id or "enrolling")
    body: dict[str, Any] = {"token": token, "csr": csr_pem.decode()}
    if agent_id is not None:
        body["agent_id"] = agent_id
    else:
        body["hostname"], body["machine"] = machine_identity()
    status, answer = _post(url, ca, body, timeout)
    if status == 202:
        pending = _pending_id(answer)
        # The CA beside the key: the one given may be gone when the enrolment
        # is resumed (the installer's is in a temporary directory).
        _write_identity(directory, key_pem, {"ca.crt": ca.read_text(encoding="ascii")})
        _write(directory / PENDING_FILE, json.dumps(
            {"id": pending, "secret": answer.get("secret"), "server": server,
             "ca": str((directory / "ca.crt").resolve())}).encode(), 0o600)
        return _wait(directory, pending, wait=wait, say=say, timeout=timeout,
                     poll_after=float(answer.get("poll_after") or 10.0))
    if status != 201:
        raise EnrolFailed(f"the server refused the enrolment ({status}): {_message(answer)}")
    return _finish(directory, key_pem, answer)


def resume(directory: Path, *, wait: float, say: Callable[[str], None],
           timeout: float = 30.0) -> Enrolled | StillPending:
    """Take up the pending enrolment kept in ``directory``."""
    try:
        kept = json.loads((directory / PENDING_FILE).read_text(encoding="utf-8"))
        enrolment_id = str(kept["id"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EnrolFailed(f"no pending enrolment in {directory} ({exc}); enrol with "
                          "--server and --token") from exc
    return _wait(directory, enrolment_id, wait=wait, say=say, timeout=timeout, poll_after=10.0)


def _wait(directory: Path, enrolment_id: str, *, wait: float, say: Callable[[str], None],
          timeout: float, poll_after: float) -> Enrolled | StillPending:
    kept = json.loads((directory / PENDING_FILE).read_text(encoding="utf-8"))
    url = _url(kept["server"], f"{ENROL_PATH}/{enrolment_id}")
    ca = Path(kept["ca"])
    if wait > 0:
        say(f"enrolment {enrolment_id} waits for an admin's approval (epns-server enrolment "
            f"accept {enrolment_id}, or the console's Enrolments page); asking again for up "
            f"to {wait:.0f} s")
    start = time.monotonic()
    delay, told = FIRST_POLL, start
    while True:
        status, answer = _post(url, ca, {"secret": kept["secret"]}, timeout)
        if status == 201:
            key_pem = (directory / KEY_FILE).read_bytes()
            done = _finish(directory, key_pem, answer)
            (directory / PENDING_FILE).unlink()
            return done
        if status != 202:
            # Rejected or expired: this key will never be certified.
            for name in (PENDING_FILE, KEY_FILE):
                (directory / name).unlink(missing_ok=True)
            raise EnrolFailed(f"the enrolment did not go through ({status}): "
                              f"{_message(answer)}")
        now = time.monotonic()
        if now - start + delay > wait:
            return StillPending(enrolment_id, directory)
        if now - told >= STILL_WAITING_EVERY:
            say(f"still waiting for an admin to accept enrolment {enrolment_id} "
                f"({now - start:.0f} s)")
            told = now
        time.sleep(delay)
        delay = min(delay * 2, poll_after)


def _url(server: str, path: str) -> str:
    if not server.startswith("https://"):
        raise EnrolFailed(f"--server must be an https:// URL, not {server!r}")
    return server.rstrip("/") + path


def _post(url: str, ca: Path, body: dict[str, Any], timeout: float) -> tuple[int, Any]:
    import httpx  # noqa: PLC0415 (only enrolment needs it: not in the agent's idle memory)

    context = tls.client_context(ca)
    try:
        with httpx.Client(verify=context, timeout=timeout) as client:
            answer = client.post(url, json=body)
    except httpx.HTTPError as exc:
        raise EnrolFailed(f"cannot reach {url}: {exc or type(exc).__name__}") from exc
    try:
        return answer.status_code, answer.json()
    except ValueError:
        return answer.status_code, {"text": answer.text[:300]}


def _message(body: Any) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if message:
        return str(message)
    return str(body.get("text", "")) if isinstance(body, dict) else ""


def _pending_id(body: Any) -> str:
    if not isinstance(body, dict) or not isinstance(body.get("id"), str) or not isinstance(
            body.get("secret"), str):
        raise EnrolFailed("the server's answer lacks the pending enrolment's id and secret")
    return str(body["id"])


def _finish(directory: Path, key_pem: bytes, body: Any) -> Enrolled:
    files = body.get("files") if isinstance(body, dict) else None
    if not isinstance(files, dict) or not all(
            isinstance(files.get(name), str) for name in BUNDLE_FILES):
        raise EnrolFailed(f"the server's answer lacks the bundle files {', '.join(BUNDLE_FILES)}")
    agent_id = body.get("agent_id")
    _write_identity(directory, key_pem, {name: files[name] for name in BUNDLE_FILES})
    return Enrolled(str(agent_id), directory / "agent.toml")


def _write_identity(directory: Path, key_pem: bytes, files: dict[str, str]) -> None:
    try:
        platform.private_directory(directory)
        _write(directory / KEY_FILE, key_pem, 0o600)
        for name, text in files.items():
            _write(directory / name, text.encode(), 0o644)
    except OSError as exc:
        raise EnrolFailed(f"cannot write the identity into {directory}: {exc}; the token "
                          "is spent, ask for a new one") from exc


def _write(path: Path, data: bytes, mode: int) -> None:
    # A mode on POSIX; on Windows the directory's ACL (agent_push.platform).
    platform.write_file(path, data, mode)


def tell(text: str) -> None:
    """A progress line on stderr (stdout says the result)."""
    sys.stderr.write(f"epns-agent: {text}\n")
    sys.stderr.flush()
