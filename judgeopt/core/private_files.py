"""Files with data are the owner's alone: created 0600, in directories judgeopt creates 0700, whatever the umask.

Runs, scores, exported judges, reports, ledgers and logs hold the data being judged and what the models said about
it; another local user has no business reading them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, TextIO

from judgeopt.core.files import write_atomic

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """Create ``path`` and any missing parent 0700; directories that exist already are left as they are."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:  # made meanwhile by someone else: theirs to keep
            continue
        directory.chmod(DIR_MODE)  # mkdir's mode is cut by the umask
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty if it is missing, and make it 0600 (e.g. before SQLite opens it: its WAL and
    shared-memory files take the database file's mode)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE))
    path.chmod(FILE_MODE)
    return path


def _private_descriptor(path: Path, *, append: bool) -> int:
    """A descriptor open for writing on ``path``, the file 0600 (also when it existed with a wider mode)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC), FILE_MODE)
    os.fchmod(descriptor, FILE_MODE)
    return descriptor


def open_private_text(path: Path, *, append: bool = False, newline: str | None = None) -> TextIO:
    """``open(path, "a" if append else "w", encoding="utf-8")``, the file 0600."""
    return open(_private_descriptor(path, append=append), "a" if append else "w", encoding="utf-8", newline=newline)


def open_private_binary(path: Path, *, append: bool = False) -> BinaryIO:
    """``open(path, "ab" if append else "wb")``, the file 0600."""
    return open(_private_descriptor(path, append=append), "ab" if append else "wb")


def write_private_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8), 0600, whole or not at all (:func:`judgeopt.core.files.write_atomic`)."""
    write_atomic(path, text)


def write_private_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``, 0600, whole or not at all (:func:`judgeopt.core.files.write_atomic`)."""
    write_atomic(path, data)
