"""From what a probe saw to what a support person should change, sans-IO.

Each function takes plain facts (a status code, an error kind, the fields of
a certificate) and returns a ``Finding``: status, the observation in one
line, and a hint that names the cause and the change. ``docs/troubleshooting.md``
explains every FAIL and WARN written here.
"""

from __future__ import annotations

import datetime as dt
import errno
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from enum import StrEnum

from epns.envelope import CLOCK_SKEW
from epns.errors import MalformedPacket
from epns.pki import CA_NAME
from epns_check.report import Finding, Status, passed

CERT_WARN_DAYS = 30
CLOCK_WARN = CLOCK_SKEW / 2
SLOW_PUSH = 1.0
_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL, errno.ENETDOWN}
# TLS alerts a server sends about the *client's* certificate.
_CLIENT_CERT_ALERTS = ("ALERT_UNKNOWN_CA", "ALERT_BAD_CERTIFICATE", "ALERT_CERTIFICATE_REQUIRED",
                       "ALERT_CERTIFICATE_REVOKED", "ALERT_CERTIFICATE_EXPIRED",
                       "ALERT_CERTIFICATE_UNKNOWN", "ALERT_ACCESS_DENIED",
                       "ALERT_UNSUPPORTED_CERTIFICATE")


class NetError(StrEnum):
    """What kind of network failure an exception is."""

    REFUSED = "refused"
    TIMEOUT = "timed out"
    UNREACHABLE = "unreachable"
    UNRESOLVED = "unresolved"
    CLOSED = "closed"
    OTHER = "failed"


def net_error(exc: BaseException) -> NetError:
    """Classify a socket-level exception."""
    if isinstance(exc, socket.gaierror):
        return NetError.UNRESOLVED
    if isinstance(exc, ConnectionRefusedError):
        return NetError.REFUSED
    if isinstance(exc, TimeoutError):
        return NetError.TIMEOUT
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError
                  | ssl.SSLEOFError | EOFError):
        return NetError.CLOSED
    if isinstance(exc, OSError) and exc.errno in _UNREACHABLE:
        return NetError.UNREACHABLE
    return NetError.OTHER


def _strerror(exc: BaseException) -> str:
    return (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)) or \
        type(exc).__name__


# --- DNS and TCP ---------------------------------------------------------------


def resolved(host: str, addresses: list[str]) -> Finding:
    """The broker name resolved (or was an address already)."""
    if [host] == addresses:
        return passed(f"{host} is an address: no lookup needed")
    return passed(f"{host} resolves to {', '.join(addresses)}")


def unresolved(host: str, exc: BaseException, *, proxy: str | None) -> Finding:
    """The broker name does not resolve on this machine."""
    if proxy is not None:
        return Finding(Status.WARN, f"{host} does not resolve here ({_strerror(exc)})",
                       f"only the proxy {proxy} can resolve it, so direct routes cannot work; "
                       "fine if the network allows only the proxy")
    return Finding(Status.FAIL, f"{host} does not resolve ({_strerror(exc)})",
                   f"check broker.host in agent.toml and this machine's DNS server "
                   f"(try: getent hosts {host})")


def tcp_failure(exc: BaseException, host: str, port: int, timeout: float) -> Finding:
    """A direct TCP connect to the broker failed."""
    kind = net_error(exc)
    where = f"{host}:{port}"
    if kind is NetError.REFUSED:
        return Finding(Status.FAIL, f"TCP {where} refused",
                       f"nothing listens on port {port} at {host}, or a firewall rejects it: "
                       f"start the broker's listener, or allow outbound TCP {port}")
    if kind is NetError.TIMEOUT:
        return Finding(Status.FAIL, f"TCP {where} timed out after {timeout:g} s",
                       f"a firewall drops TCP {port} to {host} silently: allow it outbound, "
                       "or rely on another route")
    if kind is NetError.UNREACHABLE:
        return Finding(Status.FAIL, f"TCP {where} unreachable: {_strerror(exc)}",
                       f"no route to {host}: check this machine's network, VPN and "
                       "default gateway")
    if kind is NetError.UNRESOLVED:
        return Finding(Status.FAIL, f"{host} does not resolve ({_strerror(exc)})",
                       "see step 2 (DNS)")
    return Finding(Status.FAIL, f"TCP {where} failed: {_strerror(exc)}",
                   "a local firewall or security product blocks the connection")


def tcp_connected(address: str, port: int) -> Finding:
    """A TCP connection was established."""
    return passed(f"connected to {address}:{port}")


# --- the proxy -----------------------------------------------------------------


def proxy_unreachable(exc: BaseException, proxy: str, timeout: float) -> Finding:
    """TCP to the proxy itself failed."""
    kind = net_error(exc)
    if kind is NetError.UNRESOLVED:
        return Finding(Status.FAIL, f"proxy {proxy} does not resolve ({_strerror(exc)})",
                       "check the host in proxy.url (or HTTPS_PROXY)")
    if kind is NetError.TIMEOUT:
        return Finding(Status.FAIL, f"proxy {proxy} does not answer within {timeout:g} s",
                       "a firewall drops traffic to the proxy, or proxy.url names the wrong "
                       "host: check proxy.url (or HTTPS_PROXY)")
    if kind is NetError.REFUSED:
        return Finding(Status.FAIL, f"proxy {proxy} refused the connection",
                       "no proxy listens there: check proxy.url (or HTTPS_PROXY) for host and "
                       "port")
    return Finding(Status.FAIL, f"proxy {proxy}: {kind.value} ({_strerror(exc)})",
                   "check proxy.url (or HTTPS_PROXY), and the network on the way to the proxy")


def proxy_answer(status: int, reason: str, *, target: str, proxy: str,
                 credentials: bool) -> Finding:
    """The proxy's answer to CONNECT ``target``."""
    said = f"{status} {reason}".strip()
    if 200 <= status < 300:
        return passed(f"proxy {proxy} opened a tunnel to {target} ({said})")
    if status in (401, 407):
        # tinyproxy answers a bad password with 401, most proxies with 407.
        if credentials:
            return Finding(Status.FAIL, f"proxy {proxy} refused the credentials ({said})",
                           "set the right proxy.username and proxy.password (or "
                           "user:password@ in proxy.url)")
        return Finding(Status.FAIL, f"proxy {proxy} demands credentials ({said})",
                       "set proxy.username and proxy.password (or user:password@ in proxy.url)")
    if status == 403:
        port = target.rpartition(":")[2]
        return Finding(Status.FAIL, f"proxy {proxy} forbids CONNECT to {target} ({said})",
                       f"allow CONNECT to port {port} in the proxy's ACL (Squid: SSL_ports; "
                       "tinyproxy: ConnectPort), or rely on the 443 route")
    return Finding(Status.FAIL, f"proxy {proxy} refused CONNECT to {target} ({said})",
                   "the proxy's own log says why; a 5xx means it cannot reach the broker itself")


def proxy_silent(exc: BaseException, *, target: str, proxy: str, timeout: float) -> Finding:
    """No usable answer to CONNECT."""
    if net_error(exc) is NetError.TIMEOUT:
        return Finding(Status.FAIL, f"proxy {proxy} did not answer CONNECT {target} within "
                                    f"{timeout:g} s",
                       "the proxy cannot reach the broker (a firewall behind it drops the "
                       "port?): check the proxy's log")
    return Finding(Status.FAIL, f"proxy {proxy} gave no HTTP answer to CONNECT {target}: "
                                f"{_strerror(exc)}",
                   "this is not an HTTP CONNECT proxy: check the port in proxy.url")


# --- TLS -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """The certificate a TLS peer presented, read without verifying it."""

    subject: str
    issuer: str
    names: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    from_fleet_ca: bool

    @property
    def self_signed(self) -> bool:
        """Issued by itself."""
        return self.subject == self.issuer and not self.from_fleet_ca


def name_matches(host: str, names: tuple[str, ...]) -> bool:
    """RFC 6125 in short: an address matches an address, a name a name, and a
    wildcard only the left-most label."""
    try:
        wanted = ipaddress.ip_address(host)
    except ValueError:
        wanted = None
    for name in names:
        if wanted is not None:
            try:
                if ipaddress.ip_address(name) == wanted:
                    return True
            except ValueError:
                continue
        elif _dns_match(host.lower().rstrip("."), name.lower().rstrip(".")):
            return True
    return False


def _dns_match(host: str, pattern: str) -> bool:
    if pattern.startswith("*."):
        label, _, rest = host.partition(".")
        return bool(label) and rest == pattern[2:]
    return host == pattern


def _day(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d")


def _days(start: dt.datetime, end: dt.datetime) -> int:
    """Whole days from ``start`` to ``end``."""
    return int((end - start).total_seconds() // 86400)


def tls_ok(version: str, cipher: str, cert: PeerCertificate, *, host: str,
           now: dt.datetime) -> Finding:
    """The handshake verified against the fleet CA, with the name."""
    left = _days(now, cert.not_after)
    detail = (f"{version} {cipher}; chain verified against the fleet CA; {host} matches; "
              f"expires in {left} days")
    if left < CERT_WARN_DAYS:
        return Finding(Status.WARN, detail,
                       f"renew the broker's certificate before {_day(cert.not_after)}, "
                       "then restart the broker")
    return passed(detail)


def tls_rejected(cert: PeerCertificate | None, *, fleet_ca: str, ca_file: str, host: str,
                 port: int, reason: str, now: dt.datetime) -> Finding:
    """The broker's certificate did not verify; ``cert`` is what it presented."""
    where = f"{host}:{port}"
    if cert is None:
        return Finding(Status.FAIL, f"the certificate on {where} did not verify ({reason})",
                       f"compare the broker's certificate with the fleet CA in {ca_file}")
    if not cert.from_fleet_ca:
        return _foreign_issuer(cert, fleet_ca=fleet_ca, ca_file=ca_file, where=where)
    if now > cert.not_after:
        return Finding(Status.FAIL, f"the broker's certificate expired on {_day(cert.not_after)}"
                                    f" ({_days(cert.not_after, now)} days ago)",
                       "renew the broker's certificate (epns-certs, or your CA) and restart "
                       "the broker; if it is not expired, this machine's clock is wrong")
    if now < cert.not_before:
        return Finding(Status.FAIL, f"the broker's certificate is valid only from "
                                    f"{_day(cert.not_before)}",
                       "this machine's clock (or the broker's) is wrong: enable time sync")
    if not name_matches(host, cert.names):
        names = ", ".join(cert.names) or cert.subject
        return Finding(Status.FAIL, f"the broker's certificate is for {names}, not {host}",
                       f"set broker.host to a name the certificate carries ({names}), or "
                       f"reissue the broker's certificate with {host}")
    return Finding(Status.FAIL, f"the certificate on {where} did not verify ({reason})",
                   "the broker's certificate or chain is malformed: reissue it from the fleet CA")


def _foreign_issuer(cert: PeerCertificate, *, fleet_ca: str, ca_file: str,
                    where: str) -> Finding:
    if cert.self_signed:
        return Finding(Status.FAIL, f"{where} presents a self-signed certificate "
                                    f"({cert.subject})",
                       "give the broker a certificate issued by the fleet CA")
    if cert.issuer.startswith(CA_NAME) and cert.issuer != fleet_ca:
        # rotate ca names each CA it makes "epns fleet CA <day>".
        return Finding(Status.FAIL, f"the broker's certificate is from the fleet CA "
                                    f"'{cert.issuer}', not from the one in {ca_file} "
                                    f"('{fleet_ca}'): the fleet CA was rotated while this "
                                    "agent was offline past the overlap",
                       "put the server's current ca.crt in place with epns-agent trust reset "
                       "--ca ca.crt and restart the agent; a certificate agent must also be "
                       "enrolled again (docs/rotation.md)")
    if cert.issuer == fleet_ca:
        return Finding(Status.FAIL, f"unknown CA: the broker's certificate is issued by a CA "
                                    f"named '{cert.issuer}', but not by the one in {ca_file}",
                       f"{ca_file} comes from another PKI (re-created, or another "
                       "installation): give the agent the fleet CA of this server")
    if says_interception(cert.issuer):
        return Finding(Status.FAIL, f"TLS interception by '{cert.issuer}': {where} presents a "
                                    f"certificate for {cert.subject} that is not from the "
                                    f"fleet CA '{fleet_ca}'",
                       f"exempt {where} from the firewall's HTTPS/TLS inspection (content "
                       "filter), or the endpoint security product's TLS scanning")
    # An issuer that does not say it inspects: most often the agent simply
    # holds another CA than this broker's, which is no firewall's doing.
    return Finding(Status.FAIL, f"the broker's certificate on {where} is issued by "
                                f"'{cert.issuer}', not by the CA in {ca_file} ('{fleet_ca}')",
                   f"give the agent this broker's fleet CA ({ca_file} from the server's "
                   "bundle); if that is what it has, something between them replaces "
                   "certificates: exempt the broker from TLS inspection")


# Words with which inspecting products name the CA they sign with, and the
# products themselves (lower case). A match is what lets the check say
# "interception" rather than "another CA".
_INSPECTORS = (
    "inspect", "intercept", "decrypt", "ssl filter", "tls filter", "ssl scan", "web filter",
    "firewall", "proxy", "forti", "sophos", "zscaler", "palo alto", "paloalto", "bluecoat",
    "blue coat", "netskope", "forcepoint", "websense", "barracuda", "watchguard",
    "check point", "checkpoint", "kaspersky", "eset ssl", "avast", "avg ", "bitdefender",
    "mcafee web gateway", "cisco umbrella", "untangle", "mitmproxy", "charles proxy",
    "fiddler", "squid",
)


def says_interception(issuer: str) -> bool:
    """Whether a certificate issuer's name says it is an inspecting middlebox's."""
    name = issuer.lower()
    return any(word in name for word in _INSPECTORS)


def client_cert_alert(exc: BaseException) -> bool:
    """True when the peer's TLS alert is about our client certificate."""
    reason = getattr(exc, "reason", None) or ""
    return isinstance(exc, ssl.SSLError) and any(a in reason for a in _CLIENT_CERT_ALERTS)


def _alert(exc: BaseException) -> str:
    return (getattr(exc, "reason", None) or str(exc)).lower().replace("_", " ")


def client_cert_refused(why: str) -> Finding:
    """The broker refused the agent's client certificate; ``why`` says how we know."""
    return Finding(Status.FAIL, f"the broker refused this agent's client certificate ({why})",
                   "the certificate is not from the CA the broker trusts (or is revoked or "
                   "expired): enrol the agent again (epns-server agent create, epns-agent "
                   "enrol)")


def tls_failure(exc: BaseException, *, host: str, port: int, timeout: float,
                proxy: str | None) -> Finding:
    """A handshake that failed for another reason than verification."""
    if client_cert_alert(exc):
        return client_cert_refused(_alert(exc))
    kind = net_error(exc)
    where = f"{host}:{port}"
    if kind is NetError.TIMEOUT and proxy is not None:
        return Finding(Status.FAIL, f"the tunnel through {proxy} opened, but carries nothing: "
                                    f"no TLS answer from {where} within {timeout:g} s",
                       "the proxy (or a firewall behind it) passes only web traffic on this "
                       "port, or the broker does not answer there: check the proxy's log")
    if kind is NetError.TIMEOUT:
        return Finding(Status.FAIL, f"TCP {where} connects, but no TLS answer within "
                                    f"{timeout:g} s",
                       f"a middlebox black-holes the traffic after the connect, or "
                       f"something other than the broker listens on {port}")
    if kind is NetError.CLOSED:
        return Finding(Status.FAIL, f"{where} closed the connection during the TLS handshake",
                       f"a firewall cuts TLS on port {port}, or something other than the "
                       "broker listens there")
    return Finding(Status.FAIL, f"TLS to {where} failed: {_strerror(exc)}",
                   "the peer speaks neither TLS 1.2 nor 1.3 with modern ciphers: it is not "
                   "the epns broker")


# --- MQTT over secure WebSocket ------------------------------------------------


def websocket_answer(status: int, reason: str, *, proven: bool, protocol: str | None,
                     url: str) -> Finding:
    """The answer to the WebSocket upgrade on ``url``."""
    said = f"{status} {reason}".strip()
    if status == 101 and proven and protocol == "mqtt":
        return passed(f"WebSocket upgrade on {url} accepted (subprotocol mqtt)")
    if status == 101:
        return Finding(Status.FAIL, f"{url} switched protocols, but not to an MQTT WebSocket "
                                    f"(subprotocol {protocol!r})",
                       "something other than the broker answers there: check "
                       "broker.websocket_url")
    if status == 404:
        return Finding(Status.FAIL, f"no WebSocket endpoint at {url} ({said})",
                       "check the path in broker.websocket_url")
    if status in (400, 403, 426):
        return Finding(Status.FAIL, f"{url} refused the WebSocket upgrade ({said})",
                       "a reverse proxy or web filter in front of the broker blocks WebSocket "
                       "upgrades: allow them for this URL")
    return Finding(Status.FAIL, f"{url} answered {said} instead of a WebSocket upgrade",
                   "a web server, captive portal or filter answers there, not the broker: "
                   "check broker.websocket_url and the web filter")


def websocket_silent(exc: BaseException, url: str, timeout: float) -> Finding:
    """No usable answer to the WebSocket upgrade."""
    if net_error(exc) is NetError.TIMEOUT:
        return Finding(Status.FAIL, f"no answer to the WebSocket upgrade on {url} within "
                                    f"{timeout:g} s",
                       "a filter holds the upgrade: allow WebSocket to this URL")
    return Finding(Status.FAIL, f"no HTTP answer to the WebSocket upgrade on {url}: "
                                f"{_strerror(exc)}",
                   "the port in broker.websocket_url is not the broker's WebSocket listener")


# --- MQTT and the ACL ----------------------------------------------------------


def connack(code: int, *, agent_id: str, method: str, certificate_name: str | None) -> Finding:
    """What a CONNACK code means for this agent."""
    if code == 0:
        return passed(f"CONNACK 0: accepted as {agent_id} ({method})")
    causes = {
        1: ("the broker does not speak MQTT 3.1.1",
            "use a broker that speaks MQTT 3.1.1 (the epns broker, Mosquitto, EMQX...)"),
        2: ("identifier rejected: the client id must equal the agent's proven identity",
            f"identity.agent_id is {agent_id!r}, the certificate says "
            f"{certificate_name!r}: use the agent id the certificate or token was issued for"
            if certificate_name not in (None, agent_id) else
            "identity.agent_id must be the agent id the certificate or token names"),
        3: ("server unavailable", "the broker is overloaded or stopping: check its log and "
                                  "metrics, then retry"),
        4: ("bad username or password: the token was refused",
            "the token is malformed, expired, or signed by another server's key: issue a new "
            "one (epns-server agent create --token, or epns-certs token)"),
        5: ("not authorized: the broker accepts neither this certificate nor this token, or "
            "the agent is revoked",
            "check the revocation list (console, epns-server agent revoke); enrol the agent "
            "again"),
    }
    cause, hint = causes.get(code, (f"unknown refusal {code}", "see the broker's log"))
    return Finding(Status.FAIL, f"CONNACK {code}: {cause}", hint)


def mqtt_failure(exc: BaseException, *, waited_for: str, timeout: float,
                 foreign_issuer: str | None = None) -> Finding:
    """No answer, or a closed connection, where a packet was expected.
    ``foreign_issuer`` names the issuer of a client certificate that is not
    from the fleet CA: a broker may refuse it by closing without an alert."""
    if client_cert_alert(exc):
        return client_cert_refused(_alert(exc))
    if isinstance(exc, MalformedPacket):
        return malformed_answer(exc, waited_for)
    kind = net_error(exc)
    if kind is NetError.CLOSED and foreign_issuer is not None:
        return client_cert_refused(f"it closed the connection instead of a {waited_for}; the "
                                   f"certificate is issued by '{foreign_issuer}', not by the "
                                   "fleet CA")
    if kind is NetError.TIMEOUT:
        return Finding(Status.FAIL, f"no {waited_for} within {timeout:g} s",
                       "the broker accepted TLS but does not answer MQTT: it is overloaded "
                       "(see its metrics) or it is not an MQTT broker")
    if kind is NetError.CLOSED:
        return Finding(Status.FAIL, f"the broker closed the connection instead of a {waited_for}",
                       "the broker refused this client: its log names the reason (revoked, "
                       "limits, a certificate it does not accept)")
    return Finding(Status.FAIL, f"no {waited_for}: {_strerror(exc)}",
                   "the broker's log names the reason")


def malformed_answer(exc: MalformedPacket, waited_for: str) -> Finding:
    """The broker answered with bytes MQTT 3.1.1 forbids; the line names the
    rule. The TLS under them verified, so the broker itself sent them."""
    return Finding(Status.FAIL, f"the broker's answer is not valid MQTT 3.1.1 where a "
                                f"{waited_for} was expected: {exc}",
                   "check which MQTT broker and version listen on this port (the agent "
                   "speaks MQTT 3.1.1), and its log")


def subscribed(code: int, topic: str, agent_id: str) -> Finding:
    """A SUBACK return code for the agent's own command topic."""
    if code == 1:
        # Mosquitto grants a subscription its ACL denies, and delivers nothing.
        return passed(f"subscribed to {topic} at QoS 1 (granted; step 8 proves delivery)")
    if code == 0:
        return Finding(Status.WARN, f"subscribed to {topic}, but only at QoS 0",
                       "commands sent while the connection drops are lost: grant QoS 1")
    return Finding(Status.FAIL, f"the broker's ACL denies {agent_id} its own command topic "
                                f"{topic} (SUBACK {code:#04x})",
                   "grant read on epns/v1/agents/%u/cmd (Mosquitto: acl_file pattern), and "
                   "check that the certificate's CN equals identity.agent_id")


def subscribe_lost(exc: BaseException, topic: str, timeout: float) -> Finding:
    """The connection closed (or stayed silent) after SUBSCRIBE."""
    if net_error(exc) is NetError.CLOSED:
        return Finding(Status.FAIL, f"the broker closed the connection on SUBSCRIBE {topic}",
                       "its ACL denies the agent its own command topic: grant read on "
                       "epns/v1/agents/%u/cmd")
    return mqtt_failure(exc, waited_for="SUBACK", timeout=timeout)


def published(topic: str) -> Finding:
    """PUBACK for the test event."""
    return passed(f"published a test event to {topic}: acknowledged (MQTT 3.1.1 cannot refuse "
                  "a publish; an ACL drops a denied one silently, counted by the broker)")


def publish_lost(exc: BaseException, topic: str, timeout: float) -> Finding:
    """No PUBACK for the test event."""
    if net_error(exc) is NetError.CLOSED:
        return Finding(Status.FAIL, f"the broker closed the connection on PUBLISH {topic}",
                       "its ACL denies the agent its own event topic: grant write on "
                       "epns/v1/agents/%u/evt")
    return mqtt_failure(exc, waited_for="PUBACK", timeout=timeout)


# --- end to end, sync, clock -----------------------------------------------------


def push_arrived(command_id: str, seconds: float, key_file: str) -> Finding:
    """The server's test command reached the check."""
    detail = (f"command {command_id} arrived {seconds * 1000:.0f} ms after the API call; "
              f"signature verified with {key_file}")
    if seconds > SLOW_PUSH:
        return Finding(Status.WARN, detail, "push should take well under a second: check the "
                                            "load of the broker and the server")
    return passed(detail)


def push_lost(command_id: str, timeout: float) -> Finding:
    """The server sent the command, the check never saw it."""
    return Finding(Status.FAIL, f"the server sent command {command_id}, but it did not arrive "
                                f"within {timeout:g} s",
                   "the broker's ACL denies the agent its command topic (Mosquitto grants "
                   "the SUBSCRIBE and delivers nothing: grant read on epns/v1/agents/%u/cmd), "
                   "or the server publishes to another broker than broker.host")


def push_forged(command_id: str, key_file: str, reason: str) -> Finding:
    """The command arrived but does not verify against the pinned key."""
    return Finding(Status.FAIL, f"command {command_id} arrived but {reason}",
                   f"the agent pins another server's key: give it this server's public key "
                   f"({key_file})")


def push_unknown_signer(command_id: str, key_file: str, reason: str) -> Finding:
    """The command is signed by a key the agent does not trust: it missed a
    whole signing-key rotation (docs/rotation.md), or it pins another server."""
    return Finding(Status.FAIL, f"command {command_id} arrived but is {reason}",
                   f"get the server's current signing.pub (epns-server rotate signing-key "
                   f"status names its key) and run epns-agent trust reset --key signing.pub "
                   f"(it replaces {key_file}), then restart the agent; or enrol it again")


def api_refused(status: int, code: str, message: str, *, agent_id: str) -> Finding:
    """The server's API refused to send the test command."""
    hints = {
        401: "create an API token (epns-server token create NAME) and pass it with "
             "--api-token or EPNS_API_TOKEN",
        404: f"this server does not know agent {agent_id}: create or enrol it here (the agent "
             "may belong to another server)",
        409: f"agent {agent_id} is revoked: enrol it again",
        503: "the server has no broker connection: run epns-check --server on its host",
    }
    return Finding(Status.FAIL, f"the server refused the test command ({status} {code}): "
                                f"{message}",
                   hints.get(status, "the server's log says why"))


def server_unreachable(exc: BaseException, url: str) -> Finding:
    """An HTTPS request to the server failed below HTTP."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Finding(Status.FAIL, f"{url}: the server's certificate did not verify "
                                    f"({exc.verify_message})",
                       "give the agent the CA of the server's certificate (sync.ca), or exempt "
                       "the server from TLS inspection")
    if client_cert_alert(exc):
        return client_cert_refused(_alert(exc))
    return Finding(Status.FAIL, f"cannot reach {url}: {net_error(exc).value} ({_strerror(exc)})",
                   "check sync.url (host and port, 9443 by default), the server, and the "
                   "firewall on the way")


def sync_answer(status: int, code: str, message: str, *, url: str, agent_id: str,
                method: str) -> Finding:
    """The sync endpoint's answer to a GET with the agent's identity."""
    if status == 200:
        return passed(f"GET {url} answered 200 to {agent_id} ({method})")
    if status in (401, 403):
        hint = {"agent_revoked": "the agent is revoked: enrol it again",
                "other_agent": "identity.agent_id is not the agent the certificate or token "
                               "names: use the id it was issued for"}.get(
            code, "the server does not accept this identity: enrol the agent again, or give "
                  "it the certificate or token this server issued")
        return Finding(Status.FAIL, f"the sync endpoint refused {agent_id} ({status} {code}): "
                                    f"{message}", hint)
    if status == 404:
        return Finding(Status.FAIL, f"no sync endpoint at {url} (404)",
                       "sync.url must be the server's base URL, e.g. https://server:9443")
    if status in (429, 503):
        return Finding(Status.WARN, f"the sync endpoint is busy ({status}): {message}",
                       "the agent retries after Retry-After; if it stays busy, raise "
                       "sync.max_concurrent on the server")
    return Finding(Status.FAIL, f"the sync endpoint answered {status} {code}: {message}",
                   "the server's log says why")


def clock(skew: float, source: str) -> Finding:
    """This machine's clock against the server's; ``skew`` > 0: the server is ahead."""
    size = abs(skew)
    side = "behind" if skew > 0 else "ahead of"
    detail = f"this machine's clock is {size:.1f} s {side} the server ({source})"
    if size <= CLOCK_WARN:
        return passed(detail)
    hint = (f"commands tolerate {CLOCK_SKEW:g} s of clock difference: enable time sync "
            "(NTP: timedatectl set-ntp true; Windows: w32tm /resync) here and on the server")
    return Finding(Status.WARN if size <= CLOCK_SKEW else Status.FAIL, detail, hint)


def certificate_file(what: str, path: str, not_after: dt.datetime, now: dt.datetime,
                     *, renew: str) -> Finding:
    """Expiry of a certificate file on disk."""
    left = _days(now, not_after)
    if now > not_after:
        return Finding(Status.FAIL, f"{what} {path} expired on {_day(not_after)}", renew)
    detail = f"{what} {path} is valid until {_day(not_after)} ({left} days)"
    if left < CERT_WARN_DAYS:
        return Finding(Status.WARN, detail, renew)
    return passed(detail)


# --- epns-check --server -----------------------------------------------------------


def listener_up(name: str, where: str, version: str) -> Finding:
    """A broker listener answered TLS with a certificate from the fleet CA."""
    return passed(f"{name} listener {where} answers {version}; certificate from the fleet CA")


def listener_failure(exc: BaseException, name: str, where: str, timeout: float) -> Finding:
    """A broker listener that does not serve."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Finding(Status.FAIL, f"{name} listener {where}: its certificate does not verify "
                                    f"against the fleet CA ({exc.verify_message})",
                       "tls.cert must be issued by tls.ca and be valid: reissue it, restart "
                       "the broker")
    kind = net_error(exc)
    if kind is NetError.REFUSED:
        return Finding(Status.FAIL, f"nothing listens on {where} ({name} listener)",
                       "start the broker (epns-server run starts it) and read its log; ports "
                       "below 1024 need CAP_NET_BIND_SERVICE (see README)")
    if kind is NetError.TIMEOUT:
        return Finding(Status.FAIL, f"{name} listener {where} accepts no TLS within "
                                    f"{timeout:g} s",
                       "the broker is overloaded or hung: read its log and metrics")
    return Finding(Status.FAIL, f"{name} listener {where}: {_strerror(exc)}",
                   "read the broker's log")


def metrics_answer(text: str, url: str) -> Finding:
    """The broker's Prometheus text, summarized."""
    connections = refusals = 0.0
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        try:
            if name.startswith("epns_broker_connections"):
                connections += float(value)
            elif name.startswith("epns_broker_refusals_total"):
                refusals += float(value)
        except ValueError:
            continue
    if "epns_broker_" not in text:
        return Finding(Status.FAIL, f"{url} answers, but not with the broker's metrics",
                       "metrics.port is taken by another program: change it")
    return passed(f"{url}: {connections:g} connections open, {refusals:g} refusals so far")


def metrics_failure(exc: BaseException, url: str) -> Finding:
    """The metrics endpoint did not answer."""
    return Finding(Status.FAIL, f"{url}: {net_error(exc).value} ({_strerror(exc)})",
                   "the broker is not running, or [metrics] host/port differ from what it "
                   "uses: read its log")


def health_answer(status: int, data: dict[str, object], url: str) -> Finding:
    """The server's /api/v1/health answer."""
    if status != 200:
        return Finding(Status.FAIL, f"{url} answered {status}", "read the server's log")
    if data.get("database") is False:
        return Finding(Status.FAIL, f"{url}: the server cannot reach its database",
                       "check [database] url in server.toml, the database server and the "
                       "disk; read the server's log")
    if data.get("broker") is not True:
        return Finding(Status.FAIL, f"{url}: the server has no connection to the broker",
                       "check [mqtt] host, port, ca, cert and key in server.toml against the "
                       "broker's listeners; read both logs")
    return passed(f"{url}: status {data.get('status')}, broker link up, database answers")


def health_failure(exc: BaseException, url: str) -> Finding:
    """The server's HTTPS listener did not answer."""
    if net_error(exc) is NetError.REFUSED:
        return Finding(Status.FAIL, f"nothing listens at {url}",
                       "start the server (epns-server run) and read its log")
    return server_unreachable(exc, url)
