"""The judge role: score a sample on its criteria, in one joint call or one call per criterion.

Where the endpoint returns log-probabilities, a criterion on an integer scale is scored as the
probability-weighted mean over its allowed score tokens (G-Eval style) instead of the single sampled token.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

from autogen_core.models import ChatCompletionTokenLogprob

from judgeopt.agents import prompting
from judgeopt.agents.model_client import Completion, ModelRunner
from judgeopt.agents.parsing import parse_scores
from judgeopt.agents.types import (
    Criterion,
    CriterionScore,
    JudgePrompt,
    ParseStatus,
    Prediction,
    PromptProtocol,
    Routing,
    Sample,
    ScoreTask,
    ScoringMethod,
    Usage,
)


def score_schema(criteria: Sequence[Criterion]) -> dict[str, Any]:
    """JSON schema of a judge answer: every criterion's score, on its own scale, and nothing else."""
    properties: dict[str, Any] = {}
    for c in criteria:
        if c.allowed_scores:
            properties[c.name] = {"type": "integer", "enum": list(c.allowed_scores)}
        elif c.integer_scores:  # too many values to list
            properties[c.name] = {
                "type": "integer",
                "minimum": math.ceil(c.min_score),
                "maximum": math.floor(c.max_score),
            }
        else:
            properties[c.name] = {"type": "number", "minimum": c.min_score, "maximum": c.max_score}
    return {
        "type": "object",
        "properties": properties,
        "required": [c.name for c in criteria],
        "additionalProperties": False,
    }


def _token_text(token: str, raw: list[int] | None) -> str:
    return bytes(raw).decode("utf-8", errors="ignore") if raw else token


def _skip_space_back(text: str, end: int) -> int:
    while end > 0 and text[end - 1].isspace():
        end -= 1
    return end


def _key_before_value(text: str, end: int) -> str | None:
    """The key of the ``"key": `` (or ``"key": "``) that ``text[:end]`` ends with: where a JSON answer's value
    starts. Read backwards from ``end``, so each score token costs only the key and spaces before it."""
    end = end - 1 if end > 0 and text[end - 1] == '"' else end
    end = _skip_space_back(text, end)
    if end == 0 or text[end - 1] != ":":
        return None
    end = _skip_space_back(text, end - 1)
    if end == 0 or text[end - 1] != '"':
        return None
    opening = text.rfind('"', 0, end - 1)
    return text[opening + 1 : end - 1] if 0 <= opening < end - 2 else None


def logprob_weighted_scores(
    logprobs: Sequence[ChatCompletionTokenLogprob], criteria: Sequence[Criterion]
) -> dict[str, float]:
    """Expected score per criterion from the top log-probabilities at each criterion's score token.

    A score token is a token reading as an allowed integer right after ``"<criterion>":`` in the JSON answer.
    Criteria without such a token (or on continuous scales) are left out: the caller keeps the sampled value.
    """
    by_name = {c.name: c for c in criteria if c.integer_scores}
    weighted: dict[str, float] = {}
    text = "".join(item.token for item in logprobs)
    offset = 0
    for item in logprobs:
        start, offset = offset, offset + len(item.token)
        if not item.token.strip().isdigit():
            continue
        key = _key_before_value(text, start)
        criterion = by_name.get(key) if key else None
        if criterion is None or criterion.name in weighted:
            continue
        mass: dict[float, float] = {}
        for top in item.top_logprobs or []:
            digits = _token_text("", top.bytes).strip()
            score = float(digits) if digits.isdecimal() else math.nan  # float: a 5,000-digit token must not raise
            if criterion.allows(score):
                mass[score] = mass.get(score, 0.0) + math.exp(top.logprob)
        total = sum(mass.values())
        if total > 0:
            weighted[criterion.name] = sum(v * p for v, p in mass.items()) / total
    return weighted


class JudgeAgent:
    """Scores samples; knows nothing about optimization."""

    def __init__(self, runner: ModelRunner) -> None:
        self._runner = runner

    async def score(self, task: ScoreTask) -> tuple[Prediction, Usage]:
        if task.routing is Routing.JOINT:
            groups: list[tuple[Criterion, ...]] = [task.criteria]
        else:
            groups = [(c,) for c in task.criteria]
        results = await asyncio.gather(*(self._score_group(g, task.prompt, task.sample, task.protocol) for g in groups))
        scores = tuple(score for group_scores, _ in results for score in group_scores)
        raw = "\n".join(completion.text for _, completion in results)
        usage = sum((completion.usage for _, completion in results), Usage())
        return Prediction(sample_id=task.sample.id, scores=scores, raw_output=raw), usage

    @staticmethod
    def _messages(
        criteria: tuple[Criterion, ...], prompt: JudgePrompt, sample: Sample, protocol: PromptProtocol
    ) -> tuple[str, str]:
        """The system and user messages of one judge call."""
        visible = prompt.restricted_to([c.name for c in criteria])
        if protocol == "study":
            user = prompting.render(
                "study_judge_user",
                system_prompt=prompting.study_judge_prompt(criteria, visible),
                sample=prompting.study_sample(sample),
            )
            return prompting.render("study_judge_system"), user
        output_format = (
            ""
            if prompt.omit_output_format
            else prompting.render("judge_output_format", example=prompting.judge_output_example(criteria))
        )
        user = prompting.render(
            "judge_user",
            task_description=visible.task_description or prompting.render("judge_task").strip(),
            criteria=prompting.format_judge_criteria(criteria, visible),
            output_format=output_format,
            sample=prompting.format_sample(sample),
        )
        return prompting.render("judge_system"), user

    async def _score_group(
        self, criteria: tuple[Criterion, ...], prompt: JudgePrompt, sample: Sample, protocol: PromptProtocol
    ) -> tuple[tuple[CriterionScore, ...], Completion]:
        system, user = self._messages(criteria, prompt, sample, protocol)
        use_logprobs = self._runner.config.logprobs
        completion = await self._runner.complete(
            system,
            user,
            schema=score_schema(criteria),
            schema_name="scores",
            logprobs=use_logprobs,
        )
        if completion.truncated:
            return tuple(CriterionScore(c.name, None, ParseStatus.TRUNCATED) for c in criteria), completion
        scores = parse_scores(completion.text, criteria)
        if use_logprobs and completion.logprobs:
            weighted = logprob_weighted_scores(completion.logprobs, criteria)
            scores = tuple(
                CriterionScore(s.criterion, weighted[s.criterion], s.status, ScoringMethod.LOGPROB_WEIGHTED)
                if s.status.usable and s.criterion in weighted
                else s
                for s in scores
            )
        return scores, completion
