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


def describe_validation_error(exc: ValidationError) -> str:
    """A pydantic error on one line: ``field.path: message; …``."""
    parts = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        where = ".".join(str(p) for p in error["loc"])
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)
