"""Synchronous twins of the API's coroutines, usable inside a running event loop (a Jupyter cell) too."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_sync(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run the coroutine ``factory()`` to its end and return its result.

    With no event loop running in this thread it runs on a fresh one here. Inside a running loop (a notebook cell,
    an async test) ``asyncio.run`` would refuse, so it runs on a fresh loop in a worker thread while the caller
    waits. Only the main thread may install signal handlers, and nothing below does; child processes started
    from the worker thread are tied to it (``PR_SET_PDEATHSIG``), which is right: they all stop before it ends.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    return _in_worker_thread(factory)


def _in_worker_thread(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    outcome: concurrent.futures.Future[T] = concurrent.futures.Future()
    running: list[tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]]] = []
    interrupted = threading.Event()

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None
        running.append((asyncio.get_running_loop(), task))
        if interrupted.is_set():  # the caller was interrupted before the work began
            raise asyncio.CancelledError
        return await factory()

    def work() -> None:
        try:
            outcome.set_result(asyncio.run(main()))
        except BaseException as exc:  # handed to the waiting caller, which raises it
            outcome.set_exception(exc)

    worker = threading.Thread(target=work, name="judgeopt-api", daemon=True)
    worker.start()
    try:
        while True:  # short waits: an interrupt is seen at once, wherever the signal was delivered
            with contextlib.suppress(TimeoutError):
                return outcome.result(timeout=0.1)
    except KeyboardInterrupt:
        # An interrupted cell: cancel the work, so that the services and the local model it started are stopped.
        interrupted.set()
        for loop, task in running:
            with contextlib.suppress(RuntimeError):  # the loop has already closed: the work is over
                loop.call_soon_threadsafe(task.cancel)
        worker.join()
        raise
