"""What a run produces and passes between stages: prompt versions, predictions, critiques, gradients.

Plain values with content-derived or random ids, so the router can log which artifacts each call carried and the
store can persist them. No protobuf here (``judgeopt.orchestrator.convert`` is the border).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


def content_id(payload: object) -> str:
    """A short stable id of a JSON-serialisable value."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PromptState:
    """A judge prompt version: the fixed task description and one instruction per criterion (in track order)."""

    task_description: str
    instructions: tuple[tuple[str, str], ...]
    omit_output_format: bool = False

    @property
    def id(self) -> str:
        return content_id([self.task_description, self.instructions, self.omit_output_format])

    @property
    def criteria(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.instructions)

    def instruction(self, criterion: str) -> str:
        return dict(self.instructions)[criterion]

    def replaced(self, updates: Mapping[str, str]) -> PromptState:
        return PromptState(
            self.task_description,
            tuple((name, updates.get(name, text)) for name, text in self.instructions),
            self.omit_output_format,
        )

    def to_json(self) -> dict[str, object]:
        return {
            "task_description": self.task_description,
            "instructions": dict(self.instructions),
            "omit_output_format": self.omit_output_format,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> PromptState:
        instructions = data["instructions"]
        assert isinstance(instructions, dict)
        return cls(str(data["task_description"]), tuple(instructions.items()), bool(data["omit_output_format"]))


@dataclass(frozen=True)
class ScoredSample:
    """The judge's scores for one sample under one prompt (``None`` where the reply could not be used)."""

    sample_id: str
    scores: dict[str, float | None]
    statuses: dict[str, int]
    raw_output: str

    def usable(self, criterion: str) -> bool:
        return self.scores.get(criterion) is not None


@dataclass(frozen=True)
class Critique:
    id: str
    sample_id: str
    criteria: tuple[str, ...]
    text: str
    status: int


@dataclass(frozen=True)
class Gradient:
    id: str
    sample_id: str
    criteria: tuple[str, ...]
    keep: str
    problem: str
    fix: str
    status: int


@dataclass(frozen=True)
class FocusRecord:
    """A joint gradient's focus per criterion (the specificity fallback's proxy), and the criteria under the
    threshold: the fallback's per-criterion calls go to those of them with a usable critique."""

    sample_id: str
    gradient_id: str
    shares: dict[str, float]
    diluted: tuple[str, ...]


@dataclass(frozen=True)
class Conflict:
    """Two criteria whose gradients the conflict arbiter found asking for contradictory changes."""

    criteria: tuple[str, str]
    issue: str


@dataclass
class StepArtifacts:
    """Everything one training step produced, kept for the store and for the step's audit."""

    predictions: list[ScoredSample] = field(default_factory=list)
    critiques: list[Critique] = field(default_factory=list)
    gradients: list[Gradient] = field(default_factory=list)
    optimizer_statuses: dict[str, int] = field(default_factory=dict)
    length_rejected: list[str] = field(default_factory=list)
    """With length limits: criteria whose rewrite stayed over its limit when asked again (their instruction stays)."""
    focus: list[FocusRecord] = field(default_factory=list)
    """With the specificity fallback: one record per joint gradient."""
    conflicts: list[Conflict] = field(default_factory=list)
    resolution: str = ""
    """With the conflict arbiter: what it found, and the resolution the optimizer received ("" for none)."""

    def critiques_for(self, sample_id: str, criteria: Sequence[str]) -> list[Critique]:
        """Critiques of ``sample_id`` covering any of ``criteria``; a joint critique counts for every criterion
        (the ``copy`` handoff), and is listed once."""
        wanted = set(criteria)
        return [c for c in self.critiques if c.sample_id == sample_id and wanted & set(c.criteria)]

    def gradients_for(self, criteria: Sequence[str]) -> list[Gradient]:
        wanted = set(criteria)
        return [g for g in self.gradients if wanted & set(g.criteria)]
