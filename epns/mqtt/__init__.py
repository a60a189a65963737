"""MQTT 3.1.1, sans-IO: the packets, a strict decoder and an encoder.

The one codec of epns: the broker reads every client packet through
``Decoder``, and ``epns-check`` and the benchmarks speak MQTT with it too::

    decoder = Decoder(Role.SERVER, max_packet_size=65_536)
    decoder.feed(data)                      # bytes from the socket
    while (packet := decoder.next_packet()) is not None:
        ...                                 # Connect, Publish, Puback, ...
    transport.write(encode(Connack()))

A packet the standard forbids raises ``epns.errors.MalformedPacket`` with the
statement it breaks; the caller closes the connection.
"""

from epns.mqtt.decoder import MAX_REMAINING_LENGTH, Decoder, Role
from epns.mqtt.encoder import encode, puback_bytes, publish_bytes, remaining_length
from epns.mqtt.packets import (
    SUBACK_FAILURE,
    Connack,
    ConnackCode,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    Will,
)

__all__ = [
    "MAX_REMAINING_LENGTH",
    "SUBACK_FAILURE",
    "Connack",
    "ConnackCode",
    "Connect",
    "Decoder",
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
    "Role",
    "Suback",
    "Subscribe",
    "Unsuback",
    "Unsubscribe",
    "Will",
    "encode",
    "puback_bytes",
    "publish_bytes",
    "remaining_length",
]
