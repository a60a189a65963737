"""The one exception tree of epns.

Foreign errors (ssl, amqtt, paho, cryptography) are translated into these at the
boundary where they are caught, so callers only ever handle ``EPNSError``::

    EPNSError
    ├── ConfigError              a config file, env var or referenced file is wrong
    ├── PKIError                 certificate or key material cannot be made or read
    ├── TopicError               a name cannot be used in a topic (agent id, group)
    ├── ProtocolViolation        a peer broke MQTT framing; its connection is closed
    ├── MessageError             a command, event or presence payload is unusable
    │   ├── MalformedMessage     not the JSON shape of the contract
    │   ├── BadSignature         the Ed25519 signature does not verify
    │   ├── ExpiredMessage       expires-at is in the past (or issued in the future)
    │   ├── ReplayedMessage      this command id was already accepted
    │   └── WrongTarget          the command is addressed to someone else
    └── IdentityError            a client may not connect; carries the CONNACK code
        ├── NoCredentials        neither a client certificate nor a token
        ├── BadToken             the token is malformed, forged or expired
        ├── ClientIdMismatch     the MQTT client id is not the proven identity
        └── Revoked              the identity is on the revocation list
"""

from __future__ import annotations

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


class MessageError(EPNSError):
    """A message on the wire that must not be acted on."""


class MalformedMessage(MessageError):
    """The payload is not the JSON shape the contract defines."""


class BadSignature(MessageError):
    """The command's signature does not verify against the pinned key."""


class ExpiredMessage(MessageError):
    """The command is expired, or claims to be issued in the future."""


class ReplayedMessage(MessageError):
    """A command with this id was already accepted."""


class WrongTarget(MessageError):
    """The command is addressed to another agent or group."""


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
