"""The root of judgeopt's errors and the branches the base layer raises; each layer hangs its own branch under the root
(the whole tree is drawn in ``judgeopt``'s docstring). The command line maps the root in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class JudgeoptError(Exception):
    """Root of judgeopt's errors: at the command line each prints as one ``Type: message`` line, exit non-zero."""


class ConfigError(JudgeoptError):
    """A config file, flag or setting is invalid; the message names it."""


class ModelConfigError(ConfigError):
    """A role's model configuration cannot be used; the message names the setting."""


class CredentialError(ConfigError):
    """A TLS file or the token variable cannot be used; the message names the flag and the path or variable, never a
    secret's value."""


class LocalModelError(JudgeoptError):
    """The embedded local model server could not be started."""


class DirectoryInUse(JudgeoptError):
    """Another process is writing to the directory (a run, an experiment, a scoring state); the message names its
    pid."""


def describe_validation_error(exc: ValidationError, data: object = None) -> str:
    """A pydantic error on one line: ``field.path: message; …``. With the validated ``data``, an item of a list
    that has a name is shown by it: ``run.dataset.criteria[fluency].max_score`` rather than ``criteria.5``."""
    parts = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        where = _location(error["loc"], data)
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def _location(loc: tuple[int | str, ...], data: object) -> str:
    where = ""
    for step in loc:
        item = None
        if isinstance(step, int) and isinstance(data, list) and 0 <= step < len(data):
            item = data[step]
        elif isinstance(step, str) and isinstance(data, dict):
            item = data.get(step)
        name = item.get("name") if isinstance(step, int) and isinstance(item, dict) else None
        if isinstance(name, str) and name:
            where += f"[{name}]"
        else:
            where += f"{'.' if where else ''}{step}"
        data = item
    return where
