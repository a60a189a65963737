"""The benchmark's PKI: the project's dev PKI plus one client certificate per
simulated agent, generated once and reused across runs.

Agent ids are ``bench-00001``, ``bench-00002``, ...; each certificate has
CN = agent id and OU = epns-agent, exactly as ``epns.pki`` issues them to
real agents.
"""

from __future__ import annotations

import time
from pathlib import Path

from cryptography.exceptions import InvalidSignature

from epns import pki

DEFAULT_DIR = Path("/tmp/epns-bench-pki")
# The broker certificate must match the address the load generator dials.
BROKER_NAMES = ("localhost", "127.0.0.1")


def agent_id(index: int) -> str:
    """The id of simulated agent number ``index`` (1-based)."""
    return f"bench-{index:05d}"


def ensure_bench_pki(directory: Path, count: int) -> dict[str, float | int]:
    """Create the dev PKI and the first ``count`` agent certificates in
    ``directory``, keeping whatever is already there.

    Returns how many certificates were created and how long it took.
    Raises RuntimeError when the cached agent certificates were issued by
    another CA (the directory was half-deleted): mixing them would make every
    agent fail the TLS handshake for a reason unrelated to the broker.
    """
    started = time.perf_counter()
    ca = pki.init_dev_pki(directory, BROKER_NAMES)
    ca_cert = pki.load_certificate(ca.cert)
    first = pki.agent_pair(directory, agent_id(1))
    if first.cert.exists():
        try:
            pki.load_certificate(first.cert).verify_directly_issued_by(ca_cert)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise RuntimeError(
                f"{first.cert} was not issued by {ca.cert}; remove {directory} and rerun"
            ) from exc
    created = 0
    for index in range(1, count + 1):
        name = agent_id(index)
        pair = pki.agent_pair(directory, name)
        if pair.cert.exists() and pair.key.exists():
            continue
        pki.create_client_cert(ca, pair, name)
        created += 1
    return {"created": created, "seconds": round(time.perf_counter() - started, 2)}


def ensure_named_agent(directory: Path, name: str) -> pki.Pair:
    """The dev PKI and the certificate of one agent called ``name`` (a real
    agent process's, not a simulated one's), kept if already there."""
    ca = pki.init_dev_pki(directory, BROKER_NAMES)
    pair = pki.agent_pair(directory, name)
    if not (pair.cert.exists() and pair.key.exists()):
        pki.create_client_cert(ca, pair, name)
    return pair
