"""The agent's sleep hold as the server asks for it (``agent_push.keep_awake``),
with the platform's hold replaced by a recorder: the logic alone. The real
logind inhibitor is taken end to end in tests/server/test_keep_awake.py and
in test_platform.py."""

from __future__ import annotations

import asyncio

from agent_push.keep_awake import NOT_ALLOWED, Held, KeepAwake
from agent_push.platform import AwakeHold
from epns.errors import PlatformError


class _Hold(AwakeHold):
    def __init__(self, log: list[str], why: str) -> None:
        self._log = log
        log.append(f"take {why}")

    def release(self) -> None:
        self._log.append("release")


def test_hold_once_release_once_and_say_why_not() -> None:
    log: list[str] = []

    async def run() -> list[Held]:
        keep = KeepAwake(True, lambda why: _Hold(log, why))
        return [await keep.apply(True, ["192.0.2.0/24"]), await keep.apply(True, []),
                await keep.apply(False, []), await keep.apply(False, [])]

    assert asyncio.run(run()) == [Held(True), Held(True), Held(False), Held(False)]
    assert log == ["take Wake-on-LAN relay for 192.0.2.0/24", "release"]


def test_a_platform_refusal_and_a_config_that_says_no_are_reported() -> None:
    def refuse(_why: str) -> AwakeHold:
        raise PlatformError("cannot hold sleep off through logind (systemd-inhibit): "
                            "Failed to connect to bus")

    async def run() -> tuple[Held, Held]:
        return (await KeepAwake(True, refuse).apply(True, []),
                await KeepAwake(False, refuse).apply(True, []))

    failed, refused = asyncio.run(run())
    assert failed == Held(False, "cannot hold sleep off through logind (systemd-inhibit): "
                                 "Failed to connect to bus")
    assert refused == Held(False, NOT_ALLOWED)
