"""The single structlog configuration, applied once at the entry point (``judgeopt.cli.main``, from ``--log-format``
and ``--log-level`` over each command's ``log_defaults.LogDefaults``): JSON on stdout for services, console on
stderr for the CLI, whose stdout holds its results. Every string of every event passes through
``judgeopt.core.redact`` before it is rendered."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

from judgeopt.core.redact import redact


def redacted(value: Any) -> Any:
    """``value`` with secrets in every string, nested ones too, replaced by ``REDACTED``."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redacted(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redacted(item) for item in value]
    return value


def _redact_event(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: secrets (keys, tokens, URL credentials) in any field, nested ones and rendered
    tracebacks included, become ``REDACTED``."""
    return {key: redacted(value) for key, value in event.items()}


def configure_logging(*, json: bool, level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """``stream`` defaults to stdout for JSON (services) and stderr for the console."""
    import structlog

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
