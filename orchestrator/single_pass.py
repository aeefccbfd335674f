"""One judge → loss → gradient → optimizer pass through the four services on a few SummEval samples.

The study's per-criterion (SSS) information flow: the judge scores every criterion in one call; each loss call
sees only one criterion's prediction, truth and verdict; each gradient call sees the prompt filtered to its
criterion, the sample, its own prediction and critique; each optimizer call rewrites one instruction.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

from orchestrator.agent_clients import AgentClients
from orchestrator.data import SUMMEVAL_CRITERIA, SummevalRow
from protos.judgeopt.v1 import common_pb2, gradient_pb2, judge_pb2, loss_pb2, optimizer_pb2

INITIAL_INSTRUCTION = "Rate from 1 to 5."
SUMMEVAL_DESCRIPTIONS = {
    "coherence": "The collective quality of all sentences: the summary is well-structured and well-organized.",
    "consistency": "The factual alignment between the summary and the source: no hallucinated facts.",
    "fluency": "The quality of the individual sentences: grammar, spelling, punctuation, word choice.",
    "relevance": "Selection of important content from the source, without redundancies or excess information.",
}
SUMMEVAL_TASK = "You will be given a news article and a summary written for it. Evaluate the summary."


def verdict(prediction: float | None, truth: float, tolerance: float) -> str:
    """The study's deterministic verdict: CORRECT within ``tolerance`` of the truth, else the difference."""
    if prediction is None:
        return "INCORRECT (no valid score)"
    difference = prediction - truth
    return "CORRECT" if abs(difference) <= tolerance else f"INCORRECT (difference: {difference:+g})"


@dataclass
class PassResult:
    predictions: list[common_pb2.Prediction] = field(default_factory=list)
    critiques: list[common_pb2.Critique] = field(default_factory=list)
    gradients: list[common_pb2.Gradient] = field(default_factory=list)
    new_instructions: list[common_pb2.Instruction] = field(default_factory=list)
    optimizer_status: dict[str, int] = field(default_factory=dict)
    usage: dict[str, common_pb2.Usage] = field(default_factory=dict)

    def add_usage(self, role: str, usage: common_pb2.Usage) -> None:
        total = self.usage.setdefault(role, common_pb2.Usage(model=usage.model))
        total.prompt_tokens += usage.prompt_tokens
        total.completion_tokens += usage.completion_tokens
        total.llm_calls += usage.llm_calls
        total.model_seconds += usage.model_seconds


def _criteria() -> list[common_pb2.Criterion]:
    return [
        common_pb2.Criterion(
            name=name, description=SUMMEVAL_DESCRIPTIONS[name], min_score=1, max_score=5, integer_scores=True
        )
        for name in SUMMEVAL_CRITERIA
    ]


def _sample(row: SummevalRow) -> common_pb2.Sample:
    return common_pb2.Sample(
        id=row.id,
        fields=[
            common_pb2.TextField(name="article", text=row.source),
            common_pb2.TextField(name="summary", text=row.summary),
        ],
    )


async def run_single_pass(
    clients: AgentClients, rows: list[SummevalRow], *, tolerance: float = 0.5, run_id: str | None = None
) -> PassResult:
    run_id = run_id or uuid.uuid4().hex[:12]
    criteria = _criteria()
    by_name = {c.name: c for c in criteria}
    prompt = common_pb2.JudgePrompt(
        task_description=SUMMEVAL_TASK,
        instructions=[common_pb2.Instruction(criterion=c.name, text=INITIAL_INSTRUCTION) for c in criteria],
    )
    result = PassResult()

    def meta(label: str) -> common_pb2.RequestMeta:
        return common_pb2.RequestMeta(request_id=uuid.uuid4().hex, run_id=run_id, call_label=label)

    scored = await asyncio.gather(
        *(
            clients.score(
                judge_pb2.ScoreRequest(
                    meta=meta("judge"),
                    routing=common_pb2.ROUTING_JOINT,
                    criteria=criteria,
                    prompt=prompt,
                    sample=_sample(row),
                )
            )
            for row in rows
        )
    )
    for scored_reply in scored:
        result.predictions.append(scored_reply.prediction)
        result.add_usage("judge", scored_reply.usage)

    pairs = [
        (row, prediction, name) for row, prediction in zip(rows, result.predictions, strict=True) for name in by_name
    ]

    def own_score(prediction: common_pb2.Prediction, name: str) -> float | None:
        score = next(s for s in prediction.scores if s.criterion == name)
        return score.value if score.HasField("value") else None

    def evidence(row: SummevalRow, prediction: common_pb2.Prediction, name: str) -> common_pb2.CriterionEvidence:
        predicted = own_score(prediction, name)
        item = common_pb2.CriterionEvidence(
            criterion=name, ground_truth=row.scores[name], verdict=verdict(predicted, row.scores[name], tolerance)
        )
        if predicted is not None:
            item.prediction = predicted
        return item

    critiqued = await asyncio.gather(
        *(
            clients.critique(
                loss_pb2.CritiqueRequest(
                    meta=meta("loss"),
                    routing=common_pb2.ROUTING_PER_CRITERION,
                    criteria=[by_name[name]],
                    sample_id=row.id,
                    evidence=[evidence(row, prediction, name)],
                )
            )
            for row, prediction, name in pairs
        )
    )
    for critiqued_reply in critiqued:
        result.critiques.append(critiqued_reply.critique)
        result.add_usage("loss", critiqued_reply.usage)

    def filtered_prompt(name: str) -> common_pb2.JudgePrompt:
        return common_pb2.JudgePrompt(
            task_description=prompt.task_description,
            instructions=[i for i in prompt.instructions if i.criterion == name],
        )

    def gradient_evidence(
        prediction: common_pb2.Prediction, name: str, critique: common_pb2.Critique
    ) -> common_pb2.CriterionEvidence:
        item = common_pb2.CriterionEvidence(criterion=name, critique=critique.text)
        if (predicted := own_score(prediction, name)) is not None:
            item.prediction = predicted
        return item

    gradients = await asyncio.gather(
        *(
            clients.gradient(
                gradient_pb2.GradientRequest(
                    meta=meta("gradient"),
                    routing=common_pb2.ROUTING_PER_CRITERION,
                    criteria=[by_name[name]],
                    prompt=filtered_prompt(name),
                    sample=_sample(row),
                    sample_id=row.id,
                    evidence=[gradient_evidence(prediction, name, critique)],
                )
            )
            for (row, prediction, name), critique in zip(pairs, result.critiques, strict=True)
        )
    )
    for gradient_reply in gradients:
        result.gradients.append(gradient_reply.gradient)
        result.add_usage("gradient", gradient_reply.usage)

    steps = await asyncio.gather(
        *(
            clients.step(
                optimizer_pb2.StepRequest(
                    meta=meta("optimizer"),
                    routing=common_pb2.ROUTING_PER_CRITERION,
                    criteria=[by_name[name]],
                    prompt=filtered_prompt(name),
                    gradients=[g for g in result.gradients if name in g.criteria],
                )
            )
            for name in by_name
        )
    )
    for name, reply in zip(by_name, steps, strict=True):
        result.new_instructions.extend(reply.instructions)
        result.optimizer_status[name] = reply.status
        result.add_usage("optimizer", reply.usage)
    return result
