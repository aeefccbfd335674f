"""Errors raised by the agents. Model *output* problems are never errors: they are typed parse statuses.

AgentError                   (a judgeopt.core.errors.JudgeoptError)
├── InvalidRequestError      the request itself is malformed (unknown criterion, empty instruction, …)
└── ModelEndpointError       the model endpoint failed after the client's own retries
    ├── ModelTimeoutError        no reply within the deadline
    ├── ModelUnavailableError    connection refused/reset, 5xx, 429 after retries
    └── ModelRequestError        the endpoint refused the request (4xx, e.g. context overflow)
"""

from __future__ import annotations

from judgeopt.core.errors import JudgeoptError


class AgentError(JudgeoptError):
    """Root of the errors an agent raises."""


class InvalidRequestError(AgentError):
    """The request is malformed; the message names what is wrong."""


class ModelEndpointError(AgentError):
    """The model endpoint did not produce a reply."""

    def __init__(
        self, message: str, *, status_code: int | None = None, retry_after_seconds: float | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retry_after_seconds = retry_after_seconds
        """How long the endpoint asked callers to wait (its ``Retry-After``), if it said."""


class ModelTimeoutError(ModelEndpointError):
    pass


class ModelUnavailableError(ModelEndpointError):
    pass


class ModelRequestError(ModelEndpointError):
    pass
