"""The one exception tree of epns.

Foreign errors (ssl, amqtt, paho, cryptography, httpx, defusedxml) are translated
into these at the boundary where they are caught, so callers only ever handle
``EPNSError``::

    EPNSError
    ├── ConfigError              a config file, env var or referenced file is wrong
    ├── PKIError                 certificate or key material cannot be made or read
    ├── TopicError               a name cannot be used in a topic (agent id, group)
    ├── ProtocolViolation        a peer broke MQTT framing; its connection is closed
    │   └── MalformedPacket      a packet the standard forbids; carries the statement id
    │       └── UnsupportedProtocol  a CONNECT of another protocol level (CONNACK 1)
    ├── MessageError             a command, event, presence or sync payload is unusable
    │   ├── MalformedMessage     not the shape of the contract (JSON or XML)
    │   │   └── UnsafeXML        XML with a DTD, entity or external reference, refused unparsed
    │   ├── BadSignature         the Ed25519 signature does not verify
    │   ├── ExpiredMessage       expires-at is in the past (or issued in the future)
    │   ├── ReplayedMessage      this command id was already accepted
    │   └── WrongTarget          the command is addressed to someone else
    ├── SyncFailed               a sync with the management server did not complete
    ├── EnrolFailed              an installer could not trade its enrolment token for an identity
    ├── PlatformError            the operating system cannot do what the agent asks (hold sleep off,
    │                            register a service)
    ├── StoreError               the server's database cannot be read, written or migrated
    ├── BackupError              a backup cannot be made, opened (passphrase, tampering) or restored
    ├── EgressRefused            an admin-set target (webhook, SMTP host) is fenced off
    ├── BrokerUnavailable        the server has no working MQTT session to the broker
    ├── RequestError             the server refuses an API, console or sync request;
    │   │                        carries the HTTP status and a stable error code
    │   ├── BadRequest           400/422: the body or a parameter is not acceptable
    │   ├── Unauthorized         401: no or wrong credentials
    │   ├── Forbidden            403: authenticated, but not allowed (CSRF, other agent)
    │   ├── NotFound             404: no such agent, wake-up, token…
    │   ├── Conflict             409: the thing exists, or is in a state that forbids it
    │   ├── PayloadTooLarge      413: the body exceeds the limit
    │   └── TooManyRequests      429/503: rate limit or admission control; carries Retry-After
    ├── IdentityError            a client may not connect; carries the CONNACK code
    │   ├── NoCredentials        neither a client certificate nor a token
    │   ├── BadToken             the token is malformed, forged or expired
    │   ├── ClientIdMismatch     the MQTT client id is not the proven identity
    │   └── Revoked              the identity is on the revocation list
    └── RouteError               an agent's connection attempt failed at one step
        ├── TcpRefused           nothing listens, or a firewall rejects
        ├── TcpTimeout           no answer: a firewall drops silently
        ├── TcpUnreachable       no route to the host or network
        ├── ProxyFailed          the proxy cannot be reached or refused the tunnel
        │   ├── ProxyAuthFailed  the proxy wants other credentials (407, or 401)
        │   └── ProxyPortRefused the proxy forbids CONNECT to this port (403)
        ├── TlsFailed            the handshake failed, timed out or did not verify
        └── MqttRefused          no CONNACK in time, or a CONNACK that refuses
"""

from __future__ import annotations

__all__ = [
    "CONNACK_BAD_USERNAME_OR_PASSWORD",
    "CONNACK_IDENTIFIER_REJECTED",
    "CONNACK_NOT_AUTHORIZED",
    "CONNACK_SERVER_UNAVAILABLE",
    "BackupError",
    "BadRequest",
    "BadSignature",
    "BadToken",
    "BrokerUnavailable",
    "ClientIdMismatch",
    "ConfigError",
    "Conflict",
    "EPNSError",
    "EnrolFailed",
    "ExpiredMessage",
    "Forbidden",
    "IdentityError",
    "MalformedMessage",
    "MalformedPacket",
    "MessageError",
    "MqttRefused",
    "NoCredentials",
    "NotFound",
    "PKIError",
    "PayloadTooLarge",
    "PlatformError",
    "ProtocolViolation",
    "ProxyAuthFailed",
    "ProxyFailed",
    "ProxyPortRefused",
    "ReplayedMessage",
    "RequestError",
    "Revoked",
    "RouteError",
    "StoreError",
    "SyncFailed",
    "TcpRefused",
    "TcpTimeout",
    "TcpUnreachable",
    "TlsFailed",
    "TooManyRequests",
    "TopicError",
    "Unauthorized",
    "UnknownSigner",
    "UnsafeXML",
    "UnsupportedProtocol",
    "WrongTarget",
]

# MQTT 3.1.1 CONNACK return codes (section 3.2.2.3).
CONNACK_IDENTIFIER_REJECTED = 2
CONNACK_SERVER_UNAVAILABLE = 3
CONNACK_BAD_USERNAME_OR_PASSWORD = 4
CONNACK_NOT_AUTHORIZED = 5


class EPNSError(Exception):
    """Root of every error epns raises on purpose."""


class ConfigError(EPNSError):
    """Configuration that cannot be used; the message names the key or file."""


class PKIError(EPNSError):
    """Certificate or key material that cannot be created or loaded."""


class TopicError(EPNSError):
    """A name that is not allowed as a topic level."""


class ProtocolViolation(EPNSError):
    """A peer sent bytes that are not valid MQTT 3.1.1 framing."""


class MalformedPacket(ProtocolViolation):
    """A packet MQTT 3.1.1 forbids. ``rule`` is the normative statement it
    breaks (``MQTT-3.1.2-3``), or None where the standard only describes the
    format (a length that runs past its packet, say)."""

    def __init__(self, reason: str, rule: str | None = None) -> None:
        super().__init__(f"{reason} [{rule}]" if rule else reason)
        self.reason = reason
        self.rule = rule


class UnsupportedProtocol(MalformedPacket):
    """A CONNECT whose protocol level the server does not speak: the server
    answers CONNACK 1 before it closes (MQTT-3.1.2-2)."""

    def __init__(self, level: int) -> None:
        super().__init__(f"protocol level {level} is not 4 (MQTT 3.1.1)", "MQTT-3.1.2-2")
        self.level = level


class MessageError(EPNSError):
    """A message on the wire that must not be acted on."""


class MalformedMessage(MessageError):
    """The payload is not the shape the contract defines; the message names the field."""


class UnsafeXML(MalformedMessage):
    """XML that declares a DTD, an entity or an external reference.

    Such documents are refused before anything is expanded or fetched: the
    contract needs none of it, and it is how XML bombs and file reads begin.
    """


class BadSignature(MessageError):
    """The command's signature does not verify against the pinned key."""


class UnknownSigner(BadSignature):
    """The message names a signing key this agent does not trust (any more):
    it was offline through a whole rotation, or the message is forged."""


class ExpiredMessage(MessageError):
    """The command is expired, or claims to be issued in the future."""


class ReplayedMessage(MessageError):
    """A command with this id was already accepted."""


class WrongTarget(MessageError):
    """The command is addressed to another agent or group."""


class SyncFailed(EPNSError):
    """A sync step failed; the message says why in words a support person reads,
    and ``status`` is the server's HTTP status when it answered."""

    def __init__(self, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.status = status


class EnrolFailed(EPNSError):
    """An installer could not trade its enrolment token and CSR for an agent
    identity; the message says why, in the server's words when it answered."""


class PlatformError(EPNSError):
    """The operating system cannot do what the agent asks (agent_push.platform):
    a sleep inhibitor it cannot take, a service it cannot register; the
    message names the facility and what it said."""


class StoreError(EPNSError):
    """The server's database cannot be used; the message names the operation."""


class BackupError(EPNSError):
    """A backup that cannot be made, opened or restored; the message says why
    (a wrong passphrase, a damaged file, a schema newer than the code)."""


class EgressRefused(EPNSError):
    """The server may not connect to an admin-set target's address (a loopback
    webhook, say): outside its allowed networks, or guarded (``epns.egress``)."""


class BrokerUnavailable(EPNSError):
    """The server's MQTT session is down or a publish was not confirmed in time."""


class RequestError(EPNSError):
    """A request the server refuses, with the status, a stable machine-readable
    ``code`` and a message that says what to do."""

    status = 400
    code = "bad_request"

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code


class BadRequest(RequestError):
    """The body or a parameter is not acceptable."""


class Unauthorized(RequestError):
    """No credentials, or credentials that do not verify."""

    status = 401
    code = "unauthorized"


class Forbidden(RequestError):
    """The caller is known but may not do this."""

    status = 403
    code = "forbidden"


class NotFound(RequestError):
    """The named resource does not exist."""

    status = 404
    code = "not_found"


class Conflict(RequestError):
    """The resource exists already, or its state forbids the request."""

    status = 409
    code = "conflict"


class PayloadTooLarge(RequestError):
    """The request body is over the limit."""

    status = 413
    code = "payload_too_large"


class TooManyRequests(RequestError):
    """Rate limited or shed by admission control; retry after ``retry_after`` s."""

    status = 429
    code = "too_many_requests"

    def __init__(self, detail: str, *, retry_after: float, status: int = 429,
                 code: str | None = None) -> None:
        super().__init__(detail, code=code)
        self.retry_after = retry_after
        self.status = status


class IdentityError(EPNSError):
    """A client that must be refused; ``connack_code`` is what it is told."""

    connack_code: int = CONNACK_NOT_AUTHORIZED


class NoCredentials(IdentityError):
    """Neither a client certificate nor a token was presented."""

    connack_code = CONNACK_NOT_AUTHORIZED


class BadToken(IdentityError):
    """The token is malformed, badly signed or expired."""

    connack_code = CONNACK_BAD_USERNAME_OR_PASSWORD


class ClientIdMismatch(IdentityError):
    """The MQTT client id differs from the identity the credentials prove."""

    connack_code = CONNACK_IDENTIFIER_REJECTED


class Revoked(IdentityError):
    """The identity, certificate serial or token id is revoked."""

    connack_code = CONNACK_NOT_AUTHORIZED


class RouteError(EPNSError):
    """A connection attempt on one route failed; ``step`` names where
    (tcp, proxy, tls, mqtt) so logs and ``epns-agent status`` can say it."""

    step = "tcp"


class TcpRefused(RouteError):
    """The TCP connection was refused: nothing listens, or a firewall rejects."""


class TcpTimeout(RouteError):
    """The TCP connection timed out: a firewall drops the packets silently."""


class TcpUnreachable(RouteError):
    """No route to the host or network."""


class ProxyFailed(RouteError):
    """The HTTP proxy cannot be reached, or refused the CONNECT tunnel."""

    step = "proxy"


class ProxyAuthFailed(ProxyFailed):
    """The proxy refused the credentials (407, or 401 from tinyproxy)."""


class ProxyPortRefused(ProxyFailed):
    """The proxy forbids CONNECT to this port (403); it may allow another."""


class TlsFailed(RouteError):
    """The TLS handshake failed, timed out or did not verify."""

    step = "tls"


class MqttRefused(RouteError):
    """No CONNACK arrived in time, or the broker refused the CONNECT."""

    step = "mqtt"
