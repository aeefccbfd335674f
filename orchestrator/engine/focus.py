"""How focused a gradient is on each criterion: the cheap proxy the specificity fallback acts on.

The study rated gradient specificity with an evaluator model (1-10) after the run, and found that one gradient call
covering every criterion loses focus. Acting on that mid-step with an evaluator would cost a call per joint
gradient and criterion; the proxy costs nothing: the share of a gradient's sentences that name the criterion
(its name as a word, any case, ``_`` or ``-`` read as a space). A gradient asked about one criterion only (a
per-criterion call) is wholly about it. :func:`agreement` measures how well the proxy ranks what the evaluator
rated, per (track, step, criterion).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import fmean

from judgeopt.orchestrator.engine.artifacts import Gradient
from judgeopt.orchestrator.engine.metrics import criterion_metrics

_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n+")


def _mentions(criterion: str) -> re.Pattern[str]:
    words = r"[\s_-]+".join(re.escape(part) for part in re.split(r"[_-]+", criterion) if part)
    return re.compile(rf"\b{words}\b", re.IGNORECASE)


def sentences(text: str) -> list[str]:
    return [s for s in (part.strip() for part in _SENTENCE_END.split(text)) if s]


def focus_shares(gradient: Gradient, criteria: Sequence[str]) -> dict[str, float]:
    """Per criterion, the share of the gradient's sentences (keep, problem and fix) that name it; 1.0 for the
    criterion of a per-criterion gradient, and 0.0 for every criterion of a gradient with no sentence."""
    if len(gradient.criteria) == 1:
        return {c: 1.0 if c == gradient.criteria[0] else 0.0 for c in criteria}
    said = sentences("\n".join((gradient.keep, gradient.problem, gradient.fix)))
    if not said:
        return dict.fromkeys(criteria, 0.0)
    return {c: sum(bool(_mentions(c).search(s)) for s in said) / len(said) for c in criteria}


@dataclass(frozen=True)
class Agreement:
    """The proxy against the evaluator's specificity ratings over (track, step, criterion) pairs."""

    pairs: tuple[tuple[str, int, str, float, float], ...]
    """(track, step, criterion, proxy share, evaluator rating)."""
    spearman: float | None
    """Spearman ρ of proxy and rating; ``None`` with fewer than 3 pairs or a constant side."""


def agreement(
    gradients: Sequence[tuple[str, int, Gradient]], ratings: Sequence[tuple[str, int, str, float]]
) -> Agreement:
    """The proxy of the gradients the evaluator rated together (all of a step's gradients about a criterion: the
    study's unit), averaged, against each rating ``(track, step, criterion, score)``."""
    about: dict[tuple[str, int, str], list[float]] = defaultdict(list)
    for track, step, gradient in gradients:
        for criterion in gradient.criteria:
            about[(track, step, criterion)].append(focus_shares(gradient, [criterion])[criterion])
    pairs = tuple(
        (track, step, criterion, fmean(about[(track, step, criterion)]), score)
        for track, step, criterion, score in ratings
        if about.get((track, step, criterion))
    )
    if len(pairs) < 3:
        return Agreement(pairs, None)
    metrics = criterion_metrics([p[3] for p in pairs], [p[4] for p in pairs])
    return Agreement(pairs, None if metrics.constant else metrics.spearman)
