"""Sends routed calls: one concurrency limit for the whole run (in adaptive mode, an adaptive one per endpoint
inside it), a number of attempts per call, every attempt stored. Every limit a call waits at serves training calls
before validation calls and those before test calls (``priority``), so an evaluation overlapping the next step's
training fills the slots training leaves free.

This is the only retry layer on the orchestrator→service hop (gRPC channels declare no retry policy and the model
hop retries inside the service), so retries never stack. A call that still fails after its attempts returns
``None``: the step decides whether the failures it saw are too many. Each stored attempt keeps its wait for a
slot (the concurrency limit, then the endpoint's rate limits) apart from its time at the service, so a call's speed
is not confused with how long it queued. With tracing on, each call is a span (``call <role>``) around all its
attempts, with its tokens, attempts and outcome; each failed attempt is an event on it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import grpc
import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from judgeopt.core.tracing import Attribute, span
from judgeopt.orchestrator.engine.adaptive import AdaptiveLimits
from judgeopt.orchestrator.engine.priority import PriorityLimiter, priority_of
from judgeopt.orchestrator.engine.ratelimit import RateLimits
from judgeopt.orchestrator.engine.router import RoutedCall
from judgeopt.orchestrator.engine.store import CallAttempt, RunStore
from judgeopt.orchestrator.errors import AgentCallError, AgentTimeout, AgentUnavailable

log = structlog.get_logger(__name__)
ResponseT = TypeVar("ResponseT")


@dataclass(frozen=True)
class CallRetries:
    """How one call is retried (the run's spend limit is a different thing: ``budget.RunBudget``)."""

    attempts: int = 3
    """Attempts per call, the first included."""
    initial_backoff_seconds: float = 0.5
    max_backoff_seconds: float = 10.0
    max_retry_after_seconds: float = 120.0
    """The longest ``Retry-After`` honoured; an endpoint asking for more waits this long."""

    def wait(self) -> Callable[[RetryCallState], float]:
        """Exponential backoff, or the endpoint's ``Retry-After`` when it asked for longer."""
        backoff = wait_exponential(multiplier=self.initial_backoff_seconds, max=self.max_backoff_seconds)

        def seconds(state: RetryCallState) -> float:
            failure = state.outcome.exception() if state.outcome is not None else None
            asked = getattr(failure, "retry_after_seconds", None) or 0.0
            return max(backoff(state), min(asked, self.max_retry_after_seconds))

        return seconds


class CallExecutor:
    def __init__(
        self,
        store: RunStore,
        *,
        limit: PriorityLimiter,
        retries: CallRetries | None = None,
        rate_limits: RateLimits | None = None,
        adaptive: AdaptiveLimits | None = None,
        trace_attributes: Mapping[str, Attribute] | None = None,
        ready: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        """``limit`` bounds the calls in flight and ``rate_limits`` the calls per window of each endpoint; runs of
        one experiment share both. ``adaptive``: per-endpoint AIMD limits inside ``limit`` (adaptive mode).
        ``trace_attributes``: what every call's span carries besides its own (the run's mode, say). ``ready(role)``
        returns once the role's service is up: a call waits for it before it takes a slot or starts its clock, so
        services still starting neither hold slots nor count as time at the endpoint."""
        self._store = store
        self._ready = ready
        self._trace_attributes = dict(trace_attributes or {})
        self._limit = limit
        self._rates = rate_limits
        self._adaptive = adaptive
        self.retries = retries or CallRetries()

    async def send(
        self,
        call: RoutedCall[Any],
        send: Callable[[Any], Awaitable[ResponseT]],
        *,
        track: str,
        step: int,
        purpose: str,
    ) -> ResponseT | None:
        """The reply, or ``None`` once its attempts are spent (or the service refused the request as malformed)."""
        if call.audit is not None:
            self._store.record_audit(call.audit)
        attempt_number = first = self._store.attempts_made(call.request_id)
        priority = priority_of(purpose)

        async def attempt() -> ResponseT:
            nonlocal attempt_number
            if self._ready is not None:
                await self._ready(call.stage)
            attempt_number += 1
            started = time.perf_counter()
            sent = answered = started  # the slot is taken at ``sent``; the service answers at ``answered``
            record = CallAttempt(call.request_id, attempt_number, track, step, call.stage, purpose, outcome="ok")
            limiter = self._rates.for_role(call.stage) if self._rates is not None else None
            endpoint = self._adaptive.for_role(call.stage) if self._adaptive is not None else None
            ticket = await endpoint.acquire(priority) if endpoint is not None else None
            seconds: float | None = None  # the latency sample the adaptive limit learns from
            overloaded = False
            try:
                try:
                    async with self._limit.slot(priority):
                        slot = await limiter.acquire(_estimated_tokens(call.request), priority) if limiter else None
                        sent = time.perf_counter()
                        try:
                            reply = await send(call.request)
                        finally:
                            answered = time.perf_counter()
                            if limiter is not None and slot is not None:
                                await limiter.release(slot, None)
                    seconds = answered - sent
                except AgentCallError as exc:
                    overloaded = _is_overload(exc)
                    failed = replace(
                        record,
                        outcome="failed",
                        code=exc.code.name,
                        error=str(exc)[:500],
                        queue_seconds=sent - started,
                        endpoint_seconds=answered - sent,
                    )
                    self._store.record_attempt(failed)
                    traced.event("attempt.failed", attempt=attempt_number, code=exc.code.name)
                    log.warning("call.failed", stage=call.stage, attempt=attempt_number, code=exc.code.name)
                    raise
                usage = getattr(reply, "usage", None)
                if slot is not None:
                    slot.tokens = getattr(usage, "prompt_tokens", 0) + getattr(usage, "completion_tokens", 0)
                self._store.record_attempt(
                    replace(
                        record,
                        prompt_tokens=getattr(usage, "prompt_tokens", 0),
                        completion_tokens=getattr(usage, "completion_tokens", 0),
                        llm_calls=getattr(usage, "llm_calls", 0),
                        truncated=getattr(usage, "truncated_calls", 0),
                        cached_prompt_tokens=getattr(usage, "cached_prompt_tokens", 0),
                        model=getattr(usage, "model", None),
                        queue_seconds=sent - started,
                        endpoint_seconds=answered - sent,
                    )
                )
                return reply
            finally:
                if endpoint is not None and ticket is not None:
                    await endpoint.release(ticket, seconds=seconds, overloaded=overloaded)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retries.attempts),
            wait=self.retries.wait(),
            retry=retry_if_exception_type((AgentTimeout, AgentUnavailable)),
            reraise=False,
        )
        with span(
            f"call {call.stage}",
            role=call.stage,
            purpose=purpose,
            criteria=call.criteria,
            step=step,
            track=track,
            routing=call.routing,
            request_id=call.request_id,
            **self._trace_attributes,
        ) as traced:
            try:
                result: ResponseT = await retrying(attempt)
            except (RetryError, AgentCallError):
                traced.set(status="failed", attempts=attempt_number - first)
                traced.fail(f"no usable reply after {attempt_number - first} attempt(s)")
                return None
            usage = getattr(result, "usage", None)
            traced.set(
                status="ok",
                attempts=attempt_number - first,
                prompt_tokens=getattr(usage, "prompt_tokens", 0),
                completion_tokens=getattr(usage, "completion_tokens", 0),
                cached_prompt_tokens=getattr(usage, "cached_prompt_tokens", 0),
            )
            return result


def _is_overload(exc: AgentCallError) -> bool:
    """A failure that says the endpoint has too much to do: a refusal for load (the model's 429 arrives as
    UNAVAILABLE once the service's own retries are spent) or a timeout."""
    return isinstance(exc, AgentTimeout | AgentUnavailable) or exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def _estimated_tokens(request: Any) -> int:
    """Before a call: about four bytes of request per prompt token (settled with the real count afterwards)."""
    size: int = request.ByteSize()
    return size // 4
