"""The gradient role: feedback on instruction(s) in three parts (keep / problem / fix), never a rewrite."""

from __future__ import annotations

import re
from typing import Any

from judgeopt.agents import prompting
from judgeopt.agents.model_client import ModelRunner
from judgeopt.agents.parsing import parse_feedback, strip_wrapping
from judgeopt.agents.types import (
    CriterionEvidence,
    Gradient,
    GradientTask,
    ParseStatus,
    Routing,
    Usage,
    focus_criteria,
)

FEEDBACK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {part: {"type": "string"} for part in ("keep", "problem", "fix")},
    "required": ["keep", "problem", "fix"],
    "additionalProperties": False,
}

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def parse_paragraphs(text: str) -> tuple[dict[str, str], ParseStatus]:
    """The study's reply, 3 plain paragraphs, as keep / problem / fix; any other shape is kept whole as the
    problem (``REPAIRED``), an empty reply is ``INVALID``."""
    body = strip_wrapping(text)
    paragraphs = [p.strip() for p in _PARAGRAPH_BREAK.split(body) if p.strip()]
    if not paragraphs:
        return {}, ParseStatus.INVALID
    if len(paragraphs) == 3:
        return dict(zip(("keep", "problem", "fix"), paragraphs, strict=True)), ParseStatus.OK
    return {"problem": body}, ParseStatus.REPAIRED


def _study_critiques(routing: Routing, evidence: dict[str, CriterionEvidence], names: list[str]) -> str:
    """Per-criterion calls: the criterion's critique. Joint calls: the critiques labelled "Feedback for <task>:",
    one label for the criteria sharing a critique (a joint critique copied to every criterion appears once)."""
    critiques = [(n, evidence[n].critique) for n in names if n in evidence and evidence[n].critique is not None]
    if routing is Routing.PER_CRITERION:
        return prompting.study_fence(critiques[0][1] or "") if critiques else prompting.NOT_SHOWN
    grouped: dict[str, list[str]] = {}
    for name, text in critiques:
        grouped.setdefault(text or "", []).append(name)
    blocks = [f"Feedback for {', '.join(group)}:\n{prompting.study_fence(text)}" for text, group in grouped.items()]
    return "\n\n".join(blocks) or prompting.NOT_SHOWN


def _study_user(task: GradientTask) -> str:
    names = list(focus_criteria(task.routing, task.criteria))
    evidence = {e.criterion: e for e in task.evidence}
    instructions = task.prompt.instructions if task.prompt is not None else ()
    if task.routing is Routing.PER_CRITERION:
        name = names[0]
        role = f"instruction for the '{name}' task in the system prompt to a language model"
        subject = "the instruction"
        output = prompting.study_number(evidence[name].prediction if name in evidence else None)
        variable = next((prompting.study_fence(i.text) for i in instructions if i.criterion == name), "")
    else:
        tasks = ", ".join(names)
        role = f"instructions for tasks ({tasks}) in the system prompt to a language model"
        subject = f"the instructions for tasks ({tasks})"
        output = prompting.study_fence(task.judge_output) if task.judge_output is not None else prompting.NOT_SHOWN
        variable = "\n".join(f"- {i.criterion}: {prompting.study_fence(i.text)}" for i in instructions)
    return prompting.render(
        "study_gradient_user",
        role=role,
        system_prompt=(
            prompting.study_judge_prompt(task.criteria, task.prompt) if task.prompt is not None else prompting.NOT_SHOWN
        ),
        input=prompting.study_sample(task.sample) if task.sample is not None else prompting.NOT_SHOWN,
        output=output,
        critiques=_study_critiques(task.routing, evidence, names),
        variable=variable or prompting.NOT_SHOWN,
        subject=subject,
    )


class GradientAgent:
    def __init__(self, runner: ModelRunner) -> None:
        self._runner = runner

    async def compute(self, task: GradientTask) -> tuple[Gradient, Usage]:
        if task.protocol == "study":
            completion = await self._runner.complete(prompting.render("study_backward_system"), _study_user(task))
            parts, status = parse_paragraphs(completion.text)
        else:
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
        if completion.truncated:
            parts, status = {}, ParseStatus.TRUNCATED
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
