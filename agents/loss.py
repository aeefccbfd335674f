"""The loss role: a short critique of a prediction, from exactly the evidence the caller sent."""

from __future__ import annotations

from judgeopt.agents import prompting
from judgeopt.agents.model_client import ModelRunner
from judgeopt.agents.parsing import strip_wrapping
from judgeopt.agents.types import Critique, CritiqueTask, ParseStatus, Usage, focus_criteria


class LossAgent:
    def __init__(self, runner: ModelRunner) -> None:
        self._runner = runner

    async def critique(self, task: CritiqueTask) -> tuple[Critique, Usage]:
        user = prompting.render(
            prompting.routed("loss_user", task.routing),
            criteria=prompting.format_scope(task.routing, task.criteria),
            evidence=prompting.format_evidence(task.evidence),
            context=prompting.format_context(task.sample, task.judge_output),
        )
        completion = await self._runner.complete(prompting.render("loss_system"), user)
        text = strip_wrapping(completion.text)
        status = ParseStatus.OK if text else ParseStatus.INVALID
        critique = Critique(
            criteria=focus_criteria(task.routing, task.criteria),
            sample_id=task.sample_id,
            text=text,
            status=status,
            raw_output=completion.text,
        )
        return critique, completion.usage
