"""The orchestrator's branch of judgeopt's error tree (the whole tree is drawn in ``judgeopt``'s docstring), and the
one place gRPC errors are mapped.

    JudgeoptError              judgeopt.core.errors
    ├── ConfigError            judgeopt.core.errors: a config file or flag is invalid
    │   └── PolicyError            a policy is invalid (names the stage)
    ├── DataError              a dataset is missing or malformed
    ├── ServiceStartError      an agent service did not come up
    ├── RunFailed              a run cannot go on (every judge call of its first evaluation failed)
    └── AgentCallError         an agent RPC failed (carries the gRPC status code)
        ├── AgentTimeout           DEADLINE_EXCEEDED
        ├── AgentUnavailable       UNAVAILABLE
        └── AgentRejected          INVALID_ARGUMENT, FAILED_PRECONDITION and the rest

At the command line each prints as ``Type: message`` on one line, with a non-zero exit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import grpc

from judgeopt.core.errors import ConfigError, JudgeoptError
from judgeopt.core.redact import redact
from judgeopt.core.wire import RETRY_AFTER_KEY


class PolicyError(ConfigError):
    pass


class DataError(JudgeoptError):
    pass


class ServiceStartError(JudgeoptError):
    pass


class RunFailed(JudgeoptError):
    pass


class AgentCallError(JudgeoptError):
    def __init__(
        self, message: str, *, role: str, code: grpc.StatusCode, retry_after_seconds: float | None = None
    ) -> None:
        super().__init__(message)
        self.role = role
        self.code = code
        self.retry_after_seconds = retry_after_seconds
        """The model endpoint's ``Retry-After``, when the service passed one back."""


class AgentTimeout(AgentCallError):
    pass


class AgentUnavailable(AgentCallError):
    pass


class AgentRejected(AgentCallError):
    pass


@contextlib.contextmanager
def map_rpc_errors(role: str) -> Iterator[None]:
    """Re-raise ``grpc.RpcError`` as the matching :class:`AgentCallError`, chained; the status details redacted (a
    service of another version, or a proxy, may pass on what an endpoint echoed), since the message is stored with
    the run's call attempts."""
    try:
        yield
    except grpc.RpcError as exc:
        is_call = isinstance(exc, grpc.Call | grpc.aio.AioRpcError)
        code = exc.code() if is_call else grpc.StatusCode.UNKNOWN
        details = redact((exc.details() if is_call else str(exc)) or "")
        message = f"{role}: {code.name}: {details}"
        match code:
            case grpc.StatusCode.DEADLINE_EXCEEDED:
                raise AgentTimeout(message, role=role, code=code) from exc
            case grpc.StatusCode.UNAVAILABLE:
                pushback = _retry_after(exc) if isinstance(exc, grpc.aio.AioRpcError) else None
                raise AgentUnavailable(message, role=role, code=code, retry_after_seconds=pushback) from exc
            case _:
                raise AgentRejected(message, role=role, code=code) from exc


def _retry_after(exc: grpc.aio.AioRpcError) -> float | None:
    for key, value in exc.trailing_metadata() or ():
        if key == RETRY_AFTER_KEY:
            with contextlib.suppress(ValueError):
                return max(0.0, int(value) / 1000)
    return None
