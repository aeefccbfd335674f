"""The Pareto (non-regression) gate and the archive of non-dominated prompts: the gate on planted evaluations, the
archive and its three choice rules on planted vectors, and the gate in a run on the scripted endpoint, where a
candidate that trades one criterion for the others passes the MAE gate and is refused by the Pareto gate."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from helpers.fake_openai import Completion, FakeOpenAI, RecordedRequest, Reply
from helpers.runs import write_config
from helpers.scripts import deterministic_handler, role_of

from judgeopt.cli import main
from judgeopt.core.errors import ConfigError
from judgeopt.orchestrator.config import RunConfig
from judgeopt.orchestrator.data.records import CriterionSpec
from judgeopt.orchestrator.engine.metrics import evaluate
from judgeopt.orchestrator.engine.pareto import (
    ArchiveMember,
    admitted,
    choose,
    drop_intervals,
    metric_bounds,
    regressions,
)

TRUTHS = {"clarity": [1.0, 2.0, 3.0, 4.0, 5.0, 3.0], "accuracy": [2.0, 3.0, 4.0, 5.0, 4.0, 3.0]}
BEFORE = {"clarity": [2.0, 3.0, 2.0, 3.0, 4.0, 3.0], "accuracy": [2.0, 3.0, 4.0, 5.0, 4.0, 4.0]}  # MAE 0.67, 0.17
TRADED = {"clarity": [1.0, 2.0, 3.0, 4.0, 5.0, 3.0], "accuracy": [3.0, 4.0, 5.0, 5.0, 3.0, 4.0]}  # MAE 0.00, 0.83


class TestGate:
    def test_a_trade_raises_macro_mae_fitness_but_one_criterion_drops_beyond_epsilon(self) -> None:
        """The planted candidate is better on macro MAE (what the MAE gate compares) and worse by 0.67 on
        accuracy: the Pareto gate names accuracy, and only accuracy, at ε = 0.5; at ε = 0.7 nothing."""
        before, after = evaluate(BEFORE, TRUTHS), evaluate(TRADED, TRUTHS)
        assert after.metric("mae") > before.metric("mae")  # the MAE gate accepts it
        assert regressions(before.values("mae"), after.values("mae"), 0.5) == ["accuracy"]
        assert regressions(before.values("mae"), after.values("mae"), 0.7) == []
        assert regressions(before.values("mae"), before.values("mae"), 0.0) == []

    def test_the_drop_interval_refuses_only_a_drop_that_is_clearly_beyond_epsilon(self) -> None:
        """One item of six worse by 2 (a drop of 0.33 whose interval reaches 0) is not refused with the interval
        option; a drop on every item (interval wholly above ε) is."""
        one_item = {**BEFORE, "accuracy": [2.0, 3.0, 4.0, 5.0, 4.0, 6.0]}  # item 6: error 1 -> 3
        every_item = {**BEFORE, "accuracy": [4.0, 5.0, 2.0, 3.0, 2.0, 1.0]}  # errors of 2 everywhere
        before = evaluate(BEFORE, TRUTHS).values("mae")
        for planted, refused in ((one_item, []), (every_item, ["accuracy"])):
            after = evaluate(planted, TRUTHS).values("mae")
            assert regressions(before, after, 0.1) == ["accuracy"]  # the point drop alone exceeds ε
            intervals = drop_intervals(
                BEFORE, planted, TRUTHS, metric="mae", worst={"clarity": 4, "accuracy": 4}, resamples=300, seed=1
            )
            assert set(intervals) == {"clarity", "accuracy"}
            assert intervals["clarity"] == (0.0, 0.0)  # unchanged scores: a paired drop of exactly 0
            assert regressions(before, after, 0.1, intervals) == refused

    def test_an_unscored_item_counts_as_the_worst_error_in_the_interval(self) -> None:
        failing = {**BEFORE, "clarity": [None, None, None, 3.0, 4.0, 3.0]}
        intervals = drop_intervals(
            BEFORE, failing, TRUTHS, metric="mae", worst={"clarity": 4, "accuracy": 4}, resamples=200, seed=2
        )
        assert intervals["clarity"][0] > 0.0
        left_out = drop_intervals(BEFORE, failing, TRUTHS, metric="mae", worst=None, resamples=200, seed=2)
        assert left_out["clarity"][1] < intervals["clarity"][0]

    def test_unknown_gate_metric_is_refused(self) -> None:
        assert RunConfig(gate="pareto", gate_metric="spearman").gate_metric == "spearman"
        with pytest.raises(ValueError, match="unknown gate metric 'rho'"):
            RunConfig(gate="pareto", gate_metric="rho")
        with pytest.raises(ValueError, match="archive weight of criterion 'clarity' is negative"):
            RunConfig(archive_weights={"clarity": -1.0})


def _member(step: int, x: float, y: float) -> ArchiveMember:
    """A member whose Spearman values scale to (x, y) in 0-1 (Spearman's range is -1..1)."""
    return ArchiveMember(step, f"p{step}", {"clarity": 2 * x - 1, "accuracy": 2 * y - 1})


CRITERIA = [CriterionSpec(name="clarity"), CriterionSpec(name="accuracy")]
BOUNDS = metric_bounds("spearman", CRITERIA)
A, B, C = _member(1, 0.9, 0.1), _member(2, 0.45, 0.45), _member(3, 0.3, 0.95)
"""Scaled hypervolume contributions: A 0.45 x 0.1 = 0.045, B 0.15 x 0.35 = 0.0525, C 0.3 x 0.5 = 0.15; minima 0.1,
0.45, 0.3; clarity-weighted (3:1) sums 2.8, 1.8, 1.85."""


class TestArchive:
    def test_dominated_members_leave_and_incomparable_ones_stay(self) -> None:
        names = ["clarity", "accuracy"]
        archive = admitted([], _member(0, 0.2, 0.2), names)
        archive = admitted(archive, A, names)
        assert [m.step for m in archive] == [0, 1]  # incomparable
        archive = admitted(archive, _member(4, 0.3, 0.3), names)
        assert [m.step for m in archive] == [1, 4]  # step 0 dominated
        assert [m.step for m in admitted(archive, _member(5, 0.3, 0.3), names)] == [1, 4]  # an equal one: not added
        assert [m.step for m in admitted(archive, _member(6, 0.1, 0.05), names)] == [1, 4]  # dominated: not added

    def test_each_rule_chooses_its_own_member(self) -> None:
        archive = [A, B, C]
        assert choose(archive, rule="hypervolume", bounds=BOUNDS).step == 3
        assert choose(archive, rule="maxmin", bounds=BOUNDS).step == 2
        assert choose(archive, rule="weights", bounds=BOUNDS, weights={"clarity": 3.0}).step == 1
        assert choose(archive, rule="weights", bounds=BOUNDS).step == 3  # equal weights: 1.0, 0.9, 1.25

    def test_hypervolume_counts_what_only_the_member_covers_not_its_own_box(self) -> None:
        """D has the largest box (0.36) but shares most of it with E; F alone covers 0.1 x 0.35 = 0.035, more than
        D's 0.025 or E's 0.0275."""
        d, e, f = _member(1, 0.6, 0.6), _member(2, 0.65, 0.55), _member(3, 0.1, 0.95)
        assert choose([d, e, f], rule="hypervolume", bounds=BOUNDS).step == 3
        assert choose([d, e, f], rule="maxmin", bounds=BOUNDS).step == 1

    def test_a_tie_goes_to_the_earliest_step_and_mae_is_scaled_by_the_scale(self) -> None:
        mae_bounds = metric_bounds("mae", [CriterionSpec(name="clarity", min_score=0, max_score=1), CRITERIA[1]])
        assert mae_bounds == {"clarity": (-1.0, 0.0), "accuracy": (-4.0, 0.0)}
        later = ArchiveMember(7, "q", {"clarity": -0.5, "accuracy": -1.0})  # scaled 0.5, 0.75
        earlier = ArchiveMember(2, "r", {"clarity": -0.25, "accuracy": -2.0})  # scaled 0.75, 0.5
        assert choose([later, earlier], rule="maxmin", bounds=mae_bounds).step == 2
        with pytest.raises(ConfigError, match="archive_weights: unknown criterion 'tone'"):
            choose([later], rule="weights", bounds=mae_bounds, weights={"tone": 1.0})


MARK = "ZZTRADE"
BASE = {"coherence": 1, "consistency": 1, "fluency": 1, "relevance": 4}
TRADE = {"coherence": 5, "consistency": 5, "fluency": 5, "relevance": 1}
"""SummEval's experts rate consistency and fluency high and relevance mid-scale: the trade brings three criteria
closer (macro MAE improves) and pushes relevance away."""


def trading_handler() -> object:
    """The deterministic scripted roles, with a judge that answers BASE, or TRADE once the optimizer's mark is in
    its prompt (every candidate carries it)."""
    scripted = deterministic_handler(worse_marker=MARK)

    def handle(request: RecordedRequest) -> Reply:
        if role_of(request) == "judge":
            scores = TRADE if MARK in request.last_user_text else BASE
            return Completion(json.dumps(scores), prompt_tokens=50, completion_tokens=8)
        return scripted(request)

    return handle


def _figures(run_dir: Path) -> dict[int, tuple[str, float, dict[str, Any]]]:
    """Per step: its status, validation metric and validation figures, from the store."""
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        rows = db.execute("SELECT step, status, val_metric, val FROM steps ORDER BY step").fetchall()
    return {step: (status, metric, json.loads(val)) for step, status, metric, val in rows}


def test_the_pareto_gate_refuses_a_trade_the_mae_gate_would_accept(tmp_path: Path) -> None:
    """A scripted run: the candidate's macro MAE-fitness beats the initial prompt's (the MAE gate's comparison,
    ``candidate >= current``, accepts it) while relevance drops by more than ε; the Pareto gate refuses it, names
    relevance, and the archive keeps the initial prompt alone, which ``best`` reports."""
    with FakeOpenAI(trading_handler()) as server:  # type: ignore[arg-type]
        config = write_config(tmp_path / "run.yaml", server.base_url, gate="pareto", steps=1, gate_epsilon=0.5)
        assert main(["optimize", "--config", str(config), "--run-dir", str(tmp_path / "run")]) == 0
    steps = _figures(tmp_path / "run")
    (_, initial_metric, initial), (status, _, refused) = steps[0], steps[1]
    candidate = refused["candidate"]
    mae_fitness = sum(candidate["gate_values"].values()) / len(candidate["gate_values"])
    assert mae_fitness > initial_metric  # what the MAE gate compares: it would accept
    assert candidate["mae"]["relevance"] - initial["mae"]["relevance"] > 0.5
    assert all(candidate["mae"][c] <= initial["mae"][c] for c in ("coherence", "consistency", "fluency"))
    assert status == "rejected" and candidate["regressed"] == ["relevance"]
    assert refused["gate_values"] == initial["gate_values"]  # the prompt held is still the initial one
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["gate"] == "pareto" and "gate" in summary["differs_from_study"]
    archive = summary["archive"]["all"]
    assert [m["step"] for m in archive["members"]] == [0] and archive["chosen"] == 0
    assert archive["members"][0]["values"] == pytest.approx({c: -v for c, v in initial["mae"].items()})
    assert summary["best"]["step"] == 0
