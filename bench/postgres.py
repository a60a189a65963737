"""A throwaway PostgreSQL cluster on a loopback port (Debian's postgresql),
for ``python -m bench end-to-end --database postgres``: the server's
scale-out database, fresh for each run as the SQLite file is."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.brokers import free_port


def _bin() -> Path:
    """Debian installs each major version in /usr/lib/postgresql/N/bin: the newest."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                   else 0)
    if not found:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    return found[-1].parent


def _as_postgres(argv: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextmanager
def cluster(base: Path) -> Iterator[str]:
    """A new cluster in ``base`` (emptied first); yields the asyncpg URL of its
    empty database ``epns``; stopped and removed on exit."""
    binary = _bin()
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    data = base / "data"
    subprocess.run(_as_postgres([str(binary / "initdb"), "-D", str(data), "-U", "postgres",
                                 "--auth=trust", "-E", "UTF8"]), check=True, capture_output=True)
    port = free_port()
    subprocess.run(_as_postgres([str(binary / "pg_ctl"), "-D", str(data), "-l",
                                 str(base / "postgres.log"), "-w", "-o",
                                 f"-p {port} -h 127.0.0.1 -k {base} -c max_connections=200",
                                 "start"]), check=True, capture_output=True)
    try:
        subprocess.run(_as_postgres([str(binary / "createdb"), "-h", "127.0.0.1", "-p",
                                     str(port), "-U", "postgres", "epns"]),
                       check=True, capture_output=True)
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/epns"
    finally:
        subprocess.run(_as_postgres([str(binary / "pg_ctl"), "-D", str(data), "-m", "fast",
                                     "stop"]), check=False, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
