"""The single structlog configuration, applied once at the entry point (``judgeopt.cli.main`` from ``--log-format`` and
``--log-level``, each command giving its defaults): JSON on stdout for services, console on stderr for the CLI, whose
stdout holds its results. Every string of every event passes through ``judgeopt.core.redact`` before it is rendered."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections import Counter
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

from judgeopt.core.redact import redact


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(item) for item in value]
    return value


def _redact_event(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: secrets (keys, tokens, URL credentials) in any field, nested ones and rendered
    tracebacks included, become ``REDACTED``."""
    return {key: _redacted(value) for key, value in event.items()}


LogFormat = Literal["console", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("console", "json")
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


@dataclass(frozen=True)
class LogDefaults:
    """A command's logging when the root flags do not say: the orchestrator's commands log warnings as console lines
    on stderr; a service logs JSON lines on stdout, for the container runtime to collect."""

    format: LogFormat = "console"
    level: str = "warning"
    stdout: bool = False


def configure_logging(*, json: bool, level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """``stream`` defaults to stdout for JSON (services) and stderr for the console."""
    import structlog  # here, so that command modules can name their LogDefaults without loading structlog

    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks if json else structlog.dev.set_exc_info,
            _redact_event,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream or (sys.stdout if json else sys.stderr)),
        cache_logger_on_first_use=False,  # tests reconfigure logging; a cached logger would keep a stale config
    )


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
            held.first[kind] = {key: _redacted(value) for key, value in event.items() if key != "event"}
        held.counts[kind] += 1
        raise structlog.DropEvent

    structlog.configure(processors=[hold, *config["processors"]])
    try:
        yield held
    finally:
        structlog.configure(processors=config["processors"])
