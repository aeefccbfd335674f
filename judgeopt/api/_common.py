"""What every part of the API shares: its own errors, the translation of OS and SQLite errors, quiet logging, and
pandas, imported only when a frame is asked for."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import structlog

from judgeopt.core.errors import ConfigError, JudgeoptError
from judgeopt.core.hub_model import LocalModel, parse_local_model
from judgeopt.core.log_setup import configure_logging

PathLike = str | os.PathLike[str]


class StorageError(JudgeoptError):
    """A file or a run store could not be read or written (the message names the OS or SQLite error)."""


class MissingDependencyError(JudgeoptError):
    """An optional package the call needs is not installed (the message says which, and how to install it)."""


@contextlib.contextmanager
def translated_errors() -> Iterator[None]:
    """Raise the OS and SQLite errors of the layers below as :class:`StorageError`, so callers catch one root."""
    try:
        yield
    except OSError as exc:
        raise StorageError(str(exc)) from exc
    except sqlite3.Error as exc:
        raise StorageError(f"run store: {exc}") from exc


def quiet_logging() -> None:
    """Warnings and errors only, on stderr, as at the command line; unless the application configured structlog
    itself (whose defaults would print every info line of a run into the notebook)."""
    if not structlog.is_configured():
        configure_logging(json=False, level=logging.WARNING)


def as_path(value: PathLike | None) -> Path | None:
    return None if value is None else Path(value)


def as_local_model(value: PathLike | None) -> LocalModel | None:
    """A GGUF path, or a string naming one on the Hugging Face Hub as ``--local-model`` does."""
    if value is None or not isinstance(value, str):
        return as_path(value)
    try:
        return parse_local_model(value)
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"local_model: {exc}") from None


def pandas() -> ModuleType:
    """pandas, which judgeopt does not depend on: the ``*_frame`` methods need it, the rest of the API does not."""
    try:
        return importlib.import_module("pandas")
    except ImportError:
        raise MissingDependencyError(
            "pandas is not installed (pip install pandas); the same data without it: steps(), predictions()"
        ) from None
