"""The operator's fence on the server's own magic packets (wol.allowed_networks)."""

from __future__ import annotations

import asyncio
import socket

from epns.wol import Destination, WolPlan, WolTarget, magic_packet
from server_push.link.wol_sender import allowed_networks, send_plan

MAC = "02:00:00:00:00:0a"


def test_packets_go_only_inside_the_allowed_networks() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(5)
    port = listener.getsockname()[1]
    try:
        plan = WolPlan((WolTarget(MAC, (Destination("127.0.0.1", port),
                                        Destination("::1", port))),), repeat=1)
        outcomes = asyncio.run(send_plan(plan, 0.0, allowed_networks(["127.0.0.0/8"])))
        assert listener.recv(2048) == magic_packet(MAC)
    finally:
        listener.close()
    by_address = {o.destination.address: o.error for o in outcomes}
    assert by_address["127.0.0.1"] is None
    assert by_address["::1"] == "outside the server's wol.allowed_networks"
