"""Entry points for ``EntryPointSync`` tests: what a product's "replicate now" looks like."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from typing import Any

# Every call, as (function name, request, whether it ran off the event loop's thread).
calls: list[tuple[str, Any, bool]] = []


def replicate(request: Any) -> None:
    """A plain function: the agent runs it in a thread."""
    calls.append(("replicate", request, threading.current_thread() is not threading.main_thread()))


async def replicate_async(request: Any) -> None:
    """A coroutine function: the agent awaits it."""
    await asyncio.sleep(0)
    calls.append(("replicate_async", request, False))


def replicate_later(request: Any) -> Awaitable[None]:
    """A plain function that returns an awaitable: the agent awaits that too."""
    calls.append(("replicate_later", request, True))
    return asyncio.sleep(0)


def broken(request: Any) -> None:
    """A product whose replication service is down."""
    raise RuntimeError("replication service is stopped")


async def hangs(request: Any) -> None:
    """A product that never answers."""
    await asyncio.Event().wait()


NOT_CALLABLE = 42
