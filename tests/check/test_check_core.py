"""The sans-IO core of epns-check: the verdict, the MQTT codec, the words."""

from __future__ import annotations

import datetime as dt
import errno
import io
import socket
import ssl

import pytest

from epns.errors import MalformedPacket
from epns.mqtt import Connack, Puback, Publish, Suback, encode, puback_bytes, publish_bytes
from epns_check import agent_check, diagnose, probes, render
from epns_check.report import Finding, Report, Result, Status, Step, decide, passed

PASS, WARN, FAIL = passed("ok"), Finding(Status.WARN, "meh", "do x"), Finding(Status.FAIL, "no")


def _route(step, route, finding):
    return Result(step, route, finding, route=route)


def _working(route):
    return [_route(Step.TCP, route, PASS), _route(Step.TLS, route, PASS)]


IDENTITY = [_route(Step.MQTT, "direct:8883", PASS), _route(Step.ACL, "direct:8883", PASS)]
ROUTES = ["direct:8883", "direct:443"]


def test_verdict_primary_fallback_broken_and_config():
    both = _working("direct:8883") + _working("direct:443") + IDENTITY
    assert decide(both, ROUTES).exit_code == 0
    assert decide(both, ROUTES).route == "direct:8883"
    fallback = [_route(Step.TCP, "direct:8883", FAIL), *_working("direct:443"), *IDENTITY]
    verdict = decide(fallback, ROUTES)
    assert (verdict.exit_code, verdict.route) == (1, "direct:443")
    refused = [*_working("direct:8883"), _route(Step.MQTT, "direct:8883", FAIL)]
    assert decide(refused, ROUTES).exit_code == 2
    config = [Result(Step.CONFIG, "identity.cert", FAIL), *both]
    assert decide(config, ROUTES).exit_code == 3


def test_the_verdict_names_the_failure_that_got_furthest():
    """Direct routes dropped by the firewall, the proxy route intercepted: the
    interception is the cause to fix, not the expected TCP timeouts."""
    routes = ["proxy:8883", "proxy:443", "direct:8883", "direct:443"]
    intercepted = Finding(Status.FAIL, "TLS interception by 'Contoso TLS Inspection CA'")
    results = [_route(Step.PROXY, "proxy:8883", PASS), _route(Step.TLS, "proxy:8883",
                                                               intercepted),
               _route(Step.PROXY, "proxy:443", PASS), _route(Step.TLS, "proxy:443",
                                                              intercepted),
               _route(Step.TCP, "direct:8883", Finding(Status.FAIL, "TCP timed out")),
               _route(Step.TCP, "direct:443", Finding(Status.FAIL, "TCP timed out"))]
    verdict = decide(results, routes)
    assert verdict.exit_code == 2
    assert verdict.summary.endswith("TLS interception by 'Contoso TLS Inspection CA'")
    dns = [Result(Step.DNS, "broker", Finding(Status.FAIL, "cannot resolve broker")), *results]
    assert decide(dns, routes).summary.endswith("cannot resolve broker")


def test_another_ca_is_not_called_interception_unless_the_issuer_says_so():
    other = _rejected(_cert(issuer="epns dev CA (old install)", from_fleet_ca=False)).detail
    assert "interception" not in other
    assert "issued by 'epns dev CA (old install)', not by the CA in ca.crt" in other
    for issuer in ("Contoso TLS Inspection CA", "FortiGate CA", "Sophos SSL CA",
                   "mitmproxy", "Zscaler Root CA"):
        assert diagnose.says_interception(issuer), issuer
        assert "TLS interception" in _rejected(_cert(issuer=issuer,
                                                     from_fleet_ca=False)).detail


def test_verdict_warnings_count_only_where_they_touch_push():
    base = _working("direct:8883") + IDENTITY
    warned_elsewhere = [*base, _route(Step.TLS, "direct:443", WARN)]
    assert decide(warned_elsewhere, ROUTES).exit_code == 0
    assert decide([*base, Result(Step.CONFIG, "x", WARN)], ROUTES).exit_code == 1
    assert decide([*base, Result(Step.CLOCK, "x", FAIL)], ROUTES).exit_code == 2


def test_verdict_follows_the_last_route_that_worked():
    both = _working("direct:8883") + _working("direct:443") + IDENTITY
    verdict = decide(both, ROUTES, last_good="direct:443")
    assert (verdict.exit_code, verdict.route) == (0, "direct:443")
    assert verdict.summary == ("push works on the primary route direct:8883 (the agent tries "
                               "direct:443 first: it worked last)")


class _Trickle:
    """A stream that hands out what the broker sent one byte per read."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.sent: list[bytes] = []

    def sendall(self, data: bytes, /) -> None:
        self.sent.append(data)

    def recv(self, size: int, /) -> bytes:
        chunk, self._data = self._data[:1], self._data[1:]
        return chunk

    def settimeout(self, timeout: float | None, /) -> None:
        pass

    def close(self) -> None:
        pass


def test_the_session_reads_answers_in_pieces_and_keeps_publishes_aside():
    """A command queued for the agent, arriving before the PUBACK, is kept
    (unacknowledged) for the end-to-end step."""
    command = publish_bytes("epns/v1/agents/a1/cmd", b"x" * 300, 1, 9)
    wire = bytes([0x20, 2, 0, 5]) + bytes([0x90, 3, 0, 7, 0x80]) + command + puback_bytes(3)
    session = probes.MqttSession(_Trickle(wire))
    assert session.expect(Connack, 5).return_code == 5
    assert session.expect(Suback, 5) == Suback(7, (0x80,))
    assert session.expect(Puback, 5).packet_id == 3
    assert session.next_publish(5) == Publish("epns/v1/agents/a1/cmd", b"x" * 300, 1,
                                              packet_id=9)
    with pytest.raises(EOFError):
        session.next_publish(5)


def test_connect_carries_the_token_and_keeps_the_session():
    packet = encode(agent_check.agent_connect("a1", "v1.t.s"))
    assert packet[0] == 0x10
    assert packet[2:12] == b"\x00\x04MQTT\x04\xc0\x01\x2c"  # user, password, no clean session
    assert packet.endswith(b"\x00\x02a1\x00\x02a1\x00\x06v1.t.s")
    assert encode(agent_check.agent_connect("a1", None))[9] == 0  # certificate: no flags


@pytest.mark.parametrize(("answer", "rule"), [
    (b"\x20\x03\x00\x00\x00", "MQTT-4.8.0-1"),  # a CONNACK one byte too long
    (b"\x20\x02\x01\x05", "MQTT-3.2.2-4"),  # session present with a refusal
    (b"\x10\x00", None),  # a CONNECT: no broker sends one
])
def test_a_malformed_answer_is_a_diagnosis_line(answer, rule):
    with pytest.raises(MalformedPacket) as raised:
        probes.MqttSession(_Trickle(answer)).expect(Connack, 5)
    assert raised.value.rule == rule
    finding = diagnose.mqtt_failure(raised.value, waited_for="CONNACK", timeout=5)
    assert finding.status is Status.FAIL
    assert finding.detail.startswith(
        "the broker's answer is not valid MQTT 3.1.1 where a CONNACK was expected: ")
    assert finding.detail.endswith(str(raised.value))


def test_the_session_refuses_a_length_no_broker_sends():
    with pytest.raises(MalformedPacket, match="past four bytes"):
        probes.MqttSession(_Trickle(b"\x30\xff\xff\xff\xff\x01")).expect(Connack, 5)
    # Refused from its header: the 2 MiB body is never waited for.
    with pytest.raises(MalformedPacket, match="exceeds the maximum packet size"):
        probes.MqttSession(_Trickle(b"\x30\x80\x80\x80\x01")).expect(Connack, 5)


@pytest.mark.parametrize(("host", "names", "matches"), [
    ("broker.example.net", ("broker.example.net",), True),
    ("Broker.Example.NET.", ("broker.example.net",), True),
    ("a.example.net", ("*.example.net",), True),
    ("a.b.example.net", ("*.example.net",), False),
    ("127.0.0.1", ("localhost", "127.0.0.1"), True),
    ("127.0.0.1", ("localhost",), False),
    ("::1", ("0:0:0:0:0:0:0:1",), True),
])
def test_name_matching(host, names, matches):
    assert diagnose.name_matches(host, names) is matches


NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def _cert(**changes):
    fields = {"subject": "broker", "issuer": "epns fleet CA", "names": ("broker",),
              "not_before": NOW - dt.timedelta(days=1), "not_after": NOW + dt.timedelta(days=90),
              "from_fleet_ca": True}
    return diagnose.PeerCertificate(**{**fields, **changes})


def _rejected(cert):
    return diagnose.tls_rejected(cert, fleet_ca="epns fleet CA", ca_file="ca.crt",
                                 host="broker", port=8883, reason="x", now=NOW)


def test_tls_rejections_are_told_apart():
    assert "TLS interception by 'Fortinet CA'" in _rejected(
        _cert(issuer="Fortinet CA", from_fleet_ca=False)).detail
    assert _rejected(_cert(from_fleet_ca=False)).detail.startswith("unknown CA")
    assert "self-signed" in _rejected(_cert(issuer="broker", from_fleet_ca=False)).detail
    assert "expired on 2029-12-30" in _rejected(
        _cert(not_after=NOW - dt.timedelta(days=2))).detail
    assert "valid only from" in _rejected(_cert(not_before=NOW + dt.timedelta(days=2))).detail
    assert "is for other, not broker" in _rejected(_cert(names=("other",))).detail


def test_client_certificate_alerts_are_not_server_certificate_problems():
    alert = ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca")
    alert.reason = "TLSV1_ALERT_UNKNOWN_CA"  # type: ignore[misc]
    finding = diagnose.tls_failure(alert, host="b", port=1, timeout=1, proxy=None)
    assert finding.detail == ("the broker refused this agent's client certificate "
                              "(tlsv1 alert unknown ca)")


def test_clock_thresholds():
    assert diagnose.clock(29.0, "x").status is Status.PASS
    assert diagnose.clock(-45.0, "x").status is Status.WARN
    assert "45.0 s ahead of the server" in diagnose.clock(-45.0, "x").detail
    assert diagnose.clock(61.0, "x").status is Status.FAIL


@pytest.mark.parametrize(("status", "credentials", "words"), [
    (407, True, "refused the credentials"), (401, False, "demands credentials"),
    (403, True, "forbids CONNECT"), (502, True, "refused CONNECT"), (200, True, "opened")])
def test_proxy_answers(status, credentials, words):
    finding = diagnose.proxy_answer(status, "Reason", target="b:8883", proxy="p:3128",
                                    credentials=credentials)
    assert words in finding.detail


def test_connack_codes_have_causes():
    for code in range(1, 6):
        finding = diagnose.connack(code, agent_id="a1", method="token", certificate_name=None)
        assert finding.status is Status.FAIL
        assert finding.detail.startswith(f"CONNACK {code}: ")
        assert finding.hint


def test_rendering_for_people_and_for_pipes():
    report = Report("epns-check: agent a1 -> broker",
                    (Result(Step.TCP, "direct:8883", Finding(Status.FAIL, "refused", "open it"),
                            0.5, "direct:8883"),), decide([], ["direct:8883"]), ("a note",))
    text = render.plain(report)
    assert "[FAIL]  3 tcp         direct:8883 (0.50 s): refused\n       -> open it\n" in text
    assert text.endswith("(exit 2)\n")
    stream = io.StringIO()
    render.table(report, stream)
    table = stream.getvalue()
    assert "FAIL" in table
    assert "-> open it" in table
    assert "verdict: push does not work" in table


def test_tcp_failures_are_told_apart():
    refused = diagnose.tcp_failure(ConnectionRefusedError(), "b", 8883, 2)
    dropped = diagnose.tcp_failure(TimeoutError(), "b", 8883, 2)
    unreachable = diagnose.tcp_failure(OSError(errno.EHOSTUNREACH, "No route to host"), "b",
                                       8883, 2)
    assert refused.detail == "TCP b:8883 refused"
    assert dropped.detail == "TCP b:8883 timed out after 2 s"
    assert unreachable.detail == "TCP b:8883 unreachable: No route to host"
    assert "default gateway" in unreachable.hint
    lost = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert diagnose.unresolved("b", lost, proxy=None).status is Status.FAIL
    assert diagnose.unresolved("b", lost, proxy="p:3128").status is Status.WARN
