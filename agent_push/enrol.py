"""``epns-agent enrol``: trade a one-time enrolment token for this machine's
identity.

The key is made here and never leaves the machine: the server gets a CSR over
HTTPS (verified against the fleet CA the installer brings) and answers the
certificate, the CA, the server's public key and an ``agent.toml`` that names
them, all written next to the key. ``epns-agent run --config DIR/agent.toml``
then runs the agent unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from epns import pki, tls
from epns.errors import EnrolFailed

KEY_FILE = "agent.key"
# What the server's answer may write, and nothing else: its file names are not
# trusted to stay inside the directory.
BUNDLE_FILES = ("agent.crt", "ca.crt", "server.pub", "agent.toml")
ENROL_PATH = "/api/v1/enrol"


def enrol(server: str, token: str, ca: Path, agent_id: str, directory: Path, *,
          timeout: float = 30.0) -> Path:
    """Enrol ``agent_id`` with the server at ``server`` (``https://HOST:PORT``);
    returns the written ``agent.toml``. EnrolFailed says why it could not."""
    if (directory / "agent.crt").exists():
        raise EnrolFailed(f"{directory} holds an enrolled agent already (agent.crt); "
                          "remove it, or choose another --dir, to enrol again")
    key_pem, csr_pem = pki.create_agent_csr(agent_id)
    files = _exchange(server, token, ca, agent_id, csr_pem.decode(), timeout=timeout)
    _write_identity(directory, key_pem, files)
    return directory / "agent.toml"


def _exchange(server: str, token: str, ca: Path, agent_id: str, csr: str, *,
              timeout: float) -> dict[str, str]:
    import httpx  # noqa: PLC0415 (only enrolment needs it: not in the agent's idle memory)

    url = server.rstrip("/") + ENROL_PATH
    if not url.startswith("https://"):
        raise EnrolFailed(f"--server must be an https:// URL, not {server!r}")
    context = tls.client_context(ca)
    try:
        with httpx.Client(verify=context, timeout=timeout) as client:
            answer = client.post(url, json={"token": token, "agent_id": agent_id, "csr": csr})
    except httpx.HTTPError as exc:
        raise EnrolFailed(f"cannot reach {url}: {exc or type(exc).__name__}") from exc
    try:
        body = answer.json()
    except ValueError:
        body = None
    if answer.status_code != 201:
        raise EnrolFailed(f"the server refused the enrolment ({answer.status_code}): "
                          f"{_message(body) or answer.text[:300]}")
    return _bundle_files(body)


def _message(body: Any) -> str | None:
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return str(message) if message else None


def _bundle_files(body: Any) -> dict[str, str]:
    files = body.get("files") if isinstance(body, dict) else None
    if not isinstance(files, dict) or not all(
            isinstance(files.get(name), str) for name in BUNDLE_FILES):
        raise EnrolFailed(f"the server's answer lacks the bundle files {', '.join(BUNDLE_FILES)}")
    return {name: files[name] for name in BUNDLE_FILES}


def _write_identity(directory: Path, key_pem: bytes, files: dict[str, str]) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write(directory / KEY_FILE, key_pem, 0o600)
        for name, text in files.items():
            _write(directory / name, text.encode(), 0o644)
    except OSError as exc:
        raise EnrolFailed(f"cannot write the identity into {directory}: {exc}; the token "
                          "is spent, ask for a new one") from exc


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    # os.open's mode applies only to a new file: a key must not keep looser ones.
    os.fchmod(fd, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
