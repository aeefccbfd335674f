"""OpenTelemetry traces (the ``otel`` extra), asked for by the standard ``OTEL_*`` variables and by nothing else.

Tracing is on in a process when ``OTEL_TRACES_EXPORTER`` names an exporter other than ``none``, or an OTLP endpoint
is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), unless ``OTEL_SDK_DISABLED`` is
``true``. Otherwise it is off and costs nothing: this module imports no opentelemetry package until :func:`tracing`
finds it asked for, :func:`span` hands out one shared do-nothing span, and the gRPC and httpx hooks add nothing.
Asked for without the extra installed, one warning says so and the process runs untraced.

Everything else is the SDK's own reading of the variables: ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``
(the resource), ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*`` (batching), ``OTEL_EXPORTER_OTLP_*`` (endpoint, headers,
timeout), ``OTEL_PROPAGATORS``. ``OTEL_TRACES_EXPORTER`` is a comma-separated list of names (``otlp``, the default,
sent as ``http/protobuf`` unless ``OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL`` says otherwise; ``console``; or any
exporter installed under the SDK's ``opentelemetry_traces_exporter`` entry points).

Spans carry judgeopt's attributes under ``judgeopt.*``: ids, roles, criteria, steps and counts, never a prompt, a
document or a key.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from judgeopt.core.errors import ConfigError

if TYPE_CHECKING:
    import httpx
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span as OtelSpan
    from opentelemetry.trace import Tracer

log = structlog.get_logger(__name__)

Attribute = str | int | float | bool | Sequence[str] | None
"""A span attribute's value; ``None`` leaves the attribute out."""

ATTRIBUTE_PREFIX = "judgeopt."
_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_EXPORTER_GROUP = "opentelemetry_traces_exporter"
_OTLP_BY_PROTOCOL = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}
_UNNAMED_SERVICE = "unknown_service"
"""The SDK's service name when neither ``OTEL_SERVICE_NAME`` nor ``OTEL_RESOURCE_ATTRIBUTES`` names one."""


def requested(environ: Mapping[str, str] = os.environ) -> bool:
    """Do the ``OTEL_*`` variables ask this process for traces?"""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return any(environ.get(name, "").strip() for name in _ENDPOINT_VARIABLES)


def service_environment(role: str, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The environment of a service this process starts: its own, so the ``OTEL_*`` variables reach the service,
    with an ``OTEL_SERVICE_NAME`` made the role's (``<name>-<role>``), so the services' spans are not taken for this
    process's. Without one, a service names itself ``judgeopt-<role>``."""
    child = dict(environ)
    if name := child.get("OTEL_SERVICE_NAME", "").strip():
        child["OTEL_SERVICE_NAME"] = f"{name}-{role}"
    return child


class Span:
    """A span of judgeopt's work, or nothing at all when tracing is off (every method then does nothing)."""

    __slots__ = ("_span",)

    def __init__(self, span: OtelSpan | None) -> None:
        self._span = span

    def set(self, **attributes: Attribute) -> None:
        if self._span is not None:
            self._span.set_attributes(_named(attributes))

    def event(self, name: str, **attributes: Attribute) -> None:
        if self._span is not None:
            self._span.add_event(name, _named(attributes))

    def fail(self, description: str) -> None:
        """Mark the span as an error (a call whose attempts are spent)."""
        if self._span is not None:
            from opentelemetry.trace import Status, StatusCode

            self._span.set_status(Status(StatusCode.ERROR, description))


_OFF = Span(None)


class _Tracing:
    """The process's tracer provider and judgeopt's tracer, while :func:`tracing` is on."""

    provider: TracerProvider | None = None
    tracer: Tracer | None = None


@contextlib.contextmanager
def span(name: str, **attributes: Attribute) -> Iterator[Span]:
    """A child of the current span for the block (with ``attributes`` under ``judgeopt.*``); an exception leaving
    the block is recorded on it. Off: the shared do-nothing span."""
    tracer = _Tracing.tracer
    if tracer is None:
        yield _OFF
        return
    with tracer.start_as_current_span(name, attributes=_named(attributes)) as live:
        yield Span(live)


@contextlib.contextmanager
def tracing(default_service_name: str) -> Iterator[None]:
    """Trace this process for the block when the ``OTEL_*`` variables ask for it, under ``OTEL_SERVICE_NAME`` or
    else ``default_service_name``; at the end every span still queued is exported.

    Raises ``ConfigError`` naming the variable when ``OTEL_TRACES_EXPORTER`` (or the OTLP protocol) names an
    exporter that is not installed."""
    if not requested() or _Tracing.provider is not None:
        yield
        return
    provider = _start(default_service_name)
    try:
        yield
    finally:
        if provider is not None:
            _Tracing.provider = _Tracing.tracer = None
            provider.shutdown()


def grpc_client_interceptors() -> list[Any]:
    """The interceptors that give each RPC a client span and carry the trace context in its metadata ([] when off)."""
    if _Tracing.provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    interceptors: list[Any] = aio_client_interceptors(tracer_provider=_Tracing.provider)  # type: ignore[no-untyped-call]
    return interceptors


def grpc_server_interceptors() -> list[Any]:
    """The interceptor that gives each RPC a server span, a child of the caller's span when the metadata carries a
    trace context ([] when off). Goes first in a server's chain, so the span covers the whole call."""
    if _Tracing.provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor(tracer_provider=_Tracing.provider)]  # type: ignore[no-untyped-call]


def trace_http_client(client: httpx.AsyncClient) -> None:
    """Give each request ``client`` sends a client span, a child of the current span (nothing when off)."""
    if _Tracing.provider is None:
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=_Tracing.provider)


def _named(attributes: Mapping[str, Attribute]) -> dict[str, Any]:
    return {ATTRIBUTE_PREFIX + key: value for key, value in attributes.items() if value is not None}


def _start(default_service_name: str) -> TracerProvider | None:
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "tracing.unavailable",
            reason="OTEL_* variables ask for traces, but the otel extra is not installed: pip install 'judgeopt[otel]'",
        )
        return None
    names = _exporter_names()
    exporters = [_exporter(name) for name in names]
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, _UNNAMED_SERVICE)).startswith(_UNNAMED_SERVICE):
        resource = resource.merge(Resource({SERVICE_NAME: default_service_name}))
    provider = TracerProvider(resource=resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # the global one too, so libraries' own spans (autogen's) are exported
    _Tracing.provider = provider
    _Tracing.tracer = provider.get_tracer("judgeopt")
    log.info("tracing.on", service=resource.attributes.get(SERVICE_NAME), exporters=names)
    return provider


def _exporter_names() -> list[str]:
    """The entry-point names of the exporters ``OTEL_TRACES_EXPORTER`` asks for (``otlp`` by the OTLP protocol)."""
    names = [n.strip().lower() for n in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]
    resolved = []
    for name in names:
        if name == "otlp":
            variable, protocol = _otlp_protocol()
            if protocol not in _OTLP_BY_PROTOCOL:
                raise ConfigError(
                    f"{variable}={protocol!r} is not a trace protocol judgeopt can send "
                    f"(one of {', '.join(_OTLP_BY_PROTOCOL)})"
                )
            name = _OTLP_BY_PROTOCOL[protocol]
        if name != "none":
            resolved.append(name)
    return resolved


def _otlp_protocol() -> tuple[str, str]:
    """The variable that sets the OTLP protocol of traces, and its value (by default ``http/protobuf``)."""
    for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        if value := os.environ.get(variable, "").strip().lower():
            return variable, value
    return "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"


def _exporter(name: str) -> SpanExporter:
    from importlib.metadata import entry_points

    found = entry_points(group=_EXPORTER_GROUP, name=name)
    if not found:
        installed = sorted(e.name for e in entry_points(group=_EXPORTER_GROUP))
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER asks for the {name!r} trace exporter, which is not installed "
            f"(installed: {', '.join(installed) or 'none'})"
        )
    exporter: SpanExporter = next(iter(found)).load()()
    return exporter
