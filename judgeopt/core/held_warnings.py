"""Warnings held back while a screen is drawn (a run's progress bars and result tables), to be shown after it, one
line per kind, instead of between its lines."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from judgeopt.core.log_setup import redacted


@dataclass
class HeldWarnings:
    """Warning events held back while a screen is being drawn, counted by kind, the first of each kept."""

    counts: Counter[str] = field(default_factory=Counter)
    first: dict[str, dict[str, Any]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """One line per kind, most frequent first: ``metrics.constant_predictions ×20 (first: n=4, reason=…)``."""
        lines = []
        for kind, count in self.counts.most_common():
            details = ", ".join(f"{key}={value}" for key, value in self.first[kind].items())
            lines.append(f"{kind} ×{count}" + (f" (first: {details})" if details else ""))
        return lines


@contextlib.contextmanager
def holding_warnings() -> Iterator[HeldWarnings]:
    """While inside, warning events are held (counted by kind) instead of written; errors are still written at once.
    The logging configuration in force is restored on the way out."""
    import structlog

    held = HeldWarnings()
    config = structlog.get_config()

    def hold(_logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if method != "warning":
            return event
        kind = str(event.get("event"))
        if kind not in held.first:
            held.first[kind] = {key: redacted(value) for key, value in event.items() if key != "event"}
        held.counts[kind] += 1
        raise structlog.DropEvent

    structlog.configure(processors=[hold, *config["processors"]])
    try:
        yield held
    finally:
        structlog.configure(processors=config["processors"])
