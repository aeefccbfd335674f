"""The gradient role: feedback on instruction(s) in three parts (keep / problem / fix), never a rewrite."""

from __future__ import annotations

from typing import Any

from judgeopt.agents import prompting
from judgeopt.agents.model_client import ModelRunner
from judgeopt.agents.parsing import parse_feedback
from judgeopt.agents.types import Gradient, GradientTask, Usage, focus_criteria

FEEDBACK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {part: {"type": "string"} for part in ("keep", "problem", "fix")},
    "required": ["keep", "problem", "fix"],
    "additionalProperties": False,
}


class GradientAgent:
    def __init__(self, runner: ModelRunner) -> None:
        self._runner = runner

    async def compute(self, task: GradientTask) -> tuple[Gradient, Usage]:
        user = prompting.render(
            prompting.routed("gradient_user", task.routing),
            criteria=prompting.format_scope(task.routing, task.criteria),
            prompt=prompting.format_prompt(task.prompt) if task.prompt is not None else "",
            context=prompting.format_context(task.sample, task.judge_output),
            evidence=prompting.format_evidence(task.evidence),
        )
        completion = await self._runner.complete(
            prompting.render("gradient_system"), user, schema=FEEDBACK_SCHEMA, schema_name="feedback"
        )
        parts, status = parse_feedback(completion.text)
        gradient = Gradient(
            criteria=focus_criteria(task.routing, task.criteria),
            sample_id=task.sample_id,
            keep=parts.get("keep", ""),
            problem=parts.get("problem", ""),
            fix=parts.get("fix", ""),
            status=status,
            raw_output=completion.text,
        )
        return gradient, completion.usage
