"""Adaptive concurrency: per endpoint, an AIMD limit on the calls in flight (``concurrency_mode: adaptive``).

The limit grows by one after each call that went well while the limit was in use (more than half of it in flight),
and is cut by a factor after a sign of overload: a call refused for load (RESOURCE_EXHAUSTED, or UNAVAILABLE, which
is how a service passes on the model's 429 once its own retries are spent), a timeout, or a reply much slower than
the fastest seen (the endpoint is queueing). One burst of overload cuts the limit once: only calls that started after
the last cut may cut it again. The limit stays between 1 and the run's ``concurrency``; the run's fixed limit and
the endpoint's rate limits still apply on top of it. Its waiters are served by priority, as the run's limit's are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from judgeopt.core.models import ModelsConfig
from judgeopt.core.roles import Role
from judgeopt.orchestrator.engine.priority import TRAINING, PriorityLimiter
from judgeopt.orchestrator.engine.ratelimit import endpoints_by_role

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Ticket:
    """One admitted call; ``generation`` is the number of cuts made before it started."""

    generation: int


@dataclass(frozen=True)
class AimdSettings:
    overload_factor: float = 0.5
    """The limit is multiplied by this after a refusal for load or a timeout."""
    latency_factor: float = 0.9
    """... and by this after a reply slower than ``latency_tolerance`` times the fastest seen."""
    latency_tolerance: float = 2.0


class AdaptiveLimit:
    """A priority limiter whose size follows AIMD; waiters are served when a call ends or the limit grows."""

    def __init__(self, name: str, maximum: int, *, initial: int = 1, settings: AimdSettings | None = None) -> None:
        if maximum < 1:
            raise ValueError(f"adaptive concurrency maximum must be at least 1, got {maximum}")
        self.name = name
        self.maximum = maximum
        self.settings = settings or AimdSettings()
        self._limit = float(min(max(initial, 1), maximum))
        self._slots = PriorityLimiter(self.limit)
        self._generation = 0
        self._overload_cuts = 0
        self._fastest: float | None = None
        self.lowest = self.highest = self.limit

    @property
    def limit(self) -> int:
        """Calls allowed in flight now."""
        return math.floor(self._limit)

    @property
    def in_flight(self) -> int:
        return self._slots.in_use

    async def acquire(self, priority: int = TRAINING) -> Ticket:
        await self._slots.acquire(priority)
        return Ticket(self._generation)

    async def release(self, ticket: Ticket, *, seconds: float | None, overloaded: bool) -> None:
        """End a call: ``seconds`` at the endpoint when it answered (``None``: no latency sample, e.g. a call
        refused as malformed or cancelled), ``overloaded`` when it failed for load or time."""
        self._adjust(ticket, seconds, overloaded, busy=self._slots.in_use)
        self._slots.capacity = self.limit
        self._slots.release()

    def _adjust(self, ticket: Ticket, seconds: float | None, overloaded: bool, busy: int) -> None:
        before = self.limit
        slow = False
        if seconds is not None and not overloaded:
            slow = self._fastest is not None and seconds > self.settings.latency_tolerance * self._fastest
            self._fastest = seconds if self._fastest is None else min(self._fastest, seconds)
        if overloaded or slow:
            if ticket.generation != self._generation:
                return  # this call started before the last cut: the cut already answered its overload
            factor = self.settings.overload_factor if overloaded else self.settings.latency_factor
            self._limit = max(1.0, self._limit * factor)
            self._generation += 1  # counts the cuts
            self._overload_cuts += overloaded
        elif seconds is not None and 2 * busy > self.limit:
            self._limit = min(float(self.maximum), self._limit + 1.0)
        if self.limit != before:
            self.lowest, self.highest = min(self.lowest, self.limit), max(self.highest, self.limit)
            log.debug(
                "concurrency.limit", endpoint=self.name, limit=self.limit, was=before, overloaded=overloaded, slow=slow
            )

    def report(self) -> dict[str, int]:
        return {
            "maximum": self.maximum,
            "min_limit": self.lowest,
            "max_limit": self.highest,
            "final_limit": self.limit,
            "overload_cuts": self._overload_cuts,
            "latency_cuts": self._generation - self._overload_cuts,
        }


class AdaptiveLimits:
    """One adaptive limit per model endpoint; roles sharing an endpoint share it."""

    def __init__(self, models: ModelsConfig, roles: tuple[Role, ...], *, maximum: int) -> None:
        self._endpoint = endpoints_by_role(models, roles)
        self._limits: Mapping[str, AdaptiveLimit] = {
            endpoint: AdaptiveLimit(endpoint, maximum) for endpoint in sorted(set(self._endpoint.values()))
        }

    def for_role(self, role: str) -> AdaptiveLimit | None:
        endpoint = self._endpoint.get(role)
        return None if endpoint is None else self._limits.get(endpoint)

    def report(self) -> dict[str, dict[str, int]]:
        """Per endpoint: the configured maximum, the lowest, highest and final limit reached, and the cuts made for
        overload and for latency."""
        return {endpoint: limit.report() for endpoint, limit in self._limits.items()}
