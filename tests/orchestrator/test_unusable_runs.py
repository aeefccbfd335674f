"""Runs whose judge produced nothing usable fail loudly, and what a run writes is strict JSON.

A judge that answers every score out of range, or nothing readable, used to leave a "complete" run whose every ρ read
0.000†. Now the run stops at step 0 with the cause on one line (exit 1, status ``failed``); a candidate instruction
under which the judge gives no valid score is never accepted (its step fails and is rolled back); `judgeopt judge`
counts a row with no valid score as failed; and summary.json holds no NaN or Infinity.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.fake_openai import Completion, FakeOpenAI, RecordedRequest, Reply
from helpers.runs import final_prompts, scripted_model, scripted_run
from helpers.scripts import deterministic_handler, role_of

from judgeopt.cli import main

BROKEN = "ZZBROKEN"


def strict_json(path: Path) -> Any:
    """``path`` read as strict JSON: NaN, Infinity and -Infinity are refused."""

    def refuse(token: str) -> None:
        raise AssertionError(f"{path.name} holds {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


def judge_answers(answer: Callable[[RecordedRequest], str | None]) -> Callable[[RecordedRequest], Reply]:
    """The scripted endpoint, with the judge's reply replaced by ``answer`` where it gives one."""
    scripted = deterministic_handler(worse_marker=BROKEN)

    def handle(request: RecordedRequest) -> Reply:
        if role_of(request) == "judge" and (text := answer(request)) is not None:
            return Completion(text)
        return scripted(request)

    return handle


def out_of_range(request: RecordedRequest) -> str:
    properties = request.body["response_format"]["json_schema"]["schema"]["properties"]
    return json.dumps(dict.fromkeys(properties, 9))


def unreadable(_: RecordedRequest) -> str:
    return "I would rather not put a number on this summary."


def store_status(run_dir: Path) -> str:
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        return str(json.loads(db.execute("SELECT value FROM meta WHERE key = 'status'").fetchone()[0]))


class TestNothingUsable:
    @pytest.mark.parametrize(
        ("answer", "cause"),
        [(out_of_range, "out of range"), (unreadable, "unreadable")],
        ids=["all-out-of-range", "all-unreadable"],
    )
    def test_a_judge_with_no_valid_score_fails_the_run_in_one_line(
        self,
        answer: Callable[[RecordedRequest], str],
        cause: str,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        run = scripted_run(tmp_path, judge_answers(answer), gate="mae")  # gated: no risk warning to print
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("RunFailed")]
        assert run.code == 1 and len(errors) == 1, errors
        assert [line for line in err.splitlines() if line.strip()] == errors  # no progress bar left above it
        assert errors[0].startswith("RunFailed: track all, step 0: the judge gave no valid score")
        assert cause in errors[0] and "validation" in errors[0]
        assert {role_of(r) for r in run.requests} == {"judge"}  # nothing was learnt from nothing
        assert store_status(run.run_dir) == "failed"
        summary = strict_json(run.run_dir / "summary.json")
        assert summary["status"] == "failed" and summary["steps"] == []

    def test_a_candidate_with_no_valid_score_is_never_accepted(self, tmp_path: Path) -> None:
        """Without a gate every candidate used to be accepted; one under which the judge gives no valid score on
        validation fails its step instead (rolled back), and the run goes on with the prompt it had."""
        broken = judge_answers(lambda request: out_of_range(request) if BROKEN in request.last_user_text else None)
        run = scripted_run(tmp_path, broken, gate="none")
        assert run.code == 0
        summary = strict_json(run.run_dir / "summary.json")
        assert summary["status"] == "complete"
        assert [s["status"] for s in summary["steps"]] == ["initial", "failed", "failed"]
        assert [s["accepted"] for s in summary["steps"][1:]] == [False, False]
        assert BROKEN not in final_prompts(run.run_dir)["all"]
        assert summary["best"]["step"] == 0


class TestStrictSummary:
    def test_non_finite_figures_are_null(self, tmp_path: Path) -> None:
        """A judge that never scores coherence validly, with the study's gate (items it failed to score left out):
        the validation MAE is infinite. summary.json holds null there and stays strict JSON any parser reads (it
        used to hold -Infinity)."""
        scripted = deterministic_handler()

        def coherence_out_of_range(request: RecordedRequest) -> str:
            reply = scripted(request)
            assert isinstance(reply, Completion)
            return json.dumps({**json.loads(reply.content), "coherence": 9})

        run = scripted_run(
            tmp_path, judge_answers(coherence_out_of_range), gate="mae", steps=1, gate_counts_parse_failures=False
        )
        assert run.code == 0
        summary = strict_json(run.run_dir / "summary.json")
        assert summary["status"] == "complete"
        assert summary["steps"][0]["val_metric"] is None and summary["initial"]["rho"]["fluency"] is not None


@pytest.fixture
def scoring(tmp_path: Path) -> Iterator[tuple[Path, Path, FakeOpenAI]]:
    """An exported judge on an endpoint whose judge answers out of range, and four rows."""
    with FakeOpenAI(judge_answers(out_of_range)) as endpoint:
        judge = tmp_path / "judge.yaml"
        judge.write_text(
            yaml.safe_dump(
                {
                    "judgeopt_judge": 1,
                    "task_description": "Judge the summary.",
                    "instructions": {"fluency": "Rate from 1 to 5."},
                    "criteria": [{"name": "fluency"}],
                    "text_fields": ["summary"],
                    "routing": "joint",
                    "model": scripted_model(endpoint.base_url),
                    "source": {"step": 0},
                }
            )
        )
        data = tmp_path / "rows.jsonl"
        data.write_text("".join(json.dumps({"summary": f"Summary {i}."}) + "\n" for i in range(4)))
        yield judge, data, endpoint


def test_judge_counts_rows_with_no_valid_score_as_failed(
    scoring: tuple[Path, Path, FakeOpenAI], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every reply out of range: not "4 rows scored, 0 failed" with blank scores, but 4 failed, exit 1, and no row
    written (a rerun tries them again)."""
    judge, data, _ = scoring
    out = tmp_path / "scores.csv"
    assert main(["judge", "--judge", str(judge), "--data", str(data), "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert f"{out}: 0 rows scored, 0 already there, 4 failed (4 with no valid score" in printed
    with out.open(newline="", encoding="utf-8") as handle:
        assert list(csv.DictReader(handle)) == []
