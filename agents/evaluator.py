"""The evaluator role: the study's diagnostics, rated 1-10 by an evaluator model.

Specificity rates all gradients of one criterion at one step together (the study's unit); adherence rates one
rewritten instruction against the gradients it was written from. The specificity prompt never says which criteria a
gradient was written for (a joint gradient is written for all of them): the evaluator judges from the text alone.
Under the study's protocol the prompts are the study's rubrics (criteria named, never defined; the gradients as
plain paragraphs) and the answer a single integer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from judgeopt.agents import prompting
from judgeopt.agents.errors import InvalidRequestError
from judgeopt.agents.model_client import ModelRunner
from judgeopt.agents.parsing import find_json_object, lookup_key, parse_scores
from judgeopt.agents.types import Criterion, Gradient, ParseStatus, PromptProtocol, Usage
from judgeopt.core.wire import MAX_CRITERIA

RATING = Criterion("score", "", 1.0, 10.0, integer_scores=True)
RATING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"score": {"type": "integer", "enum": list(range(1, 11))}, "rationale": {"type": "string"}},
    "required": ["score", "rationale"],
    "additionalProperties": False,
}
STUDY_RATING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"score": {"type": "integer", "enum": list(range(1, 11))}},
    "required": ["score"],
    "additionalProperties": False,
}
"""Only used where the endpoint constrains its output; the study's evaluator answers a bare integer."""
_FIRST_INTEGER = re.compile(r"(?<!\d)\d{1,2}(?!\d)")


@dataclass(frozen=True)
class SpecificityTask:
    criterion: Criterion
    others: tuple[Criterion, ...]
    gradients: tuple[Gradient, ...]
    protocol: PromptProtocol = "judgeopt"

    def __post_init__(self) -> None:
        if not self.gradients:
            raise InvalidRequestError("specificity: no gradients to rate")
        if len(self.others) + 1 > MAX_CRITERIA:
            raise InvalidRequestError(
                f"specificity: {len(self.others) + 1} criteria in one request; at most {MAX_CRITERIA} are allowed"
            )


@dataclass(frozen=True)
class AdherenceTask:
    criterion: Criterion
    old_instruction: str
    new_instruction: str
    gradients: tuple[Gradient, ...]
    protocol: PromptProtocol = "judgeopt"

    def __post_init__(self) -> None:
        if not self.new_instruction.strip():
            raise InvalidRequestError("adherence: the new instruction is empty")


@dataclass(frozen=True)
class Rating:
    score: float | None
    status: ParseStatus
    rationale: str
    raw_output: str


def read_rating(text: str) -> Rating:
    (score,) = parse_scores(text, (RATING,))
    reading = find_json_object(text)
    entry = lookup_key(reading.value, "rationale") if reading else None
    rationale = entry[0] if entry and isinstance(entry[0], str) else ""
    return Rating(score.value, score.status, rationale.strip(), text)


def read_study_rating(text: str) -> Rating:
    """The study's reading: the first one- or two-digit integer of the reply if it lies in 1..10; anything else is
    no rating."""
    found = _FIRST_INTEGER.search(text)
    value = int(found.group()) if found else None
    if value is None or not 1 <= value <= 10:
        return Rating(None, ParseStatus.INVALID, "", text)
    return Rating(float(value), ParseStatus.OK, "", text)


class EvaluatorAgent:
    def __init__(self, runner: ModelRunner) -> None:
        self._runner = runner

    async def _rate(self, user: str, protocol: PromptProtocol) -> tuple[Rating, Usage]:
        if protocol == "study":
            completion = await self._runner.complete(
                prompting.render("study_evaluator_system"), user, schema=STUDY_RATING_SCHEMA, schema_name="rating"
            )
            return read_study_rating(completion.text), completion.usage
        completion = await self._runner.complete(
            prompting.render("evaluator_system"), user, schema=RATING_SCHEMA, schema_name="rating"
        )
        if completion.truncated:
            return Rating(None, ParseStatus.TRUNCATED, "", completion.text), completion.usage
        return read_rating(completion.text), completion.usage

    async def specificity(self, task: SpecificityTask) -> tuple[Rating, Usage]:
        if task.protocol == "study":
            tasks = sorted(c.name for c in (task.criterion, *task.others))
            user = prompting.render(
                "study_evaluator_specificity",
                criterion=task.criterion.name,
                tasks=", ".join(tasks),
                gradients="\n\n".join(prompting.study_feedback(g) for g in task.gradients),
            )
        else:
            user = prompting.render(
                "evaluator_specificity",
                criterion=prompting.format_scope_single(task.criterion),
                others=", ".join(c.name for c in task.others) or "(none)",
                gradients=prompting.format_gradients(task.gradients, show_criteria=False),
            )
        return await self._rate(user, task.protocol)

    async def adherence(self, task: AdherenceTask) -> tuple[Rating, Usage]:
        if task.protocol == "study":
            user = prompting.render(
                "study_evaluator_adherence",
                criterion=task.criterion.name,
                old_instruction=prompting.study_fence(task.old_instruction),
                new_instruction=prompting.study_fence(task.new_instruction),
                gradients="\n\n".join(prompting.study_feedback(g) for g in task.gradients),
            )
        else:
            user = prompting.render(
                "evaluator_adherence",
                criterion=prompting.format_scope_single(task.criterion),
                old_instruction=task.old_instruction,
                new_instruction=task.new_instruction,
                gradients=prompting.format_gradients(task.gradients),
            )
        return await self._rate(user, task.protocol)
