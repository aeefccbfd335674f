"""The service's Prometheus metrics: agent RPCs in flight (what the agents' HorizontalPodAutoscalers scale on, see
deploy/README.md), RPCs by outcome, and their latency; kept by a server interceptor and served over HTTP at
``/metrics`` when the service has a metrics port.

Health and reflection RPCs are not counted: probes are not load, and would keep an idle pod's gauge moving. The
endpoint is plain HTTP (what scrapers speak) and carries no data: counts and latencies by role, method and status
code, never a request's content or a secret; deployments admit only their monitoring to it (deploy/README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import grpc
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from judgeopt.services.interceptors import HOUSEKEEPING_SERVICES, Proceed, UnaryInterceptor, service_of

log = structlog.get_logger(__name__)

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0)
"""Seconds; an agent RPC waits on model calls, from a fraction of a second up to the longest deadline (900 s)."""


class ServiceMetrics:
    """One service's metrics, in a registry of its own so that several services in one process never collide."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.registry = CollectorRegistry()
        inflight = Gauge(
            "judgeopt_inflight_requests",
            "Agent RPCs started and not yet answered.",
            ["role"],
            registry=self.registry,
        )
        self.inflight = inflight.labels(role=role)
        """Created now, so an idle pod exports 0 rather than nothing (the HPA needs a value from every pod)."""
        self.rpcs = Counter(
            "judgeopt_rpc_total",
            "Agent RPCs answered, by method and gRPC status code.",
            ["role", "method", "code"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "judgeopt_rpc_seconds",
            "Time to answer an agent RPC, by method.",
            ["role", "method"],
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )

    def record(self, method: str, code: str, seconds: float) -> None:
        """Count one answered RPC and its latency."""
        self.rpcs.labels(role=self.role, method=method, code=code).inc()
        self.seconds.labels(role=self.role, method=method).observe(seconds)


def _code_name(context: grpc.aio.ServicerContext, default: str) -> str:
    """The status the handler set (``abort`` sets it), else ``default``."""
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else default


class MetricsInterceptor(UnaryInterceptor):
    """Keeps :class:`ServiceMetrics` for every agent RPC; the in-flight gauge goes back down however the call
    ends (answered, aborted, crashed or cancelled), or it would hold the replica count up forever."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics

    async def around(
        self, call: grpc.HandlerCallDetails, request: Any, context: grpc.aio.ServicerContext, proceed: Proceed
    ) -> Any:
        method = call.method
        if service_of(method) in HOUSEKEEPING_SERVICES:
            return await proceed()
        metrics = self._metrics
        metrics.inflight.inc()
        started = time.perf_counter()
        code = "UNKNOWN"
        try:
            reply = await proceed()
            code = _code_name(context, "OK")
            return reply
        except asyncio.CancelledError:
            code = _code_name(context, "CANCELLED")
            raise
        except BaseException:
            code = _code_name(context, "UNKNOWN")
            raise
        finally:  # counted before the gauge drops: a scrape that sees the call gone sees it counted
            metrics.record(method, code, time.perf_counter() - started)
            metrics.inflight.dec()


@contextlib.contextmanager
def metrics_endpoint(metrics: ServiceMetrics, host: str, port: int) -> Iterator[int]:
    """Serve ``metrics`` at ``http://host:port/metrics`` (port 0 = a free one) until the block ends; yields the
    bound port. A port that cannot be bound stops the service at start-up, not at the first scrape."""
    try:
        server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        raise RuntimeError(f"could not bind the metrics endpoint {host}:{port} ({exc.strerror or exc})") from exc
    bound = int(server.server_port)
    shown_host = f"[{host}]" if ":" in host else host
    log.info("service.metrics", role=metrics.role, url=f"http://{shown_host}:{bound}/metrics")
    try:
        yield bound
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
