"""Server interceptors, one concern each: request ids into structlog's context, one access-log line per RPC, and
the ledger of what each request carried."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import grpc
import structlog

from protos.manifest import manifest

log = structlog.get_logger("judgeopt.rpc")

UnaryHandler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def _wrap_unary(
    handler: grpc.RpcMethodHandler | None, wrap: Callable[[UnaryHandler], UnaryHandler]
) -> grpc.RpcMethodHandler | None:
    if handler is None or handler.unary_unary is None:
        return handler  # health and reflection streams pass through untouched
    return grpc.unary_unary_rpc_method_handler(
        wrap(handler.unary_unary),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _ids(request: Any, metadata: tuple[tuple[str, str | bytes], ...]) -> dict[str, str]:
    """Request and run ids from the message's ``meta`` (authoritative) or the x-request-id/x-run-id metadata."""
    headers = {key: value for key, value in metadata if isinstance(value, str)}
    meta = getattr(request, "meta", None)
    return {
        "request_id": getattr(meta, "request_id", "") or headers.get("x-request-id", ""),
        "run_id": getattr(meta, "run_id", "") or headers.get("x-run-id", ""),
    }


class RequestContextInterceptor(grpc.aio.ServerInterceptor):
    """Binds request_id / run_id / rpc to structlog contextvars for everything logged while serving the call."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        metadata = tuple(handler_call_details.invocation_metadata or ())

        def wrap(inner: UnaryHandler) -> UnaryHandler:
            async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
                with structlog.contextvars.bound_contextvars(rpc=method, **_ids(request, metadata)):
                    return await inner(request, context)

            return handle

        return _wrap_unary(await continuation(handler_call_details), wrap)


class AccessLogInterceptor(grpc.aio.ServerInterceptor):
    """One canonical line per RPC: method, outcome code, latency, tokens. Never the payload."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        def wrap(inner: UnaryHandler) -> UnaryHandler:
            async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started = time.perf_counter()
                code = "OK"
                reply: Any = None
                try:
                    reply = await inner(request, context)
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
                        request_bytes=request.ByteSize(),
                    )

            return handle

        return _wrap_unary(await continuation(handler_call_details), wrap)


class LedgerInterceptor(grpc.aio.ServerInterceptor):
    """Appends, per request, the criteria and fields it carried to a JSON-lines ledger (for ``judgeopt audit``)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = path.open("a", encoding="utf-8")

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method

        def wrap(inner: UnaryHandler) -> UnaryHandler:
            async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if hasattr(request, "meta"):
                    self._file.write(json.dumps(manifest(request, method)) + "\n")
                    self._file.flush()
                return await inner(request, context)

            return handle

        return _wrap_unary(await continuation(handler_call_details), wrap)

    def close(self) -> None:
        self._file.close()
