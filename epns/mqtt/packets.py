"""MQTT 3.1.1 control packets as frozen values (the codec's events).

One class per packet type, holding exactly the fields the standard defines
(MQTT 3.1.1, chapter 3). ``epns.mqtt.decoder`` turns bytes into these and
``epns.mqtt.encoder`` turns them back into bytes; neither does any IO.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

__all__ = [
    "SUBACK_FAILURE",
    "Connack",
    "ConnackCode",
    "Connect",
    "Disconnect",
    "Packet",
    "PacketType",
    "Pingreq",
    "Pingresp",
    "Puback",
    "Pubcomp",
    "Publish",
    "Pubrec",
    "Pubrel",
    "Suback",
    "Subscribe",
    "Unsuback",
    "Unsubscribe",
    "Will",
]


class PacketType(IntEnum):
    """The control packet types (section 2.2.1); 0 and 15 are reserved."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14


class ConnackCode(IntEnum):
    """CONNACK return codes (section 3.2.2.3)."""

    ACCEPTED = 0
    UNACCEPTABLE_PROTOCOL_VERSION = 1
    IDENTIFIER_REJECTED = 2
    SERVER_UNAVAILABLE = 3
    BAD_USERNAME_OR_PASSWORD = 4
    NOT_AUTHORIZED = 5


# The SUBACK return code of a refused filter (section 3.9.3).
SUBACK_FAILURE = 0x80


@dataclass(frozen=True, slots=True)
class Will:
    """The will message a CONNECT asks the server to publish if it is lost."""

    topic: str
    message: bytes
    qos: int = 0
    retain: bool = False


@dataclass(frozen=True, slots=True)
class Connect:
    """CONNECT (section 3.1). ``client_id`` may be empty (section 3.1.3.1)."""

    client_id: str
    keep_alive: int = 0
    clean_session: bool = True
    will: Will | None = None
    username: str | None = None
    password: bytes | None = None
    protocol_level: int = 4


@dataclass(frozen=True, slots=True)
class Connack:
    """CONNACK (section 3.2)."""

    return_code: int = ConnackCode.ACCEPTED
    session_present: bool = False


@dataclass(frozen=True, slots=True)
class Publish:
    """PUBLISH (section 3.3); ``packet_id`` is None at QoS 0."""

    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None


@dataclass(frozen=True, slots=True)
class Puback:
    """PUBACK (section 3.4)."""

    packet_id: int


@dataclass(frozen=True, slots=True)
class Pubrec:
    """PUBREC (section 3.5)."""

    packet_id: int


@dataclass(frozen=True, slots=True)
class Pubrel:
    """PUBREL (section 3.6)."""

    packet_id: int


@dataclass(frozen=True, slots=True)
class Pubcomp:
    """PUBCOMP (section 3.7)."""

    packet_id: int


@dataclass(frozen=True, slots=True)
class Subscribe:
    """SUBSCRIBE (section 3.8): (filter, requested QoS) pairs, at least one."""

    packet_id: int
    topics: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Suback:
    """SUBACK (section 3.9): one return code per filter, in order."""

    packet_id: int
    return_codes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """UNSUBSCRIBE (section 3.10): at least one filter."""

    packet_id: int
    topics: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Unsuback:
    """UNSUBACK (section 3.11)."""

    packet_id: int


@dataclass(frozen=True, slots=True)
class Pingreq:
    """PINGREQ (section 3.12)."""


@dataclass(frozen=True, slots=True)
class Pingresp:
    """PINGRESP (section 3.13)."""


@dataclass(frozen=True, slots=True)
class Disconnect:
    """DISCONNECT (section 3.14)."""


Packet = (Connect | Connack | Publish | Puback | Pubrec | Pubrel | Pubcomp | Subscribe
          | Suback | Unsubscribe | Unsuback | Pingreq | Pingresp | Disconnect)
