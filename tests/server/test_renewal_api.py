"""Renewal over the sync channel, against a real server and broker: what the
server issues, records, refuses and counts, and how expiry shows in the API
and the metrics."""

from __future__ import annotations

import re
import ssl
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from epns import pki, tokens
from epns.sync_contract import SyncFormat, SyncReason, SyncReport, encode_report
from tests.server.conftest import Stack

LIFETIMES = {"identity__certificate_lifetime": "3600", "identity__token_lifetime": "1800",
             "identity__renewals_per_hour": "3600", "identity__renewal_burst": "3"}


def _agent_client(stack: Stack, agent_id: str, *, cert: Path | None = None,
                  key: Path | None = None, token: str | None = None) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(stack.pki / pki.CA_CERT))
    if cert is not None:
        context.load_cert_chain(cert, key)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=stack.server.url, verify=context, headers=headers, timeout=15)


def _files(stack: Stack, agent_id: str) -> tuple[Path, Path]:
    bundle = stack.work / "agents" / agent_id
    return bundle / "agent.crt", bundle / "agent.key"


def _renew_cert(client: httpx.Client, agent_id: str, csr: bytes | str | None) -> httpx.Response:
    body: dict[str, Any] = {} if csr is None else {
        "csr": csr.decode() if isinstance(csr, bytes) else csr}
    return client.post(f"/api/v1/agents/{agent_id}/renew", json=body)


def _metrics(stack: Stack) -> str:
    with stack.api() as api:
        answer = api.get("/api/v1/metrics")
    assert answer.status_code == 200, answer.text
    return answer.text


def _sample(text: str, name: str, labels: str) -> float:
    found = re.search(rf"^{name}{{{labels}}} (\S+)$", text, re.MULTILINE)
    assert found is not None, f"{name}{{{labels}}} not in:\n{text}"
    return float(found.group(1))


@pytest.fixture
def lived(make_stack: Any) -> Stack:
    stack: Stack = make_stack(**LIFETIMES)
    return stack


def test_a_certificate_agent_renews_with_a_new_key(lived: Stack) -> None:
    stack = lived
    stack.create_agent("c1")
    cert, key = _files(stack, "c1")
    old = x509.load_pem_x509_certificate(cert.read_bytes())
    with stack.api() as api:
        before = api.get("/api/v1/agents/c1").json()
    # The server knows the expiry of what it issued, and it is its setting.
    assert before["identity_expires_at"] == pytest.approx(
        old.not_valid_after_utc.timestamp())
    assert before["identity_expires_at"] - old.not_valid_before_utc.timestamp() == \
        pytest.approx(3600, abs=1)

    new_key, csr = pki.create_agent_csr("c1")
    with _agent_client(stack, "c1", cert=cert, key=key) as client:
        answer = _renew_cert(client, "c1", csr)
    assert answer.status_code == 200, answer.text
    renewed = answer.json()
    new = x509.load_pem_x509_certificate(renewed["certificate"].encode())
    assert new.public_key() == serialization.load_pem_private_key(
        new_key, password=None).public_key()
    assert new.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "c1"
    assert renewed["serial"] == format(new.serial_number, "x") != format(old.serial_number, "x")
    assert renewed["expires_at"] == new.not_valid_after_utc.timestamp()
    ca = x509.load_pem_x509_certificate((stack.pki / pki.CA_CERT).read_bytes())
    new.verify_directly_issued_by(ca)

    with stack.api() as api:
        after = api.get("/api/v1/agents/c1").json()
        history = api.get("/api/v1/agents/c1/history").json()
        audit = api.get("/api/v1/audit").json()
    assert after["identity_expires_at"] == renewed["expires_at"]
    assert after["renewals"] == 1
    assert after["renewed_at"] is not None
    assert any(h["kind"] == "renewed" and renewed["serial"] in h["detail"] for h in history)
    assert any(a["action"] == "agent_renew" and a["targets"] == ["c1"]
               and a["actor"] == "agent:c1" for a in audit)

    # The previous certificate is not revoked: an agent whose answer was lost
    # still proves itself with it, and asks again.
    _, again = pki.create_agent_csr("c1")
    with _agent_client(stack, "c1", cert=cert, key=key) as client:
        assert client.get("/api/v1/agents/c1/sync").status_code == 200
        assert _renew_cert(client, "c1", again).status_code == 200
    # ... and so does the new one.
    new_cert, new_key_file = stack.work / "new.crt", stack.work / "new.key"
    new_cert.write_text(renewed["certificate"])
    new_key_file.write_bytes(new_key)
    with _agent_client(stack, "c1", cert=new_cert, key=new_key_file) as client:
        assert client.get("/api/v1/agents/c1/sync").status_code == 200
    assert _sample(_metrics(stack), "epns_agent_renewals_total", 'outcome="renewed"') == 2


def test_the_expiry_shown_is_that_of_the_identity_in_use(lived: Stack) -> None:
    """An agent that renewed but could not install the new certificate (its
    directory not writable, say) syncs on with the old one: the row must show
    the old one's expiry, which is the one that will lock it out."""
    stack = lived
    stack.create_agent("k1")
    created = time.time()
    cert, key = _files(stack, "k1")
    old = x509.load_pem_x509_certificate(cert.read_bytes())
    # Certificates carry whole seconds: renew in a later one than the old was
    # issued in, so that the two expiries differ.
    while int(time.time()) <= int(created):
        time.sleep(0.05)
    with _agent_client(stack, "k1", cert=cert, key=key) as client:
        renewed = _renew_cert(client, "k1", pki.create_agent_csr("k1")[1])
        assert renewed.status_code == 200, renewed.text
        with stack.api() as api:
            shown = api.get("/api/v1/agents/k1").json()["identity_expires_at"]
        assert shown == renewed.json()["expires_at"] > old.not_valid_after_utc.timestamp()
        report = encode_report(SyncReport(agent_id="k1", sync_id=uuid.uuid4().hex,
                                          started_at=time.time(), reason=SyncReason.MANUAL),
                               SyncFormat.JSON)
        posted = client.post("/api/v1/agents/k1/sync", content=report,
                             headers={"Content-Type": "application/json"})
        assert posted.status_code < 300, posted.text
    with stack.api() as api:
        after = api.get("/api/v1/agents/k1").json()
    assert after["identity_expires_at"] == old.not_valid_after_utc.timestamp()
    assert after["renewals"] == 1


def test_a_token_agent_gets_a_new_token(lived: Stack) -> None:
    stack = lived
    bundle = stack.create_agent("t1", auth="token")
    token = (bundle / "agent.token").read_text().strip()
    with _agent_client(stack, "t1", token=token) as client:
        answer = client.post("/api/v1/agents/t1/renew", json={})
        with_csr = _renew_cert(client, "t1", pki.create_agent_csr("t1")[1])
    assert answer.status_code == 200, answer.text
    new = answer.json()["token"]
    claims = tokens.verify_token(pki.load_public_key(stack.pki / pki.SIGNING_PUB), new,
                                 now=time.time())
    assert claims.subject == "t1"
    assert claims.expires_at - claims.issued_at == 1800
    assert answer.json()["token_id"] == claims.token_id
    assert with_csr.status_code == 400
    assert with_csr.json()["error"]["code"] == "csr_not_expected"
    with _agent_client(stack, "t1", token=new) as client:
        assert client.get("/api/v1/agents/t1/sync").status_code == 200


def test_bad_renewals_are_refused_with_their_reason(lived: Stack) -> None:
    stack = lived
    stack.create_agent("c2")
    cert, key = _files(stack, "c2")
    _, other = pki.create_agent_csr("c2")
    with _agent_client(stack, "c2", cert=cert, key=key) as client:
        missing = _renew_cert(client, "c2", None)
        garbage = _renew_cert(client, "c2", "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n")
        other_agent = _renew_cert(client, "c3", other)
        unknown_field = client.post("/api/v1/agents/c2/renew", json={"csr": None, "x": 1})
    assert (missing.status_code, missing.json()["error"]["code"]) == (400, "csr_required")
    assert (garbage.status_code, garbage.json()["error"]["code"]) == (400, "bad_csr")
    assert (other_agent.status_code, other_agent.json()["error"]["code"]) == (403, "other_agent")
    assert unknown_field.status_code == 422
    with _agent_client(stack, "c2") as client:
        nobody = _renew_cert(client, "c2", other)
    assert (nobody.status_code, nobody.json()["error"]["code"]) == (401, "no_agent_identity")
    with stack.api() as api:
        assert api.get("/api/v1/agents/c2").json()["renewals"] == 0
    text = _metrics(stack)
    assert _sample(text, "epns_agent_renewals_total", 'outcome="bad_csr"') == 1
    assert _sample(text, "epns_agent_renewals_total", 'outcome="csr_required"') == 1


def test_a_renewal_storm_is_rate_limited_per_agent(lived: Stack) -> None:
    stack = lived
    stack.create_agent("s1")
    stack.create_agent("s2")
    cert, key = _files(stack, "s1")
    codes = []
    with _agent_client(stack, "s1", cert=cert, key=key) as client:
        for _ in range(5):
            codes.append(_renew_cert(client, "s1", pki.create_agent_csr("s1")[1]))
    # A burst of 3 (identity.renewal_burst), then 429 with when to come back.
    assert [a.status_code for a in codes] == [200, 200, 200, 429, 429]
    assert codes[3].json()["error"]["code"] == "renewal_rate_limited"
    assert float(codes[3].headers["retry-after"]) > 0
    # Another agent is not affected.
    cert2, key2 = _files(stack, "s2")
    with _agent_client(stack, "s2", cert=cert2, key=key2) as client:
        assert _renew_cert(client, "s2", pki.create_agent_csr("s2")[1]).status_code == 200
    assert _sample(_metrics(stack), "epns_agent_renewals_total",
                   'outcome="renewal_rate_limited"') == 2


@pytest.mark.parametrize("how", ["agent", "serial"])
def test_a_revoked_agent_cannot_renew(lived: Stack, how: str) -> None:
    stack = lived
    stack.create_agent("r1")
    cert, key = _files(stack, "r1")
    if how == "agent":
        with stack.api() as api:
            assert api.post("/api/v1/agents/r1/revoke", json={}).status_code == 204
    else:
        serial = format(pki.load_certificate(cert).serial_number, "x")
        with (stack.pki / pki.REVOKED).open("a") as revoked:
            revoked.write(f"serial:{serial}\n")
    with _agent_client(stack, "r1", cert=cert, key=key) as client:
        answer = _renew_cert(client, "r1", pki.create_agent_csr("r1")[1])
    assert answer.status_code == 401
    error = answer.json()["error"]
    assert error["code"] == "agent_revoked"
    assert ("agent:r1" if how == "agent" else "serial:") in error["message"]
    with stack.api() as api:
        shown = api.get("/api/v1/agents/r1").json()
        history = api.get("/api/v1/agents/r1/history").json()
    assert shown["renewals"] == 0
    assert not any(h["kind"] == "renewed" for h in history)
    assert _sample(_metrics(stack), "epns_agent_renewals_total",
                   'outcome="agent_revoked"') == 1


def test_expiring_identities_in_the_api_and_the_metrics(make_stack: Any) -> None:
    stack: Stack = make_stack(identity__certificate_lifetime="3600",
                              identity__token_lifetime=str(10 * 86400))
    stack.create_agent("soon")  # expires within an hour
    stack.create_agent("later", auth="token")  # within 10 days
    with stack.api() as api:
        within_day = api.get("/api/v1/agents", params={"expiring_within": 86400}).json()
        within_month = api.get("/api/v1/agents", params={"expiring_within": 30 * 86400})
        everyone = api.get("/api/v1/agents").json()
        negative = api.get("/api/v1/agents", params={"expiring_within": -1})
    assert [a["id"] for a in within_day] == ["soon"]
    assert [a["id"] for a in within_month.json()] == ["later", "soon"]
    assert {a["id"] for a in everyone} == {"later", "soon"}
    assert negative.status_code == 422
    text = _metrics(stack)
    assert _sample(text, "epns_agent_identities_expiring", 'within="expired"') == 0
    assert _sample(text, "epns_agent_identities_expiring", 'within="1d"') == 1
    assert _sample(text, "epns_agent_identities_expiring", 'within="7d"') == 1
    assert _sample(text, "epns_agent_identities_expiring", 'within="30d"') == 2
    assert "# TYPE epns_agent_renewals_total counter" in text
