"""Thin servicers: read the request, call the agent, build the reply. Nothing else lives here."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Generic, TypeVar

import grpc

from judgeopt.agents import prompting
from judgeopt.agents.evaluator import EvaluatorAgent
from judgeopt.agents.gradient import GradientAgent
from judgeopt.agents.judge import JudgeAgent
from judgeopt.agents.loss import LossAgent
from judgeopt.agents.optimizer import OptimizerAgent
from judgeopt.agents.types import Usage
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

AgentT = TypeVar("AgentT")
TaskT = TypeVar("TaskT")
ResultT = TypeVar("ResultT")
ReplyT = TypeVar("ReplyT")


class _AgentServicer(Generic[AgentT]):
    """What every role's servicer shares: its agent, and one way to answer an RPC within the caller's deadline."""

    def __init__(self, agent: AgentT, *, margin_seconds: float) -> None:
        self._agent = agent
        self._margin = margin_seconds

    async def _answer(
        self,
        context: grpc.aio.ServicerContext,
        task: Callable[[], TaskT],
        call: Callable[[TaskT], Awaitable[tuple[ResultT, Usage]]],
        to_proto: Callable[[ResultT, Usage], ReplyT],
    ) -> ReplyT:
        """``call(task())`` within the caller's deadline, its result as the reply. The request is read inside the
        deadline too, so a request the agent cannot read fails the RPC the way an agent failure does."""

        async def work() -> ReplyT:
            result, usage = await call(task())
            return to_proto(result, usage)

        return await run_within_deadline(context, work, margin_seconds=self._margin)


class JudgeServicer(_AgentServicer[JudgeAgent], judge_pb2_grpc.JudgeServiceServicer):
    async def Score(
        self, request: judge_pb2.ScoreRequest, context: grpc.aio.ServicerContext
    ) -> judge_pb2.ScoreResponse:
        task = functools.partial(convert.score_task_from_proto, request)
        return await self._answer(context, task, self._agent.score, convert.score_response_to_proto)


class LossServicer(_AgentServicer[LossAgent], loss_pb2_grpc.LossServiceServicer):
    async def Critique(
        self, request: loss_pb2.CritiqueRequest, context: grpc.aio.ServicerContext
    ) -> loss_pb2.CritiqueResponse:
        task = functools.partial(convert.critique_task_from_proto, request)
        return await self._answer(context, task, self._agent.critique, convert.critique_response_to_proto)


class GradientServicer(_AgentServicer[GradientAgent], gradient_pb2_grpc.GradientServiceServicer):
    async def ComputeGradient(
        self, request: gradient_pb2.GradientRequest, context: grpc.aio.ServicerContext
    ) -> gradient_pb2.GradientResponse:
        task = functools.partial(convert.gradient_task_from_proto, request)
        return await self._answer(context, task, self._agent.compute, convert.gradient_response_to_proto)


class OptimizerServicer(_AgentServicer[OptimizerAgent], optimizer_pb2_grpc.OptimizerServiceServicer):
    async def Step(
        self, request: optimizer_pb2.StepRequest, context: grpc.aio.ServicerContext
    ) -> optimizer_pb2.StepResponse:
        task = functools.partial(convert.step_task_from_proto, request)
        return await self._answer(context, task, self._agent.step, convert.step_response_to_proto)

    async def Arbitrate(
        self, request: optimizer_pb2.ArbitrateRequest, context: grpc.aio.ServicerContext
    ) -> optimizer_pb2.ArbitrateResponse:
        task = functools.partial(convert.arbitrate_task_from_proto, request)
        return await self._answer(context, task, self._agent.arbitrate, convert.arbitrate_response_to_proto)


class EvaluatorServicer(_AgentServicer[EvaluatorAgent], evaluator_pb2_grpc.EvaluatorServiceServicer):
    async def RateSpecificity(
        self, request: evaluator_pb2.SpecificityRequest, context: grpc.aio.ServicerContext
    ) -> evaluator_pb2.RatingResponse:
        task = functools.partial(convert.specificity_task_from_proto, request)
        return await self._answer(context, task, self._agent.specificity, convert.rating_response_to_proto)

    async def RateAdherence(
        self, request: evaluator_pb2.AdherenceRequest, context: grpc.aio.ServicerContext
    ) -> evaluator_pb2.RatingResponse:
        task = functools.partial(convert.adherence_task_from_proto, request)
        return await self._answer(context, task, self._agent.adherence, convert.rating_response_to_proto)


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
