"""``examples/mitigations.yaml``: its grid is valid, and a scaled-down run of it (one mode, the Pareto gate, the
plain and the all-mitigations variants, one step, on the scripted endpoint) produces the report with one
configuration per variant and the Mitigations section."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml
from helpers.fake_openai import FakeOpenAI
from helpers.runs import run_settings, scripted_model
from helpers.scripts import deterministic_handler

from judgeopt.cli import main
from judgeopt.orchestrator.config import GridConfig, RunConfig, load_config
from judgeopt.orchestrator.study.experiment import cell_configs

EXAMPLE = Path(__file__).parents[2] / "examples" / "mitigations.yaml"


def test_the_example_grid_crosses_modes_gates_and_variants() -> None:
    config = load_config(EXAMPLE)
    cells = cell_configs(config.grid, config.run)
    assert len(cells) == 5 * 2 * 5 * 3
    both = cells["SCC-pareto-fallback_arbiter-run2"]
    assert (both.mode, both.gate, both.seed, both.gate_epsilon) == ("SCC", "pareto", 2, 0.1)
    assert both.specificity_fallback == 0.2 and both.conflict_arbiter
    plain = cells["CCC-mae-plain-run0"]
    assert plain.specificity_fallback is None and not plain.conflict_arbiter and not plain.archive_recombine
    assert cells["SSS-mae-all-run0"].archive_recombine
    assert set(cell_configs(GridConfig(modes=("SSS",), gates=("mae",), runs=1), RunConfig())) == {"SSS-mae-run0"}
    with pytest.raises(ValueError, match="variant 'x' sets 'gate', which the grid decides"):
        GridConfig(variants={"x": {"gate": "none"}})


def test_a_scaled_down_mitigations_grid_produces_the_report(tmp_path: Path) -> None:
    example = yaml.safe_load(EXAMPLE.read_text())
    variants = {name: example["grid"]["variants"][name] for name in ("plain", "fallback_arbiter")}
    grid = {"modes": ["SCC"], "gates": ["pareto"], "runs": 1, "variants": variants}
    grid |= {"diagnostics": False, "interference": False}
    with FakeOpenAI(deterministic_handler()) as server:
        config = {
            "models": {"default": scripted_model(server.base_url)},
            "run": run_settings(steps=1, gate_epsilon=example["run"]["gate_epsilon"]),
            "grid": grid,
        }
        (tmp_path / "grid.yaml").write_text(yaml.safe_dump(config))
        directory = tmp_path / "exp"
        assert main(["experiment", "--grid", str(tmp_path / "grid.yaml"), "--dir", str(directory)]) == 0
    assert sorted(p.name for p in (directory / "cells").iterdir()) == [
        "SCC-pareto-fallback_arbiter-run0",
        "SCC-pareto-plain-run0",
    ]
    assert main(["report", str(directory)]) == 0
    report = (directory / "report.md").read_text()
    assert "SCC (gate pareto, plain)" in report and "SCC (gate pareto, fallback_arbiter)" in report
    mitigations = report.split(". Mitigations", 1)[1]
    rows = [line for line in mitigations.splitlines() if line.startswith("| SCC-pareto-")]
    assert len(rows) == 2  # both cells have the archive; only one has the fallback and the arbiter, none recombines
    plain = next(r for r in rows if "-plain-" in r)
    both = next(r for r in rows if "-fallback_arbiter-" in r)
    assert plain.count("—") == 8 and both.count("—") == 2
    for cell in ("SCC-pareto-plain-run0", "SCC-pareto-fallback_arbiter-run0"):  # every call answered
        with sqlite3.connect(directory / "cells" / cell / "run.sqlite") as db:
            assert db.execute("SELECT COUNT(*) FROM calls WHERE outcome != 'ok'").fetchone() == (0,)
            arbiter = db.execute("SELECT COUNT(*) FROM calls WHERE purpose = 'arbiter'").fetchone()[0]
        assert arbiter == (1 if "fallback_arbiter" in cell else 0)
