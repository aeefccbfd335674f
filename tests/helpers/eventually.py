"""Poll a condition until it holds or a deadline passes, for async and sync tests."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

__all__ = ["assert_eventually", "wait_until"]


class _Deadline:
    """The polling schedule shared by ``assert_eventually`` and ``wait_until``."""

    def __init__(self, timeout: float, interval: float) -> None:
        self._timeout = timeout
        self._interval = interval
        self._deadline = time.monotonic() + timeout

    def next_pause(self) -> float | None:
        """Seconds to wait before the next check, or None once the deadline has passed."""
        remaining = self._deadline - time.monotonic()
        return None if remaining <= 0 else min(self._interval, remaining)

    def failure(self, message: str) -> AssertionError:
        """The error to raise when the condition never held."""
        return AssertionError(message or f"condition not met within {self._timeout}s")


async def assert_eventually(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float = 10.0,  # noqa: ASYNC109 - a polling budget, not a cancellation scope
    interval: float = 0.05,
    message: str = "",
) -> None:
    """Await until ``predicate()`` (sync or async) is true; AssertionError(message) after ``timeout``."""
    deadline = _Deadline(timeout, interval)
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        pause = deadline.next_pause()
        if pause is None:
            raise deadline.failure(message)
        await asyncio.sleep(pause)


def wait_until(
    predicate: Callable[[], bool],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "",
) -> None:
    """Block until ``predicate()`` is true; AssertionError(message) after ``timeout``."""
    deadline = _Deadline(timeout, interval)
    while not predicate():
        pause = deadline.next_pause()
        if pause is None:
            raise deadline.failure(message)
        time.sleep(pause)
