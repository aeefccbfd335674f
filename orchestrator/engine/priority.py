"""A concurrency limit that serves its waiters by priority: when a slot frees, the most urgent waiter gets it
(first come, first served within a priority).

Steps overlap — a step's test evaluation runs while the next step trains — so the calls of both compete for the
same slots. Training calls sit on the run's critical path and evaluation calls do not, so training goes first and
evaluation fills the slots training leaves free. Priorities are small integers; lower is more urgent.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator

TRAINING, VALIDATION, TEST = 0, 1, 2
"""The priorities of a call by what it is for: training first, then the gate's validation, then the test figures."""
_EVALUATION_PRIORITY = {"val": VALIDATION, "test": TEST}


def priority_of(purpose: str) -> int:
    """A call's priority from its ``purpose`` in the calls table (anything not an evaluation is training work)."""
    return _EVALUATION_PRIORITY.get(purpose, TRAINING)


class PriorityLimiter:
    """A semaphore of ``capacity`` slots whose waiters form a heap of futures ordered by (priority, arrival).

    A freed slot goes straight to the first waiter, so a new caller never overtakes one. A waiter cancelled while
    it waits leaves the heap; one cancelled after it was handed a slot passes the slot on, so no slot leaks.
    ``capacity`` may change while calls are in flight (the adaptive limit resizes it); a cut takes effect as calls end.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a concurrency limit needs at least one slot, got {capacity}")
        self._capacity = capacity
        self._in_use = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    @property
    def capacity(self) -> int:
        return self._capacity

    @capacity.setter
    def capacity(self, value: int) -> None:
        self._capacity = max(1, value)
        self._hand_over()

    @property
    def in_use(self) -> int:
        """Slots held now."""
        return self._in_use

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self, priority: int = TRAINING) -> None:
        if self._in_use < self._capacity:  # a freed slot goes straight to a waiter: nobody waits for this one
            self._in_use += 1
            return
        entry = (priority, next(self._arrivals), asyncio.get_running_loop().create_future())
        heapq.heappush(self._waiters, entry)
        try:
            await entry[2]
        except asyncio.CancelledError:
            if entry[2].cancelled():  # still waiting: leave the queue
                self._waiters.remove(entry)
                heapq.heapify(self._waiters)
            else:  # handed a slot just before the cancellation arrived: hand it on
                self.release()
            raise

    def release(self) -> None:
        self._in_use -= 1
        self._hand_over()

    def _hand_over(self) -> None:
        while self._waiters and self._in_use < self._capacity:
            _, _, future = heapq.heappop(self._waiters)
            self._in_use += 1
            future.set_result(None)

    @contextlib.asynccontextmanager
    async def slot(self, priority: int = TRAINING) -> AsyncIterator[None]:
        """Hold one slot for the body of the ``async with``."""
        await self.acquire(priority)
        try:
            yield
        finally:
            self.release()
