"""`examples/study.yaml`, the study's grid, scaled down by the experiment's flags (1 step, 1 run, a few rows)
and run against the scripted endpoint under its own `study` profile, then `judgeopt report`: the full report with
the study's figures beside ours (Table 1 with Δ intervals and HVI both ways, trajectories, specificity pooled as
the study pooled it, interference per gate)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers.fake_openai import FakeOpenAI, RecordedRequest
from helpers.reports import section, table_rows
from helpers.scripts import DILUTED_RATING, SPECIFIC_RATING, deterministic_handler, study_role_of

from judgeopt.cli import main
from judgeopt.orchestrator.data.records import SUMMEVAL_CRITERIA

STUDY_GRID = Path(__file__).parents[2] / "examples" / "study.yaml"
MODES = ("single", "SSS", "SSC", "SCC", "CCC")
GATES = ("mae", "none")
SCALED_DOWN = ("--steps", "1", "--runs", "1", "--batch-size", "2")
ROWS = ("--train-size", "12", "--val-size", "4", "--test-size", "6")
"""Few rows of the file's own data, the study's split (summeval-wgc): seeded samples of its training and test files."""


def first_row(text: str, *lead: str) -> list[str]:
    found = [cells for cells in table_rows(text) if tuple(cells[: len(lead)]) == lead]
    assert found, f"no row {lead}"
    return found[0]


RECEIVED: list[RecordedRequest] = []
"""Every request the scripted endpoint received during the experiment."""


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    directory = tmp_path_factory.mktemp("study-grid") / "experiment"
    with FakeOpenAI(deterministic_handler(topical_gradients=True)) as fake, pytest.MonkeyPatch.context() as patch:
        for variable in ("JUDGEOPT_API_KEY", "OPENAI_API_KEY"):  # the file names them; the fake ignores them
            patch.setenv(variable, "not-a-key")
        flags = ["--endpoint", fake.base_url, "--evaluator-endpoint", fake.base_url, *SCALED_DOWN, *ROWS]
        assert main(["experiment", "--config", str(STUDY_GRID), "--dir", str(directory), *flags]) == 0
        RECEIVED[:] = fake.requests
    assert main(["report", str(directory)]) == 0
    return directory, (directory / "report.md").read_text(encoding="utf-8")


def test_every_call_speaks_the_study_protocol(report: tuple[Path, str]) -> None:
    """Every request (the interference judge and the evaluator's diagnostics included) was rendered from the
    study's templates, and none carries a criterion's definition."""
    roles = [study_role_of(r) for r in RECEIVED]
    assert None not in roles
    assert {"judge", "loss", "gradient", "optimizer", "evaluator"} <= set(roles)
    evaluator = [r.last_user_text for r in RECEIVED if study_role_of(r) == "evaluator"]
    assert sum("Possible tasks:" in text for text in evaluator) == 5 * 2 * 4  # every mode, gate, criterion
    evaluator_settings = {
        (r.body.get("temperature"), r.body.get("max_tokens")) for r in RECEIVED if study_role_of(r) == "evaluator"
    }
    assert evaluator_settings == {(0.0, 10)}  # the profile's, not the file's (which sets neither)
    for request in RECEIVED:
        assert not any(c.description in request.last_user_text for c in SUMMEVAL_CRITERIA)


def test_every_cell_ran_the_study_profile(report: tuple[Path, str]) -> None:
    directory, _ = report
    cells = sorted(p.name for p in (directory / "cells").iterdir())
    assert cells == sorted(f"{m}-{g}-run0" for m in MODES for g in GATES)
    for cell in cells:
        summary = json.loads((directory / "cells" / cell / "summary.json").read_text())
        assert summary["status"] == "complete"
        assert [s["step"] for s in summary["steps"]] == [0, 1]
        assert summary["profile"] == "study"
        assert {"steps", "dataset.test_size"} <= set(summary["differs_from_study"])


def test_table1_has_intervals_and_hvi_both_ways(report: tuple[Path, str]) -> None:
    """One row per configuration: a paired-bootstrap Δ interval for its run, HVI as the runs' mean and as the
    study's (one run: the two agree), and the study's Table 1 values (with its HVI) beside the MAE rows."""
    directory, markdown = report
    table = section(markdown, "Table 1: initial and best macro ρ per configuration")
    for mode in MODES:
        for gate in GATES:
            cells = first_row(table, mode, gate)
            summary = json.loads((directory / "cells" / f"{mode}-{gate}-run0" / "summary.json").read_text())
            low, high = summary["delta_macro_rho"]["ci95"]
            assert cells[6] == cells[7] == f"[{low:+.3f}, {high:+.3f}]"  # one run: its interval is the configuration's
            assert cells[8] == cells[9] == f"{summary['hvi']:.3f}"
    assert first_row(table, "SSS", "mae")[-1] == "0.284 → 0.284 (step 0), HVI 2.749"
    assert first_row(table, "CCC", "mae")[-1] == "0.285 → 0.296 (step 9), HVI 2.900"
    assert first_row(table, "CCC", "none")[-1] == "—"


def test_trajectories_and_charts_are_drawn(report: tuple[Path, str]) -> None:
    directory, markdown = report
    figures = re.findall(r"!\[[^\]]*\]\(report_files/([^)]+)\)", markdown)
    expected = {f"trajectories-gate-{g}.png" for g in GATES} | {"specificity-drop.png", "diagnostics.png"}
    assert expected <= set(figures)
    for name in expected:
        assert (directory / "report_files" / name).read_bytes().startswith(b"\x89PNG")


def test_specificity_drop_beside_the_study(report: tuple[Path, str]) -> None:
    """The scripted evaluator reads per-criterion gradients as focused (9) and joint ones as diluted (4): pooled
    as the study pooled them, 9.00 vs 4.00, a change of −56%, beside the study's 9.00 / 3.70 / −59%."""
    _, markdown = report
    text = section(markdown, "Diagnostics: gradient specificity and optimizer adherence")
    change = f"{(DILUTED_RATING / SPECIFIC_RATING - 1) * 100:+.0f}%"
    expected = [f"{SPECIFIC_RATING:.2f}", f"{DILUTED_RATING:.2f}", change]
    assert first_row(text, "all gates (the study's pooling)")[2:] == expected
    for gate in GATES:
        assert first_row(text, f"gate {gate}")[2:] == expected
    assert first_row(text, "study (arXiv 2605.26046)")[2:] == ["9.00", "3.70", "-59%"]


def test_interference_per_gate_beside_the_study(report: tuple[Path, str]) -> None:
    """Three rows per gate (generic, judged alone, stitched) with per-criterion ρ, and the study's three."""
    directory, markdown = report
    data = json.loads((directory / "interference.json").read_text())
    assert sorted(data["gates"]) == sorted(GATES)
    text = section(markdown, "Instruction interference: stitched vs generic vs separate")
    for lead in (*(f"gate {g}" for g in GATES), "study (arXiv 2605.26046)"):
        rows = [cells for cells in table_rows(text) if cells[0] == lead]
        assert [r[1].split(" ")[0] for r in rows] == ["generic", "best", "stitched"]
    assert data["select_on"] == "test"  # the file's choice: the study's
    for gate, result in data["gates"].items():
        stitched = first_row(text, f"gate {gate}", "stitched (the best instructions in one prompt)")
        assert stitched[6] == f"{result['stitched']['macro_rho']:.3f}"
        steps = json.loads((directory / "cells" / f"single-{gate}-run0" / "summary.json").read_text())["steps"]
        for criterion, pick in result["picks"].items():
            assert pick["rho"] == max(s["rho"][criterion] for s in steps)
    assert first_row(text, "study (arXiv 2605.26046)", "stitched (the best instructions in one prompt)")[6] == "0.220"
