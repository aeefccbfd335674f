"""Agent service processes forked from a fork server that has imported the service code once.

A service spends its first one to two seconds importing openai and autogen. Started as four fresh interpreters, a
run's services pay that four times over, at once, on the same cores, and the first model call waits for the last of
them. Here the standard library's fork server (``multiprocessing``'s ``forkserver`` start method) imports the
service code once (``PRELOAD``), and each service is a fork of it: a run's four services cost one import, and every
later run of the same process (an experiment's cells, the test suite) none.

Each forked service runs ``judgeopt ARGV`` as the command line would (``judgeopt.cli.main``), with the environment
it is given (not the fork server's, which was fixed when it started), its output appended to its log file, and its
process title set to that command line, so ``ps`` shows ``judgeopt serve ROLE …`` as before. It gets SIGTERM when
the fork server exits, and the fork server exits with the process that started it, so no service outlives a killed
orchestrator. ``ForkedService`` has the part of ``subprocess.Popen``'s interface the fleet uses.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import os
import runpy
import signal
import subprocess
import sys
import types
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from judgeopt.core.local_model import terminate_with_parent

PRELOAD = ("judgeopt.cli", "judgeopt.services.command", "judgeopt.services.server")
"""What the fork server imports before its first fork: everything ``judgeopt serve`` needs."""


class ServiceProcess(Protocol):
    """A running service process, as the fleet watches and stops it (``subprocess.Popen`` has this interface)."""

    pid: int

    def poll(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def kill(self) -> None: ...


def _context() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    assert isinstance(context, multiprocessing.context.ForkServerContext)
    context.set_forkserver_preload(list(PRELOAD))
    return context


def warm_up() -> None:
    """Start the fork server now, without waiting for its imports, so that they overlap the caller's own work."""
    _context()
    multiprocessing.forkserver.ensure_running()


class ForkedService:
    """``judgeopt ARGV`` in a process forked from the fork server. Creating the first waits until the fork server
    has done its imports."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> None:
        self.title = " ".join(("judgeopt", *argv))
        self._process = _context().Process(
            target=_run_forked, args=(list(argv), dict(env), str(log_path), self.title), name=self.title, daemon=True
        )
        with _without_main_module():
            self._process.start()
        assert self._process.pid is not None
        self.pid: int = self._process.pid

    def poll(self) -> int | None:
        return self._process.exitcode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if (code := self._process.exitcode) is None:
            raise subprocess.TimeoutExpired(self.title, timeout or 0.0)
        return code

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


@contextlib.contextmanager
def _without_main_module() -> Iterator[None]:
    """``multiprocessing`` re-imports the caller's ``__main__`` in every child it starts, so a script that calls
    judgeopt at top level (no ``if __name__ == "__main__":``) would run again in each service. A service needs nothing
    of it: while a service starts, ``__main__`` is an empty module, which the child has no reason to import."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _run_forked(argv: list[str], env: dict[str, str], log_path: str, title: str) -> None:
    """The forked child: become ``judgeopt ARGV`` with ``env``, writing to ``log_path``. It runs ``python -m
    judgeopt`` as the command line would (the orchestrator never imports the serving code itself; the fork server
    has imported it, so this costs nothing)."""
    import setproctitle

    setproctitle.setproctitle(title)
    terminate_with_parent()  # the fork server, which exits with the process that started it
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    for stream in (1, 2):
        os.dup2(log, stream)
    os.close(log)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = ["judgeopt", *argv]
    runpy.run_module("judgeopt", run_name="__main__", alter_sys=True)
