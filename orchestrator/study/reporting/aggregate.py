"""Aggregation over a configuration's runs, whether a configuration ever improves on its initial prompt, and the
evaluator's ratings pooled over runs (and, for specificity, over modes as the study pooled them).

Average the runs' per-step test macro ρ and per-step validation metric; the best step has the highest mean
validation metric (earliest on ties) and its ρ is the mean ± std over runs of the test macro ρ at that step; the
oracle step (the study's choice) has the highest mean test macro ρ.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from statistics import fmean
from typing import Any

from judgeopt.orchestrator.engine.metrics import (
    Scores,
    hypervolume_indicator,
    mean_delta_interval,
    mean_rho_intervals,
)
from judgeopt.orchestrator.engine.policy import PRESETS
from judgeopt.orchestrator.study.reporting.inputs import Cell, Configuration

Series = dict[int, list[float]]
"""Per step, one value per run; only the steps every run has."""


def _run_values(summary: Mapping[str, Any], value: Callable[[Mapping[str, Any]], float | None]) -> dict[int, float]:
    values = {}
    for step in summary["steps"]:
        v = value(step)
        if v is not None:
            values[int(step["step"])] = float(v)
    return values


def _common(per_run: Sequence[Mapping[int, float]]) -> Series:
    if not per_run:
        return {}
    steps = set(per_run[0]).intersection(*per_run[1:])
    return {s: [run[s] for run in per_run] for s in sorted(steps)}


def _longest(step: Mapping[str, Any]) -> float | None:
    lengths = step.get("instruction_tokens")
    return max(lengths.values()) if lengths else None


def length_series(config: Configuration) -> tuple[Series, Series]:
    """Per step over the configuration's runs: the longest instruction (approximate tokens) and the length asymmetry
    (longest over shortest). Empty for summaries written before lengths were recorded."""
    summaries = [c.summary for c in config.cells]
    longest = _common([_run_values(s, _longest) for s in summaries])
    ratio = _common([_run_values(s, lambda step: step.get("length_asymmetry")) for s in summaries])
    return longest, ratio


def _criterion_rho(criterion: str) -> Callable[[Mapping[str, Any]], float | None]:
    def value(step: Mapping[str, Any]) -> float | None:
        rho = step["rho"]
        return None if rho is None else rho.get(criterion)

    return value


def hvi_by_step(summary: Mapping[str, Any], criteria: Sequence[str]) -> dict[int, float]:
    """The hypervolume indicator of the archive of tested steps 0..t, for every tested step t."""
    archive: list[list[float]] = []
    curve = {}
    for step in sorted(summary["steps"], key=lambda s: int(s["step"])):
        if step["rho"] is None:
            continue
        archive.append([step["rho"][c] for c in criteria])
        curve[int(step["step"])] = hypervolume_indicator(archive)
    return curve


def _argmax_step(series: Series) -> int | None:
    """The step with the highest mean; the earliest wins a tie."""
    if not series:
        return None
    return max(series, key=lambda s: (fmean(series[s]), -s))


@dataclass(frozen=True)
class AlignedTests:
    """A configuration's runs' test scores on the items all of them scored, with those items' human scores."""

    runs: list[dict[int, dict[str, list[float | None]]]]
    """Per run, per step asked for, per criterion, one score per common item."""
    truths: dict[str, list[float]]
    resamples: int
    seed: int
    """The first run's bootstrap resamples and seed."""


@dataclass(frozen=True)
class Aggregate:
    config: Configuration
    macro: Series
    val: Series
    rho: dict[str, Series]
    hvi_curve: Series
    hvi: list[float]

    @property
    def best_step(self) -> int | None:
        """Chosen on validation: the highest mean validation metric among steps tested in every run."""
        return _argmax_step({s: v for s, v in self.val.items() if s in self.macro})

    @property
    def oracle_step(self) -> int | None:
        """Chosen on test (the study's choice): the highest mean test macro ρ."""
        return _argmax_step(self.macro)

    def mean_macro(self, step: int | None) -> float | None:
        return None if step is None or step not in self.macro else fmean(self.macro[step])

    @property
    def hvi_of_run_means(self) -> float | None:
        """The study's HVI: the hypervolume of the archive of the run-mean per-criterion ρ vectors of every step
        tested in all runs (reference −1), which is not the mean of the runs' own HVIs."""
        steps = sorted(set.intersection(*(set(series) for series in self.rho.values()))) if self.rho else []
        if not steps:
            return None
        return hypervolume_indicator([[fmean(self.rho[c][s]) for c in self.rho] for s in steps])

    def _aligned_tests(self, steps: Collection[int]) -> AlignedTests | None:
        """Every run's test scores at ``steps`` on the items all runs scored, in one order, with their human scores;
        ``None`` unless every run has test predictions at each of ``steps``."""
        tests = [c.test for c in self.config.cells if c.test is not None]
        if not tests or len(tests) < len(self.config.cells) or any(set(steps) - set(t.scores) for t in tests):
            return None
        positions = [{item: k for k, item in enumerate(t.ids)} for t in tests]
        common = [item for item in tests[0].ids if all(item in p for p in positions)]

        def aligned(scores: Scores, where: Mapping[str, int]) -> dict[str, list[float | None]]:
            return {c: [values[where[item]] for item in common] for c, values in scores.items()}

        runs = [{s: aligned(t.scores[s], p) for s in steps} for t, p in zip(tests, positions, strict=True)]
        truths = {c: [values[positions[0][item]] for item in common] for c, values in tests[0].truths.items()}
        return AlignedTests(runs, truths, tests[0].resamples, tests[0].seed)

    @property
    def delta_interval(self) -> tuple[float, float] | None:
        """The 95% interval of the configuration's Δ (the mean over runs of test macro ρ at the validation-chosen
        step minus at step 0): a paired bootstrap over the test items every run scored, one draw for every run
        (``mean_delta_interval``), with the first run's resamples and seed. ``None`` without resamples or test
        predictions."""
        best = self.best_step
        tests = None if best is None else self._aligned_tests({0, best})
        if best is None or tests is None:
            return None
        runs = [(run[0], run[best]) for run in tests.runs]
        return mean_delta_interval(runs, tests.truths, resamples=tests.resamples, seed=tests.seed)

    @property
    def rho_intervals(self) -> dict[str, tuple[float, float]] | None:
        """95% intervals of the mean over runs of each criterion's test ρ and of macro ρ (key ``macro``) at the
        validation-chosen step, by the same bootstrap over the test items (``mean_rho_intervals``). ``None`` without
        resamples or test predictions."""
        best = self.best_step
        tests = None if best is None else self._aligned_tests({best})
        if best is None or tests is None:
            return None
        runs = [run[best] for run in tests.runs]
        return mean_rho_intervals(runs, tests.truths, resamples=tests.resamples, seed=tests.seed)

    def improves_on_test(self) -> bool:
        start = self.mean_macro(0)
        return start is not None and any(fmean(v) > start for s, v in self.macro.items() if s != 0)

    def improves_on_val(self) -> bool:
        start, best = self.mean_macro(0), self.mean_macro(self.best_step)
        return start is not None and best is not None and best > start


def aggregate(config: Configuration, criteria: Sequence[str]) -> Aggregate:
    summaries = [c.summary for c in config.cells]
    return Aggregate(
        config=config,
        macro=_common([_run_values(s, lambda step: step["macro_rho"]) for s in summaries]),
        val=_common([_run_values(s, lambda step: step["val_metric"]) for s in summaries]),
        rho={c: _common([_run_values(s, _criterion_rho(c)) for s in summaries]) for c in criteria},
        hvi_curve=_common([hvi_by_step(s, criteria) for s in summaries]),
        hvi=[float(s["hvi"]) for s in summaries if s.get("hvi") is not None],
    )


def ratings(cells: Sequence[Cell], kind: str) -> list[float]:
    """The evaluator's ratings of one kind (``specificity`` or ``adherence``) over these cells; failed ones left out."""
    return [d.score for c in cells for d in c.diagnostics if d.kind == kind and d.score is not None]


def gradient_routing(mode: str) -> str:
    """``per-criterion`` or ``joint`` gradients for a preset mode; ``—`` for a custom policy."""
    policy = PRESETS.get(mode)
    if policy is None:
        return "—"
    return "per-criterion" if policy.stage("gradient").routing == "per_criterion" else "joint"


@dataclass(frozen=True)
class PooledSpecificity:
    """The study's comparison of gradient specificity: each mode's mean rating (over gates, runs, steps and
    criteria), then the mean of the means of the modes with per-criterion gradients (Single-Task, SSS, SSC) against
    that of the modes with joint gradients (SCC, CCC). Modes of custom policies take no part."""

    mode_means: dict[str, float]
    per_criterion: float | None
    joint: float | None

    @property
    def change(self) -> float | None:
        """joint / per-criterion − 1: the study's "drops by 59%" is −0.59."""
        if self.per_criterion is None or self.joint is None or self.per_criterion == 0:
            return None
        return self.joint / self.per_criterion - 1


def pooled_specificity(cells: Sequence[Cell]) -> PooledSpecificity:
    modes = list(dict.fromkeys(c.mode for c in cells))
    means = {m: fmean(v) for m in modes if (v := ratings([c for c in cells if c.mode == m], "specificity"))}

    def group(routing: str) -> float | None:
        values = [mean for mode, mean in means.items() if gradient_routing(mode) == routing]
        return fmean(values) if values else None

    return PooledSpecificity(means, group("per-criterion"), group("joint"))
