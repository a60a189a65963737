"""The agent's renewal task outlives a failure it did not foresee: an
exception from switching to the renewed identity (or any other bug) is logged
and retried, instead of ending the task, and with it every renewal to come."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from agent_push.renewal import Renewed, Renewer
from agent_push.sync import DirectOnly
from epns import pki, renewal
from epns.agent_config import AgentSettings, IdentitySettings, RenewalSettings


class _Answered(Renewer):
    """A Renewer whose server answers at once with a certificate from ``ca``:
    the task's own loop is what is under test, not the exchange."""

    def __init__(self, ca: pki.Pair, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._issuer = ca

    async def _renew(self) -> Renewed:
        key, csr = pki.create_agent_csr("a1")
        cert = pki.issue_from_csr(self._issuer, csr, "a1", lifetime=3600.0)
        return Renewed(cert.public_bytes(Encoding.PEM), key, None, "x",
                       renewal.certificate_lifetime(cert.public_bytes(Encoding.DER)))


@pytest.mark.timeout(30)
def test_a_failed_switch_is_retried_not_the_end_of_renewal(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ca = pki.create_ca(tmp_path / "ca")
    pair = pki.create_client_cert(ca, pki.Pair(tmp_path / "agent.crt", tmp_path / "agent.key"),
                                  "a1", days=1)
    settings = AgentSettings(identity=IdentitySettings(agent_id="a1", cert=pair.cert,
                                                       key=pair.key),
                             renewal=RenewalSettings(retry_base=1.0, retry_cap=1.0))
    calls: list[Renewed] = []

    async def scenario() -> None:
        second = asyncio.Event()

        def installed(renewed: Renewed) -> None:
            calls.append(renewed)
            if len(calls) == 1:
                raise RuntimeError("the switch failed")
            second.set()

        renewer = _Answered(ca, settings, DirectOnly(["https://127.0.0.1:9"]), tls_ca=None,
                            token=lambda: None, installed=installed,
                            report=lambda state: None)
        task = asyncio.create_task(renewer.run())
        renewer.request_now()
        try:
            await asyncio.wait_for(second.wait(), 15)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert renewer.state["last_renewal"]["ok"] is True

    with caplog.at_level(logging.WARNING, logger="agent_push.renewal"):
        asyncio.run(scenario())
    assert len(calls) == 2
    assert "renewal_internal_error" in caplog.text
    assert "the switch failed" in caplog.text
