"""The broker's lean per-connection objects against amqtt 0.12.1's stock ones.

Memory is measured with tracemalloc on a few hundred objects: the bound each
test asserts holds for the broker's class and fails for the stock class it
replaces, in the same test.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.manager import PluginManager
from amqtt.session import Session

from broker.handler import FleetHandler
from broker.session import CONNECTED, DISCONNECTED, NEW, FleetSession

COUNT = 300
# Measured: FleetSession 0.65 KiB, stock Session 23 KiB (its transitions
# Machine and two queues); FleetHandler 0.6 KiB, stock BrokerProtocolHandler
# 7.9 KiB (two queues, two Events).
SESSION_BOUND = 2 * 1024
HANDLER_BOUND = 2 * 1024


def _bytes_each(make: Callable[[], object]) -> float:
    """Bytes still allocated per object after making COUNT of them."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        kept = [make() for _ in range(COUNT)]
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    del kept
    return grown / COUNT


def test_session_memory_bound_holds_for_ours_and_fails_for_stock() -> None:
    ours = _bytes_each(FleetSession)
    stock = _bytes_each(Session)
    assert ours < SESSION_BOUND, f"FleetSession: {ours:.0f} B each"
    assert stock > SESSION_BOUND * 4, f"stock Session: {stock:.0f} B each"


def _handler_bytes(cls: type[BrokerProtocolHandler]) -> float:
    async def measure() -> float:
        manager: Any = object.__new__(PluginManager)
        return _bytes_each(lambda: cls(manager))
    return asyncio.run(measure())


def test_handler_memory_bound_holds_for_ours_and_fails_for_stock() -> None:
    ours = _handler_bytes(FleetHandler)
    stock = _handler_bytes(BrokerProtocolHandler)
    assert ours < HANDLER_BOUND, f"FleetHandler: {ours:.0f} B each"
    assert stock > HANDLER_BOUND * 2, f"stock BrokerProtocolHandler: {stock:.0f} B each"


def test_session_keeps_every_stock_attribute() -> None:
    """An amqtt upgrade that adds a session attribute fails here, not in a plugin."""
    stock = set(vars(Session()))
    ours = set(vars(FleetSession())) | {"retained_messages", "delivered_message_queue"}
    assert stock - {"transitions"} <= ours
    for name in stock:
        getattr(FleetSession(), name)


def test_handler_keeps_every_stock_attribute_it_uses() -> None:
    async def names() -> tuple[set[str], set[str]]:
        manager: Any = object.__new__(PluginManager)
        return set(vars(BrokerProtocolHandler(manager))), set(vars(FleetHandler(manager)))
    stock, ours = asyncio.run(names())
    # The queues and the reader's Event are what the override drops.
    assert stock - ours == {"_pending_subscriptions", "_pending_unsubscriptions",
                            "_reader_stopped"}


def test_session_states_follow_amqtts_transitions() -> None:
    session = FleetSession()
    assert session.transitions.state == NEW
    assert not session.transitions.is_connected()
    session.transitions.connect()
    assert session.transitions.state == CONNECTED
    assert session.is_connected()
    assert session.last_connect_time is not None
    assert session.last_disconnect_time is None
    with pytest.raises(RuntimeError):
        session.transitions.connect()  # as amqtt: no connected -> connected
    session.transitions.disconnect()
    assert session.state == DISCONNECTED
    assert session.last_disconnect_time is not None
    session.transitions.disconnect()  # disconnected -> disconnected is allowed
    session.transitions.connect()
    assert session.state == CONNECTED
    assert session.last_disconnect_time is None
    assert repr(session) == "FleetSession(clientId=None, state=connected)"


def test_session_queues_are_made_on_demand() -> None:
    session = FleetSession()
    session.clear_queues()
    assert session._queues is None
    assert session.retained_messages.empty()
    assert session.delivered_message_queue.empty()
    assert session.retained_messages_count == 0
    session.retained_messages.put_nowait(object())
    session.clear_queues()
    assert session.retained_messages.empty()
