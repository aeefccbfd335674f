"""The real embedded model (SmolLM2 via llama.cpp) behind the four services: structure, never wording."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import yaml
from helpers.runs import assert_audited_every_call

from judgeopt.cli import main
from judgeopt.core.local_model import LocalModelServer
from judgeopt.v1 import common_pb2

USABLE = (common_pb2.PARSE_STATUS_OK, common_pb2.PARSE_STATUS_REPAIRED)


class TestLocalModelExperiment:
    @pytest.mark.timeout(900)
    def test_tiny_experiment_runs_audits_and_reports(
        self, local_llm: LocalModelServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A one-cell experiment (SSS, MAE gate, one step) on SummEval through the four services, with diagnostics
        rated by the local evaluator: at least 90% of judge scores parse into in-range values (constrained output),
        every optimizer reply is recorded, the step's candidate instruction change is recorded as accepted or
        rejected, the run passes its audit, and the report has every section and embedded figures."""
        grid = tmp_path / "grid.yaml"
        base = {
            "base_url": local_llm.base_url,
            "model": local_llm.model_name,
            "structured_output": "json_object_schema",
        }
        grid.write_text(
            yaml.safe_dump(
                {
                    "models": {
                        "default": base,
                        "loss": {"max_tokens": 64},
                        "gradient": {"max_tokens": 192},
                        "optimizer": {"max_tokens": 96},
                        "judge": {"max_tokens": 48},
                        "evaluator": {"max_tokens": 64},
                    },
                    "run": {
                        "steps": 1,
                        "batch_size": 2,  # eight per-criterion gradients: a few that do not parse leave others to rate
                        "concurrency": 1,
                        "bootstrap_resamples": 0,
                        "dataset": {"name": "summeval", "train_size": 8, "val_size": 2, "test_size": 3},
                    },
                    "grid": {"modes": ["SSS"], "gates": ["mae"], "runs": 1},
                }
            )
        )
        directory = tmp_path / "exp"
        assert main(["experiment", "--grid", str(grid), "--dir", str(directory)]) == 0
        run_dir = directory / "cells" / "SSS-mae-run0"
        with sqlite3.connect(run_dir / "run.sqlite") as db:
            ratings = db.execute("SELECT COUNT(*) FROM diagnostics").fetchone()[0]
            seen = db.execute(
                "SELECT stage || ':' || outcome, COUNT(*) FROM calls GROUP BY 1 UNION ALL "
                "SELECT kind || ':' || status, COUNT(*) FROM artifacts GROUP BY 1"
            ).fetchall()
            statuses = [
                s for (raw,) in db.execute("SELECT statuses FROM predictions") for s in json.loads(raw).values()
            ]
            steps = db.execute("SELECT step, status, prompt_id, candidate_id FROM steps ORDER BY step").fetchall()
            optimizer = db.execute("SELECT COUNT(*) FROM artifacts WHERE kind = 'optimizer_status'").fetchone()[0]
        assert ratings >= 1, f"the evaluator rated no gradient; calls and artifacts: {seen}"
        assert statuses and sum(s in USABLE for s in statuses) / len(statuses) >= 0.9
        assert steps[0][1] == "initial"
        assert steps[1][1] in ("accepted", "rejected")
        assert steps[1][3] is not None and steps[1][3] != steps[0][2]  # the candidate changed an instruction
        assert optimizer == 4  # one recorded optimizer outcome per criterion
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "complete" and len(summary["steps"]) == 2
        capsys.readouterr()
        assert main(["audit", str(run_dir)]) == 0
        assert_audited_every_call(capsys.readouterr().out, run_dir)
        assert main(["report", str(directory)]) == 0
        html = (directory / "report.html").read_text()
        markdown = (directory / "report.md").read_text()
        for heading in ("Table 1", "Diagnostics", "interference", "Calls, tokens and wall time"):
            assert heading in markdown and heading in html
        assert html.count("data:image/png;base64,") >= 3  # trajectories, macro rho and HVI, diagnostics
