"""What each command logs unless ``--log-format`` and ``--log-level`` say otherwise. Light on purpose: command modules
name their defaults at import, and ``judgeopt --help`` loads every command module."""

from __future__ import annotations

from typing import Literal, NamedTuple

LogFormat = Literal["console", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("console", "json")
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")  # the names of the logging module's levels


class LogDefaults(NamedTuple):
    """The orchestrator's commands log warnings as console lines on stderr; a service logs JSON lines on stdout, for
    the container runtime to collect."""

    format: LogFormat = "console"
    level: str = "warning"
    stdout: bool = False
