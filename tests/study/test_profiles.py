"""Profiles, and the list of settings in which a run differs from the study (``summary.json``'s
``differs_from_study``): under ``study-code`` nothing, under ``study`` exactly the code quirks left off, and each
setting flipped alone shows up alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers.fake_openai import FakeOpenAI
from helpers.runs import write_config
from helpers.scripts import deterministic_handler

from judgeopt.agents.prompting import fence, study_fence
from judgeopt.cli import main
from judgeopt.core.models import ModelsConfig
from judgeopt.orchestrator.config import RunConfig
from judgeopt.orchestrator.data.loading import load_dataset
from judgeopt.orchestrator.data.records import DatasetConfig
from judgeopt.orchestrator.profiles import (
    CODE_QUIRKS,
    DATASET_QUIRKS,
    LOCAL_CONTEXT_CAP,
    STUDY_MODELS,
    Profile,
    apply_profile,
    study_differences,
)

ENDPOINT = {"base_url": "http://127.0.0.1:9/v1", "model": "m", "structured_output": "none"}
QUIRK_ENTRIES = sorted([*CODE_QUIRKS, *(f"dataset.{k}" for k in DATASET_QUIRKS)])


def profiled(profile: Profile, run: dict[str, Any] | None = None, models: ModelsConfig | None = None) -> list[str]:
    data, models = apply_profile(profile, run or {}, models or ModelsConfig(default=ENDPOINT))
    return sorted(study_differences(RunConfig.model_validate(data), models))


RUN_FLIPS: list[tuple[str, Any, str]] = [
    ("steps", 5, "steps"),
    ("batch_size", 4, "batch_size"),
    ("prompt_protocol", "judgeopt", "prompt_protocol"),
    ("criterion_definitions", True, "criterion_definitions"),
    ("rejudge_unchanged_prompts", False, "rejudge_unchanged_prompts"),
    ("gate_counts_parse_failures", True, "gate_counts_parse_failures"),
    ("same_batches_every_run", False, "same_batches_every_run"),
    ("drop_output_format_after_update", False, "drop_output_format_after_update"),
    ("training_parse_failure_fails_step", False, "training_parse_failure_fails_step"),
    ("gate", "spearman", "gate"),
]
DATASET_FLIPS: list[tuple[str, Any, str]] = [
    ("name", "summeval", "dataset.name"),
    ("val_size", 50, "dataset.val_size"),
    ("test_size", 40, "dataset.test_size"),
    ("val_overlaps_train", False, "dataset.val_overlaps_train"),
]


class TestStudyDifferences:
    def test_study_code_differs_in_nothing(self) -> None:
        assert profiled("study-code") == []

    def test_study_differs_in_exactly_the_code_quirks_it_leaves_off(self) -> None:
        assert profiled("study") == QUIRK_ENTRIES
        assert len(QUIRK_ENTRIES) == 3

    def test_full_keeps_judgeopts_own_settings_and_lists_them(self) -> None:
        differences = profiled("full")
        assert {"prompt_protocol", "criterion_definitions", "rejudge_unchanged_prompts"} <= set(differences)
        assert "steps" not in differences and "batch_size" not in differences

    @pytest.mark.parametrize(("field", "value", "entry"), RUN_FLIPS)
    def test_each_run_setting_flipped_alone_shows_alone(self, field: str, value: Any, entry: str) -> None:
        assert profiled("study-code", {field: value}) == [entry]

    @pytest.mark.parametrize(("field", "value", "entry"), DATASET_FLIPS)
    def test_each_data_setting_flipped_alone_shows_alone(self, field: str, value: Any, entry: str) -> None:
        assert profiled("study-code", {"dataset": {field: value}}) == [entry]

    @pytest.mark.parametrize("role", sorted(STUDY_MODELS))
    @pytest.mark.parametrize("setting", ["temperature", "max_tokens"])
    def test_each_role_setting_flipped_alone_shows_alone(self, role: str, setting: str) -> None:
        value = 0.2 if setting == "temperature" else 77
        models = ModelsConfig(default=ENDPOINT, **{role: {setting: value}})
        assert profiled("study-code", models=models) == [f"{setting}.{role}"]

    def test_constrained_output_is_a_difference(self) -> None:
        models = ModelsConfig(default={**ENDPOINT, "structured_output": "json_schema"})
        assert profiled("study-code", models=models) == [f"structured_output.{r}" for r in sorted(STUDY_MODELS)]

    def test_the_local_models_context_clips_the_caps_and_says_so(self) -> None:
        data, models = apply_profile("study-code", {}, ModelsConfig())  # no endpoint: the embedded model
        optimizer = models.for_role("optimizer", local_base_url="http://127.0.0.1:1/v1")
        assert optimizer.max_tokens == LOCAL_CONTEXT_CAP
        assert "max_tokens.optimizer" in study_differences(RunConfig.model_validate(data), models)

    def test_a_users_explicit_setting_wins_over_the_profile(self) -> None:
        data, models = apply_profile("study", {"steps": 2}, ModelsConfig(default=ENDPOINT, judge={"max_tokens": 9}))
        assert data["steps"] == 2 and data["prompt_protocol"] == "study"
        assert models.for_role("judge").max_tokens == 9


def test_a_default_run_lists_its_differences_in_its_summary(tmp_path: Path) -> None:
    """`judgeopt optimize` with a config file runs the `full` profile; summary.json names the profile and every
    setting in which the run departs from the study, and gives Δ macro ρ with its paired-bootstrap interval."""
    with FakeOpenAI(deterministic_handler()) as server:
        config = write_config(tmp_path / "run.yaml", server.base_url, mode="SSS", steps=1, bootstrap_resamples=100)
        assert main(["optimize", "--config", str(config), "--run-dir", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["profile"] == "full"
    differences = set(summary["differs_from_study"])
    assert {
        "steps",
        "batch_size",
        "prompt_protocol",
        "criterion_definitions",
        "rejudge_unchanged_prompts",
    } <= differences
    assert {"gate_counts_parse_failures", "dataset.name", "structured_output.judge"} <= differences
    delta = summary["delta_macro_rho"]
    assert delta["value"] == pytest.approx(summary["best"]["macro_rho"] - summary["initial"]["macro_rho"])
    low, high = delta["ci95"]
    assert -2.0 <= low <= high <= 2.0


def test_the_study_grid_dry_run_prints_its_calls(capsys: pytest.CaptureFixture[str]) -> None:
    """`examples/study.yaml` is Table 1's protocol: 30 cells. Its dry run counts every judge call of every cell:
    per multi-task cell, step 0 scores validation (100) and test (480), and each of 12 steps a batch of 3, the
    candidate on validation and the test set; a Single-Task cell does so once per criterion."""
    example = Path(__file__).resolve().parents[2] / "examples" / "study.yaml"
    assert main(["experiment", "--config", str(example), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "30 cells (5 modes × 2 gates × 3 runs)" in out
    per_track = (100 + 480) + 12 * (3 + 100 + 480)
    judge_calls = 24 * per_track + 6 * 4 * per_track
    judge_row = next(line for line in out.splitlines() if line.strip("│ ").startswith("judge"))
    assert str(judge_calls) in judge_row
    optimizer_row = next(line for line in out.splitlines() if line.strip("│ ").startswith("optimizer"))
    per_step = {"SSS": 4, "SSC": 1, "SCC": 1, "CCC": 1, "single": 4}
    assert str(sum(12 * n * 2 * 3 for n in per_step.values())) in optimizer_row


@pytest.mark.parametrize("name", ["summeval", "summeval-wgc"])
def test_the_tag_guard_changes_no_text_of_the_studys_data(name: str) -> None:
    """Both protocols neutralise their tags inside inserted text (the study's code did not). On the study's data no
    text holds such a tag, so the guard changes nothing there and is no difference from the study to list."""
    texts = [text for record in load_dataset(DatasetConfig(name=name)).records for _, text in record.fields]
    assert len(texts) >= 1280  # 640 records of the study split (1,600 of SummEval), two fields each
    assert [t for t in texts if study_fence(t) != t or fence(t) != t] == []
