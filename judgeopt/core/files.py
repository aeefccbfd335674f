"""Writing that survives a crash and a second writer: a file is replaced whole or not at all, and a directory has one
writing process at a time.

:func:`write_atomic` is the one way judgeopt writes a file it replaces (summaries, experiment definitions, reports,
exported judges, the scores CSV's header). :class:`DirectoryLock` is held by a command for as long as it writes to a
run directory, an experiment directory or a scoring state directory; a second process is refused in one line naming
the holder's pid, instead of two writers interleaving one store.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from judgeopt.core.errors import DirectoryInUse

LOCK_FILE = ".judgeopt.lock"


def _sync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Replace ``path``'s content with ``data`` (text as UTF-8) atomically: written to a temporary file beside it,
    flushed to disk, renamed over it, the rename flushed too. A crash leaves the old content or the new, never a torn
    mix; the file is the owner's alone (0600), as ``tempfile.mkstemp`` creates it."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temporary = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)


class DirectoryLock:
    """An exclusive ``flock`` on ``<directory>/.judgeopt.lock``, which records the holder's pid.

    Held by one process at a time; within that process it is re-entrant (a command that holds its directory may open
    the directory's store, which takes the lock too). The kernel drops it when the holder exits, however it exits, so
    a killed run never leaves its directory locked. Use as a context manager, or :meth:`acquire` / :meth:`release`
    for a lock that lives as long as an object (a run store)."""

    _held: ClassVar[dict[Path, tuple[int, int]]] = {}
    """Locks this process holds: lock file → (descriptor, holds)."""
    _guard: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._path = directory.resolve() / LOCK_FILE
        self._holding = False

    def acquire(self) -> Self:
        """Take the lock of the (existing) directory; :class:`DirectoryInUse` if another process holds it."""
        if self._holding:
            return self
        with DirectoryLock._guard:
            held = DirectoryLock._held.get(self._path)
            if held is not None:
                DirectoryLock._held[self._path] = (held[0], held[1] + 1)
                self._holding = True
                return self
            descriptor = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(descriptor, 32).decode("ascii", "replace").strip() or "unknown"
                os.close(descriptor)
                raise DirectoryInUse(
                    f"{self.directory} is in use by another judgeopt process (pid {holder}); wait for it to end or "
                    "stop it, then run the command again"
                ) from None
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
            DirectoryLock._held[self._path] = (descriptor, 1)
            self._holding = True
        return self

    def release(self) -> None:
        """Give the lock up (the last release of this process unlocks the file); releasing twice is harmless."""
        if not self._holding:
            return
        with DirectoryLock._guard:
            descriptor, holds = DirectoryLock._held[self._path]
            if holds > 1:
                DirectoryLock._held[self._path] = (descriptor, holds - 1)
            else:
                del DirectoryLock._held[self._path]
                os.close(descriptor)  # closing the only descriptor drops the flock
            self._holding = False

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()
