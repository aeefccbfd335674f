"""Bring your own task, take the judge away, stay within budget — against the scripted endpoint."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers.eventually import wait_until
from helpers.examples import EXAMPLE, example_config, write_test_rows
from helpers.fake_openai import Completion, FakeOpenAI, RecordedRequest, Reply
from helpers.scripts import deterministic_handler, role_of

from judgeopt.cli import main


@pytest.fixture(scope="module")
def scripted() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(deterministic_handler()) as server:
        yield server


def stored_test_predictions(run_dir: Path, step: int) -> dict[str, dict[str, float]]:
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        prompt_id = db.execute("SELECT prompt_id FROM steps WHERE step = ?", (step,)).fetchone()[0]
        test_ids = set(
            json.loads(db.execute("SELECT value FROM meta WHERE key = 'manifest'").fetchone()[0])["splits"]["test"]
        )
        rows = db.execute("SELECT sample_id, scores FROM predictions WHERE prompt_id = ?", (prompt_id,)).fetchall()
    return {sid: json.loads(scores) for sid, scores in rows if sid in test_ids}


class TestOwnTask:
    def test_three_scales_run_end_to_end_from_the_config_file(self, scripted: FakeOpenAI, tmp_path: Path) -> None:
        """The code-review example (0–1 continuous, 1–3 and 1–5 integer criteria) optimizes from its config alone,
        and every score the judge was asked for stays on its own scale."""
        scripted.clear()
        run_dir = tmp_path / "run"
        config = example_config(tmp_path / "c.yaml", scripted.base_url)
        assert main(["optimize", "--config", str(config), "--run-dir", str(run_dir)]) == 0
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "complete" and summary["criteria"] == ["correctness", "clarity", "actionability"]
        judged = [r for r in scripted.requests if role_of(r) == "judge"]
        props = judged[0].body["response_format"]["json_schema"]["schema"]["properties"]
        assert props["correctness"] == {"type": "number", "minimum": 0.0, "maximum": 1.0}
        assert props["clarity"]["enum"] == [1, 2, 3] and props["actionability"]["enum"] == [1, 2, 3, 4, 5]
        texts = [r.last_user_text for r in judged]
        assert all("code change" in t and '<field name="comment">' in t for t in texts)


class TestExportAndJudge:
    def test_exported_judge_reproduces_the_runs_test_predictions(self, scripted: FakeOpenAI, tmp_path: Path) -> None:
        """export → judge on the run's test rows gives exactly the run's predictions for the exported step, and the
        agreement table is printed because the rows carry human scores."""
        run_dir = tmp_path / "run"
        assert (
            main(
                [
                    "optimize",
                    "--config",
                    str(example_config(tmp_path / "c.yaml", scripted.base_url)),
                    "--run-dir",
                    str(run_dir),
                ]
            )
            == 0
        )
        judge = tmp_path / "judge.yaml"
        assert main(["export", str(run_dir), "--step", "2", "--out", str(judge), "--no-measure"]) == 0
        exported = yaml.safe_load(judge.read_text())
        assert exported["source"]["step"] == 2 and exported["text_fields"] == ["change", "comment"]
        assert "api_key" not in json.dumps(exported["model"]).replace("api_key_env", "")
        data = tmp_path / "new.csv"
        write_test_rows(run_dir, data)
        out = tmp_path / "scores.csv"
        assert main(["judge", "--judge", str(judge), "--data", str(data), "--out", str(out), "--id-field", "id"]) == 0
        with out.open(newline="") as handle:
            scored = {r["id"]: r for r in csv.DictReader(handle)}
        expected = stored_test_predictions(run_dir, 2)
        assert expected and set(scored) == set(expected)
        for sample_id, scores in expected.items():
            for name, value in scores.items():
                assert float(scored[sample_id][name]) == pytest.approx(value)

    def test_interrupted_scoring_resumes_without_rescoring_finished_rows(self, tmp_path: Path) -> None:
        """Kill `judgeopt judge` mid-file; the rerun scores only rows missing from the output, which ends complete
        and identical to an uninterrupted scoring."""
        slow = deterministic_handler()

        def handler(request: RecordedRequest) -> Reply:
            reply = slow(request)
            assert isinstance(reply, Completion)
            return Completion(reply.content, delay=0.15)

        with FakeOpenAI(handler) as server:
            run_dir = tmp_path / "run"
            config = example_config(tmp_path / "c.yaml", server.base_url, run={"steps": 0})
            assert main(["optimize", "--config", str(config), "--run-dir", str(run_dir)]) == 0
            judge = tmp_path / "judge.yaml"
            assert main(["export", str(run_dir), "--step", "0", "--out", str(judge), "--no-measure"]) == 0
            data = EXAMPLE / "reviews.csv"
            reference = tmp_path / "reference.csv"
            assert (
                main(["judge", "--judge", str(judge), "--data", str(data), "--out", str(reference), "--id-field", "id"])
                == 0
            )
            out = tmp_path / "scores.csv"
            command = [sys.executable, "-m", "judgeopt", "judge", "--judge", str(judge), "--data", str(data)]
            command += ["--out", str(out), "--id-field", "id", "--concurrency", "1"]
            process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
            )
            try:
                wait_until(lambda: out.exists() and len(out.read_text().splitlines()) > 5, timeout=60, interval=0.02)
            finally:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            # a row cut mid-write is not finished (the rerun removes it), and a request the killed process sent
            # may still reach the server: count whole rows only, and clear once the server has been quiet a while
            finished = out.read_text().count("\n") - 1
            assert 4 <= finished < 40
            wait_until(lambda: time.monotonic() - max(r.received_at for r in server.requests) > 0.5, timeout=10)
            server.clear()
            assert (
                main(["judge", "--judge", str(judge), "--data", str(data), "--out", str(out), "--id-field", "id"]) == 0
            )
            rescored = len([r for r in server.requests if role_of(r) == "judge"])
        assert rescored <= 40 - finished  # finished rows are never sent again
        assert out.read_text().splitlines()[0] == reference.read_text().splitlines()[0]
        assert sorted(out.read_text().splitlines()[1:]) == sorted(reference.read_text().splitlines()[1:])


class TestBudgetAndLimits:
    def test_rate_limit_holds_at_the_endpoint(self, scripted: FakeOpenAI, tmp_path: Path) -> None:
        """With 5 requests per 1-second window on the endpoint, no window at the server sees more than 5 calls."""
        scripted.clear()
        config = example_config(
            tmp_path / "c.yaml", scripted.base_url, run={"steps": 1, "rate_window_seconds": 1.0}, requests_per_minute=5
        )
        assert main(["optimize", "--config", str(config), "--run-dir", str(tmp_path / "run")]) == 0
        times = sorted(r.received_at for r in scripted.requests)
        assert len(times) > 10
        assert max(sum(1 for t in times if start <= t < start + 1.0) for start in times) <= 5

    def test_small_budget_stops_at_a_step_boundary_and_resumes(self, scripted: FakeOpenAI, tmp_path: Path) -> None:
        """A budget that covers step 0 and one training step stops the run there, marked as such; resuming with a
        larger budget completes it."""
        run_dir = tmp_path / "run"
        dry = tmp_path / "c.yaml"
        example_config(dry, scripted.base_url, run={"steps": 3})
        assert main(["optimize", "--config", str(dry), "--run-dir", str(run_dir), "--max-calls", "70"]) == 0
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "budget_reached"
        assert [s["step"] for s in summary["steps"]] == [0, 1]
        with sqlite3.connect(run_dir / "run.sqlite") as db:
            assert db.execute("SELECT COUNT(*) FROM calls").fetchone()[0] <= 70
        assert main(["resume", str(run_dir), "--max-calls", "1000"]) == 0
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "complete" and [s["step"] for s in summary["steps"]] == [0, 1, 2, 3]

    def test_dry_run_makes_no_call_and_its_estimate_equals_the_real_calls(
        self, scripted: FakeOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--dry-run prints calls per role without any request or run directory; the real run then makes exactly
        that many calls."""
        config = example_config(tmp_path / "c.yaml", scripted.base_url, run={"steps": 2})
        scripted.clear()
        run_dir = tmp_path / "run"
        assert main(["optimize", "--config", str(config), "--run-dir", str(run_dir), "--dry-run"]) == 0
        assert scripted.requests == [] and not run_dir.exists()
        out = capsys.readouterr().out
        estimated = {
            line.split("│")[1].strip(): int(line.split("│")[2])
            for line in out.splitlines()
            if line.count("│") >= 4 and line.split("│")[2].strip().isdigit()
        }
        assert main(["optimize", "--config", str(config), "--run-dir", str(run_dir)]) == 0
        with sqlite3.connect(run_dir / "run.sqlite") as db:
            real = dict(db.execute("SELECT stage, COUNT(*) FROM calls GROUP BY stage").fetchall())
        assert {role: estimated[role] for role in real} == real
        assert estimated["total"] == sum(real.values())
