"""Fixtures of the broker's in-memory tests."""

from __future__ import annotations

import pytest

from tests.support.broker_core import make_certificates


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """DER certificates of a dev PKI: two agents and the server."""
    return make_certificates(tmp_path_factory.mktemp("pki"))
