"""One grpc.aio server per role: the servicer, ``AgentInfoService`` (what the service runs), standard health checking
and reflection, explicit message-size limits, a maximum connection age, optional TLS or mutual TLS, an optional
bearer token, the replay of answered request ids, optional Prometheus metrics over HTTP, and SIGTERM → NOT_SERVING →
``stop(grace)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from judgeopt.agents.evaluator import EvaluatorAgent
from judgeopt.agents.gradient import GradientAgent
from judgeopt.agents.judge import JudgeAgent
from judgeopt.agents.loss import LossAgent
from judgeopt.agents.model_client import ModelRunner
from judgeopt.agents.optimizer import OptimizerAgent
from judgeopt.core.contract import SERVICE_NAMES
from judgeopt.core.credentials import ServerTLS, server_tls, service_token
from judgeopt.core.models import RoleModelConfig
from judgeopt.core.roles import Role
from judgeopt.core.service_config import ServiceConfig
from judgeopt.core.tracing import grpc_server_interceptors
from judgeopt.services.interceptors import (
    AccessLogInterceptor,
    BearerTokenInterceptor,
    LedgerInterceptor,
    ReplayInterceptor,
    RequestContextInterceptor,
)
from judgeopt.services.metrics import MetricsInterceptor, ServiceMetrics, metrics_endpoint
from judgeopt.services.servicers import (
    AgentInfoServicer,
    EvaluatorServicer,
    GradientServicer,
    JudgeServicer,
    LossServicer,
    OptimizerServicer,
)
from judgeopt.v1 import (
    agent_info_pb2,
    agent_info_pb2_grpc,
    evaluator_pb2_grpc,
    gradient_pb2_grpc,
    judge_pb2_grpc,
    loss_pb2_grpc,
    optimizer_pb2_grpc,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RoleBinding:
    """How a role becomes a gRPC service: its fully qualified name and how to register its servicer."""

    service_name: str
    register: Callable[[ModelRunner, grpc.aio.Server, float], None]


def _register_judge(runner: ModelRunner, server: grpc.aio.Server, margin: float) -> None:
    judge_pb2_grpc.add_JudgeServiceServicer_to_server(JudgeServicer(JudgeAgent(runner), margin_seconds=margin), server)


def _register_loss(runner: ModelRunner, server: grpc.aio.Server, margin: float) -> None:
    loss_pb2_grpc.add_LossServiceServicer_to_server(LossServicer(LossAgent(runner), margin_seconds=margin), server)


def _register_gradient(runner: ModelRunner, server: grpc.aio.Server, margin: float) -> None:
    gradient_pb2_grpc.add_GradientServiceServicer_to_server(
        GradientServicer(GradientAgent(runner), margin_seconds=margin), server
    )


def _register_optimizer(runner: ModelRunner, server: grpc.aio.Server, margin: float) -> None:
    optimizer_pb2_grpc.add_OptimizerServiceServicer_to_server(
        OptimizerServicer(OptimizerAgent(runner), margin_seconds=margin), server
    )


def _register_evaluator(runner: ModelRunner, server: grpc.aio.Server, margin: float) -> None:
    evaluator_pb2_grpc.add_EvaluatorServiceServicer_to_server(
        EvaluatorServicer(EvaluatorAgent(runner), margin_seconds=margin), server
    )


_REGISTER: dict[Role, Callable[[ModelRunner, grpc.aio.Server, float], None]] = {
    "judge": _register_judge,
    "loss": _register_loss,
    "gradient": _register_gradient,
    "optimizer": _register_optimizer,
    "evaluator": _register_evaluator,
}
ROLE_BINDINGS: dict[Role, RoleBinding] = {
    role: RoleBinding(SERVICE_NAMES[role], _REGISTER[role]) for role in SERVICE_NAMES
}


def channel_options(config: ServiceConfig) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.max_connection_age_ms", int(config.max_connection_age_seconds * 1000)),
        ("grpc.max_connection_age_grace_ms", int(config.max_connection_age_grace_seconds * 1000)),
    ]


@dataclass
class BuiltServer:
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    service_name: str
    port: int


def server_credentials(tls: ServerTLS) -> grpc.ServerCredentials:
    """TLS with the service's certificate; with a client CA, client certificates are required and verified."""
    return grpc.ssl_server_credentials(
        [(tls.private_key, tls.cert_chain)],
        root_certificates=tls.client_ca,
        require_client_auth=tls.client_ca is not None,
    )


def interceptors_for(config: ServiceConfig, metrics: ServiceMetrics | None = None) -> list[grpc.aio.ServerInterceptor]:
    """The chain, outermost first (see ``judgeopt.services.interceptors``); reads the token from its variable. With
    tracing on, its server span comes first, a child of the caller's span; then metrics, so their latency is the
    whole call's and refused calls are counted too."""
    chain: list[grpc.aio.ServerInterceptor] = grpc_server_interceptors()
    if metrics is not None:
        chain.append(MetricsInterceptor(metrics))
    chain += [RequestContextInterceptor(), AccessLogInterceptor()]
    token = service_token(config)
    if token is not None:
        chain.append(BearerTokenInterceptor(token))
    if config.ledger_path is not None:
        chain.append(LedgerInterceptor(config.ledger_path))
    if config.replay_entries > 0:
        chain.append(ReplayInterceptor(config.replay_entries))
    return chain


async def build_server(
    role: Role, runner: ModelRunner, config: ServiceConfig, metrics: ServiceMetrics | None = None
) -> BuiltServer:
    """Create and bind (not start) the server of ``role``; ``port`` is the bound port (``config.port`` 0 = free).
    With ``metrics``, every agent RPC is counted there.

    Raises ``judgeopt.core.service_config.CredentialError`` when a TLS file or the token variable cannot be used."""
    binding = ROLE_BINDINGS[role]
    tls = server_tls(config)
    server = grpc.aio.server(
        interceptors=interceptors_for(config, metrics),
        options=channel_options(config),
        maximum_concurrent_rpcs=config.max_concurrent_rpcs,
    )
    binding.register(runner, server, config.deadline_margin_seconds)
    agent_info_pb2_grpc.add_AgentInfoServiceServicer_to_server(AgentInfoServicer(role), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            binding.service_name,
            agent_info_pb2.DESCRIPTOR.services_by_name["AgentInfoService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    address = f"{config.host}:{config.port}"
    if tls is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, server_credentials(tls))
    if port == 0:
        raise RuntimeError(f"could not bind {config.host}:{config.port}")
    return BuiltServer(server, health_servicer, binding.service_name, port)


async def serve(
    role: Role,
    model: RoleModelConfig,
    config: ServiceConfig,
    *,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Serve ``role`` until SIGTERM or SIGINT; ``on_ready(port)`` runs once the service answers SERVING. With
    ``config.metrics_port``, ``/metrics`` is served on the same host until the gRPC server has stopped, so the
    calls finishing during the grace period are still seen."""
    with contextlib.ExitStack() as exits:
        metrics = None
        if config.metrics_port is not None:
            metrics = ServiceMetrics(role)
            exits.enter_context(metrics_endpoint(metrics, config.host, config.metrics_port))
        runner = ModelRunner(role, model)
        built = await build_server(role, runner, config, metrics)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await built.server.start()
        for name in ("", built.service_name):
            await built.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "service.ready",
            role=role,
            port=built.port,
            model=model.model,
            endpoint=str(model.base_url),
            tls="mutual" if config.tls_client_ca else "server" if config.tls_cert else "off",
            token_auth=config.token_env is not None,
        )
        if on_ready is not None:
            on_ready(built.port)
        try:
            await stop.wait()
        finally:
            log.info("service.stopping", role=role, grace_seconds=config.grace_seconds)
            await built.health.enter_graceful_shutdown()
            await built.server.stop(config.grace_seconds)
            with contextlib.suppress(Exception):
                await runner.close()
            log.info("service.stopped", role=role)
