"""The loss role: a short critique of a prediction, from exactly the evidence the caller sent."""

from __future__ import annotations

import json

from judgeopt.agents import prompting
from judgeopt.agents.model_client import ModelRunner
from judgeopt.agents.parsing import strip_wrapping
from judgeopt.agents.types import (
    CriterionEvidence,
    Critique,
    CritiqueTask,
    ParseStatus,
    Routing,
    Usage,
    focus_criteria,
)


def _json_number(value: float | None) -> float | int | None:
    return int(value) if value is not None and value.is_integer() else value


def _study_user(task: CritiqueTask) -> str:
    """The study's loss message: the prediction(s), the ground truth(s) and the verdict(s), nothing else."""
    evidence = {e.criterion: e for e in task.evidence}
    if task.routing is Routing.PER_CRITERION:
        name = task.criteria[0].name
        own = evidence.get(name, CriterionEvidence(name))
        return prompting.render(
            "study_loss_user_per_criterion",
            task=name,
            prediction=prompting.study_number(own.prediction),
            ground_truth=prompting.study_number(own.ground_truth),
            verdict=prompting.study_fence(own.verdict) if own.verdict is not None else prompting.NOT_SHOWN,
        )
    items = [evidence.get(c.name, CriterionEvidence(c.name)) for c in task.criteria]
    verdicts = [(e.criterion, e.verdict) for e in items if e.verdict is not None]
    lines = [f"{name}: {prompting.study_fence(text)}" for name, text in verdicts]
    if verdicts:
        correct = sum(text == "CORRECT" for _, text in verdicts)
        lines.append(f"Overall: {correct} of {len(verdicts)} correct")
    return prompting.render(
        "study_loss_user_joint",
        tasks=", ".join(c.name for c in task.criteria),
        predictions=json.dumps({e.criterion: _json_number(e.prediction) for e in items}),
        ground_truths=json.dumps({e.criterion: _json_number(e.ground_truth) for e in items}),
        verdicts="\n".join(lines) or prompting.NOT_SHOWN,
    )


class LossAgent:
    def __init__(self, runner: ModelRunner) -> None:
        self._runner = runner

    async def critique(self, task: CritiqueTask) -> tuple[Critique, Usage]:
        if task.protocol == "study":
            system, user = prompting.render("study_backward_system"), _study_user(task)
        else:
            system = prompting.render("loss_system")
            user = prompting.render(
                prompting.routed("loss_user", task.routing),
                criteria=prompting.format_scope(task.routing, task.criteria),
                evidence=prompting.format_evidence(task.evidence),
                context=prompting.format_context(task.sample, task.judge_output),
            )
        completion = await self._runner.complete(system, user)
        text = "" if completion.truncated else strip_wrapping(completion.text)
        status = ParseStatus.TRUNCATED if completion.truncated else ParseStatus.OK if text else ParseStatus.INVALID
        critique = Critique(
            criteria=focus_criteria(task.routing, task.criteria),
            sample_id=task.sample_id,
            text=text,
            status=status,
            raw_output=completion.text,
        )
        return critique, completion.usage
