"""Domain types shared by the agent roles: what a request carries and what an agent returns.

These mirror the ``judgeopt.v1`` contract but carry no protobuf: services translate at their border
(``services/convert.py``). Every task validates itself on construction, so a malformed request is refused
with an :class:`~judgeopt.agents.errors.InvalidRequestError` naming the offending field before any model call.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from judgeopt.agents.errors import InvalidRequestError
from judgeopt.core.wire import MAX_CRITERIA

MAX_ENUMERATED_SCORES = 100
"""An integer scale of more values than this is given by its bounds, not value by value (in an answer schema's enum,
in a prompt): a 1..10^12 scale must not become a list of a trillion numbers."""

PromptProtocol = Literal["judgeopt", "study"]
"""Which templates an agent renders: judgeopt's own, or the study's structure (``docs/study-protocol.md``)."""


class Routing(enum.Enum):
    """How one call covers its criteria.

    ``PER_CRITERION``: the call is about its first criterion (the per-criterion prompt form); any further criteria
    are context the caller chose to share. ``JOINT``: the call is about all its criteria (the joint form).
    """

    PER_CRITERION = "per_criterion"
    JOINT = "joint"


class JudgeLayout(enum.Enum):
    """How the judge puts a request's criteria to its model.

    ``CRITERIA_FIRST``: the criteria and their instructions before the sample; one call for joint routing.
    ``PREFIX_SHARED``: one call per criterion, whatever the routing; every call starts with the same text (task
    description, sample) and ends with its criterion's instruction and output field, so an endpoint's prefix cache
    prefills the shared part once, and while scoring a criterion the model sees no other criterion's instruction.
    """

    CRITERIA_FIRST = "criteria_first"
    PREFIX_SHARED = "prefix_shared"


class ParseStatus(enum.IntEnum):
    """Outcome of reading model text, ordered from best to worst."""

    OK = 1
    REPAIRED = 2
    OUT_OF_RANGE = 3
    MISSING = 4
    INVALID = 5
    TRUNCATED = 6
    """The reply stopped at the model's output cap: cut off, so nothing in it is used (every role, every routing)."""

    @property
    def usable(self) -> bool:
        return self in (ParseStatus.OK, ParseStatus.REPAIRED)


class ScoringMethod(enum.Enum):
    SAMPLED = "sampled"
    LOGPROB_WEIGHTED = "logprob_weighted"


@dataclass(frozen=True)
class Criterion:
    """A scoring criterion with its closed score range."""

    name: str
    description: str = ""
    min_score: float = 1.0
    max_score: float = 5.0
    integer_scores: bool = True

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise InvalidRequestError("criterion name is empty")
        if not (math.isfinite(self.min_score) and math.isfinite(self.max_score)):
            raise InvalidRequestError(f"criterion {self.name!r}: score range must be finite")
        if self.min_score >= self.max_score:
            raise InvalidRequestError(
                f"criterion {self.name!r}: score range is inverted or empty ({self.min_score}..{self.max_score})"
            )
        if self.integer_scores and math.ceil(self.min_score) > math.floor(self.max_score):
            raise InvalidRequestError(
                f"criterion {self.name!r}: integer scores, but no integer between {self.min_score:g} and "
                f"{self.max_score:g}"
            )

    @property
    def allowed_scores(self) -> tuple[int, ...]:
        """The integer scores of an integer scale, e.g. (1, 2, 3, 4, 5); empty for continuous scales and for integer
        scales of more than :data:`MAX_ENUMERATED_SCORES` values (use :meth:`allows` to test a score)."""
        if not self.integer_scores:
            return ()
        low, high = math.ceil(self.min_score), math.floor(self.max_score)
        return tuple(range(low, high + 1)) if high - low < MAX_ENUMERATED_SCORES else ()

    def contains(self, value: float) -> bool:
        return self.min_score <= value <= self.max_score

    def allows(self, value: float) -> bool:
        """Whether ``value`` is a score of this scale: inside the range, and whole on an integer scale."""
        return self.contains(value) and (not self.integer_scores or float(value).is_integer())


@dataclass(frozen=True)
class Sample:
    """A sample to judge; ``fields`` are (name, text) pairs, most shared first (source before candidate)."""

    id: str
    fields: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        if not self.fields:
            raise InvalidRequestError(f"sample {self.id!r} has no text fields")
        names = [name for name, _ in self.fields]
        if len(set(names)) != len(names):
            raise InvalidRequestError(f"sample {self.id!r} repeats a field name: {names}")


@dataclass(frozen=True)
class Conversation:
    """A judged sample and the judge's output for it, as the optimizer is shown it."""

    sample: Sample
    output: str


@dataclass(frozen=True)
class Instruction:
    criterion: str
    text: str


@dataclass(frozen=True)
class JudgePrompt:
    """The judge prompt: a fixed task description (empty = the default one) and one instruction per criterion."""

    instructions: tuple[Instruction, ...]
    task_description: str = ""
    omit_output_format: bool = False

    def instruction_for(self, criterion: str) -> str | None:
        return next((i.text for i in self.instructions if i.criterion == criterion), None)

    def restricted_to(self, criteria: Sequence[str]) -> JudgePrompt:
        keep = set(criteria)
        return JudgePrompt(
            instructions=tuple(i for i in self.instructions if i.criterion in keep),
            task_description=self.task_description,
            omit_output_format=self.omit_output_format,
        )


@dataclass(frozen=True)
class Usage:
    """Token usage and model time of the LLM calls behind one request."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_calls: int = 0
    model_seconds: float = 0.0
    model: str = ""
    truncated_calls: int = 0
    """Of ``llm_calls``, the replies that stopped at the model's output cap."""
    cached_prompt_tokens: int = 0
    """Prompt tokens the endpoint's prefix cache served, where it reports them (0 otherwise)."""

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            llm_calls=self.llm_calls + other.llm_calls,
            truncated_calls=self.truncated_calls + other.truncated_calls,
            model_seconds=self.model_seconds + other.model_seconds,
            model=self.model or other.model,
            cached_prompt_tokens=self.cached_prompt_tokens + other.cached_prompt_tokens,
        )


@dataclass(frozen=True)
class CriterionScore:
    criterion: str
    value: float | None
    status: ParseStatus
    method: ScoringMethod = ScoringMethod.SAMPLED


@dataclass(frozen=True)
class Prediction:
    sample_id: str
    scores: tuple[CriterionScore, ...]
    raw_output: str

    @property
    def status(self) -> ParseStatus:
        """The worst status over the scores."""
        return max((s.status for s in self.scores), default=ParseStatus.INVALID)


@dataclass(frozen=True)
class CriterionEvidence:
    """What a loss or gradient call may know about one criterion of one sample; ``None`` = not visible."""

    criterion: str
    instruction: str | None = None
    prediction: float | None = None
    ground_truth: float | None = None
    verdict: str | None = None
    critique: str | None = None


@dataclass(frozen=True)
class Critique:
    criteria: tuple[str, ...]
    sample_id: str
    text: str
    status: ParseStatus
    raw_output: str


@dataclass(frozen=True)
class Gradient:
    """Feedback on instruction(s) in three parts: keep, problem (what caused the errors), fix."""

    criteria: tuple[str, ...]
    sample_id: str
    keep: str
    problem: str
    fix: str
    status: ParseStatus
    raw_output: str = ""


def _check_scope(criteria: Sequence[Criterion], what: str) -> None:
    if not criteria:
        raise InvalidRequestError(f"{what}: no criteria given")
    if len(criteria) > MAX_CRITERIA:
        raise InvalidRequestError(
            f"{what}: {len(criteria)} criteria in one request; at most {MAX_CRITERIA} are allowed"
        )
    names = [c.name for c in criteria]
    if len(set(names)) != len(names):
        raise InvalidRequestError(f"{what}: criteria repeat a name: {names}")


def focus_criteria(routing: Routing, criteria: Sequence[Criterion]) -> tuple[str, ...]:
    """The criteria a call's output is about: the first for per-criterion routing, all for joint."""
    return (criteria[0].name,) if routing is Routing.PER_CRITERION else tuple(c.name for c in criteria)


def _check_known(names: Sequence[str], criteria: Sequence[Criterion], what: str) -> None:
    known = {c.name for c in criteria}
    unknown = sorted(set(names) - known)
    if unknown:
        raise InvalidRequestError(f"{what} for criterion not defined in the request: {unknown}")


def _check_instructions(prompt: JudgePrompt, criteria: Sequence[Criterion], what: str) -> None:
    _check_known([i.criterion for i in prompt.instructions], criteria, f"{what}: instruction")
    for instruction in prompt.instructions:
        if not instruction.text.strip():
            raise InvalidRequestError(f"{what}: instruction for {instruction.criterion!r} is empty")


@dataclass(frozen=True)
class ScoreTask:
    """Score one sample. Per-criterion routing makes one call per criterion, each seeing its own instruction."""

    routing: Routing
    criteria: tuple[Criterion, ...]
    prompt: JudgePrompt
    sample: Sample
    protocol: PromptProtocol = "judgeopt"
    layout: JudgeLayout = JudgeLayout.CRITERIA_FIRST

    def __post_init__(self) -> None:
        _check_scope(self.criteria, "score")
        if self.layout is JudgeLayout.PREFIX_SHARED and self.protocol == "study":
            raise InvalidRequestError("score: the study's prompt protocol has no prefix-shared layout")
        _check_instructions(self.prompt, self.criteria, "score")
        missing = [c.name for c in self.criteria if self.prompt.instruction_for(c.name) is None]
        if missing:
            raise InvalidRequestError(f"score: no instruction for criteria {missing}")


@dataclass(frozen=True)
class CritiqueTask:
    """Critique a prediction from exactly the evidence given (the study gives prediction, truth and verdict)."""

    routing: Routing
    criteria: tuple[Criterion, ...]
    sample_id: str
    evidence: tuple[CriterionEvidence, ...]
    sample: Sample | None = None
    judge_output: str | None = None
    protocol: PromptProtocol = "judgeopt"

    def __post_init__(self) -> None:
        _check_scope(self.criteria, "critique")
        _check_known([e.criterion for e in self.evidence], self.criteria, "critique: evidence")


@dataclass(frozen=True)
class GradientTask:
    """Feedback on the instruction(s) of the criteria in scope, from whatever the caller let the agent see."""

    routing: Routing
    criteria: tuple[Criterion, ...]
    sample_id: str
    evidence: tuple[CriterionEvidence, ...]
    prompt: JudgePrompt | None = None
    sample: Sample | None = None
    judge_output: str | None = None
    protocol: PromptProtocol = "judgeopt"

    def __post_init__(self) -> None:
        _check_scope(self.criteria, "gradient")
        _check_known([e.criterion for e in self.evidence], self.criteria, "gradient: evidence")
        if self.prompt is not None:
            _check_instructions(self.prompt, self.criteria, "gradient")


@dataclass(frozen=True)
class StepTask:
    """Rewrite the instruction of every criterion in scope from the mini-batch's gradients."""

    routing: Routing
    criteria: tuple[Criterion, ...]
    prompt: JudgePrompt
    gradients: tuple[Gradient, ...] = field(default=())
    conversations: tuple[Conversation, ...] = field(default=())
    protocol: PromptProtocol = "judgeopt"
    resolution: str | None = None
    """The conflict arbiter's resolution of contradictory gradients, when the caller ran one (judgeopt's protocol: the
    study's prompt structure has no place for it)."""
    max_tokens: dict[str, int] = field(default_factory=dict)
    """Per-criterion length limits (approximate tokens) on the rewritten instructions; none when empty."""

    def __post_init__(self) -> None:
        _check_scope(self.criteria, "step")
        _check_instructions(self.prompt, self.criteria, "step")
        missing = [c.name for c in self.criteria if self.prompt.instruction_for(c.name) is None]
        if missing:
            raise InvalidRequestError(f"step: no instruction to rewrite for criteria {missing}")
        for gradient in self.gradients:
            _check_known(gradient.criteria, self.criteria, "step: gradient")


@dataclass(frozen=True)
class ArbitrateTask:
    """Find the pairs of criteria whose gradients ask for contradictory changes, and say how to reconcile them."""

    criteria: tuple[Criterion, ...]
    gradients: tuple[Gradient, ...]

    def __post_init__(self) -> None:
        _check_scope(self.criteria, "arbitrate")
        if not self.gradients:
            raise InvalidRequestError("arbitrate: no gradients to compare")
        for gradient in self.gradients:
            _check_known(gradient.criteria, self.criteria, "arbitrate: gradient")


@dataclass(frozen=True)
class ConflictNote:
    criteria: tuple[str, str]
    issue: str


@dataclass(frozen=True)
class Arbitration:
    """The conflicts found (none when the gradients are compatible) and the resolution for the optimizer."""

    conflicts: tuple[ConflictNote, ...]
    resolution: str
    status: ParseStatus
    raw_output: str


@dataclass(frozen=True)
class StepResult:
    """New instructions (the input ones when the reply could not be used; ``status`` says why). Under the study
    protocol a criterion the reply lacks is left out, so that the caller falls back to its initial instruction."""

    instructions: tuple[Instruction, ...]
    status: ParseStatus
    raw_output: str
    length_rejected: tuple[str, ...] = ()
    """Criteria whose rewrite stayed over its length limit when asked again: they keep the input instruction."""
