"""The agent's idle memory: what starting it imports, what an HTTP sync adds,
and its pinned key read without cryptography's x509 and serialization."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent_push.cli import load_command_key
from epns import pki
from epns.errors import PKIError
from tests.support.processes import ROOT
from tests.support.sync_server import SyncServer

# Imported where they are used (or not by the agent at all), never at its start.
ON_DEMAND = ("httpx", "rich", "click", "pygments", "psutil", "wakeonlan", "python_socks",
             "defusedxml", "xml.etree.ElementTree", "cryptography.x509",
             "cryptography.hazmat.primitives.serialization", "uvloop", "importlib.metadata",
             "epns.pki")


def _modules_after(script: str, *args: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``script`` (a None
    in sys.modules is an import refused on purpose, not a module)."""
    listing = "\nprint(' '.join(name for name, m in sys.modules.items() if m is not None))"
    done = subprocess.run(
        [sys.executable, "-c", script + listing, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    return set(done.stdout.split())


def test_starting_the_agent_imports_nothing_it_loads_on_demand() -> None:
    loaded = _modules_after("import sys\nimport agent_push.cli")
    assert sorted(loaded & set(ON_DEMAND)) == []


def test_an_http_sync_imports_httpx_without_its_command_line(pki_dir: Path) -> None:
    script = """
import asyncio, sys
from pathlib import Path
from agent_push.sync import HttpSync, SyncRequest
from epns import pki
from epns.agent_config import SyncSettings
from epns.sync_contract import SyncReason
from epns.tls import client_context
directory, url = Path(sys.argv[1]), sys.argv[2]
pair = pki.agent_pair(directory, "a001")
context = client_context(directory / pki.CA_CERT, pair.cert, pair.key)
sync = HttpSync(SyncSettings(url=url, timeout=5.0), "a001", context, changes=dict)
assert asyncio.run(sync(SyncRequest(SyncReason.WAKE, (), 0.0))).ok
"""
    with SyncServer(pki_dir) as server:
        loaded = _modules_after(script, str(pki_dir), server.url)
    assert "httpx" in loaded
    assert sorted(loaded & {"httpx._main", "rich", "click", "pygments"}) == []


def test_the_pinned_key_reads_as_epns_pki_reads_it(pki_dir: Path) -> None:
    path = pki_dir / pki.SIGNING_PUB
    assert load_command_key(path) == pki.load_public_key(path)


def test_a_key_that_is_not_ed25519_or_not_a_key_is_refused(pki_dir: Path,
                                                          tmp_path: Path) -> None:
    ec_key = tmp_path / "ec.pub"
    ec_key.write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(PKIError, match="is not an Ed25519 public key"):
        load_command_key(ec_key)
    garbled = tmp_path / "garbled.pub"
    garbled.write_text("-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----\n")
    for path in (tmp_path / "missing.pub", pki_dir / pki.CA_CERT, garbled):
        with pytest.raises(PKIError, match="cannot read public key"):
            load_command_key(path)
