"""A publish on a closed MQTT link fails at once. The agent handles the
commands it had received after it closed the link to move to a renewed
identity (agent_push.agent); each one's ack used to wait out the whole PUBACK
timeout (10 s) before the wake-up's sync started and the agent reconnected."""

from __future__ import annotations

import asyncio
import time

import pytest

from agent_push.mqtt import MqttLink


def test_a_publish_on_a_closed_link_fails_at_once() -> None:
    async def scenario() -> float:
        link = MqttLink("a1", keepalive=30, will=("epns/v1/agents/a1/presence", b"offline"))
        await link.close()
        started = time.monotonic()
        with pytest.raises(ConnectionError, match="closed"):
            await link.publish("epns/v1/agents/a1/evt", b"{}", timeout=5)
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 1.0
