"""Agent errors → gRPC status codes, in one place.

InvalidRequestError     → INVALID_ARGUMENT
ModelTimeoutError       → DEADLINE_EXCEEDED
ModelUnavailableError   → UNAVAILABLE
ModelRequestError       → FAILED_PRECONDITION (the endpoint refused the request, e.g. context overflow)
TimeoutError            → DEADLINE_EXCEEDED (the caller's deadline ran out while waiting for the model)

An endpoint's ``Retry-After`` travels back as the ``retry-after-ms`` trailer. The status message is the error's,
redacted (``judgeopt.core.redact``): it reaches the caller, its logs and its run store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
import structlog

from judgeopt.agents.errors import (
    AgentError,
    InvalidRequestError,
    ModelEndpointError,
    ModelRequestError,
    ModelTimeoutError,
    ModelUnavailableError,
)
from judgeopt.core.redact import redact
from judgeopt.core.wire import RETRY_AFTER_KEY

log = structlog.get_logger(__name__)
T = TypeVar("T")


def status_for(exc: AgentError | TimeoutError) -> grpc.StatusCode:
    match exc:
        case InvalidRequestError():
            return grpc.StatusCode.INVALID_ARGUMENT
        case ModelTimeoutError() | TimeoutError():
            return grpc.StatusCode.DEADLINE_EXCEEDED
        case ModelUnavailableError():
            return grpc.StatusCode.UNAVAILABLE
        case ModelRequestError():
            return grpc.StatusCode.FAILED_PRECONDITION
        case _:
            return grpc.StatusCode.INTERNAL


async def run_within_deadline(
    context: grpc.aio.ServicerContext, work: Callable[[], Awaitable[T]], *, margin_seconds: float = 0.05
) -> T:
    """Run ``work()`` within the caller's deadline, aborting the RPC with a mapped status on failure.

    ``work`` is a factory so nothing starts (no model call is made) when the deadline is already too close.
    """
    remaining = context.time_remaining()
    try:
        if remaining is not None and remaining < margin_seconds:
            raise TimeoutError("deadline too close to start a model call")
        return await asyncio.wait_for(work(), timeout=None if remaining is None else remaining - margin_seconds)
    except (AgentError, TimeoutError) as exc:
        code = status_for(exc)
        message = redact(str(exc)) or code.name
        log.warning("rpc.failed", code=code.name, error=message[:300])
        if isinstance(exc, ModelEndpointError) and exc.retry_after_seconds is not None:
            context.set_trailing_metadata(((RETRY_AFTER_KEY, str(round(exc.retry_after_seconds * 1000))),))
        await context.abort(code, message)
        raise AssertionError("unreachable: abort raises") from exc
    except Exception as exc:  # a bug, not a model failure: keep the traceback, do not invite retries
        log.exception("rpc.crashed", error_type=type(exc).__name__)
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error in the agent: {type(exc).__name__}")
        raise AssertionError("unreachable: abort raises") from exc
