"""Interference at inference time on a finished run (`judgeopt interference`), and the deployable routing it gives
`judgeopt export` and `judgeopt judge`, against a scripted judge whose scores are planted: it answers each row's
human labels, except (when asked to) one criterion reversed whenever it is scored in a joint call."""

from __future__ import annotations

import csv
import itertools
import json
import re
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

import pytest
import yaml
from helpers.examples import EXAMPLE, example_config, write_test_rows
from helpers.fake_openai import Completion, FakeOpenAI, RecordedRequest, Reply
from helpers.scripts import deterministic_handler, role_of
from helpers.services import AgentServices, served_agents
from scipy import stats

from judgeopt.cli import main
from judgeopt.core.models import ModelsConfig
from judgeopt.core.roles import ROLES
from judgeopt.orchestrator.config import GridConfig, RunConfig
from judgeopt.orchestrator.study.experiment import create_experiment
from judgeopt.orchestrator.study.export import read_judge
from judgeopt.orchestrator.study.reporting.document import Document, render_markdown
from judgeopt.orchestrator.study.reporting.inputs import load_study
from judgeopt.orchestrator.study.reporting.routings import routings_section

CRITERIA = ("correctness", "clarity", "actionability")
REVERSED = "clarity"  # on 1-3: 4 - label reverses its ranking exactly
CACHED = 30  # prompt tokens the planted endpoint says its prefix cache served, per prefix-shared call
FIELD = re.compile(r'<field name="comment">\n(.*?)\n</field>', re.DOTALL)

with (EXAMPLE / "reviews.csv").open(newline="") as handle:
    ROWS = {r["comment"]: r for r in csv.DictReader(handle)}


class Planted:
    """The judge answers the human labels of the row it is shown; in a call scoring several criteria (joint),
    ``joint_reverses`` (when set) is answered reversed. A call scoring one criterion reports ``CACHED`` cached
    prompt tokens. The other roles answer as the deterministic script does."""

    def __init__(self) -> None:
        self.joint_reverses: str | None = REVERSED
        self._others = deterministic_handler()

    def __call__(self, request: RecordedRequest) -> Reply:
        if role_of(request) != "judge":
            return self._others(request)
        asked = asked_criteria(request)
        row = ROWS[FIELD.findall(request.last_user_text)[0]]
        scores = {n: float(row[n]) for n in asked}
        if len(asked) > 1 and self.joint_reverses in scores:
            scores[self.joint_reverses] = 4 - scores[self.joint_reverses]
        cached = CACHED if len(asked) == 1 else None
        return Completion(json.dumps(scores), prompt_tokens=100, completion_tokens=8, cached_tokens=cached)


@dataclass(frozen=True)
class Stack:
    """The planted endpoint and one set of agent services on it, shared by every test here."""

    planted: Planted
    server: FakeOpenAI
    services: AgentServices

    def judge_addr(self) -> list[str]:
        return ["--judge-addr", self.services.address("judge")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    planted = Planted()
    tmp_path = tmp_path_factory.mktemp("services")
    with FakeOpenAI(planted) as server:
        config = example_config(tmp_path / "c.yaml", server.base_url)
        with served_agents(config, tmp_path, ROLES) as services:
            yield Stack(planted, server, services)


def judge_requests(server: FakeOpenAI) -> list[RecordedRequest]:
    return [r for r in server.requests if role_of(r) == "judge"]


def asked_criteria(request: RecordedRequest) -> list[str]:
    return list(request.body["response_format"]["json_schema"]["schema"]["properties"])


def split_labels(run_dir: Path, split: str) -> dict[str, list[float]]:
    """The human labels of the run's ``split``, in the run's row order."""
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        stored = json.loads(db.execute("SELECT value FROM meta WHERE key = 'manifest'").fetchone()[0])
    by_id = {r["id"]: r for r in ROWS.values()}
    ids = stored["splits"][split]
    assert len(ids) >= 8
    return {n: [float(by_id[i][n]) for i in ids] for n in CRITERIA}


def expected_halo(labels: dict[str, list[float]]) -> float:
    """The mean Spearman ρ over pairs of criteria, computed here from the labels with scipy."""
    return fmean(stats.spearmanr(labels[a], labels[b]).statistic for a, b in itertools.combinations(CRITERIA, 2))


@dataclass(frozen=True)
class Measured:
    stack: Stack
    run_dir: Path
    result: dict[str, Any]
    measurement_requests: list[RecordedRequest]


def optimized(stack: Stack, tmp_path: Path) -> Path:
    """A joint-judge (SSS) run of step 0 only on the code-review example, with bootstrap intervals."""
    run_dir = tmp_path / "run"
    config = example_config(tmp_path / "c.yaml", stack.server.base_url, run={"steps": 0, "bootstrap_resamples": 200})
    args = ["optimize", "--config", str(config), "--run-dir", str(run_dir), *stack.services.address_flags()]
    assert main(args) == 0
    return run_dir


@pytest.fixture(scope="module")
def joint_worse(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Measured:
    """The planted run where the joint judge reverses one criterion, measured once by `judgeopt interference`."""
    stack.planted.joint_reverses = REVERSED
    run_dir = optimized(stack, tmp_path_factory.mktemp("joint-worse"))
    stack.server.clear()
    assert main(["interference", str(run_dir), *stack.judge_addr()]) == 0
    result = json.loads((run_dir / "routing_interference.json").read_text())
    return Measured(stack, run_dir, result, judge_requests(stack.server))


class TestInterferenceTable:
    def test_delta_and_paired_intervals_have_the_planted_sign(self, joint_worse: Measured) -> None:
        """Joint reverses clarity: its Δρ is −2 with an interval wholly below zero, every other criterion's Δ and
        interval are exactly 0, and the macro Δ is −2/3, on validation and on test."""
        splits = joint_worse.result["splits"]
        assert isinstance(splits, dict) and set(splits) == {"val", "test"}
        for split in ("val", "test"):
            comparison = splits[split]
            assert comparison["rows"] >= 8 and comparison["failed_rows"] == {"joint": 0, "prefix_shared": 0}
            assert comparison["rho"]["prefix_shared"] == pytest.approx(dict.fromkeys(CRITERIA, 1.0))
            assert comparison["rho"]["joint"][REVERSED] == pytest.approx(-1.0)
            assert comparison["delta"][REVERSED] == pytest.approx(-2.0)
            low, high = comparison["delta_ci"][REVERSED]
            assert low == pytest.approx(-2.0) and high < 0
            for name in CRITERIA:
                if name != REVERSED:
                    assert comparison["delta"][name] == pytest.approx(0.0)
                    assert comparison["delta_ci"][name] == pytest.approx([0.0, 0.0])
            assert comparison["delta_macro"] == pytest.approx(-2 / 3)
            assert comparison["delta_macro_ci"][1] < 0

    def test_halo_per_routing_against_the_human_labels(self, joint_worse: Measured) -> None:
        """Prefix-shared scores are the labels, so their halo is the humans'; the joint scores (clarity reversed)
        have the halo of the labels with clarity reversed, both computed here independently."""
        for split in ("val", "test"):
            labels = split_labels(joint_worse.run_dir, split)
            reversed_labels = {**labels, REVERSED: [4 - v for v in labels[REVERSED]]}
            halo = joint_worse.result["splits"][split]["halo"]
            assert halo["human"] == pytest.approx(expected_halo(labels))
            assert halo["prefix_shared"] == pytest.approx(expected_halo(labels))
            assert halo["joint"] == pytest.approx(expected_halo(reversed_labels))
            assert halo["joint"] != pytest.approx(halo["human"])

    def test_joint_comes_from_the_runs_cache_and_prefix_shared_costs_k_calls(self, joint_worse: Measured) -> None:
        """The run judged jointly: the joint routing is answered from its cache (no new joint request), the
        prefix-shared routing makes K one-criterion calls per row of validation and test; the cost per row says
        so, with the cached tokens the endpoint reported; the file is read back, not measured again."""
        rows = sum(joint_worse.result["splits"][s]["rows"] for s in ("val", "test"))
        requests = joint_worse.measurement_requests
        assert len(requests) == len(CRITERIA) * rows
        assert all(len(asked_criteria(r)) == 1 for r in requests)
        cost = joint_worse.result["cost_per_row"]
        assert cost["joint"] == {"calls": 1.0, "prompt_tokens": 100.0, "cached_prompt_tokens": 0.0}
        assert cost["prefix_shared"] == {
            "calls": float(len(CRITERIA)),
            "prompt_tokens": 100.0 * len(CRITERIA),
            "cached_prompt_tokens": float(CACHED * len(CRITERIA)),
        }
        joint_worse.stack.server.clear()
        assert main(["interference", str(joint_worse.run_dir), *joint_worse.stack.judge_addr()]) == 0
        assert judge_requests(joint_worse.stack.server) == []

    def test_report_has_the_measurement(self, joint_worse: Measured) -> None:
        """The report's section reads the measurement from the run directory: the planted Δ, halos and winner."""
        section = routings_section(load_study(joint_worse.run_dir))
        assert section is not None
        text = render_markdown(Document("report", (), (section,)))
        assert "| val | clarity | -1.000 | 1.000 | -2.000 | [-2.000, -2.000] |" in text
        assert "| test | macro | 0.333 | 1.000 | -0.667 |" in text
        assert "| prefix_shared (chosen) | 1.000 | 3.0 |" in text

    def test_an_experiment_is_measured_and_reported_per_cell(self, joint_worse: Measured, tmp_path: Path) -> None:
        """Given an experiment directory, every cell is measured: read back, then with --again measured anew from
        the run's prediction cache (no model call), to the same result; the experiment's report has the cell's
        tables."""
        experiment = tmp_path / "experiment"
        grid = GridConfig(modes=("SSS",), gates=("none",), runs=1, diagnostics=False, interference=False)
        create_experiment(experiment, grid, RunConfig(), ModelsConfig())
        shutil.copytree(joint_worse.run_dir, experiment / "cells" / "SSS-none-run0")
        server = joint_worse.stack.server
        server.clear()
        assert main(["interference", str(experiment), *joint_worse.stack.judge_addr()]) == 0
        assert judge_requests(server) == []
        written = experiment / "cells" / "SSS-none-run0" / "routing_interference.json"
        written.unlink()
        assert main(["interference", str(experiment), "--again", *joint_worse.stack.judge_addr()]) == 0
        assert judge_requests(server) == []  # both routings' predictions are in the run's cache by now
        assert json.loads(written.read_text()) == joint_worse.result
        section = routings_section(load_study(experiment))
        assert section is not None and any("SSS-none-run0: step 0" in str(b) for b in section.blocks)


class TestDeployableRouting:
    def test_export_records_the_validation_winner_and_judge_uses_it(
        self, joint_worse: Measured, tmp_path: Path
    ) -> None:
        """Export takes the stored measurement (no call), records prefix_shared with its cost per row; `judgeopt
        judge` then sends one prefix-shared request per row (K one-criterion calls), and --routing overrides."""
        server, run_dir, addr = joint_worse.stack.server, joint_worse.run_dir, joint_worse.stack.judge_addr()
        server.clear()
        judge_file = tmp_path / "judge.yaml"
        assert main(["export", str(run_dir), "--out", str(judge_file), *addr]) == 0
        assert judge_requests(server) == []
        exported = yaml.safe_load(judge_file.read_text())
        assert exported["routing"] == "prefix_shared"
        choice = exported["routing_choice"]
        assert choice["winner"] == "prefix_shared"
        assert choice["val_macro_rho"]["prefix_shared"] > choice["val_macro_rho"]["joint"]
        assert choice["cost_per_row"]["prefix_shared"]["calls"] == len(CRITERIA)
        data = tmp_path / "new.csv"
        write_test_rows(run_dir, data)
        rows = len(data.read_text().splitlines()) - 1
        out = tmp_path / "scores.csv"
        assert main(["judge", "--judge", str(judge_file), "--data", str(data), "--out", str(out), *addr]) == 0
        sent = judge_requests(server)
        assert len(sent) == len(CRITERIA) * rows and all(len(asked_criteria(r)) == 1 for r in sent)
        assert all(r.last_user_text.index("<sample>") < r.last_user_text.index("Criterion:") for r in sent)
        server.clear()
        joint_out = tmp_path / "joint.csv"
        args = ["judge", "--judge", str(judge_file), "--data", str(data), "--out", str(joint_out), *addr]
        assert main([*args, "--routing", "joint"]) == 0
        sent = judge_requests(server)
        assert len(sent) == rows and all(asked_criteria(r) == list(CRITERIA) for r in sent)

    def test_a_judge_file_without_the_new_fields_still_loads(self, joint_worse: Measured, tmp_path: Path) -> None:
        judge_file = tmp_path / "judge.yaml"
        assert main(["export", str(joint_worse.run_dir), "--out", str(judge_file), "--no-measure"]) == 0
        old = yaml.safe_load(judge_file.read_text())
        del old["routing_choice"]
        old["routing"] = "joint"
        judge_file.write_text(yaml.safe_dump(old))
        judge = read_judge(judge_file)
        assert judge.routing == "joint" and judge.routing_choice is None


def test_equal_routings_give_zero_delta_and_export_measures_when_absent(stack: Stack, tmp_path: Path) -> None:
    """When both routings score alike, every Δ and interval is 0 and the tie goes to joint (one call per row);
    export, finding no measurement, makes it (through the judge service) and writes it into the run directory."""
    stack.planted.joint_reverses = None
    try:
        run_dir = optimized(stack, tmp_path)
        stack.server.clear()
        judge_file = tmp_path / "judge.yaml"
        assert main(["export", str(run_dir), "--out", str(judge_file), *stack.judge_addr()]) == 0
        assert judge_requests(stack.server)  # measured now: the prefix-shared calls
    finally:
        stack.planted.joint_reverses = REVERSED
    result = json.loads((run_dir / "routing_interference.json").read_text())
    for split in ("val", "test"):
        comparison = result["splits"][split]
        assert comparison["delta"] == pytest.approx(dict.fromkeys(CRITERIA, 0.0))
        assert all(comparison["delta_ci"][n] == pytest.approx([0.0, 0.0]) for n in CRITERIA)
        assert comparison["delta_macro"] == pytest.approx(0.0)
        assert comparison["halo"]["joint"] == pytest.approx(comparison["halo"]["human"])
    exported = yaml.safe_load(judge_file.read_text())
    assert exported["routing"] == "joint" and exported["routing_choice"]["winner"] == "joint"
