"""Experiments: a grid of runs sharing one set of services, resumable cell by cell."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.eventually import wait_until
from helpers.fake_openai import FakeOpenAI
from helpers.runs import assert_audited_every_call, run_settings, scripted_model
from helpers.scripts import DILUTED_RATING, SPECIFIC_RATING, deterministic_handler, role_of
from helpers.services import served_agents

from judgeopt.cli import main
from judgeopt.orchestrator.engine import summary as summary_module
from judgeopt.orchestrator.engine.metrics import paired_delta_interval


@pytest.fixture(scope="module")
def scripted() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(deterministic_handler(topical_gradients=True)) as server:
        yield server


def grid_file(path: Path, base_url: str, **grid: Any) -> Path:
    config = {
        "models": {"default": scripted_model(base_url)},
        "run": run_settings(),
        "grid": {"modes": ["SSS", "CCC"], "gates": ["mae", "none"], "runs": 2, **grid},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def cell_calls(cell: Path) -> int:
    with sqlite3.connect(cell / "run.sqlite") as db:
        count: int = db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    return count


def cell_status(cell: Path) -> str | None:
    if not (cell / "run.sqlite").exists():
        return None
    try:
        with sqlite3.connect(f"file:{cell / 'run.sqlite'}?mode=ro", uri=True) as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'status'").fetchone()
    except sqlite3.OperationalError:  # the store is being created
        return None
    return None if row is None else str(json.loads(row[0]))


class TestExperimentGrid:
    def test_grid_runs_every_cell_with_diagnostics_on_shared_services(
        self,
        scripted: FakeOpenAI,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """2 modes × 2 gates × 2 runs: eight complete run directories with their own seeds, one set of services
        (five: the evaluator too), diagnostics stored per step and criterion, each cell passes its audit, and the
        ungated cells are warned about once. Each cell's Δ interval is bootstrapped once, at its run's end (the
        diagnostics only bring its spend up to date)."""
        intervals: list[object] = []

        def counted(*args: Any, **kwargs: Any) -> Any:
            intervals.append(args)
            return paired_delta_interval(*args, **kwargs)

        monkeypatch.setattr(summary_module, "paired_delta_interval", counted)
        directory = tmp_path / "exp"
        assert (
            main(
                [
                    "experiment",
                    "--grid",
                    str(grid_file(tmp_path / "g.yaml", scripted.base_url)),
                    "--dir",
                    str(directory),
                ]
            )
            == 0
        )
        warned = [line for line in capsys.readouterr().err.splitlines() if "gate none" in line]
        assert len(warned) == 1, warned  # four ungated cells, one warning for the grid
        cells = sorted(p.name for p in (directory / "cells").iterdir())
        assert cells == [f"{m}-{g}-run{k}" for m in ("CCC", "SSS") for g in ("mae", "none") for k in (0, 1)]
        seeds = {
            c: json.loads((directory / "cells" / c / "summary.json").read_text())["provenance"]["seed"] for c in cells
        }
        assert seeds["SSS-mae-run0"] == 0 and seeds["SSS-mae-run1"] == 1
        assert sorted(p.name for p in (directory / "services").glob("*.log")) == [
            f"{r}.log" for r in sorted(("evaluator", "gradient", "judge", "loss", "optimizer"))
        ]
        capsys.readouterr()
        for cell in cells:
            assert cell_status(directory / "cells" / cell) == "complete"
            assert main(["audit", str(directory / "cells" / cell)]) == 0
            assert_audited_every_call(capsys.readouterr().out, directory / "cells" / cell)
        with sqlite3.connect(directory / "cells" / "SSS-mae-run0" / "run.sqlite") as db:
            sss = {s for (s,) in db.execute("SELECT score FROM diagnostics WHERE kind = 'specificity'")}
        with sqlite3.connect(directory / "cells" / "CCC-mae-run0" / "run.sqlite") as db:
            ccc = {s for (s,) in db.execute("SELECT score FROM diagnostics WHERE kind = 'specificity'")}
            rated = db.execute("SELECT COUNT(DISTINCT step || criterion) FROM diagnostics").fetchone()[0]
            evaluator_calls = db.execute("SELECT COUNT(*) FROM calls WHERE stage = 'evaluator'").fetchone()[0]
        assert sss == {SPECIFIC_RATING} and ccc == {DILUTED_RATING}  # per-criterion vs joint gradients
        assert rated == 2 * 4  # every (step, criterion) of the two training steps
        summary = json.loads((directory / "cells" / "CCC-mae-run0" / "summary.json").read_text())
        assert summary["llm_calls"]["evaluator"] == evaluator_calls > 0  # the spend includes the diagnostics
        assert len(intervals) == len(cells) == 8

    def test_grid_on_running_services_behind_a_bearer_token(self, scripted: FakeOpenAI, tmp_path: Path) -> None:
        """`--<role>-addr` for the five roles and `--token-env`: the cells run on those services (no service is
        started here), and every call carried the token (the services refuse calls without it)."""
        grid = grid_file(tmp_path / "g.yaml", scripted.base_url, modes=["SSS"], gates=["none"], runs=1)
        env = {"EXPERIMENT_TOKEN": "t0ken-for-the-agents"}
        roles = ("judge", "loss", "gradient", "optimizer", "evaluator")
        directory = tmp_path / "exp"
        with served_agents(grid, tmp_path, roles, flags=("--token-env", "EXPERIMENT_TOKEN"), env=env) as agents:
            flags = ["experiment", "--grid", str(grid), "--dir", str(directory), *agents.address_flags()]
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("EXPERIMENT_TOKEN", env["EXPERIMENT_TOKEN"])
                assert main([*flags, "--token-env", "EXPERIMENT_TOKEN"]) == 0
            assert main([*flags[:3], "--dir", str(tmp_path / "no-token"), *agents.address_flags()]) != 0
        assert cell_status(directory / "cells" / "SSS-none-run0") == "complete"
        assert not (directory / "services").exists()
        with sqlite3.connect(directory / "cells" / "SSS-none-run0" / "run.sqlite") as db:
            assert db.execute("SELECT COUNT(*) FROM calls WHERE outcome != 'ok'").fetchone()[0] == 0
            assert db.execute("SELECT COUNT(*) FROM diagnostics").fetchone()[0] > 0

    def test_killed_experiment_resumes_without_rerunning_finished_cells(
        self, scripted: FakeOpenAI, tmp_path: Path
    ) -> None:
        """SIGKILL the experiment once some cell is complete; `--resume` finishes the rest and adds no call to
        any cell that was already complete."""
        directory = tmp_path / "exp"
        grid = grid_file(
            tmp_path / "g.yaml", scripted.base_url, modes=["SSS"], gates=["mae"], runs=3, diagnostics=False
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "judgeopt", "experiment", "--grid", str(grid), "--dir", str(directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        cells = [directory / "cells" / f"SSS-mae-run{k}" for k in range(3)]
        try:
            wait_until(lambda: any(cell_status(c) == "complete" for c in cells), timeout=120, interval=0.01)
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        finished = {c.name: cell_calls(c) for c in cells if cell_status(c) == "complete"}
        assert finished
        assert main(["experiment", "--resume", str(directory)]) == 0
        assert all(cell_status(c) == "complete" for c in cells)
        assert {name: cell_calls(directory / "cells" / name) for name in finished} == finished

    def test_interference_from_single_task_cells(self, scripted: FakeOpenAI, tmp_path: Path) -> None:
        """With the single mode, per gate setting: each criterion's best instruction over both runs (on
        validation by default), stitched and judged with one joint call per test sample, beside the generic prompt;
        the picks judged alone cost no call (their recorded ρ), and the calls are recorded in the first run."""
        directory = tmp_path / "exp"
        grid = grid_file(
            tmp_path / "g.yaml", scripted.base_url, modes=["single"], gates=["mae", "none"], runs=2, diagnostics=False
        )
        scripted.clear()
        assert main(["experiment", "--grid", str(grid), "--dir", str(directory)]) == 0
        result = json.loads((directory / "interference.json").read_text())
        assert result["select_on"] == "val" and "validation" in result["label"]
        assert sorted(result["gates"]) == ["mae", "none"]
        for gate, rows in result["gates"].items():
            assert set(rows) >= {"generic", "separate", "stitched", "picks", "generic_instruction_tokens"}
            assert rows["cells"] == [f"single-{gate}-run0", f"single-{gate}-run1"]
            assert {p["cell"] for p in rows["picks"].values()} <= set(rows["cells"])
            with sqlite3.connect(directory / "cells" / f"single-{gate}-run0" / "run.sqlite") as db:
                calls = db.execute("SELECT COUNT(*) FROM calls WHERE purpose = 'interference'").fetchone()[0]
            with sqlite3.connect(directory / "cells" / f"single-{gate}-run1" / "run.sqlite") as db:
                elsewhere = db.execute("SELECT COUNT(*) FROM calls WHERE purpose = 'interference'").fetchone()[0]
            assert (calls, elsewhere) == (2 * 6, 0)  # stitched + generic, one joint call per test sample
        joint_prompts = [
            r
            for r in scripted.requests
            if role_of(r) == "judge"
            and r.body["response_format"]["json_schema"]["schema"]["required"]
            == ["coherence", "consistency", "fluency", "relevance"]
        ]
        assert len(joint_prompts) == 2 * 2 * 6  # both gates' stitched and generic prompts are judged jointly

    def test_bad_grid_is_one_line(
        self, scripted: FakeOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An unknown mode in the grid is refused before anything runs."""
        grid = grid_file(tmp_path / "g.yaml", scripted.base_url, modes=["SSS", "XYZ"])
        assert main(["experiment", "--grid", str(grid), "--dir", str(tmp_path / "exp")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "XYZ" in err[0]
        assert not (tmp_path / "exp").exists()
