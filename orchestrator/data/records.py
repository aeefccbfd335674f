"""What a dataset is made of: rated records, their criteria with scales and tolerances, the dataset section of a
run config, and the SummEval criteria."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Self

import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

log = structlog.get_logger(__name__)

MAX_TEXT_CHARS = 1_000_000
"""Default longest text field: about 250,000 tokens, more than nearly any model's context, and well inside the agent
services' 16 MiB message limit. A longer text could never be judged, so it is refused when the data is loaded."""


def _not_a_boolean(value: object) -> object:
    """Refuse ``true``/``false`` where a number is expected (pydantic would read them as 1 and 0)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got the boolean {str(value).lower()}")
    return value


class CriterionSpec(BaseModel):
    """One rated quality: its scale, and how close a prediction must be to the human score to count as correct."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    description: str = ""
    min_score: float = Field(default=1.0, allow_inf_nan=False)
    max_score: float = Field(default=5.0, allow_inf_nan=False)
    integer_scores: bool = True
    tolerance: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)

    _no_booleans = field_validator("min_score", "max_score", "tolerance", mode="before")(_not_a_boolean)

    @property
    def off_by_one_width(self) -> float:
        """How far a prediction may be from the truth to count as off by at most one: one point on a whole-number
        scale, else a quarter of the range (one point of a 1-5 scale, 0.25 of a 0-1 one), so that the figure does not
        read 1.000 on a short continuous scale."""
        return 1.0 if self.integer_scores else (self.max_score - self.min_score) / 4

    @model_validator(mode="after")
    def _check_range(self) -> Self:
        if self.max_score <= self.min_score:
            raise ValueError(f"max_score ({self.max_score:g}) must be greater than min_score ({self.min_score:g})")
        if self.integer_scores and math.ceil(self.min_score) > math.floor(self.max_score):
            raise ValueError(f"integer scores, but no integer between {self.min_score:g} and {self.max_score:g}")
        return self


def shown_criteria(criteria: Sequence[CriterionSpec], *, definitions: bool) -> tuple[CriterionSpec, ...]:
    """The criteria as the agents are shown them: without their descriptions when a run gives no definitions (the
    study named the criteria only)."""
    return tuple(criteria) if definitions else tuple(c.model_copy(update={"description": ""}) for c in criteria)


# The labels are means of three experts (steps of 1/3), so a prediction half a point away still counts as correct.
SUMMEVAL_CRITERIA: tuple[CriterionSpec, ...] = tuple(
    CriterionSpec(name=name, description=description, integer_scores=False, tolerance=0.5)
    for name, description in (
        (
            "coherence",
            "The summary reads as an organized whole: each sentence follows from the one before, "
            "rather than a list of loosely related facts.",
        ),
        (
            "consistency",
            "Everything the summary states is backed by the article; it adds, distorts or contradicts no facts.",
        ),
        (
            "fluency",
            "Each sentence is grammatical and easy to read, free of fragments, repetitions and formatting debris.",
        ),
        (
            "relevance",
            "The summary keeps the article's main points and leaves out minor or repeated details.",
        ),
    )
)
WGC_CRITERIA = tuple(c.model_copy(update={"integer_scores": True, "tolerance": 0.0}) for c in SUMMEVAL_CRITERIA)


@dataclass(frozen=True)
class Record:
    """One rated text: its text fields, most shared first (e.g. the article before its summary)."""

    id: str
    fields: tuple[tuple[str, str], ...]
    labels: dict[str, float] = field(hash=False)  # excluded from the hash so that records can go in sets
    group: str  # what must not straddle splits (SummEval: the article); the id when there is no such thing


@dataclass(frozen=True)
class Dataset:
    name: str
    records: tuple[Record, ...]
    criteria: tuple[CriterionSpec, ...]
    text_fields: tuple[str, ...]
    checksum: str  # sha256 (hex) of the bytes of the file(s) read, in order
    source: str  # the path(s) read, comma-separated


@dataclass(frozen=True)
class Splits:
    train: tuple[Record, ...]
    val: tuple[Record, ...]
    test: tuple[Record, ...]


class DatasetConfig(BaseModel):
    """The dataset section of a run config."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    name: Literal["summeval", "summeval-wgc", "file"] = "summeval"
    path: Path | None = None
    text_fields: tuple[str, ...] = ()
    criteria: tuple[CriterionSpec, ...] = ()
    id_field: str | None = None
    group_field: str | None = None
    train_size: int = Field(default=160, ge=0)
    val_size: int = Field(default=100, ge=0)
    test_size: int = Field(default=480, ge=0)
    seed: int = 0
    val_overlaps_train: bool = False
    download_url: str | None = None
    max_text_chars: int = Field(default=MAX_TEXT_CHARS, ge=1)
    """Longest text field accepted, in characters; raise it for a model whose context holds longer texts."""

    _no_booleans = field_validator("train_size", "val_size", "test_size", "seed", "max_text_chars", mode="before")(
        _not_a_boolean
    )
