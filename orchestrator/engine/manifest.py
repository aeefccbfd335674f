"""A run's manifest: everything that defines the run, typed and versioned, written when the run starts.

``resume``, the summary, the audit, exports and reports all read the run through it, so a field is parsed in one
place. The manifest changes only where the user changes the run (a larger budget on ``resume``) and once to record
the prompt templates the services reported at the run's first start (``templates``: ``role/name`` → sha256);
``resume`` refuses, naming the template, when a service now uses another one. The run's status lives beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from judgeopt.core.models import ModelsConfig
from judgeopt.orchestrator.config import RunConfig
from judgeopt.orchestrator.data.records import CriterionSpec
from judgeopt.orchestrator.engine.policy import Policy

MANIFEST_VERSION: Literal[1] = 1
RunStatus = Literal["running", "complete", "budget_reached", "failed"]
"""``failed``: stopped by a ``RunFailed`` (its cause printed); ``judgeopt resume`` tries again from the last step."""


class RunManifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = MANIFEST_VERSION
    run_id: str
    config: RunConfig
    models: ModelsConfig
    model_names: dict[str, str]
    """The model name each role's requests carry (what the summary reports)."""
    policy: Policy
    criteria: tuple[CriterionSpec, ...]
    text_fields: tuple[str, ...]
    tracks: tuple[str, ...]
    data_checksum: str
    """sha256 of the data file(s): ``resume`` refuses when the data changed."""
    splits: dict[str, tuple[str, ...]]
    """Record ids of ``train``, ``val`` and ``test``."""
    test_truths: dict[str, tuple[float, ...]] = Field(default_factory=dict)
    """Per criterion, the human scores of the test split in split order (for the paired bootstrap of Δ)."""
    templates: dict[str, str] = Field(default_factory=dict)
    """``role/template`` → sha256 of the prompt templates the services used; empty until they first answered."""

    @property
    def criterion_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.criteria)

    def track_criteria(self, track: str) -> tuple[str, ...]:
        """The criteria a track optimizes: all of them, or (Single-Task) the one it is named after."""
        return (track,) if self.policy.independent_criteria else self.criterion_names

    def changed_templates(self, current: Mapping[str, str]) -> list[str]:
        """Templates recorded with the run whose hash a service now reports differently (or no longer has)."""
        return sorted(name for name, digest in self.templates.items() if current.get(name) != digest)
