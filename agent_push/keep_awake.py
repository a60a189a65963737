"""The agent's side of keep-awake (``epns.keep_awake``): when the server
elects this agent to keep its subnet's relay awake, it holds off sleep
(``platform.hold_awake``: a logind inhibitor on Linux) until told to
release, or until the agent stops. It reports what it holds and, when it
cannot, the platform's reason in its words."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent_push.platform import AwakeHold, hold_awake
from epns.errors import PlatformError
from epns.logs import event

log = logging.getLogger(__name__)

NOT_ALLOWED = ("this agent's config does not allow keep-awake "
               "(wol.allow_keep_awake = false)")


@dataclass(frozen=True, slots=True)
class Held:
    """What the agent reports: holding sleep off, or why not."""

    holding: bool
    detail: str = ""


class KeepAwake:
    """Takes and releases the one sleep hold this agent may have."""

    def __init__(self, allowed: bool,
                 take: Callable[[str], AwakeHold] = hold_awake) -> None:
        self._allowed = allowed
        self._take = take
        self._hold: AwakeHold | None = None
        self.state = Held(False)

    async def apply(self, hold: bool, subnets: Sequence[str]) -> Held:
        """Hold (for ``subnets``) or release; the state to report."""
        if not hold:
            await self.release()
        elif not self._allowed:
            self.state = Held(False, NOT_ALLOWED)
        elif self._hold is None:
            why = "Wake-on-LAN relay for " + (", ".join(subnets) or "its subnet")
            try:
                # Starting the child and waiting for its lock blocks: off the loop.
                self._hold = await asyncio.to_thread(self._take, why)
            except PlatformError as exc:
                self.state = Held(False, str(exc))
                event(log, "keep_awake_failed", logging.WARNING, reason=str(exc))
                return self.state
            self.state = Held(True)
            event(log, "keep_awake_holding", subnets=",".join(subnets))
        return self.state

    async def release(self) -> None:
        """Let the machine sleep again (nothing held: nothing to do)."""
        hold, self._hold = self._hold, None
        self.state = Held(False)
        if hold is not None:
            await asyncio.to_thread(hold.release)
            event(log, "keep_awake_released")
