"""broker.memory: when the heap's free memory is handed back, on an explicit clock.

The real broker under a burst of hanging handshakes is in test_handshake_memory.py."""

from __future__ import annotations

import asyncio
import logging
import sys

import pytest

from broker.memory import HeapRelease, malloc_trim, rss_kib
from epns.broker_config import MemorySettings

T0 = 1000.0


class _Counts:
    """A close counter and a trim that records its calls."""

    def __init__(self) -> None:
        self.closed = 0
        self.trims = 0

    def trim(self) -> int:
        self.trims += 1
        return 1


def _release(counts: _Counts, after: int = 64, interval: float = 5.0) -> HeapRelease:
    return HeapRelease(MemorySettings(release_after_closes=after, release_interval=interval),
                       lambda: counts.closed, counts.trim)


def test_due_once_enough_connections_closed() -> None:
    counts = _Counts()
    release = _release(counts)
    counts.closed = 63
    assert not release.due(T0)
    counts.closed = 64
    assert release.due(T0)
    release.release(T0)
    assert counts.trims == 1
    assert not release.due(T0 + 100)  # none closed since


def test_closes_before_it_started_do_not_count() -> None:
    counts = _Counts()
    counts.closed = 1000
    release = _release(counts)
    assert not release.due(T0)


def test_never_twice_within_the_interval() -> None:
    counts = _Counts()
    release = _release(counts)
    counts.closed = 64
    release.release(T0)
    counts.closed = 1000
    assert not release.due(T0 + 4.9)
    assert release.due(T0 + 5.0)


def test_the_release_is_logged_with_what_it_gave_back(caplog: pytest.LogCaptureFixture) -> None:
    counts = _Counts()
    release = _release(counts)
    counts.closed = 70
    with caplog.at_level(logging.INFO, logger="broker.memory"):
        release.release(T0)
    assert "memory_released closed=70 rss_before_kib=" in caplog.text


def test_disabled_by_zero_or_without_malloc_trim() -> None:
    counts = _Counts()
    assert _release(counts).enabled
    assert not _release(counts, after=0).enabled
    assert not HeapRelease(MemorySettings(), lambda: 0, None).enabled
    # run() returns at once when disabled: nothing to cancel.
    asyncio.run(asyncio.wait_for(_release(counts, after=0).run(), timeout=1))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_malloc_trim_is_glibc_s_and_rss_is_read() -> None:
    trim = malloc_trim()
    assert trim is not None
    assert trim() in (0, 1)
    assert rss_kib() > 1000


@pytest.mark.parametrize("field", ["release_after_closes", "release_interval"])
def test_negative_settings_are_refused(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        MemorySettings(**{field: -1})
