"""The study's analyses on planted numbers: the interference picks (best instruction per criterion over every
Single-Task run and step) and gradient specificity pooled per-criterion vs joint, with its relative change."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from judgeopt.core.errors import ConfigError
from judgeopt.orchestrator.engine.artifacts import PromptState
from judgeopt.orchestrator.engine.store import Diagnostic, StepRecord
from judgeopt.orchestrator.study.interference import pick_best
from judgeopt.orchestrator.study.reporting.aggregate import aggregate, pooled_specificity
from judgeopt.orchestrator.study.reporting.document import Table
from judgeopt.orchestrator.study.reporting.inputs import Cell, Configuration, RunTestScores, Study
from judgeopt.orchestrator.study.reporting.sections import specificity_drop_blocks


def step(step: int, rho: float | None, val: float | None = None) -> StepRecord:
    prompt = PromptState("", (("fluency", f"instruction of step {step} (rho {rho})"),))
    test = None if rho is None else {"rho": {"fluency": rho}}
    return StepRecord("fluency", step, "accepted", prompt, None, val, None, test, ())


class TestInterferencePicks:
    RUNS: ClassVar[dict[str, list[StepRecord]]] = {
        "single-mae-run0": [step(0, 0.30, -0.9), step(1, 0.41, -0.8), step(2, 0.35, -0.5)],
        "single-mae-run1": [step(0, 0.31, -0.9), step(1, 0.44, -0.7), step(2, None, -0.1)],
        "single-mae-run2": [step(0, 0.29, -0.9), step(1, 0.44, -0.6)],
    }

    def test_best_on_test_over_every_run_and_step(self) -> None:
        """The highest test ρ of any run at any tested step; a tie goes to the earliest step, then the first run."""
        pick = pick_best("fluency", self.RUNS, "test")
        assert (pick.cell, pick.step, pick.rho) == ("single-mae-run1", 1, 0.44)
        assert pick.instruction == "instruction of step 1 (rho 0.44)"

    def test_best_on_validation_among_tested_steps(self) -> None:
        """On validation: the highest validation metric among steps with a test score (run1's step 2 has none);
        the pick's ρ is its test ρ judged alone."""
        pick = pick_best("fluency", self.RUNS, "val")
        assert (pick.cell, pick.step, pick.rho) == ("single-mae-run0", 2, 0.35)

    def test_no_tested_step_is_refused(self) -> None:
        with pytest.raises(ConfigError, match="no tested step of criterion 'fluency'"):
            pick_best("fluency", {"single-mae-run0": [step(1, None)]}, "test")


def cell(mode: str, gate: str, run: int, *scores: float | None, adherence: float = 2.0) -> Cell:
    ratings = [Diagnostic("all", k + 1, "fluency", "specificity", s, 1, "") for k, s in enumerate(scores)]
    ratings.append(Diagnostic("all", 1, "fluency", "adherence", adherence, 1, ""))
    return Cell(f"{mode}-{gate}-run{run}", mode, gate, {}, tuple(ratings), {}, {}, {}, 0.0)


# Mode means: single 9, SSS 9, SSC 10 -> per-criterion 9.333 (pooled over items it would be 64/7 = 9.143);
# SCC 3, CCC 5 -> joint 4.0 (over items 3.286); change 4 / 9.333 - 1 = -57.1%. A custom policy takes no part,
# a failed rating (None) and adherence ratings are left out.
PLANTED = (
    cell("single", "mae", 0, 9, 9),
    cell("single", "none", 0, 9, 9, None),
    cell("SSS", "mae", 0, 8),
    cell("SSS", "none", 0, 10),
    cell("SSC", "mae", 0, 10),
    cell("SCC", "mae", 0, 3, 3, 3),
    cell("SCC", "none", 0, 3, 3, 3),
    cell("CCC", "none", 0, 5),
    cell("mine", "mae", 0, 1, 1),
)


def test_pooled_as_the_study_pooled() -> None:
    """Per-criterion and joint means are means of the modes' means, and the change is joint / per-criterion − 1."""
    pooled = pooled_specificity(PLANTED)
    assert pooled.mode_means == {"single": 9.0, "SSS": 9.0, "SSC": 10.0, "SCC": 3.0, "CCC": 5.0, "mine": 1.0}
    assert pooled.per_criterion == pytest.approx(28 / 3)
    assert pooled.joint == pytest.approx(4.0)
    assert pooled.change == pytest.approx(4.0 / (28 / 3) - 1)


def test_no_joint_mode_gives_no_change() -> None:
    pooled = pooled_specificity([c for c in PLANTED if c.mode in ("single", "SSS")])
    assert pooled.joint is None and pooled.change is None


def test_report_rows_beside_the_study() -> None:
    """The report's table: all gates pooled, then each gate, then the study's 9.0 / 3.7 / −59%, and the chart."""
    study = Study(
        Path("planted"),
        "experiment",
        ("single", "SSS", "SSC", "SCC", "CCC", "mine"),
        ("mae", "none"),
        1,
        {},
        {},
        PLANTED,
        None,
    )
    blocks = specificity_drop_blocks(study)
    (table,) = [b for b in blocks if isinstance(b, Table)]
    rows = {row[0]: row[2:] for row in table.rows}
    assert rows["all gates (the study's pooling)"] == ("9.33", "4.00", "-57%")
    # per gate: mae has single 9, SSS 8, SSC 10 -> 9.0; SCC 3 -> 3.0 (-67%); none: single 9, SSS 10 -> 9.5;
    # SCC 3, CCC 5 -> 4.0 (-58%)
    assert rows["gate mae"] == ("9.00", "3.00", "-67%")
    assert rows["gate none"] == ("9.50", "4.00", "-58%")
    assert rows["study (arXiv 2605.26046)"] == ("9.00", "3.70", "-59%")
    assert any(getattr(b, "name", "") == "specificity-drop.png" for b in blocks)


TRUTHS = [float(k % 5 + 1) for k in range(10)]


def run_cell(run: int, ids: Sequence[str], truths: list[float], before: list[float], after: list[float]) -> Cell:
    """A finished SSS run on one criterion, tested at steps 0 and 1 (step 1 chosen on validation)."""
    steps = [
        {"step": t, "macro_rho": rho, "val_metric": val, "rho": {"fluency": rho}}
        for t, rho, val in ((0, 0.0, 0.0), (1, 0.1, 0.5))
    ]
    scores = {0: {"fluency": list[float | None](before)}, 1: {"fluency": list[float | None](after)}}
    test = RunTestScores(tuple(ids), {"fluency": tuple(truths)}, scores, 200, 5)
    return Cell(f"SSS-mae-run{run}", "SSS", "mae", {"steps": steps}, (), {}, {}, {}, 0.0, test=test)


class TestConfigurationDeltaInterval:
    """Table 1's configuration interval: the runs' test predictions aligned by item, one draw for every run."""

    IDS = tuple(f"s{k}" for k in range(10))
    BEFORE: ClassVar[list[float]] = [3.0, 1, 4, 1, 5, 9, 2, 6, 5, 3]
    AFTER: ClassVar[list[float]] = [1.0, 2, 3, 4, 4, 1, 2, 3, 5, 5]

    def interval(self, *cells: Cell) -> tuple[float, float] | None:
        return aggregate(Configuration("SSS", "mae", cells), ["fluency"]).delta_interval

    def test_a_run_repeated_in_another_item_order_gives_the_runs_interval(self) -> None:
        """The same run stored with its test items in another order: aligned by item, the configuration's
        interval is the run's own (unaligned, it would mix unrelated items)."""
        run = run_cell(0, self.IDS, TRUTHS, self.BEFORE, self.AFTER)
        order = [9, 3, 0, 7, 1, 8, 2, 6, 4, 5]

        def permuted(values: Sequence[Any]) -> list[Any]:
            return [values[k] for k in order]

        again = run_cell(1, permuted(self.IDS), permuted(TRUTHS), permuted(self.BEFORE), permuted(self.AFTER))
        one = self.interval(run)
        assert one is not None and one[0] < one[1]
        assert self.interval(run, again) == pytest.approx(one)

    def test_no_test_predictions_give_no_interval(self) -> None:
        bare = Cell("SSS-mae-run0", "SSS", "mae", {"steps": []}, (), {}, {}, {}, 0.0)
        assert self.interval(bare) is None
