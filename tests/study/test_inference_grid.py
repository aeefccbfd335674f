"""`examples/inference.yaml`: the joint judge against the prefix-shared per-criterion judge, each without and with
length limits, for Single-Task, SSS and CCC. Its dry run counts K judge calls per prefix-shared sample; scaled
down by the experiment's flags (1 step, 1 run, a few rows) against the scripted endpoint, the report's section
gives every configuration's test ρ with intervals and its cost, cached prompt tokens included."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from pathlib import Path

import pytest
from helpers.fake_openai import Completion, FakeOpenAI, Handler, RecordedRequest, Reply
from helpers.reports import section, table_rows
from helpers.scripts import deterministic_handler, role_of
from helpers.text import common_prefix

from judgeopt.cli import main
from judgeopt.orchestrator.config import GridConfig, RunConfig
from judgeopt.orchestrator.errors import PolicyError
from judgeopt.orchestrator.study.experiment import cell_configs

GRID = Path(__file__).parents[2] / "examples" / "inference.yaml"
MODES = ("single", "SSS", "CCC")
VARIANTS = {  # variant: (judge routing, length limit as the report states it)
    "joint": ("joint", "off"),
    "joint_limited": ("joint", "≤ 120 tokens, ≤ 3 × median"),
    "prefix_shared": ("prefix_shared", "off"),
    "prefix_shared_limited": ("prefix_shared", "≤ 120 tokens, ≤ 3 × median"),
}
K = 4
SCALED_DOWN = ("--steps", "1", "--runs", "1", "--batch-size", "1")
ROWS = ("--train-size", "8", "--val-size", "3", "--test-size", "4")
"""A few rows of the file's data (the study's split): seeded samples of its training and test files; 4 test items
are enough for a bootstrap interval (3 scored items at least)."""
SECTION = "Judge routing and instruction length limits"


def test_the_dry_run_counts_k_judge_calls_per_prefix_shared_sample(capsys: pytest.CaptureFixture[str]) -> None:
    """12 cells (one run each here; the file asks for 3). Per track, step 0 scores validation (100) and test
    (480), each of 12 steps a batch of 3, the candidate on validation and test: one call per sample for a joint
    judge, K for a prefix-shared one with K criteria (SSS and CCC), one for Single-Task's one-criterion tracks
    (4 tracks each) whatever the routing."""
    assert main(["experiment", "--config", str(GRID), "--dry-run", "--runs", "1"]) == 0
    out = capsys.readouterr().out
    assert "12 cells (3 modes × 1 gates × 4 variants × 1 runs)" in out
    per_track = (100 + 480) + 12 * (3 + 100 + 480)
    judge_calls = 2 * (2 * per_track + 2 * K * per_track) + 4 * 4 * per_track  # SSS and CCC, then Single-Task
    judge_row = next(line for line in out.splitlines() if line.strip("│ ").startswith("judge"))
    assert judge_calls in [int(n) for n in re.findall(r"\d+", judge_row.replace(",", ""))]


def test_a_variant_its_cell_cannot_use_is_refused_naming_the_cell() -> None:
    """A variant's judge routing is checked against each cell's policy before anything is written."""
    grid = GridConfig(modes=("SSS",), gates=("mae",), runs=1, variants={"prefix": {"judge_routing": "prefix_shared"}})
    with pytest.raises(PolicyError, match=r"^grid cell SSS-mae-prefix-run0: policy 'SSS': the study's prompt protocol"):
        cell_configs(grid, RunConfig(prompt_protocol="study"))
    assert cell_configs(grid, RunConfig())["SSS-mae-prefix-run0"].judge_routing == "prefix_shared"


def prefix_cache(script: Handler) -> Handler:
    """``script``'s replies, each judge reply reporting as cached the prompt tokens (the scripted count: characters
    / 4) of the longest prefix its prompt shares with an earlier judge prompt, as a prefix-caching endpoint
    would."""
    seen: list[str] = []
    lock = threading.Lock()

    def handle(request: RecordedRequest) -> Reply:
        reply = script(request)
        if role_of(request) != "judge" or not isinstance(reply, Completion):
            return reply
        text = request.last_user_text
        with lock:
            shared = max((len(common_prefix([text, earlier])) for earlier in seen), default=0)
            seen.append(text)
        return dataclasses.replace(reply, cached_tokens=shared // 4)

    return handle


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    directory = tmp_path_factory.mktemp("inference-grid") / "experiment"
    with FakeOpenAI(prefix_cache(deterministic_handler())) as fake, pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUDGEOPT_API_KEY", "not-a-key")  # the file names it; the scripted endpoint ignores it
        flags = ["--endpoint", fake.base_url, *SCALED_DOWN, *ROWS]
        assert main(["experiment", "--config", str(GRID), "--dir", str(directory), *flags]) == 0
    assert main(["report", str(directory)]) == 0
    return directory, (directory / "report.md").read_text(encoding="utf-8")


def cell_summary(directory: Path, mode: str, variant: str) -> dict[str, object]:
    path = directory / "cells" / f"{mode}-mae-{variant}-run0" / "summary.json"
    summary: dict[str, object] = json.loads(path.read_text())
    return summary


def test_every_cell_ran_its_variant(experiment: tuple[Path, str]) -> None:
    """Each variant's judge routing and limits reached its runs: a prefix-shared SSS or CCC judge made K model
    calls per judge RPC, a joint one one; the departures from the study are listed."""
    directory, _ = experiment
    cells = sorted(p.name for p in (directory / "cells").iterdir())
    assert cells == sorted(f"{m}-mae-{v}-run0" for m in MODES for v in VARIANTS)
    for mode in MODES:
        for variant, (routing, limit) in VARIANTS.items():
            summary = cell_summary(directory, mode, variant)
            assert summary["status"] == "complete"
            calls, rpcs = summary["llm_calls"], summary["rpc_attempts"]  # type: ignore[index]
            per_rpc = K if routing == "prefix_shared" and mode != "single" else 1
            assert calls["judge"] == per_rpc * rpcs["judge"] > 0  # type: ignore[index]
            differences = set(summary["differs_from_study"])  # type: ignore[call-overload]
            assert ("judge_routing" in differences) == (routing == "prefix_shared")
            assert ("instruction_max_tokens" in differences) == (limit != "off")


def test_the_report_compares_test_rho_with_intervals(experiment: tuple[Path, str]) -> None:
    """One row per configuration with its routing and limit, macro and per-criterion test ρ at the validation-chosen
    step each with a bootstrap interval (the file's 200 resamples) that holds the value."""
    directory, markdown = experiment
    text = section(markdown, SECTION)
    quality = text.split("Cost per run", 1)[0]
    rows = {r[0]: r for r in table_rows(quality)}
    header = next(r for r in table_rows(quality) if r[0] == "configuration")
    criteria = json.loads((directory / "cells" / "SSS-mae-joint-run0" / "summary.json").read_text())["criteria"]
    assert header[5:] == ["macro ρ [95% CI]", *(f"{c} ρ [95% CI]" for c in criteria)]
    for mode in MODES:
        for variant, (routing, limit) in VARIANTS.items():
            row = rows[f"{mode} (gate mae, {variant})"]
            assert row[1:4] == [routing, limit, "1"]
            summary = cell_summary(directory, mode, variant)
            best = summary["best"]
            assert row[4] == str(best["step"])  # type: ignore[index]
            rhos = [best["macro_rho"], *(best["rho"][c] for c in criteria)]  # type: ignore[index]
            for cell, rho in zip(row[5:], rhos, strict=True):
                value, bounds = cell.split(" ", 1)
                low, high = (float(b) for b in bounds.strip("[]").split(", "))
                assert value == f"{rho:.3f}" and low <= rho + 1e-9 and rho - 1e-9 <= high


def test_the_report_gives_each_configurations_cost_with_cached_tokens(experiment: tuple[Path, str]) -> None:
    """Per configuration, the judge's and all roles' calls, prompt tokens and cached prompt tokens per run (here
    one run: the cell's own figures), every one non-zero; with K criteria in a call's track (SSS, CCC) the
    prefix-shared layout gets most of its judge's prompt tokens from the (simulated) prefix cache. The cache is
    shared by all cells, as an endpoint's is, so the joint layout's share depends on the cells' order: not compared."""
    directory, markdown = experiment
    cost = section(markdown, SECTION).split("Cost per run", 1)[1]
    rows = {r[0]: r for r in table_rows(cost)}
    assert rows["configuration"][3:] == [
        "judge calls",
        "judge prompt tokens",
        "judge cached prompt tokens",
        "all calls",
        "all prompt tokens",
        "all cached prompt tokens",
        "rejected rewrites",
    ]
    share: dict[tuple[str, str], float] = {}
    for mode in MODES:
        for variant in VARIANTS:
            row = rows[f"{mode} (gate mae, {variant})"]
            judge_calls, judge_prompt, judge_cached, calls, prompt, cached = (int(v.replace(",", "")) for v in row[3:9])
            summary = cell_summary(directory, mode, variant)
            tokens = summary["tokens"]["judge"]  # type: ignore[index]
            assert judge_calls == summary["llm_calls"]["judge"] > 0  # type: ignore[index]
            assert (judge_prompt, judge_cached) == (tokens["prompt"], tokens["cached_prompt"])
            assert judge_cached > 0 and calls > judge_calls and prompt > judge_prompt and cached == judge_cached
            share[(mode, variant)] = judge_cached / judge_prompt
    for mode in ("SSS", "CCC"):  # K - 1 of a sample's K calls share everything but their criterion with the first
        assert share[(mode, "prefix_shared")] > 0.6 and share[(mode, "prefix_shared_limited")] > 0.6
