"""Metadata keys and limits both sides of the contract agree on, beside the messages of ``judgeopt.v1``."""

from __future__ import annotations

REQUEST_ID_KEY = "x-request-id"
"""Request metadata: the call's request id (also in the message's ``meta``), for logs and replay."""
RUN_ID_KEY = "x-run-id"
"""Request metadata: the run the call belongs to."""
AUTHORIZATION_KEY = "authorization"
"""Request metadata: ``Bearer <token>`` when the service requires a token."""
RETRY_AFTER_KEY = "retry-after-ms"
"""Trailing metadata on a failed RPC: the model endpoint's ``Retry-After``, passed back to the caller's retry loop."""
MAX_CRITERIA = 64
"""The most criteria one request may define: each becomes part of one prompt and one answer schema. A service refuses
more with INVALID_ARGUMENT; the orchestrator refuses a dataset with more before any call."""
