"""The packaging tests run a whole stack (a real broker and server) for the
installed agents to connect and sync against (tests/server's fixture), and
share one build of the released artifacts."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.server.conftest import make_stack  # noqa: F401 (a fixture, used by name)
from tests.support.processes import ROOT


def _session_dir(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A directory of this pytest run that every xdist worker sees: the
    workers' base directories share a parent, unique to the run."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """Every artifact, built once per run by the script a maintainer runs
    (``scripts/build-packages``), or already, in ``EPNS_TEST_DIST``. The
    first worker to need it builds it under a lock; the others wait for it."""
    if built := os.environ.get("EPNS_TEST_DIST"):
        return Path(built)
    shared = _session_dir(tmp_path_factory, worker_id)
    out, finished = shared / "epns-dist", shared / "epns-dist.done"
    with (shared / "epns-dist.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not finished.exists():
            started = time.monotonic()
            done = subprocess.run([str(ROOT / "scripts" / "build-packages"), "--out", str(out)],
                                  cwd=ROOT, capture_output=True, text=True, timeout=400,
                                  check=False, env={**os.environ, "PYTHON": sys.executable})
            assert done.returncode == 0, done.stdout + done.stderr
            sys.stderr.write(f"scripts/build-packages: {time.monotonic() - started:.0f} s\n")
            finished.touch()
    return out
