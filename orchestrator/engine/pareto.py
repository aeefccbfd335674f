"""The Pareto (non-regression) gate and the archive of non-dominated prompts.

A scalar gate compares macro averages, so it accepts a candidate that gains on three criteria what it loses on a
fourth. The Pareto gate compares criterion by criterion: a candidate passes only if no criterion's validation
metric (``gate_metric``, oriented so that higher is better) drops by more than ``epsilon``; optionally a drop counts
only when its paired-bootstrap 95% interval lies wholly beyond ``epsilon``, so judge noise alone refuses nothing.

Every prompt a track holds (its initial prompt and each accepted candidate) is offered to the track's archive of
non-dominated per-criterion vectors, kept in the run store across steps. The deployable prompt is chosen from the
archive by hypervolume contribution, weighted sum or max-min, each on the values scaled to 0-1 over the metric's
range (so a 1-5 scale's MAE and a 0-1 scale's weigh alike). Only prompts a track held enter the archive: their
test figures exist, so the choice is what ``best`` reports and what ``judgeopt export --step best`` writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from judgeopt.core.errors import ConfigError
from judgeopt.orchestrator.config import ArchiveChoice
from judgeopt.orchestrator.data.records import CriterionSpec
from judgeopt.orchestrator.engine.metrics import hypervolume, non_dominated, resampled_values


@dataclass(frozen=True)
class ArchiveMember:
    """A prompt a track held, with its per-criterion validation values (oriented: higher is better)."""

    step: int
    prompt_id: str
    values: dict[str, float]

    def point(self, criteria: Sequence[str]) -> tuple[float, ...]:
        return tuple(self.values[c] for c in criteria)


def worst_errors(criteria: Sequence[CriterionSpec]) -> dict[str, float]:
    """Per criterion, the largest error its scale allows."""
    return {c.name: c.max_score - c.min_score for c in criteria}


def metric_bounds(metric: str, criteria: Sequence[CriterionSpec]) -> dict[str, tuple[float, float]]:
    """Per criterion, the lowest and highest oriented value ``metric`` can take."""
    if metric == "mae":
        return {name: (-worst, 0.0) for name, worst in worst_errors(criteria).items()}
    low = 0.0 if metric == "off_by_one" else -1.0
    return {c.name: (low, 1.0) for c in criteria}


def regressions(
    before: Mapping[str, float],
    after: Mapping[str, float],
    epsilon: float,
    drop_intervals: Mapping[str, tuple[float, float]] | None = None,
) -> list[str]:
    """Criteria whose value dropped by more than ``epsilon`` from ``before`` to ``after``. With ``drop_intervals``
    (per criterion, the 95% interval of the drop), a criterion with an interval regressed only when the whole
    interval lies beyond ``epsilon``."""
    regressed = []
    for criterion, was in before.items():
        if was - after[criterion] <= epsilon:
            continue
        interval = (drop_intervals or {}).get(criterion)
        if interval is not None and interval[0] <= epsilon:
            continue
        regressed.append(criterion)
    return regressed


def drop_intervals(
    before: Mapping[str, Sequence[float | None]],
    after: Mapping[str, Sequence[float | None]],
    truths: Mapping[str, Sequence[float]],
    *,
    metric: str,
    worst: Mapping[str, float] | None,
    resamples: int,
    seed: int,
) -> dict[str, tuple[float, float]]:
    """Per criterion, the 95% percentile interval of ``before - after`` (the drop of the oriented ``metric``) by a
    paired bootstrap over the items: each resample draws the same items for both prompts. Unscored items count as
    the gate counts them (as the ``worst`` error of their criterion, or left out without it). Criteria with fewer
    than 3 items, or no resample asked for, get no interval."""
    intervals: dict[str, tuple[float, float]] = {}
    rng = np.random.default_rng(seed)
    for criterion, truth in truths.items():
        if resamples <= 0 or len(truth) < 3:
            continue
        draws = rng.integers(0, len(truth), size=(resamples, len(truth)))
        drawn_truths = np.asarray(truth, dtype=np.float64)[draws]
        worst_error = None if worst is None else worst[criterion]
        was, now = (
            resampled_values(metric, _as_array(scores[criterion])[draws], drawn_truths, worst_error)
            for scores in (before, after)
        )
        drops = was - now
        drops = drops[~np.isnan(drops)]
        if drops.size:
            low, high = np.percentile(drops, [2.5, 97.5])
            intervals[criterion] = (float(low), float(high))
    return intervals


def _as_array(scores: Sequence[float | None]) -> NDArray[np.float64]:
    """Scores with NaN for an unscored item."""
    return np.array([np.nan if v is None else v for v in scores], dtype=np.float64)


def admitted(
    archive: Sequence[ArchiveMember], candidate: ArchiveMember, criteria: Sequence[str]
) -> list[ArchiveMember]:
    """The archive with ``candidate`` offered to it: the non-dominated members, older ones first (a candidate equal
    to a member is not added)."""
    members = [*archive, candidate]
    return [members[i] for i in non_dominated([m.point(criteria) for m in members])]


def check_weights(weights: Mapping[str, float], criteria: Sequence[str]) -> None:
    """Refuse archive weights that name a criterion the run does not have."""
    unknown = sorted(set(weights) - set(criteria))
    if unknown:
        raise ConfigError(f"archive_weights: unknown criterion {unknown[0]!r} (criteria: {', '.join(criteria)})")


def choose(
    archive: Sequence[ArchiveMember],
    *,
    rule: ArchiveChoice,
    bounds: Mapping[str, tuple[float, float]],
    weights: Mapping[str, float] | None = None,
) -> ArchiveMember:
    """The deployable member of a non-empty archive under ``rule``; of equally good members the earliest step."""
    if not archive:
        raise ValueError("an empty archive has no member to choose")
    criteria = list(bounds)
    check_weights(weights or {}, criteria)
    scaled = [tuple((m.values[c] - bounds[c][0]) / (bounds[c][1] - bounds[c][0]) for c in criteria) for m in archive]
    if rule == "hypervolume":
        whole = hypervolume(scaled, 0.0)
        scores = [whole - hypervolume(scaled[:i] + scaled[i + 1 :], 0.0) for i in range(len(scaled))]
    elif rule == "weights":
        w = [(weights or {}).get(c, 1.0) for c in criteria]
        scores = [sum(x * wc for x, wc in zip(point, w, strict=True)) for point in scaled]
    else:
        scores = [min(point) for point in scaled]
    best = max(range(len(archive)), key=lambda i: (scores[i], -archive[i].step))
    return archive[best]
