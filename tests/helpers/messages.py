"""Builders of contract messages for tests."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from helpers.scripts import SUMMEVAL
from protos.judgeopt.v1 import common_pb2


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
