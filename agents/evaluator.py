"""The evaluator role: the study's diagnostics, rated 1-10 by an evaluator model.

Specificity rates all gradients of one criterion at one step together (the study's unit); adherence rates one
rewritten instruction against the gradients it was written from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from judgeopt.agents import prompting
from judgeopt.agents.errors import InvalidRequestError
from judgeopt.agents.model_client import ModelRunner
from judgeopt.agents.parsing import find_json_object, lookup_key, parse_scores
from judgeopt.agents.types import Criterion, Gradient, ParseStatus, Usage
from judgeopt.core.wire import MAX_CRITERIA

RATING = Criterion("score", "", 1.0, 10.0, integer_scores=True)
RATING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"score": {"type": "integer", "enum": list(range(1, 11))}, "rationale": {"type": "string"}},
    "required": ["score", "rationale"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class SpecificityTask:
    criterion: Criterion
    others: tuple[Criterion, ...]
    gradients: tuple[Gradient, ...]

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


class EvaluatorAgent:
    def __init__(self, runner: ModelRunner) -> None:
        self._runner = runner

    async def _rate(self, user: str) -> tuple[Rating, Usage]:
        completion = await self._runner.complete(
            prompting.render("evaluator_system"), user, schema=RATING_SCHEMA, schema_name="rating"
        )
        if completion.truncated:
            return Rating(None, ParseStatus.TRUNCATED, "", completion.text), completion.usage
        return read_rating(completion.text), completion.usage

    async def specificity(self, task: SpecificityTask) -> tuple[Rating, Usage]:
        user = prompting.render(
            "evaluator_specificity",
            criterion=prompting.format_scope_single(task.criterion),
            others=", ".join(c.name for c in task.others) or "(none)",
            gradients=prompting.format_gradients(task.gradients),
        )
        return await self._rate(user)

    async def adherence(self, task: AdherenceTask) -> tuple[Rating, Usage]:
        user = prompting.render(
            "evaluator_adherence",
            criterion=prompting.format_scope_single(task.criterion),
            old_instruction=task.old_instruction,
            new_instruction=task.new_instruction,
            gradients=prompting.format_gradients(task.gradients),
        )
        return await self._rate(user)
