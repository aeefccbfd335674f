"""Pipelining across steps: a step's test evaluation runs while the next step trains, and the run's results are
those of the same run with pipelining off (``--no-pipeline-steps``). Both runs use one set of agent services."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.fake_openai import FakeOpenAI
from helpers.runs import BATCH, DATASET, outcome, write_config
from helpers.scripts import deterministic_handler, with_latency
from helpers.services import AgentServices, served_agents

from judgeopt.cli import main
from judgeopt.core.models import ModelsConfig
from judgeopt.orchestrator.engine.budget import StepShape
from judgeopt.orchestrator.engine.loop import _alongside
from judgeopt.orchestrator.engine.policy import resolve_policy
from judgeopt.orchestrator.errors import RunFailed

LATENCY = 0.05
RUN = {"mode": "SSC", "steps": 2, "concurrency": 4}
ROLES = ("judge", "loss", "gradient", "optimizer")
VARYING_KEYS = {"run_id", "call_seconds"}
"""What differs between two runs of the same work: the run's id and how long its calls took."""


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, AgentServices]]:
    """A run config on a scripted endpoint answering in ``LATENCY``, and agent services serving it."""
    folder = tmp_path_factory.mktemp("pipelined")
    with FakeOpenAI(with_latency(deterministic_handler(), LATENCY)) as endpoint:
        config = write_config(folder / "run.yaml", endpoint.base_url, **RUN)
        with served_agents(config, folder, ROLES) as services:
            yield config, services


def _optimize(setting: tuple[Path, AgentServices], run_dir: Path, *flags: str) -> Path:
    config, services = setting
    command = ["optimize", "--config", str(config), "--run-dir", str(run_dir), *services.address_flags(), *flags]
    assert main(command) == 0
    return run_dir


def _rows(run_dir: Path, query: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        return db.execute(query, parameters).fetchall()


def _results(run_dir: Path) -> dict[str, Any]:
    """Everything a run produced but its timing and its run id: summary, steps, artifacts, predictions, calls."""
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary) >= VARYING_KEYS
    return {
        "outcome": outcome(run_dir),
        "summary": {k: v for k, v in summary.items() if k not in VARYING_KEYS},
        "steps": _rows(run_dir, "SELECT track, step, status, prompt_id, candidate_id, val, test FROM steps ORDER BY 2"),
        "artifacts": _rows(run_dir, "SELECT step, kind, COUNT(*) FROM artifacts GROUP BY 1, 2 ORDER BY 1, 2"),
        "predictions": _rows(run_dir, "SELECT prompt_id, sample_id, scores FROM predictions ORDER BY 1, 2"),
        "calls": _rows(
            run_dir,
            "SELECT step, stage, purpose, attempt, outcome, COUNT(*) FROM calls "
            "GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5",
        ),
    }


def _starts_and_ends(run_dir: Path, step: int, purpose: str) -> list[tuple[float, float]]:
    """(sent, answered) of each call of ``step`` for ``purpose``: ``at`` is stamped when the attempt ends."""
    rows = _rows(run_dir, "SELECT at - endpoint_seconds, at FROM calls WHERE step = ? AND purpose = ?", (step, purpose))
    assert rows, f"no {purpose} call at step {step}"
    return [(sent, answered) for sent, answered in rows]


@pytest.fixture(scope="module")
def sequential(setting: tuple[Path, AgentServices], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _optimize(setting, tmp_path_factory.mktemp("sequential") / "run", "--no-pipeline-steps")


def test_a_steps_test_evaluation_overlaps_the_next_steps_training_and_changes_no_result(
    setting: tuple[Path, AgentServices], sequential: Path, tmp_path: Path
) -> None:
    pipelined = _optimize(setting, tmp_path / "pipelined")
    for step in (0, 1):  # the next step's first training call went out before this step's last test call ended
        last_test_end = max(end for _, end in _starts_and_ends(pipelined, step, "test"))
        first_training = min(sent for sent, _ in _starts_and_ends(pipelined, step + 1, "train"))
        assert first_training < last_test_end, step
        sequential_test_end = max(end for _, end in _starts_and_ends(sequential, step, "test"))
        assert min(sent for sent, _ in _starts_and_ends(sequential, step + 1, "train")) > sequential_test_end
    assert _results(pipelined) == _results(sequential)
    assert len(_rows(pipelined, "SELECT * FROM steps")) == RUN["steps"] + 1


def test_a_budget_reached_while_a_test_evaluation_runs_counts_it_and_stops_where_the_sequential_run_stops(
    setting: tuple[Path, AgentServices], sequential: Path, tmp_path: Path
) -> None:
    """The budget lets step 2 start only if step 1's test calls are left out of what was spent: the check waits for
    them (they finish and count), so the run stops after step 1, as the sequential run does."""
    spent = dict(_rows(sequential, "SELECT step, COUNT(*) FROM calls GROUP BY step"))
    step_1_tests = _rows(sequential, "SELECT COUNT(*) FROM calls WHERE step = 1 AND purpose = 'test'")[0][0]
    assert step_1_tests > 0
    policy = resolve_policy(RUN["mode"], None)
    models = ModelsConfig(default={"model": "fake-model", "base_url": "http://endpoint/v1"})
    shape = StepShape(policy, 4, BATCH, DATASET["val_size"], DATASET["test_size"], models, sample_tokens=0)
    step_2 = shape.training(with_test=True).total_calls
    budget = spent[0] + spent[1] + step_2 - 1  # over by one with step 1's test calls, within without them
    assert spent[0] + spent[1] - step_1_tests + step_2 <= budget
    runs = [
        _optimize(setting, tmp_path / name, "--max-calls", str(budget), *flags)
        for name, flags in (("pipelined", ()), ("sequential", ("--no-pipeline-steps",)))
    ]
    for run_dir in runs:
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "budget_reached"
        assert [s["step"] for s in summary["steps"]] == [0, 1]
        tested = _rows(run_dir, "SELECT COUNT(*) FROM calls WHERE step = 1 AND purpose = 'test' AND outcome = 'ok'")
        assert tested[0][0] == step_1_tests  # the pending test evaluation finished
        assert sum(summary["rpc_attempts"].values()) == spent[0] + spent[1]  # ...and counts
    assert _results(runs[0]) == _results(runs[1])


async def test_a_failing_step_lets_the_previous_step_finish_first_and_a_failing_previous_step_stops_it() -> None:
    """In process: the next step's failure waits for the previous step's test evaluation and commit (the run keeps
    what it would have kept without pipelining); the previous step's failure cancels the next step and is raised."""
    finished: list[str] = []

    async def previous(fail: bool) -> None:
        await asyncio.sleep(0.05)
        if fail:
            raise RunFailed("previous step")
        finished.append("previous")

    async def step(fail: bool) -> str:
        if fail:
            raise RunFailed("this step")
        await asyncio.sleep(0.5)
        finished.append("this")
        return "decided"

    with pytest.raises(RunFailed, match="this step"):
        await _alongside(step(fail=True), asyncio.create_task(previous(fail=False)))
    assert finished == ["previous"]
    with pytest.raises(RunFailed, match="previous step"):
        await _alongside(step(fail=False), asyncio.create_task(previous(fail=True)))
    await asyncio.sleep(0.6)
    assert finished == ["previous"]  # the next step was cancelled, not left running
    assert await _alongside(step(fail=False), asyncio.create_task(previous(fail=False))) == "decided"
    assert finished == ["previous", "previous", "this"]
