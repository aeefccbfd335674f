"""Judge/human agreement metrics, the Pareto filter and the exact hypervolume."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from statistics import fmean
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from structlog.testing import capture_logs

from judgeopt.orchestrator.engine.metrics import (
    GATE_METRICS,
    Evaluation,
    Scores,
    criterion_metrics,
    evaluate,
    halo,
    hypervolume,
    hypervolume_indicator,
    mean_delta_interval,
    mean_rho_intervals,
    non_dominated,
    paired_delta_interval,
)

PREDICTIONS = [1.5, 2.0, 2.5, 5.0, 4.0, 3.0, 1.0, 4.5]
TRUTHS = [1.0, 2.0, 3.0, 4.0, 5.0, 3.0, 2.0, 4.0]

# Criteria deliberately in different orders: the truths' order wins.
PREDICTED_BY_CRITERION: dict[str, list[float | None]] = {
    "coherence": [1.0, 3.0, 2.0, 5.0, None],
    "fluency": [2.0, 2.0, 3.0, 4.0, 5.0],
}
TRUE_BY_CRITERION: dict[str, list[float]] = {
    "fluency": [1.0, 2.0, 3.0, 5.0, 4.0],
    "coherence": [2.0, 3.0, 1.0, 4.0, 5.0],
}


def noisy_scores(seed: int, n: int = 40) -> tuple[list[float], list[float]]:
    """Human scores 1-5 and a judge that follows them loosely."""
    rng = np.random.default_rng(seed)
    truths = rng.integers(1, 6, size=n).astype(float)
    predictions = truths + rng.normal(0.0, 1.5, size=n)
    return predictions.tolist(), truths.tolist()


def grid_volume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Exact volume of the union of boxes [reference, point]: sum the grid cells, over the sorted distinct
    coordinates, whose upper corner some (clipped) point reaches."""
    clipped = [[max(x, r) for x, r in zip(point, reference, strict=True)] for point in points]
    axes = [sorted({r, *(c[k] for c in clipped)}) for k, r in enumerate(reference)]
    total = 0.0
    for cell in itertools.product(*(range(len(axis) - 1) for axis in axes)):
        upper = [axis[i + 1] for axis, i in zip(axes, cell, strict=True)]
        if any(all(c >= u for c, u in zip(point, upper, strict=True)) for point in clipped):
            total += math.prod(axis[i + 1] - axis[i] for axis, i in zip(axes, cell, strict=True))
    return total


# Quarter steps make ties and duplicate coordinates common; -1.5 lies below the study's reference of -1.
coordinates = st.one_of(
    st.integers(-6, 4).map(lambda i: i / 4),
    st.floats(-1.5, 1.0, allow_nan=False, allow_subnormal=False),
)


def point_sets(dimension: int, max_points: int) -> st.SearchStrategy[list[tuple[float, ...]]]:
    return st.lists(st.tuples(*[coordinates] * dimension), max_size=max_points)


class TestCriterionMetrics:
    def test_correlations_match_scipy(self) -> None:
        """Spearman, Kendall and Pearson equal direct scipy calls on the same data."""
        result = criterion_metrics(PREDICTIONS, TRUTHS)
        assert result.spearman == pytest.approx(stats.spearmanr(PREDICTIONS, TRUTHS).statistic)
        assert result.kendall == pytest.approx(stats.kendalltau(PREDICTIONS, TRUTHS).statistic)
        assert result.pearson == pytest.approx(stats.pearsonr(PREDICTIONS, TRUTHS).statistic)
        assert (result.n, result.n_missing, result.constant, result.spearman_ci) == (8, 0, False, None)

    def test_mae_and_off_by_one_by_hand(self) -> None:
        """Errors 0, 1 and 3 give MAE 4/3, and two of three items are within one point."""
        result = criterion_metrics([1.0, 2.0, 4.0], [1.0, 3.0, 1.0])
        assert result.mae == pytest.approx(4 / 3)
        assert result.off_by_one == pytest.approx(2 / 3)

    def test_off_by_one_boundary_survives_float_noise(self) -> None:
        """A difference of exactly one in decimal (3.1 vs 2.1) counts as within one."""
        assert criterion_metrics([3.1, 1.0], [2.1, 1.0]).off_by_one == 1.0

    def test_missing_predictions_are_dropped_and_counted(self) -> None:
        """None (and NaN) predictions leave every statistic and count in n_missing."""
        result = criterion_metrics([1.0, None, 3.0, math.nan, 4.0], [1.0, 5.0, 2.0, 1.0, 4.0])
        clean = criterion_metrics([1.0, 3.0, 4.0], [1.0, 2.0, 4.0])
        assert (result.n, result.n_missing) == (3, 2)
        assert result == dataclasses.replace(clean, n_missing=2)

    def test_constant_predictions_give_zero_correlations_and_warn(self) -> None:
        """Constant predictions report 0.0 correlations, constant=True, and log a warning with n."""
        with capture_logs() as logs:
            result = criterion_metrics([3.0, 3.0, 3.0, None], [1.0, 2.0, 3.0, 4.0])
        assert (result.spearman, result.kendall, result.pearson, result.constant) == (0.0, 0.0, 0.0, True)
        assert result.mae == pytest.approx(1.0)
        assert [(e["event"], e["log_level"], e["n"]) for e in logs] == [("metrics.constant_predictions", "warning", 3)]

    def test_constant_truths_give_zero_correlations(self) -> None:
        """Constant truths are degenerate too: 0.0, never NaN."""
        with capture_logs() as logs:
            result = criterion_metrics([1.0, 2.0, 3.0], [4.0, 4.0, 4.0])
        assert (result.spearman, result.kendall, result.pearson, result.constant) == (0.0, 0.0, 0.0, True)
        assert [(e["event"], e["reason"]) for e in logs] == [("metrics.constant_predictions", "constant truths")]

    def test_single_scored_item_is_constant(self) -> None:
        """One scored item has no correlation: 0.0 and constant=True, but a real MAE."""
        result = criterion_metrics([2.0, None], [4.0, 1.0])
        assert (result.spearman, result.constant, result.n, result.mae, result.off_by_one) == (0.0, True, 1, 2.0, 0.0)

    def test_no_scored_items(self) -> None:
        """With every prediction missing, MAE is infinite and off-by-one is 0.0."""
        result = criterion_metrics([None, None], [1.0, 2.0])
        assert (result.n, result.n_missing, result.constant) == (0, 2, True)
        assert (result.mae, result.off_by_one, result.spearman) == (math.inf, 0.0, 0.0)

    def test_nan_from_scipy_becomes_zero(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A NaN statistic from scipy is reported as 0.0."""
        monkeypatch.setattr(stats, "kendalltau", lambda x, y: SimpleNamespace(statistic=math.nan))
        assert criterion_metrics(PREDICTIONS, TRUTHS).kendall == 0.0

    def test_mismatched_lengths(self) -> None:
        """Predictions and truths of different lengths are rejected, naming both lengths."""
        with pytest.raises(ValueError, match=r"3 predictions but 2 truths"):
            criterion_metrics([1.0, 2.0, 3.0], [1.0, 2.0])

    def test_bootstrap_interval_contains_estimate(self) -> None:
        """The bootstrap interval brackets the point estimate and is a proper interval."""
        predictions, truths = noisy_scores(7)
        result = criterion_metrics(predictions, truths, bootstrap_resamples=500)
        assert result.spearman_ci is not None
        low, high = result.spearman_ci
        assert -1.0 <= low < result.spearman < high <= 1.0

    def test_bootstrap_is_deterministic_per_seed(self) -> None:
        """The same seed gives the same interval; another seed a different one."""
        predictions, truths = noisy_scores(7)

        def interval(seed: int) -> tuple[float, float] | None:
            return criterion_metrics(predictions, truths, bootstrap_resamples=300, seed=seed).spearman_ci

        assert interval(1) == interval(1)
        assert interval(1) != interval(2)

    def test_bootstrap_skipped_when_undefined(self) -> None:
        """No interval without resamples, with fewer than 3 scored items, or on constant data."""
        assert criterion_metrics(PREDICTIONS, TRUTHS).spearman_ci is None
        assert criterion_metrics([1.0, 2.0, None], [1.0, 3.0, 2.0], bootstrap_resamples=100).spearman_ci is None
        assert criterion_metrics([2.0, 2.0, 2.0], [1.0, 3.0, 2.0], bootstrap_resamples=100).spearman_ci is None

    def test_bootstrap_tolerates_constant_resamples(self) -> None:
        """On few items many resamples are constant; they count as rho 0.0 and the interval stays finite."""
        result = criterion_metrics([1.0, 2.0, 3.0], [1.0, 3.0, 2.0], bootstrap_resamples=200)
        assert result.spearman_ci is not None
        assert all(math.isfinite(bound) for bound in result.spearman_ci)
        assert result.spearman_ci[0] <= 0.0


class TestAgreementStatistics:
    """Krippendorff's α (interval, ordinal) and quadratic-weighted κ, against values worked out by hand."""

    def test_interval_alpha_and_quadratic_kappa_match_the_hand_computation(self) -> None:
        """Pooled values 1,1,2,2,3,4: D_o = 2·1/6 = 1/3, D_e = 2·41/30, α = 1 − D_o/D_e = 36/41; κ: Σw·O = 1,
        Σw·E = 21/3, κ = 1 − 1/7."""
        m = criterion_metrics([1, 2, 3], [1, 2, 4])
        assert m.alpha_interval == pytest.approx(36 / 41)
        assert m.kappa_quadratic == pytest.approx(6 / 7)

    def test_ordinal_alpha_sees_only_the_order(self) -> None:
        """Stretching the top value changes the interval α, not the ordinal one."""
        near, far = criterion_metrics([1, 2, 3, 3], [1, 2, 4, 3]), criterion_metrics([1, 2, 3, 3], [1, 2, 9, 3])
        assert near.alpha_ordinal == pytest.approx(far.alpha_ordinal)
        assert near.alpha_interval != pytest.approx(far.alpha_interval)
        assert -1.0 <= near.alpha_ordinal < 1.0

    def test_perfect_agreement_is_one_and_averaged_labels_are_rounded_for_kappa(self) -> None:
        m = criterion_metrics([1, 2, 4], [4 / 3, 2, 11 / 3])
        assert m.kappa_quadratic == pytest.approx(1.0)
        exact = criterion_metrics([1, 2, 4, 5], [1, 2, 4, 5])
        assert (exact.alpha_interval, exact.alpha_ordinal, exact.kappa_quadratic) == pytest.approx((1, 1, 1))

    def test_undefined_cases_are_zero_not_nan(self) -> None:
        for m in (criterion_metrics([3, 3, 3], [3, 3, 3]), criterion_metrics([3], [2]), criterion_metrics([None], [2])):
            assert (m.alpha_interval, m.alpha_ordinal, m.kappa_quadratic) == (0.0, 0.0, 0.0)


class TestEvaluation:
    def test_criteria_follow_truths_order(self) -> None:
        """per_criterion and rho_vector are in the order of the truths mapping."""
        result = evaluate(PREDICTED_BY_CRITERION, TRUE_BY_CRITERION)
        assert list(result.per_criterion) == ["fluency", "coherence"]
        assert result.rho_vector() == (
            result.per_criterion["fluency"].spearman,
            result.per_criterion["coherence"].spearman,
        )

    def test_per_criterion_matches_criterion_metrics(self) -> None:
        """Each criterion's entry is criterion_metrics on that criterion's columns."""
        result = evaluate(PREDICTED_BY_CRITERION, TRUE_BY_CRITERION)
        for name in TRUE_BY_CRITERION:
            assert result.per_criterion[name] == criterion_metrics(
                PREDICTED_BY_CRITERION[name], TRUE_BY_CRITERION[name]
            )

    def test_macro_values_are_means(self) -> None:
        """Every macro value is the plain mean over criteria."""
        result = evaluate(PREDICTED_BY_CRITERION, TRUE_BY_CRITERION)
        parts = list(result.per_criterion.values())
        for field in ("spearman", "kendall", "pearson", "mae", "off_by_one"):
            expected = np.mean([getattr(m, field) for m in parts])
            assert getattr(result, f"macro_{field}") == pytest.approx(expected)

    def test_metric_orients_higher_is_better(self) -> None:
        """metric() returns the macro values, with MAE negated."""
        result = evaluate(PREDICTED_BY_CRITERION, TRUE_BY_CRITERION)
        assert result.metric("mae") == -result.macro_mae
        assert result.metric("spearman") == result.macro_spearman
        assert result.metric("kendall") == result.macro_kendall
        assert result.metric("pearson") == result.macro_pearson
        assert result.metric("off_by_one") == result.macro_off_by_one

    def test_gate_metrics_are_all_accepted(self) -> None:
        """Every name in GATE_METRICS is a valid metric."""
        result = evaluate(PREDICTED_BY_CRITERION, TRUE_BY_CRITERION)
        assert all(math.isfinite(result.metric(name)) for name in GATE_METRICS)

    def test_unknown_metric(self) -> None:
        """An unknown metric name is rejected, listing the valid ones."""
        with pytest.raises(ValueError, match=r"'accuracy'.*mae, spearman, kendall, pearson, off_by_one"):
            evaluate(PREDICTED_BY_CRITERION, TRUE_BY_CRITERION).metric("accuracy")

    def test_mismatched_criteria(self) -> None:
        """Predictions and truths must cover the same criteria; the error names the difference."""
        with pytest.raises(ValueError, match=r"only in predictions \['coherence'\], only in truths \['relevance'\]"):
            evaluate(PREDICTED_BY_CRITERION, {"fluency": TRUE_BY_CRITERION["fluency"], "relevance": [1.0] * 5})

    def test_no_criteria(self) -> None:
        """An evaluation without criteria has no macro values and is rejected."""
        with pytest.raises(ValueError, match="at least one criterion"):
            Evaluation({})

    def test_bootstrap_passes_through(self) -> None:
        """bootstrap_resamples and seed reach every criterion."""
        result = evaluate(PREDICTED_BY_CRITERION, TRUE_BY_CRITERION, bootstrap_resamples=50, seed=3)
        for name in TRUE_BY_CRITERION:
            expected = criterion_metrics(
                PREDICTED_BY_CRITERION[name], TRUE_BY_CRITERION[name], bootstrap_resamples=50, seed=3
            )
            assert expected.spearman_ci is not None
            assert result.per_criterion[name].spearman_ci == expected.spearman_ci


class TestNonDominated:
    def test_front_in_ascending_index_order(self) -> None:
        """Dominated points are dropped; the rest keep their ascending indices."""
        points = [(0.1, 0.9), (0.5, 0.5), (0.4, 0.4), (0.9, 0.1), (0.5, 0.2)]
        assert non_dominated(points) == [0, 1, 3]

    def test_weak_domination_counts(self) -> None:
        """Equal in one coordinate and worse in another is dominated."""
        assert non_dominated([(0.5, 0.4), (0.5, 0.5)]) == [1]

    def test_keeps_first_duplicate(self) -> None:
        """Of equal points only the first occurrence is kept."""
        assert non_dominated([(0.2, 0.3), (0.3, 0.2), (0.2, 0.3)]) == [0, 1]

    def test_empty(self) -> None:
        """No points, no front."""
        assert non_dominated([]) == []

    def test_mixed_dimensions(self) -> None:
        """Points of different dimensions are rejected."""
        with pytest.raises(ValueError, match="different dimensions"):
            non_dominated([(0.1, 0.2), (0.1, 0.2, 0.3)])


class TestHypervolume:
    def test_one_dimension(self) -> None:
        """In 1-D the hypervolume is best minus reference."""
        assert hypervolume([[0.3], [0.5], [-0.2]]) == pytest.approx(1.5)

    def test_two_dimensional_staircase(self) -> None:
        """(1,0), (0,1), (0.5,0.5) over reference -1, in vertical strips (width x height): 1x2 + 0.5x1.5 + 0.5x1."""
        assert hypervolume([(1.0, 0.0), (0.0, 1.0), (0.5, 0.5)]) == pytest.approx(3.25)

    def test_unit_cube(self) -> None:
        """The origin over reference -1 dominates the unit cube."""
        assert hypervolume([(0.0, 0.0, 0.0)]) == pytest.approx(1.0)

    def test_two_boxes_by_inclusion_exclusion(self) -> None:
        """(0,0,0) and (0.5,-0.5,0): 1 + 1.5*0.5*1 - 1*0.5*1 = 1.25."""
        assert hypervolume([(0.0, 0.0, 0.0), (0.5, -0.5, 0.0)]) == pytest.approx(1.25)

    def test_vector_reference(self) -> None:
        """A per-coordinate reference bounds each coordinate separately."""
        assert hypervolume([(1.0, 2.0, 3.0)], reference=(0.0, 1.0, 1.0)) == pytest.approx(2.0)

    def test_dominated_point_adds_nothing(self) -> None:
        """Adding a dominated point leaves the volume unchanged."""
        front = [(0.5, 0.0, 0.2), (0.0, 0.6, 0.1)]
        assert hypervolume([*front, (0.4, -0.1, 0.1)]) == pytest.approx(hypervolume(front))

    def test_points_below_reference_add_nothing(self) -> None:
        """A point at or below the reference in some coordinate spans an empty clipped box."""
        assert hypervolume([(0.5, -1.0), (2.0, -3.0)]) == 0.0
        assert hypervolume([(0.0, 0.0), (5.0, -1.0)]) == pytest.approx(1.0)

    def test_duplicates_count_once(self) -> None:
        """Repeating a point does not add volume."""
        assert hypervolume([(0.0, 0.0, 0.0)] * 3) == pytest.approx(1.0)

    def test_empty(self) -> None:
        """No points dominate nothing."""
        assert hypervolume([]) == 0.0

    def test_mixed_dimensions(self) -> None:
        """Points of different dimensions are rejected."""
        with pytest.raises(ValueError, match="different dimensions"):
            hypervolume([(0.1, 0.2), (0.3,)])

    def test_reference_dimension_mismatch(self) -> None:
        """A vector reference must have the points' dimension."""
        with pytest.raises(ValueError, match="reference has 2 coordinates but the points have 3"):
            hypervolume([(0.1, 0.2, 0.3)], reference=(0.0, 0.0))

    def test_six_dimensions_by_inclusion_exclusion(self) -> None:
        """6-D, (0,0,0,0,0,0) and (-0.5,0.5,0,0,0,0): |A| + |B| - |A and B| = 1 + 0.75 - 0.5."""
        a = (0.0,) * 6
        b = (-0.5, 0.5, 0.0, 0.0, 0.0, 0.0)
        assert hypervolume([a, b]) == pytest.approx(1.0 + 0.5 * 1.5 - 0.5 * 1.0)

    @settings(max_examples=200, deadline=None)
    @given(st.data())
    def test_matches_grid_reference(self, data: st.DataObject) -> None:
        """In 2-D to 4-D the result equals the exact union-of-boxes volume summed over a coordinate grid."""
        dimension = data.draw(st.integers(2, 4), label="dimension")
        points = data.draw(point_sets(dimension, 8 if dimension < 4 else 5), label="points")
        assert hypervolume(points) == pytest.approx(grid_volume(points, [-1.0] * dimension), abs=1e-12)

    @settings(max_examples=25, deadline=None)
    @given(point_sets(6, 4))
    def test_matches_grid_reference_in_six_dimensions(self, points: list[tuple[float, ...]]) -> None:
        """The exactness holds in 6-D too."""
        assert hypervolume(points) == pytest.approx(grid_volume(points, [-1.0] * 6), abs=1e-12)

    @settings(max_examples=100, deadline=None)
    @given(st.data())
    def test_invariant_to_point_order(self, data: st.DataObject) -> None:
        """Shuffling the points does not change the hypervolume."""
        dimension = data.draw(st.integers(1, 5), label="dimension")
        points = data.draw(point_sets(dimension, 12), label="points")
        shuffled = data.draw(st.permutations(points), label="shuffled")
        assert hypervolume(shuffled) == pytest.approx(hypervolume(points), abs=1e-12)


class TestHypervolumeIndicator:
    def test_equals_hypervolume_of_all_points(self) -> None:
        """Filtering to the non-dominated archive first does not change the volume."""
        vectors = [(0.1, 0.5, 0.2, 0.3), (0.4, 0.1, 0.2, 0.3), (0.0, 0.4, 0.1, 0.2), (0.4, 0.1, 0.2, 0.3)]
        assert hypervolume_indicator(vectors) == pytest.approx(hypervolume(vectors))

    def test_reference(self) -> None:
        """The reference bounds every coordinate."""
        assert hypervolume_indicator([(0.5, 0.5), (0.2, 0.8)], reference=0.0) == pytest.approx(0.25 + 0.2 * 0.3)

    @settings(max_examples=100, deadline=None)
    @given(st.data())
    def test_matches_hypervolume(self, data: st.DataObject) -> None:
        """For any rho vectors the indicator equals the hypervolume of all of them."""
        dimension = data.draw(st.integers(1, 4), label="dimension")
        vectors = data.draw(point_sets(dimension, 10), label="vectors")
        assert hypervolume_indicator(vectors) == pytest.approx(hypervolume(vectors), abs=1e-12)


PAIRED_TRUTHS = {"a": [1.0, 2.0, 3.0, 4.0, 5.0, 1.0, 2.0, 3.0, 4.0, 5.0], "b": [5.0, 4.0, 3.0, 2.0, 1.0] * 2}


class TestPairedDeltaInterval:
    def test_the_same_predictions_give_a_zero_interval(self) -> None:
        same: dict[str, list[float | None]] = {
            "a": [3.0, 1, 4, 1, 5, 9, 2, 6, 5, 3],
            "b": [2.0, 7, 1, 8, 2, 8, 1, 8, 2, 8],
        }
        assert paired_delta_interval(same, same, PAIRED_TRUTHS, resamples=200, seed=1) == (0.0, 0.0)

    def test_a_perfect_judge_beats_a_reversed_one_with_an_interval_above_zero(self) -> None:
        reversed_ = {c: [6.0 - v for v in t] for c, t in PAIRED_TRUTHS.items()}
        perfect = {c: list(t) for c, t in PAIRED_TRUTHS.items()}
        low, high = paired_delta_interval(reversed_, perfect, PAIRED_TRUTHS, resamples=200, seed=1) or (0.0, 0.0)
        assert 1.5 < low <= high <= 2.0

    def test_items_a_prompt_failed_on_are_left_out_and_too_few_give_none(self) -> None:
        scored = {c: list(t) for c, t in PAIRED_TRUTHS.items()}
        failed: dict[str, list[float | None]] = {c: [None] * 8 + list(t[8:]) for c, t in PAIRED_TRUTHS.items()}
        assert paired_delta_interval(failed, scored, PAIRED_TRUTHS, resamples=50, seed=1) is None
        assert paired_delta_interval(scored, scored, PAIRED_TRUTHS, resamples=0, seed=1) is None


class TestHalo:
    def test_planted_scores_give_the_known_mean_correlation(self) -> None:
        """Three criteria: b ranks as a (ρ 1), c reverses a (ρ −1 with a, −1 with b): the mean is −1/3. Items a
        criterion failed to score leave only that pair's common items."""
        scores: dict[str, list[float | None]] = {
            "a": [1, 2, 3, 4, 5],
            "b": [2, 3, 4, 5, 5.5],
            "c": [5, 4, 3, 2, 1],
        }
        assert halo(scores) == pytest.approx(-1 / 3)
        scores["c"] = [5, 4, None, 2, 1]
        assert halo(scores) == pytest.approx(-1 / 3)

    def test_one_number_for_every_criterion_is_a_full_halo(self) -> None:
        """A judge that writes the same score for every criterion: every pair correlates perfectly."""
        row = [1.0, 3.0, 2.0, 5.0, 4.0]
        assert halo({"a": row, "b": list(row), "c": list(row)}) == pytest.approx(1.0)

    def test_known_spearman_value(self) -> None:
        """Two criteria with one swapped pair among five items: ρ = 1 − 6·2/(5·24) = 0.9."""
        assert halo({"a": [1, 2, 3, 4, 5], "b": [2, 1, 3, 4, 5]}) == pytest.approx(0.9)

    @pytest.mark.parametrize(
        "scores",
        [
            {"a": [1.0, 2.0, 3.0]},
            {"a": [1.0, 2.0, 3.0], "b": [4.0, 4.0, 4.0]},
            {"a": [1.0, 2.0, None], "b": [1.0, 3.0, 5.0]},
        ],
        ids=["one-criterion", "constant-side", "under-three-shared-items"],
    )
    def test_undefined_halo_is_none(self, scores: dict[str, list[float | None]]) -> None:
        assert halo(scores) is None


def noisy(truths: dict[str, list[float]], scale: float, seed: int) -> dict[str, list[float | None]]:
    """The truths plus Gaussian noise of this scale: a judge that agrees less as ``scale`` grows."""
    rng = np.random.default_rng(seed)
    return {c: [float(v) for v in np.asarray(t) + rng.normal(0.0, scale, len(t))] for c, t in truths.items()}


NOISY_TRUTHS = {c: [float(v) for v in np.random.default_rng(7).integers(1, 6, 40)] for c in ("a", "b")}


class TestMeanDeltaInterval:
    """The configuration's interval: the mean over runs of Δ, one bootstrap draw of items for every run."""

    def test_identical_runs_give_the_one_runs_interval(self) -> None:
        before, after = noisy(NOISY_TRUTHS, 2.0, 1), noisy(NOISY_TRUTHS, 0.5, 2)
        one = paired_delta_interval(before, after, NOISY_TRUTHS, resamples=300, seed=3)
        three = mean_delta_interval([(before, after)] * 3, NOISY_TRUTHS, resamples=300, seed=3)
        assert one is not None and three == pytest.approx(one)
        assert one[0] < one[1]  # not degenerate: the equality says something

    def test_the_interval_contains_the_runs_mean_delta(self) -> None:
        runs = [(noisy(NOISY_TRUTHS, 3.0, 10 + r), noisy(NOISY_TRUTHS, 0.3 + 0.2 * r, 20 + r)) for r in range(3)]

        def macro(scores: Scores) -> float:
            return fmean(stats.spearmanr(scores[c], NOISY_TRUTHS[c]).statistic for c in NOISY_TRUTHS)

        mean_delta = fmean(macro(after) - macro(before) for before, after in runs)
        low, high = mean_delta_interval(runs, NOISY_TRUTHS, resamples=500, seed=4) or (9.0, -9.0)
        assert low < mean_delta < high
        assert low > 0.0  # every run improves markedly: the interval says so

    def test_a_planted_improvement_without_noise_is_degenerate_at_the_mean(self) -> None:
        """One run goes from a reversed judge to a perfect one (Δ 2), the other stays perfect (Δ 0): the mean Δ is 1
        on every resample."""
        reversed_ = {c: [6.0 - v for v in t] for c, t in PAIRED_TRUTHS.items()}
        perfect: dict[str, list[float | None]] = {c: list(t) for c, t in PAIRED_TRUTHS.items()}
        runs = [(reversed_, perfect), (perfect, perfect)]
        assert mean_delta_interval(runs, PAIRED_TRUTHS, resamples=200, seed=1) == pytest.approx((1.0, 1.0))

    def test_an_item_any_run_failed_on_is_left_out(self) -> None:
        scored: dict[str, list[float | None]] = {c: list(t) for c, t in PAIRED_TRUTHS.items()}
        failed: dict[str, list[float | None]] = {c: [None] * 8 + list(t[8:]) for c, t in PAIRED_TRUTHS.items()}
        assert mean_delta_interval([(scored, scored), (scored, failed)], PAIRED_TRUTHS, resamples=50, seed=1) is None
        assert mean_delta_interval([], PAIRED_TRUTHS, resamples=50, seed=1) is None


class TestMeanRhoIntervals:
    """A configuration's test ρ per criterion and macro, the mean over runs, with one bootstrap draw of items for
    every run and criterion."""

    def test_planted_judges_give_known_degenerate_intervals(self) -> None:
        """A perfect judge has ρ 1 on every resample; with a reversed run beside it the mean is 0 on every resample;
        one criterion perfect and one reversed make macro 0."""
        perfect: dict[str, list[float | None]] = {c: list(t) for c, t in PAIRED_TRUTHS.items()}
        reversed_: dict[str, list[float | None]] = {c: [6.0 - v for v in t] for c, t in PAIRED_TRUTHS.items()}
        split = {"a": perfect["a"], "b": reversed_["b"]}
        cases = [([perfect], (1.0, 1.0, 1.0)), ([perfect, reversed_], (0.0, 0.0, 0.0)), ([split], (1.0, -1.0, 0.0))]
        for runs, (a, b, macro) in cases:
            intervals = mean_rho_intervals(runs, PAIRED_TRUTHS, resamples=200, seed=1)
            assert intervals is not None
            for name, value in {"a": a, "b": b, "macro": macro}.items():
                assert intervals[name] == pytest.approx((value, value), abs=1e-12), (name, intervals)

    def test_the_intervals_hold_the_runs_mean_rho(self) -> None:
        runs = [noisy(NOISY_TRUTHS, 1.0 + 0.5 * r, 30 + r) for r in range(3)]
        intervals = mean_rho_intervals(runs, NOISY_TRUTHS, resamples=500, seed=4)
        assert intervals is not None and set(intervals) == {"a", "b", "macro"}
        rho = {c: fmean(stats.spearmanr(run[c], NOISY_TRUTHS[c]).statistic for run in runs) for c in NOISY_TRUTHS}
        for name, value in {**rho, "macro": fmean(rho.values())}.items():
            low, high = intervals[name]
            assert 0.0 < low < value < high < 1.0

    def test_too_few_items_or_no_resample_gives_none(self) -> None:
        scored: dict[str, list[float | None]] = {c: list(t) for c, t in PAIRED_TRUTHS.items()}
        failed: dict[str, list[float | None]] = {c: [None] * 8 + list(t[8:]) for c, t in PAIRED_TRUTHS.items()}
        assert mean_rho_intervals([scored, failed], PAIRED_TRUTHS, resamples=50, seed=1) is None
        assert mean_rho_intervals([scored], PAIRED_TRUTHS, resamples=0, seed=1) is None
        assert mean_rho_intervals([], PAIRED_TRUTHS, resamples=50, seed=1) is None
