"""Schemathesis against a live server: every operation in the OpenAPI document
gets generated valid and invalid input (coverage, fuzzing and stateful
phases) and must answer without a server error, with a status the document
declares, and with a content type and body that match it.

The CLI runs in a subprocess: the pytest loader of schemathesis 4.32 reads
``request.node._nodeid``, which pytest 9 no longer has, and the CLI prints a
curl command for every failure, which is how one reproduces it by hand.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from epns import pki, tokens
from tests.server.conftest import Stack

SEED = 20240611
# Per operation and phase; with the coverage phase's own cases both runs
# together stay under a minute.
MAX_EXAMPLES = 25
FUZZ_AGENT = "fuzz-agent"
SYNC_PATHS = r"/agents/\{agent_id\}/sync$"
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance")


def _toml(value: Any) -> str:
    """A TOML value: JSON's strings, numbers and booleans are TOML's too."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def _config(stack: Stack, token: str, operations: dict[str, Any] | None) -> str:
    settings = {
        "seed": SEED,
        "tls-verify": str(stack.pki / pki.CA_CERT),
        "headers": {"Authorization": f"Bearer {token}"},
        "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
    }
    lines = [f"{key} = {_toml(value)}" for key, value in settings.items()]
    if operations:
        lines += ["[[operations]]",
                  *(f"{key} = {_toml(value)}" for key, value in operations.items())]
    return "\n".join(lines) + "\n"


def _schemathesis(stack: Stack, work: Path, token: str, operations: dict[str, Any] | None,
                  *select: str) -> dict[str, Any]:
    """Run ``st run`` on the live document; its JSON report, after asserting
    that it found nothing and really tested every selected operation."""
    work.mkdir()
    (work / "schemathesis.toml").write_text(_config(stack, token, operations))
    # The document is read with an API token (it is behind a login); the
    # operations are then called with ``token``, which may be an agent's.
    with stack.api() as api:
        document = api.get("/api/v1/openapi.json")
    assert document.status_code == 200, document.text
    (work / "openapi.json").write_text(document.text)
    # cwd: schemathesis and Hypothesis keep their caches in the working directory.
    done = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", "schemathesis.toml", "run",
         "openapi.json", "--url", stack.server.url, *select, "--no-color",
         "--report", "json", "--report-json-path", "report.json"],
        cwd=work, capture_output=True, text=True, timeout=540, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    report: dict[str, Any] = json.loads((work / "report.json").read_text())
    assert report["failures"] == [], output
    assert report["errors"] == [], output
    operations_seen = report["operations"]
    assert operations_seen["tested"] == operations_seen["selected"] > 0, output
    # An operation that only ever got 401/403 was not tested at all.
    assert report["warnings"]["missing_auth"] == [], output
    return report


def test_sync_endpoints_answer_generated_reports(stack: Stack, tmp_path: Path) -> None:
    # As the agent itself, on its own resource, so generated reports get past
    # authentication into the parser. A run of its own: the REST run below
    # revokes agents it finds, this one among them.
    stack.create_agent(FUZZ_AGENT, auth="token")
    key = pki.load_signing_key(stack.pki / pki.SIGNING_KEY)
    token = tokens.sign_token(key, FUZZ_AGENT, now=time.time(), ttl=3600)
    report = _schemathesis(stack, tmp_path / "sync", token,
                           {"include-path-regex": SYNC_PATHS,
                            "parameters": {"path.agent_id": FUZZ_AGENT}},
                           "--include-path-regex", SYNC_PATHS)
    assert report["operations"]["tested"] == 2


# Every REST operation with generated requests: 150-230 s on
# 2 busy cores, so beyond the default 120 s.
@pytest.mark.timeout(600)
def test_rest_api_answers_generated_requests(make_stack: Callable[..., Stack],
                                             tmp_path: Path) -> None:
    # A generous wake-up rate limit: the fuzzer should reach the logic, not
    # the limiter (test_api.py covers the limiter).
    stack = make_stack(wakeups__burst="100000", wakeups__per_minute="1000000")
    stack.create_agent(FUZZ_AGENT, groups=("fuzz",))
    _schemathesis(stack, tmp_path / "rest", stack.token, None,
                  "--exclude-path-regex", SYNC_PATHS)
