"""Per-endpoint request and token rate limits, shared by every call of a run (or of an experiment).

A call counts against its endpoint's window from the moment it starts until ``window`` seconds after it ends.
Counting until the end (not only from the start) is what makes the limit hold *at the endpoint*: a request
reaches the endpoint at some moment while it is in flight, so no window of that length at the endpoint can see
more calls than the limit, however long each one queued on the way. Token use is known only after a call; until
then its estimate stands in. Waiters get room in order of priority (first come, first served within one), as at
the run's concurrency limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from judgeopt.core.models import ModelsConfig
from judgeopt.core.roles import Role
from judgeopt.orchestrator.engine.priority import TRAINING

LOCAL_ENDPOINT = "http://local"


@dataclass
class Slot:
    tokens: int
    ended: float | None = None


@dataclass
class WindowLimiter:
    requests: int | None
    tokens: int | None
    window: float
    _slots: list[Slot] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _waiting: list[tuple[int, int]] = field(default_factory=list)
    """(priority, arrival) of the callers waiting for room; only the first of them may take it."""
    _arrivals: itertools.count[int] = field(default_factory=itertools.count)

    def _prune(self, now: float) -> None:
        self._slots = [s for s in self._slots if s.ended is None or now - s.ended < self.window]

    def _full(self, tokens: int) -> bool:
        if self.requests is not None and len(self._slots) >= self.requests:
            return True
        return (
            self.tokens is not None and bool(self._slots) and sum(s.tokens for s in self._slots) + tokens > self.tokens
        )

    def _next_expiry(self, now: float) -> float | None:
        ends = [s.ended for s in self._slots if s.ended is not None]
        return min(ends) + self.window - now if ends else None

    async def acquire(self, estimated_tokens: int, priority: int = TRAINING) -> Slot:
        """Wait for room in the window (a call ending, or an ended one leaving the window) and for the callers
        ahead in priority order."""
        me = (priority, next(self._arrivals))
        async with self._changed:
            heapq.heappush(self._waiting, me)
            try:
                while True:
                    now = time.monotonic()
                    self._prune(now)
                    if self._waiting[0] == me and not self._full(estimated_tokens):
                        slot = Slot(estimated_tokens)
                        self._slots.append(slot)
                        return slot
                    timeout = self._next_expiry(now)
                    with contextlib.suppress(TimeoutError):  # an ended call left the window
                        await asyncio.wait_for(self._changed.wait(), timeout=timeout)
            finally:  # taken room or given up: the next caller in line may try
                self._waiting.remove(me)
                heapq.heapify(self._waiting)
                self._changed.notify_all()

    async def release(self, slot: Slot, actual_tokens: int | None) -> None:
        async with self._changed:
            slot.ended = time.monotonic()
            if actual_tokens is not None:
                slot.tokens = actual_tokens
            self._changed.notify_all()


class RateLimits:
    """One limiter per endpoint; roles sharing an endpoint share its limiter (with the tightest limits)."""

    def __init__(self, models: ModelsConfig, roles: tuple[Role, ...], *, window: float) -> None:
        grouped: dict[str, list[tuple[int | None, int | None]]] = {}
        self._endpoint = endpoints_by_role(models, roles)
        for role in roles:
            config = models.for_role(role, local_base_url=LOCAL_ENDPOINT)
            grouped.setdefault(self._endpoint[role], []).append((config.requests_per_minute, config.tokens_per_minute))
        self._limiters: Mapping[str, WindowLimiter] = {
            endpoint: WindowLimiter(_tightest(r for r, _ in limits), _tightest(t for _, t in limits), window)
            for endpoint, limits in grouped.items()
            if any(r is not None or t is not None for r, t in limits)
        }

    def for_role(self, role: str) -> WindowLimiter | None:
        endpoint = self._endpoint.get(role)
        return None if endpoint is None else self._limiters.get(endpoint)


def endpoints_by_role(models: ModelsConfig, roles: tuple[Role, ...]) -> dict[str, str]:
    """Each role's model endpoint (the embedded model counts as one endpoint)."""
    return {role: str(models.for_role(role, local_base_url=LOCAL_ENDPOINT).base_url) for role in roles}


def _tightest(values: Iterable[int | None]) -> int | None:
    given = [v for v in values if v is not None]
    return min(given) if given else None
