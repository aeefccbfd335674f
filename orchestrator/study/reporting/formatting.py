"""Numbers as table cells: ``—`` for a missing value, ``mean ± std`` over runs."""

from __future__ import annotations

from collections.abc import Sequence
from statistics import fmean, stdev

from judgeopt.orchestrator.study.reporting.aggregate import Series


def number(value: float | None, digits: int = 3, *, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def mean_std(values: Sequence[float], digits: int = 3) -> str:
    """``mean ± std`` (std with n−1) over runs; just the value for one run."""
    if not values:
        return "—"
    if len(values) == 1:
        return number(values[0], digits)
    return f"{fmean(values):.{digits}f} ± {stdev(values):.{digits}f}"


def at_step(series: Series, step: int | None) -> str:
    if step is None or step not in series:
        return "—"
    return f"{mean_std(series[step])} (step {step})"
