"""A callback that keeps what it was called with, for the ``on_wait`` / ``on_progress`` hooks."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


class Recorder(list[T]):
    """``waits: Recorder[float] = Recorder()``, then ``await spacer.acquire(waits)``; it is the list."""

    async def __call__(self, item: T) -> None:
        self.append(item)
