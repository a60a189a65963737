"""The agent's Wake-on-LAN relay: send the magic packets of a ``wol`` plan."""

from __future__ import annotations

import asyncio
from typing import Any

from epns.agent_config import WolSettings
from epns.wol import Destination, SendOutcome, WolPlan, result_body


async def relay(plan: WolPlan, settings: WolSettings) -> dict[str, Any]:
    """Send every packet of ``plan``, ``settings.spacing`` seconds between rounds,
    and return the body of the ``wol_result`` event. A send that fails is reported
    in that body, never raised."""
    outcomes: list[SendOutcome] = []
    for round_number in range(plan.repeat):
        if round_number:
            await asyncio.sleep(settings.spacing)
        # Each send opens, connects and closes a blocking socket.
        outcomes += await asyncio.to_thread(_send_round, plan)
    return result_body(plan, outcomes)


def _send_round(plan: WolPlan) -> list[SendOutcome]:
    return [
        _send(index, target.mac, destination)
        for index, target in enumerate(plan.targets)
        for destination in target.destinations
    ]


def _send(index: int, mac: str, destination: Destination) -> SendOutcome:
    import wakeonlan  # noqa: PLC0415 (wol commands only: not in the agent's idle memory)

    try:
        # wake(), not send_magic_packet(): the latter is deprecated in wakeonlan 4.
        wakeonlan.wake(mac, host=destination.address, port=destination.port)
    except OSError as exc:
        return SendOutcome(index, destination, exc.strerror or str(exc))
    return SendOutcome(index, destination)
