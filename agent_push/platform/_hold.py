"""What every branch's ``hold_awake`` returns."""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self


class AwakeHold(abc.ABC):
    """Sleep held off until ``release`` (or the end of the ``with`` block);
    releasing twice is harmless. While it is held the machine does not go to
    sleep on its own; an explicit suspend by an administrator may still win."""

    @abc.abstractmethod
    def release(self) -> None:
        """Let the machine sleep again."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()
