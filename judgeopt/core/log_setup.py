"""The single structlog configuration, applied once at the entry point: JSON for services, console for the CLI."""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(*, json: bool, level: int = logging.INFO) -> None:
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks if json else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # Services log to stdout (collected by the container runtime); the CLI keeps stdout for its results.
        logger_factory=structlog.PrintLoggerFactory(sys.stdout if json else sys.stderr),
        cache_logger_on_first_use=False,  # tests reconfigure logging; a cached logger would keep a stale config
    )
