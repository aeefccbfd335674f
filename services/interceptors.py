"""Server interceptors, one concern each: request ids into structlog's context, one access-log line per RPC, the
bearer-token check, the ledger of what each request carried, and the replay of answered request ids.

A service's chain, outermost first: metrics (``judgeopt.services.metrics``, with a metrics port) → request context →
access log → bearer token → ledger → replay → servicer. So a refused call is still counted and logged with its request
id (from the ``x-request-id`` metadata: its body is never read) and code, the ledger holds only authenticated requests,
and a replayed answer never reaches the servicer (no second model call).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import grpc
import structlog
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection

from judgeopt.core.manifest import manifest
from judgeopt.core.private_files import open_private_text, private_dir

log = structlog.get_logger("judgeopt.rpc")

Proceed = Callable[[], Awaitable[Any]]
"""Runs the rest of the chain (the inner interceptors, then the servicer) for the call at hand; returns the reply."""


class UnaryInterceptor(grpc.aio.ServerInterceptor):
    """The skeleton of an interceptor that acts around each unary-unary call (every agent RPC is one): the handler is
    wrapped so that :meth:`around` runs for each call; streaming handlers (health's Watch, reflection) pass through
    untouched. A call refused before its request is read (no token: :class:`BearerTokenInterceptor` answers it with
    a stream-unary handler, the only kind a service has) is wrapped too, with ``request`` None. A subclass states
    only its concern, in :meth:`around`."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        serializers = {
            "request_deserializer": getattr(handler, "request_deserializer", None),
            "response_serializer": getattr(handler, "response_serializer", None),
        }
        if handler is not None and handler.unary_unary is not None:
            inner = handler.unary_unary

            async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
                return await self.around(handler_call_details, request, context, lambda: inner(request, context))

            return grpc.unary_unary_rpc_method_handler(handle, **serializers)
        if handler is not None and handler.stream_unary is not None:
            refuse = handler.stream_unary

            async def handle_unread(requests: Any, context: grpc.aio.ServicerContext) -> Any:
                return await self.around(handler_call_details, None, context, lambda: refuse(requests, context))

            return grpc.stream_unary_rpc_method_handler(handle_unread, **serializers)
        return handler

    @abstractmethod
    async def around(
        self, call: grpc.HandlerCallDetails, request: Any, context: grpc.aio.ServicerContext, proceed: Proceed
    ) -> Any:
        """Serve one call: ``call.method`` is ``/pkg.Service/Method``; ``await proceed()`` gets the reply; ``request``
        is None for a call refused before its request was read."""


def _ids(request: Any, metadata: tuple[tuple[str, str | bytes], ...]) -> dict[str, str]:
    """Request and run ids from the message's ``meta`` (authoritative) or the x-request-id/x-run-id metadata."""
    headers = {key: value for key, value in metadata if isinstance(value, str)}
    meta = getattr(request, "meta", None)
    return {
        "request_id": getattr(meta, "request_id", "") or headers.get("x-request-id", ""),
        "run_id": getattr(meta, "run_id", "") or headers.get("x-run-id", ""),
    }


class RequestContextInterceptor(UnaryInterceptor):
    """Binds request_id / run_id / rpc to structlog contextvars for everything logged while serving the call."""

    async def around(
        self, call: grpc.HandlerCallDetails, request: Any, context: grpc.aio.ServicerContext, proceed: Proceed
    ) -> Any:
        ids = _ids(request, tuple(call.invocation_metadata or ()))
        with structlog.contextvars.bound_contextvars(rpc=call.method, **ids):
            return await proceed()


class AccessLogInterceptor(UnaryInterceptor):
    """One canonical line per RPC: method, outcome code, latency, tokens. Never the payload."""

    async def around(
        self, call: grpc.HandlerCallDetails, request: Any, context: grpc.aio.ServicerContext, proceed: Proceed
    ) -> Any:
        started = time.perf_counter()
        code = "OK"
        reply: Any = None
        try:
            reply = await proceed()
            return reply
        except BaseException:
            code = context.code().name if context.code() is not None else "UNKNOWN"
            raise
        finally:
            usage = getattr(reply, "usage", None)
            log.info(
                "rpc",
                code=code,
                latency_ms=round((time.perf_counter() - started) * 1000, 2),
                criteria=[c.name for c in getattr(request, "criteria", [])],
                prompt_tokens=getattr(usage, "prompt_tokens", 0),
                completion_tokens=getattr(usage, "completion_tokens", 0),
                request_bytes=0 if request is None else request.ByteSize(),
            )


class LedgerInterceptor(UnaryInterceptor):
    """Appends, per request, the criteria and fields it carried to a JSON-lines ledger (for ``judgeopt audit``), a
    file only its owner reads (0600). Only agent requests (those with ``meta``) are written: health checks and
    ``AgentInfoService.Describe`` are not."""

    def __init__(self, path: Path) -> None:
        private_dir(path.parent)
        self._file: IO[str] = open_private_text(path, append=True)

    async def around(
        self, call: grpc.HandlerCallDetails, request: Any, context: grpc.aio.ServicerContext, proceed: Proceed
    ) -> Any:
        if hasattr(request, "meta"):
            self._file.write(json.dumps(manifest(request, call.method)) + "\n")
            self._file.flush()
        return await proceed()

    def close(self) -> None:
        self._file.close()


# --- bearer token ---------------------------------------------------------------------------------------------

OPEN_SERVICES = frozenset({health_pb2.DESCRIPTOR.services_by_name["Health"].full_name})
"""Services every caller may use without a token: health probes (kubelets, load balancers). Reflection is not
among them: it tells whoever asks what the service offers."""
HOUSEKEEPING_SERVICES = OPEN_SERVICES | {reflection.SERVICE_NAME, "grpc.reflection.v1.ServerReflection"}
"""Health and reflection: calls that are not agent work (metrics leave them out)."""


def service_of(method: str) -> str:
    """``/pkg.Service/Method`` → ``pkg.Service``."""
    return method.lstrip("/").split("/", 1)[0]


def _denied(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler that refuses without reading the request: stream-unary where the reply is unary, stream-stream where
    it is streamed (the serializers kept, so outer interceptors see the call's own types)."""

    async def deny(_requests: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")

    async def deny_stream(_requests: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")
        yield  # pragma: no cover - abort raises; the yield makes this a streaming handler

    serializers = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None or handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(deny, **serializers)
    return grpc.stream_stream_rpc_method_handler(deny_stream, **serializers)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses with ``UNAUTHENTICATED`` every RPC whose ``authorization`` metadata is not ``Bearer <token>``,
    reflection included, except the health service. Compared in constant time; the token and the header are never
    logged.

    The check runs before the request body is read. grpc.aio calls ``intercept_service`` with the method and the
    metadata only, before any message is received; but a unary-unary handler makes the server receive the whole
    message (up to ``max_message_bytes``) and deserialize it before its behaviour runs, even one that only aborts.
    So a refused call gets a stream-unary handler (stream-stream for a streamed reply) that aborts without ever
    asking for a message: nothing is deserialized, and the transport takes no more than the HTTP/2 flow-control
    window (64 KiB, up to about 4 MiB once BDP probing has grown it) before the client learns of the refusal and
    stops sending. grpc.aio has no per-call message limit, and none is needed on top of that: together with
    ``max_concurrent_rpcs`` (refused before reading too), what strangers can make a service hold is bounded."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def __repr__(self) -> str:
        return "BearerTokenInterceptor(<token hidden>)"

    def _reason_refused(self, metadata: tuple[tuple[str, str | bytes], ...]) -> str | None:
        values = [value for key, value in metadata if key == "authorization"]
        if not values:
            return "no authorization metadata"
        if len(values) > 1:
            return "several authorization entries"
        value = values[0]
        presented = value.encode() if isinstance(value, str) else value
        return None if hmac.compare_digest(presented, self._expected) else "wrong bearer token"

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or service_of(handler_call_details.method) in OPEN_SERVICES:
            return handler
        reason = self._reason_refused(tuple(handler_call_details.invocation_metadata or ()))
        if reason is None:
            return handler
        log.warning("rpc.unauthenticated", rpc=handler_call_details.method, reason=reason)
        return _denied(handler)


# --- replay of answered request ids ---------------------------------------------------------------------------

ReplayKey = tuple[str, str]
"""``(rpc, request_id)``."""


class ReplayConflictError(Exception):
    """A known request id arrived with a different request: a client bug, never answered from the cache."""


@dataclass
class _Pending:
    fingerprint: bytes
    reply: asyncio.Future[Any]
    """Resolves to the reply, or to ``None`` when the call failed (and was forgotten)."""


class ReplayCache:
    """The last ``capacity`` successful replies by ``(rpc, request_id)``, least recently used evicted first.

    ``run(key, fingerprint, work)`` calls ``work()`` once per key: a later call with the key gets the recorded
    reply, and a concurrent one waits for the first (one future per key) instead of calling the model too. Only
    successes are recorded: when ``work()`` fails or is cancelled the key is forgotten, so a retry (or a caller
    that was waiting) calls for real. The cache lives in memory: a restarted service, or another replica behind
    ``dns:///`` round-robin, does not know the ids, and calls the model again. The orchestrator's run store, which
    records every attempt, is the durable record.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[ReplayKey, _Pending] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def run(self, key: ReplayKey, fingerprint: bytes, work: Callable[[], Awaitable[Any]]) -> tuple[Any, bool]:
        """``(reply, replayed)``; raises :class:`ReplayConflictError` if ``key`` is known with another request."""
        while (entry := self._entries.get(key)) is not None:
            if not hmac.compare_digest(entry.fingerprint, fingerprint):
                raise ReplayConflictError(f"request id {key[1]} was already used for a different {key[0]} request")
            reply = await asyncio.shield(entry.reply)  # a waiter's cancellation must not cancel the shared future
            if reply is not None:
                if key in self._entries:
                    self._entries.move_to_end(key)
                return reply, True
            # The first call failed and was forgotten: loop, and run it for real unless another waiter already is.
        entry = _Pending(fingerprint, asyncio.get_running_loop().create_future())
        self._entries[key] = entry
        try:
            reply = await work()
        except BaseException:
            if self._entries.get(key) is entry:
                del self._entries[key]
            entry.reply.set_result(None)
            raise
        entry.reply.set_result(reply)
        self._evict()
        return reply, False

    def _evict(self) -> None:
        """Drop the least recently used answered entries beyond capacity (calls in flight are never dropped)."""
        while len(self._entries) > self.capacity:
            oldest = next((k for k, e in self._entries.items() if e.reply.done()), None)
            if oldest is None:
                return
            del self._entries[oldest]


def _free_of_charge(reply: Any) -> Any:
    """A replayed answer with its usage cleared: it cost no model call, and the caller's spend must not count the
    recorded call twice."""
    if "usage" not in type(reply).DESCRIPTOR.fields_by_name:
        return reply
    free = type(reply)()
    free.CopyFrom(reply)
    free.ClearField("usage")
    return free


def _fingerprint(request: Any) -> bytes:
    return hashlib.blake2b(request.SerializeToString(deterministic=True), digest_size=16).digest()


class ReplayInterceptor(UnaryInterceptor):
    """Answers a request id seen before (a retried call keeps its id) from a :class:`ReplayCache`, so a retry
    after a lost reply costs no second model call. Requests without ``meta.request_id`` (health, Describe) pass
    through."""

    def __init__(self, capacity: int) -> None:
        self.cache = ReplayCache(capacity)

    async def around(
        self, call: grpc.HandlerCallDetails, request: Any, context: grpc.aio.ServicerContext, proceed: Proceed
    ) -> Any:
        request_id = getattr(getattr(request, "meta", None), "request_id", "")
        if not request_id:
            return await proceed()
        try:
            reply, replayed = await self.cache.run((call.method, request_id), _fingerprint(request), proceed)
        except ReplayConflictError as exc:
            log.warning("rpc.replay_conflict")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise AssertionError("unreachable: abort raises") from exc
        if replayed:
            log.info("rpc.replayed")
            return _free_of_charge(reply)
        return reply
