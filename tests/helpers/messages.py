"""Builders of contract messages for tests."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from helpers.scripts import SUMMEVAL
from judgeopt.v1 import common_pb2, loss_pb2


def meta(label: str = "test") -> common_pb2.RequestMeta:
    return common_pb2.RequestMeta(request_id=uuid.uuid4().hex, run_id="test-run", call_label=label)


def criteria(names: Sequence[str] = SUMMEVAL, low: float = 1, high: float = 5) -> list[common_pb2.Criterion]:
    return [
        common_pb2.Criterion(
            name=n, description=f"How good the {n} is.", min_score=low, max_score=high, integer_scores=True
        )
        for n in names
    ]


def sample(
    sample_id: str = "s1", source: str = "The article text.", summary: str = "The summary."
) -> common_pb2.Sample:
    return common_pb2.Sample(
        id=sample_id,
        fields=[common_pb2.TextField(name="article", text=source), common_pb2.TextField(name="summary", text=summary)],
    )


def prompt(names: Sequence[str] = SUMMEVAL, text: str = "Rate from 1 to 5.") -> common_pb2.JudgePrompt:
    return common_pb2.JudgePrompt(
        task_description="Evaluate the summary.",
        instructions=[common_pb2.Instruction(criterion=n, text=f"{text} [{n}]") for n in names],
    )


def critique_request(
    names: Sequence[str] = ("fluency",), *, prediction: float = 4, verdict: str = "INCORRECT (difference: +2)"
) -> loss_pb2.CritiqueRequest:
    """A loss request about ``names`` (per criterion for one name, joint for several), truth 2 for each."""
    routing = common_pb2.ROUTING_PER_CRITERION if len(names) == 1 else common_pb2.ROUTING_JOINT
    return loss_pb2.CritiqueRequest(
        meta=meta(),
        routing=routing,
        criteria=criteria(names),
        sample_id="s1",
        evidence=[
            common_pb2.CriterionEvidence(criterion=n, prediction=prediction, ground_truth=2, verdict=verdict)
            for n in names
        ],
    )
