"""``epns-server health``, the image's HEALTHCHECK and the systemd units'
probe, against a real server: 0 while it serves, 1 once it is gone."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.server.conftest import Stack
from tests.support.processes import ROOT


def _health(stack: Stack) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server_push", "health"], cwd=ROOT,
                          env=stack.server.env, capture_output=True, text=True, timeout=30,
                          check=False)


def test_health_says_ok_then_fails_when_the_server_is_gone(stack: Stack) -> None:
    done = _health(stack)
    assert done.returncode == 0, done.stdout + done.stderr
    url, _, body = done.stdout.strip().partition(": ")
    assert url == f"{stack.server.url}/api/v1/health"
    answer = json.loads(body)
    assert answer["status"] == "ok"
    assert answer["database"] is True

    stack.server.stop()
    gone = _health(stack)
    assert gone.returncode == 1
    assert "no answer" in gone.stdout
