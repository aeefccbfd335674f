"""The judge role: score a sample on its criteria, in one joint call or one call per criterion (criteria first, or
prefix-shared: the sample first, so an endpoint's prefix cache prefills it once for all the sample's calls).

Where the endpoint returns log-probabilities, a criterion on an integer scale is scored as the
probability-weighted mean over its allowed score tokens (G-Eval style) instead of the single sampled token.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from judgeopt.agents import prompting
from judgeopt.agents.model_client import Completion, ModelRunner
from judgeopt.agents.parsing import normalise_key, parse_scores
from judgeopt.agents.raw_reply import TokenLogprob
from judgeopt.agents.types import (
    Criterion,
    CriterionScore,
    JudgeLayout,
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


_VALUE = re.compile(r':[ \t\r\n]*+"?+[ \t\r\n]*+(\d++)')
"""The colon of a JSON entry and the unsigned integer after it (``: 4``, ``: "4"``)."""
_MAX_KEY = 200
"""Longest key (and run of spaces before the colon) read back from a colon: criterion names are short, and a bounded
look keeps a hostile reply linear."""
_WHOLE_NUMBER = re.compile(r"\D*+(\d++)\D*+")


def weighable(criterion: Criterion) -> bool:
    """Whether a criterion's scores can be weighted token by token: an integer scale of single digits. Common
    tokenizers split numbers into digits, so on a 1-10 scale the alternatives to "7" include "1", which may begin
    "10": such scales keep the sampled score."""
    return bool(criterion.allowed_scores) and all(0 <= v <= 9 for v in criterion.allowed_scores)


def _key_ending_at(text: str, end: int) -> str | None:
    """The quoted JSON key that ``text[:end]`` ends with, spaces aside (at most :data:`_MAX_KEY` characters)."""
    floor = max(0, end - _MAX_KEY)
    while end > floor and text[end - 1] in " \t\r\n":
        end -= 1
    if end == 0 or text[end - 1] != '"':
        return None
    opening = text.rfind('"', max(0, end - _MAX_KEY - 2), end - 1)
    return text[opening + 1 : end - 1] if opening >= 0 else None


def _alternative_score(text: str) -> float | None:
    match = _WHOLE_NUMBER.fullmatch(text)
    return float(match.group(1)) if match else None


def logprob_weighted_scores(
    tokens: Sequence[TokenLogprob], criteria: Sequence[Criterion], sampled: Mapping[str, float]
) -> dict[str, float]:
    """Expected score per criterion from the top log-probabilities at each criterion's score token.

    A criterion's score token is the one token that holds the whole value after its key (``"<criterion>":``, the key
    matched as the parser matches it) and reads as the score the parser took from the reply (``sampled``): a JSON
    object quoted before the answer is not mistaken for it. Criteria without such a token, on continuous or
    multi-digit scales, or whose alternatives hold no allowed score are left out: the caller keeps the sampled value.
    """
    by_key = {normalise_key(c.name): c for c in criteria if weighable(c) and c.name in sampled}
    if len(criteria) == 1 and by_key:
        by_key.setdefault("score", criteria[0])
    starts: list[int] = []
    offset = 0
    for token in tokens:
        starts.append(offset)
        offset += len(token.text)
    text = "".join(token.text for token in tokens)
    weighted: dict[str, float] = {}
    for match in _VALUE.finditer(text):
        key = _key_ending_at(text, match.start())
        criterion = by_key.get(normalise_key(key)) if key is not None else None
        if criterion is None or criterion.name in weighted or float(match.group(1)) != sampled[criterion.name]:
            continue
        token = tokens[bisect.bisect_right(starts, match.start(1)) - 1]
        if _alternative_score(token.text) is None:
            continue  # the value's token holds more than this one number
        mass: dict[float, float] = {}
        for alternative, logprob in token.top:
            score = _alternative_score(alternative)
            if score is not None and criterion.allows(score):
                mass[score] = mass.get(score, 0.0) + math.exp(logprob)
        total = sum(mass.values())
        if total > 0:
            weighted[criterion.name] = sum(v * p for v, p in mass.items()) / total
    return weighted


log = structlog.get_logger("judgeopt.judge")


class JudgeAgent:
    """Scores samples; knows nothing about optimization."""

    def __init__(self, runner: ModelRunner) -> None:
        self._runner = runner
        self._warned_unweighted = False

    async def score(self, task: ScoreTask) -> tuple[Prediction, Usage]:
        if task.layout is JudgeLayout.PREFIX_SHARED:
            results = await self._prefix_shared(task)
        else:
            groups = [task.criteria] if task.routing is Routing.JOINT else [(c,) for c in task.criteria]
            results = await asyncio.gather(
                *(self._score_group(g, self._messages(g, task.prompt, task.sample, task.protocol)) for g in groups)
            )
        scores = tuple(score for group_scores, _ in results for score in group_scores)
        raw = "\n".join(completion.text for _, completion in results)
        usage = sum((completion.usage for _, completion in results), Usage())
        return Prediction(sample_id=task.sample.id, scores=scores, raw_output=raw), usage

    async def _prefix_shared(self, task: ScoreTask) -> list[tuple[tuple[CriterionScore, ...], Completion]]:
        """One call per criterion, the first alone so that the endpoint has the shared prefix cached before the
        others (sent together) arrive."""
        first, *rest = [(c,) for c in task.criteria]
        messages = {g: self._prefix_shared_messages(g[0], task.prompt, task.sample) for g in (first, *rest)}
        head = await self._score_group(first, messages[first])
        tail = await asyncio.gather(*(self._score_group(g, messages[g]) for g in rest))
        return [head, *tail]

    @staticmethod
    def _prefix_shared_messages(criterion: Criterion, prompt: JudgePrompt, sample: Sample) -> tuple[str, str]:
        """A prefix-shared call: the system message and the user message up to the sample are the same bytes for
        every criterion; the criterion's instruction and output field come last."""
        visible = prompt.restricted_to([criterion.name])
        output_format = (
            ""
            if prompt.omit_output_format
            else prompting.render("judge_output_format", example=prompting.judge_output_example((criterion,)))
        )
        user = prompting.render(
            "judge_user_prefix_shared",
            task_description=prompt.task_description or prompting.render("judge_task").strip(),
            sample=prompting.format_sample(sample),
            criterion=prompting.format_judge_criteria((criterion,), visible),
            output_format=output_format,
        )
        return prompting.render("judge_system"), user

    @staticmethod
    def _messages(
        criteria: tuple[Criterion, ...], prompt: JudgePrompt, sample: Sample, protocol: PromptProtocol
    ) -> tuple[str, str]:
        """The system and user messages of one criteria-first judge call."""
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
        self, criteria: tuple[Criterion, ...], messages: tuple[str, str]
    ) -> tuple[tuple[CriterionScore, ...], Completion]:
        system, user = messages
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
        if use_logprobs:
            scores = self._weighted(scores, completion, criteria)
        return scores, completion

    def _weighted(
        self, scores: tuple[CriterionScore, ...], completion: Completion, criteria: tuple[Criterion, ...]
    ) -> tuple[CriterionScore, ...]:
        """``scores`` with each usable one replaced by its logprob-weighted value where the reply allows it; the
        first time a usable score has to stay sampled, a warning says why."""
        sampled = {s.criterion: s.value for s in scores if s.status.usable and s.value is not None}
        weighted = logprob_weighted_scores(completion.logprobs or [], criteria, sampled)
        unweighted = sorted(set(sampled) - set(weighted))
        if unweighted and not self._warned_unweighted:
            self._warned_unweighted = True
            log.warning(
                "judge.logprobs_unusable",
                criteria=unweighted,
                reason="the reply carried no log probabilities"
                if not completion.logprobs
                else "no single score token with allowed alternatives (or a scale beyond single digits)",
            )
        return tuple(
            CriterionScore(s.criterion, weighted[s.criterion], s.status, ScoringMethod.LOGPROB_WEIGHTED)
            if s.criterion in weighted
            else s
            for s in scores
        )
