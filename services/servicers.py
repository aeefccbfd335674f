"""Thin servicers: read the request, call the agent, build the reply. Nothing else lives here."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import grpc

from judgeopt.agents import prompting
from judgeopt.agents.evaluator import EvaluatorAgent
from judgeopt.agents.gradient import GradientAgent
from judgeopt.agents.judge import JudgeAgent
from judgeopt.agents.loss import LossAgent
from judgeopt.agents.optimizer import OptimizerAgent
from judgeopt.core.roles import Role
from judgeopt.services import convert
from judgeopt.services.status import run_within_deadline
from judgeopt.v1 import (
    agent_info_pb2,
    agent_info_pb2_grpc,
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


class JudgeServicer(judge_pb2_grpc.JudgeServiceServicer):
    def __init__(self, agent: JudgeAgent, *, margin_seconds: float) -> None:
        self._agent = agent
        self._margin = margin_seconds

    async def Score(
        self, request: judge_pb2.ScoreRequest, context: grpc.aio.ServicerContext
    ) -> judge_pb2.ScoreResponse:
        async def work() -> judge_pb2.ScoreResponse:
            prediction, usage = await self._agent.score(convert.score_task_from_proto(request))
            return convert.score_response_to_proto(prediction, usage)

        return await run_within_deadline(context, work, margin_seconds=self._margin)


class LossServicer(loss_pb2_grpc.LossServiceServicer):
    def __init__(self, agent: LossAgent, *, margin_seconds: float) -> None:
        self._agent = agent
        self._margin = margin_seconds

    async def Critique(
        self, request: loss_pb2.CritiqueRequest, context: grpc.aio.ServicerContext
    ) -> loss_pb2.CritiqueResponse:
        async def work() -> loss_pb2.CritiqueResponse:
            critique, usage = await self._agent.critique(convert.critique_task_from_proto(request))
            return convert.critique_response_to_proto(critique, usage)

        return await run_within_deadline(context, work, margin_seconds=self._margin)


class GradientServicer(gradient_pb2_grpc.GradientServiceServicer):
    def __init__(self, agent: GradientAgent, *, margin_seconds: float) -> None:
        self._agent = agent
        self._margin = margin_seconds

    async def ComputeGradient(
        self, request: gradient_pb2.GradientRequest, context: grpc.aio.ServicerContext
    ) -> gradient_pb2.GradientResponse:
        async def work() -> gradient_pb2.GradientResponse:
            gradient, usage = await self._agent.compute(convert.gradient_task_from_proto(request))
            return convert.gradient_response_to_proto(gradient, usage)

        return await run_within_deadline(context, work, margin_seconds=self._margin)


class OptimizerServicer(optimizer_pb2_grpc.OptimizerServiceServicer):
    def __init__(self, agent: OptimizerAgent, *, margin_seconds: float) -> None:
        self._agent = agent
        self._margin = margin_seconds

    async def Step(
        self, request: optimizer_pb2.StepRequest, context: grpc.aio.ServicerContext
    ) -> optimizer_pb2.StepResponse:
        async def work() -> optimizer_pb2.StepResponse:
            result, usage = await self._agent.step(convert.step_task_from_proto(request))
            return convert.step_response_to_proto(result, usage)

        return await run_within_deadline(context, work, margin_seconds=self._margin)

    async def Arbitrate(
        self, request: optimizer_pb2.ArbitrateRequest, context: grpc.aio.ServicerContext
    ) -> optimizer_pb2.ArbitrateResponse:
        async def work() -> optimizer_pb2.ArbitrateResponse:
            result, usage = await self._agent.arbitrate(convert.arbitrate_task_from_proto(request))
            return convert.arbitrate_response_to_proto(result, usage)

        return await run_within_deadline(context, work, margin_seconds=self._margin)


class EvaluatorServicer(evaluator_pb2_grpc.EvaluatorServiceServicer):
    def __init__(self, agent: EvaluatorAgent, *, margin_seconds: float) -> None:
        self._agent = agent
        self._margin = margin_seconds

    async def RateSpecificity(
        self, request: evaluator_pb2.SpecificityRequest, context: grpc.aio.ServicerContext
    ) -> evaluator_pb2.RatingResponse:
        async def work() -> evaluator_pb2.RatingResponse:
            rating, usage = await self._agent.specificity(convert.specificity_task_from_proto(request))
            return convert.rating_response_to_proto(rating, usage)

        return await run_within_deadline(context, work, margin_seconds=self._margin)

    async def RateAdherence(
        self, request: evaluator_pb2.AdherenceRequest, context: grpc.aio.ServicerContext
    ) -> evaluator_pb2.RatingResponse:
        async def work() -> evaluator_pb2.RatingResponse:
            rating, usage = await self._agent.adherence(convert.adherence_task_from_proto(request))
            return convert.rating_response_to_proto(rating, usage)

        return await run_within_deadline(context, work, margin_seconds=self._margin)


class AgentInfoServicer(agent_info_pb2_grpc.AgentInfoServiceServicer):
    """What the service runs: its role, the hashes of the role's prompt templates (taken once, at start-up) and
    judgeopt's version."""

    def __init__(self, role: Role) -> None:
        try:
            package_version = version("judgeopt")
        except PackageNotFoundError:  # running from a checkout that was never installed
            package_version = "unknown"
        self._reply = agent_info_pb2.DescribeResponse(
            role=role, templates=prompting.template_hashes(role), version=package_version
        )

    async def Describe(
        self, request: agent_info_pb2.DescribeRequest, context: grpc.aio.ServicerContext
    ) -> agent_info_pb2.DescribeResponse:
        return self._reply
