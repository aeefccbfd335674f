"""The orchestrator's side of the contract: one channel per role, a deadline on every call, ids in metadata.

Addresses may be ``host:port`` or ``dns:///name:port``; channels balance over every resolved address with
client-side round-robin. Retries are not declared here: the model hop retries inside the service (the openai
client), and failed calls are retried by the loop within its budget, so retry layers never stack.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import grpc

from agents.config import Role
from orchestrator.errors import ConfigError, map_rpc_errors
from protos.judgeopt.v1 import (
    evaluator_pb2,
    evaluator_pb2_grpc,
    gradient_pb2,
    gradient_pb2_grpc,
    judge_pb2,
    judge_pb2_grpc,
    loss_pb2,
    loss_pb2_grpc,
    optimizer_pb2,
    optimizer_pb2_grpc,
)

_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


@dataclass(frozen=True)
class ClientSettings:
    deadline_seconds: Mapping[str, float] = field(
        default_factory=lambda: {
            "judge": 300.0,
            "loss": 300.0,
            "gradient": 600.0,
            "optimizer": 900.0,
            "evaluator": 600.0,
        }
    )
    """Per-role deadline of one RPC; generous by default because the local model serves one call at a time."""
    max_message_bytes: int = 16 * 1024 * 1024


class AgentClients:
    """Typed async calls to the agent services whose addresses are given (e.g. only the judge, to score data)."""

    def __init__(self, addresses: Mapping[Role, str], settings: ClientSettings | None = None) -> None:
        self.settings = settings or ClientSettings()
        options: list[tuple[str, Any]] = [
            ("grpc.service_config", _SERVICE_CONFIG),
            ("grpc.max_receive_message_length", self.settings.max_message_bytes),
            ("grpc.max_send_message_length", self.settings.max_message_bytes),
        ]
        self._channels = {role: grpc.aio.insecure_channel(addr, options=options) for role, addr in addresses.items()}

    def _channel(self, role: Role) -> grpc.aio.Channel:
        channel = self._channels.get(role)
        if channel is None:
            raise ConfigError(f"no {role} service address was given")
        return channel

    @functools.cached_property
    def _judge(self) -> judge_pb2_grpc.JudgeServiceStub:
        return judge_pb2_grpc.JudgeServiceStub(self._channel("judge"))

    @functools.cached_property
    def _loss(self) -> loss_pb2_grpc.LossAgentStub:
        return loss_pb2_grpc.LossAgentStub(self._channel("loss"))

    @functools.cached_property
    def _gradient(self) -> gradient_pb2_grpc.GradientAgentStub:
        return gradient_pb2_grpc.GradientAgentStub(self._channel("gradient"))

    @functools.cached_property
    def _optimizer(self) -> optimizer_pb2_grpc.OptimizerAgentStub:
        return optimizer_pb2_grpc.OptimizerAgentStub(self._channel("optimizer"))

    @functools.cached_property
    def _evaluator(self) -> evaluator_pb2_grpc.EvaluatorAgentStub:
        return evaluator_pb2_grpc.EvaluatorAgentStub(self._channel("evaluator"))

    def _call_options(self, role: Role, request_id: str, run_id: str) -> dict[str, Any]:
        return {
            "timeout": self.settings.deadline_seconds[role],
            "metadata": (("x-request-id", request_id), ("x-run-id", run_id)),
            "wait_for_ready": True,
        }

    async def score(self, request: judge_pb2.ScoreRequest) -> judge_pb2.ScoreResponse:
        with map_rpc_errors("judge"):
            options = self._call_options("judge", request.meta.request_id, request.meta.run_id)
            reply: judge_pb2.ScoreResponse = await self._judge.Score(request, **options)
            return reply

    async def critique(self, request: loss_pb2.CritiqueRequest) -> loss_pb2.CritiqueResponse:
        with map_rpc_errors("loss"):
            options = self._call_options("loss", request.meta.request_id, request.meta.run_id)
            reply: loss_pb2.CritiqueResponse = await self._loss.Critique(request, **options)
            return reply

    async def gradient(self, request: gradient_pb2.GradientRequest) -> gradient_pb2.GradientResponse:
        with map_rpc_errors("gradient"):
            options = self._call_options("gradient", request.meta.request_id, request.meta.run_id)
            reply: gradient_pb2.GradientResponse = await gradient_pb2_grpc.GradientAgentStub(
                self._channel("gradient")
            ).ComputeGradient(request, **options)
            return reply

    async def step(self, request: optimizer_pb2.StepRequest) -> optimizer_pb2.StepResponse:
        with map_rpc_errors("optimizer"):
            options = self._call_options("optimizer", request.meta.request_id, request.meta.run_id)
            reply: optimizer_pb2.StepResponse = await optimizer_pb2_grpc.OptimizerAgentStub(
                self._channel("optimizer")
            ).Step(request, **options)
            return reply

    async def rate_specificity(self, request: evaluator_pb2.SpecificityRequest) -> evaluator_pb2.RatingResponse:
        with map_rpc_errors("evaluator"):
            options = self._call_options("evaluator", request.meta.request_id, request.meta.run_id)
            reply: evaluator_pb2.RatingResponse = await evaluator_pb2_grpc.EvaluatorAgentStub(
                self._channel("evaluator")
            ).RateSpecificity(request, **options)
            return reply

    async def rate_adherence(self, request: evaluator_pb2.AdherenceRequest) -> evaluator_pb2.RatingResponse:
        with map_rpc_errors("evaluator"):
            options = self._call_options("evaluator", request.meta.request_id, request.meta.run_id)
            reply: evaluator_pb2.RatingResponse = await evaluator_pb2_grpc.EvaluatorAgentStub(
                self._channel("evaluator")
            ).RateAdherence(request, **options)
            return reply

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
