"""The agent's idle memory: what starting it imports, that an HTTP sync runs
in it without httpx and its stack (h11 alone, agent_push.http_exchange), and
its pinned key read without cryptography's x509 and serialization."""

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

# httpx's stack: the agent's sync speaks HTTP/1.1 with h11 alone.
HTTP_STACK = ("httpx", "httpcore", "anyio", "sniffio", "certifi", "idna", "httpx._main")
# Imported where they are used (or not by the agent at all), never at its start.
ON_DEMAND = ("httpx", "rich", "click", "pygments", "psutil", "wakeonlan", "python_socks",
             "defusedxml", "xml.etree.ElementTree", "cryptography.x509",
             "cryptography.hazmat.primitives.serialization", "uvloop", "importlib.metadata",
             "epns.pki")


def _modules_after(script: str, *args: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``script`` (a None
    in sys.modules is an import refused on purpose, not a module); the list
    goes to stderr."""
    listing = ("\nimport sys\nsys.stderr.write('MODULES ' + ' '.join("
               "name for name, m in sys.modules.items() if m is not None))")
    done = subprocess.run(
        [sys.executable, "-c", script + listing, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    return set(done.stderr.rpartition("MODULES ")[2].split())


def test_starting_the_agent_imports_nothing_it_loads_on_demand() -> None:
    loaded = _modules_after("import agent_push.cli")
    assert sorted(loaded & {*ON_DEMAND, *HTTP_STACK}) == []


def test_an_http_sync_runs_in_the_agent_without_httpx(pki_dir: Path) -> None:
    script = """
import asyncio, sys
from pathlib import Path
from agent_push.sync import HttpSync, SyncRequest, TlsFiles
from epns import pki
from epns.agent_config import SyncSettings
from epns.sync_contract import SyncReason
directory, url = Path(sys.argv[1]), sys.argv[2]
pair = pki.agent_pair(directory, "a001")
tls = TlsFiles(directory / pki.CA_CERT, pair.cert, pair.key)
sync = HttpSync(SyncSettings(url=url, timeout=5.0, fetch=True), "a001", tls, changes=dict)
outcome = asyncio.run(sync(SyncRequest(SyncReason.WAKE, (), 0.0)))
assert outcome.ok, outcome.detail
"""
    with SyncServer(pki_dir) as server:
        loaded = _modules_after(script, str(pki_dir), server.url)
    assert server.methods() == ["POST", "GET"]
    assert "h11" in loaded
    assert sorted(loaded & set(HTTP_STACK)) == []


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
