"""Archive recombination: one prompt stitched from the archive, each criterion's instruction taken from the member
that is best on that criterion, then validated as a whole.

It runs once per track, after the last step (recorded as step ``steps + 1``), not at every step. The archive
changes whenever a step is accepted, and each stitched prompt costs a validation scoring of its own; stitching at
every step would spend that scoring on archives that are about to change, while at the end the archive is final
and one recombination covers all its members. Instructions written for different prompts can interfere once put
side by side, so the stitched prompt must pass the track's gate like any candidate, and each criterion's
validation ρ under it is recorded beside the ρ it had in its source member (the stitching loss).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from judgeopt.orchestrator.engine.artifacts import PromptState
from judgeopt.orchestrator.engine.pareto import ArchiveMember


@dataclass(frozen=True)
class Recombination:
    """A stitched prompt and, per criterion, the step of the archive member its instruction came from."""

    prompt: PromptState
    sources: dict[str, int]


def best_members(archive: Sequence[ArchiveMember], criteria: Sequence[str]) -> dict[str, ArchiveMember]:
    """Per criterion, the archive member with the highest value on it; of equal members the earliest step."""
    if not archive:
        raise ValueError("an empty archive has no member to recombine")
    return {c: max(archive, key=lambda m: (m.values[c], -m.step)) for c in criteria}


def recombine(
    base: PromptState, held: Mapping[int, PromptState], archive: Sequence[ArchiveMember], criteria: Sequence[str]
) -> Recombination | None:
    """``base`` (its task description and output format) with each criterion's instruction from the member best on
    it (``held``: the prompt of each member's step). ``None`` when one member is best on every criterion: the
    stitched prompt would be that member's, already validated; ``None`` for an empty archive too (a run stored before
    every gate kept one)."""
    if not archive:
        return None
    sources = best_members(archive, criteria)
    if len({m.step for m in sources.values()}) < 2:
        return None
    prompt = base.replaced({c: held[m.step].instruction(c) for c, m in sources.items()})
    return Recombination(prompt, {c: m.step for c, m in sources.items()})


def stitching(
    sources: Mapping[str, int], source_rho: Mapping[int, Mapping[str, float]], stitched_rho: Mapping[str, float]
) -> dict[str, dict[str, Any]]:
    """Per criterion: the source member's step, the validation ρ the criterion had there and under the stitched
    prompt, and the loss (source − stitched; positive when stitching hurt the criterion)."""
    return {
        c: {
            "source_step": step,
            "source_rho": source_rho[step][c],
            "stitched_rho": stitched_rho[c],
            "loss": source_rho[step][c] - stitched_rho[c],
        }
        for c, step in sources.items()
    }
