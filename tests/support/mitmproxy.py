"""mitmproxy's ``mitmdump``, the TLS-intercepting proxy of the firewall matrix.

It does not join the ``dev`` extra: in a fresh venv, ``.[dev]`` plus
mitmproxy made pip take mitmproxy 11.0.2 and downgrade cryptography 51 -> 44
and h11 0.16 -> 0.14 (its pins), so the project would be tested with other
versions than it ships with. Debian's package (8.1.1) is not installed in CI.
So a ``mitmdump`` on PATH is used when there is one, else mitmproxy is
installed from PyPI into a venv of its own, once per machine (about 15 s),
kept outside the work tree so that a fresh clone (CI) finds it again.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
from pathlib import Path

# mitmproxy 12 needs Python 3.12; the project runs on 3.11.
REQUIREMENT = "mitmproxy>=11,<12"
VENV = Path("/var/tmp/epns-test-mitmproxy-11")


def mitmdump() -> tuple[str | None, str]:
    """The mitmdump to run, or None and why there is none (for a skip)."""
    found = shutil.which("mitmdump")
    if found is not None:
        return found, f"{found} (on PATH)"
    binary = VENV / "bin" / "mitmdump"
    VENV.parent.mkdir(parents=True, exist_ok=True)
    # Parallel test workers (or runs) would install into the same folder.
    with (VENV.parent / f"{VENV.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not binary.exists():
            failure = _install()
            if failure is not None:
                return None, failure
    return str(binary), f"{binary} ({REQUIREMENT}, its own venv)"


def _install() -> str | None:
    """Make the venv and install mitmproxy; None, or why it failed."""
    shutil.rmtree(VENV, ignore_errors=True)
    steps = {"python -m venv": [sys.executable, "-m", "venv", str(VENV)],
             f"pip install {REQUIREMENT}": [str(VENV / "bin" / "pip"), "install", "-q",
                                            "--disable-pip-version-check", REQUIREMENT]}
    for what, argv in steps.items():
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                                  check=False)
        except subprocess.TimeoutExpired:
            shutil.rmtree(VENV, ignore_errors=True)
            return f"mitmproxy is not installed and {what} took over 300 s"
        if done.returncode != 0:
            shutil.rmtree(VENV, ignore_errors=True)
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            return f"mitmproxy is not installed and {what} failed: {last[:300]}"
    return None


def command(binary: str, host: str, port: int, confdir: Path) -> list[str]:
    """mitmdump as an explicit HTTP CONNECT proxy on ``host:port`` that
    inspects every tunnel's TLS with the CA it makes in ``confdir`` (issuer
    "mitmproxy"), as a corporate content filter does."""
    return [binary, "--mode", "regular", "--listen-host", host, "--listen-port", str(port),
            "--set", f"confdir={confdir}",
            # Present the minted certificate first; whether the server's can be
            # verified does not matter to the client's refusal of ours.
            "--set", "connection_strategy=lazy", "--set", "ssl_insecure=true",
            "--quiet"]
