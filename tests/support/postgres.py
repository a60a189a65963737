"""A throwaway PostgreSQL cluster on a loopback port, from Debian's postgresql."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.processes import free_port


def _newest_bin() -> Path:
    """Debian installs each major version in /usr/lib/postgresql/N/bin."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                   else 0)
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


BIN = _newest_bin()


def available() -> bool:
    """True when Debian's PostgreSQL server binaries are installed."""
    return (BIN / "initdb").exists()


def _as_postgres(argv: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _start(data: Path, base: Path, attempts: int = 3) -> int:
    """Start the cluster on a free port; another process may take the port
    between free_port and the bind (the suite runs alongside others), so a
    start that fails is tried again on a new one, and the last failure raises."""
    for attempt in range(1, attempts + 1):
        port = free_port()
        started = subprocess.run(
            _as_postgres([str(BIN / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w",
                          "-o", f"-p {port} -h 127.0.0.1 -k {base}", "start"]),
            capture_output=True, check=attempt == attempts)
        if started.returncode == 0:
            break
    return port


@contextmanager
def postgres_cluster() -> Iterator[str]:
    """Start a cluster; yields an asyncpg URL of an empty database ``epns``."""
    base = Path(tempfile.mkdtemp(prefix="epns-pg-"))
    data = base / "data"
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    subprocess.run(_as_postgres([str(BIN / "initdb"), "-D", str(data), "-U", "postgres",
                                 "--auth=trust", "-E", "UTF8"]),
                   check=True, capture_output=True)
    try:
        port = _start(data, base)
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise
    try:
        subprocess.run(_as_postgres([str(BIN / "createdb"), "-h", "127.0.0.1",
                                     "-p", str(port), "-U", "postgres", "epns"]),
                       check=True, capture_output=True)
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/epns"
    finally:
        subprocess.run(_as_postgres([str(BIN / "pg_ctl"), "-D", str(data), "-m", "fast",
                                     "stop"]), check=False, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
