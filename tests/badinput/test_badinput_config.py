"""Invalid configs, policies and criteria given to `judgeopt optimize`: each is one `Type: message` line on stderr, a
non-zero exit, and no run directory. None of these cases reaches a model (the endpoint is a closed port)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from judgeopt.cli import main

CLOSED = "http://127.0.0.1:9/v1"
MODELS = {"default": {"base_url": CLOSED, "model": "fake-model", "max_retries": 0}}
SMALL_DATA = {"name": "summeval", "train_size": 4, "val_size": 2, "test_size": 2}
SSS_POLICY: dict[str, Any] = {
    "judge": {"routing": "joint", "fields": ["task_description", "instruction", "sample"]},
    "loss": {"routing": "per_criterion", "fields": ["prediction", "ground_truth", "verdict"]},
    "gradient": {"routing": "per_criterion", "fields": ["task_description", "instruction", "sample", "critique"]},
    "optimizer": {"routing": "per_criterion", "fields": ["instruction", "gradient"]},
}


def run_section(**settings: Any) -> dict[str, Any]:
    return {"models": MODELS, "run": {"dataset": SMALL_DATA, **settings}}


def refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], *, error: str, names: tuple[str, ...] = ()
) -> str:
    """Run `judgeopt optimize ARGV --run-dir DIR`; assert one `error:` line naming ``names``, a non-zero exit and
    no run directory; return the line."""
    run_dir = tmp_path / "run"
    code = main(["optimize", *argv, "--run-dir", str(run_dir)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code != 0, "accepted"
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{error}: "), lines[0]
    for name in names:
        assert name in lines[0], (name, lines[0])
    assert not run_dir.exists()
    return lines[0]


def config_file(tmp_path: Path, content: Any) -> str:
    path = tmp_path / "judgeopt.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return str(path)


def policy_file(tmp_path: Path, content: Any) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return str(path)


CONFIG_CASES: dict[str, tuple[Any, tuple[str, ...]]] = {
    # name: (config file content, what the message must name)
    "unknown-top-level-key": ({**run_section(), "runs": {"steps": 3}}, ("runs",)),
    "unknown-run-key": (run_section(stepz=3), ("run.stepz",)),
    "unknown-dataset-key": (run_section(dataset={**SMALL_DATA, "train": 4}), ("run.dataset.train",)),
    "steps-not-a-number": (run_section(steps="many"), ("run.steps",)),
    "batch-size-a-list": (run_section(batch_size=[2]), ("run.batch_size",)),
    "steps-a-fraction": (run_section(steps=2.5), ("run.steps",)),
    "dataset-a-string": (run_section(dataset="summeval"), ("run.dataset",)),
    "run-null": ({"models": MODELS, "run": None}, ("run",)),
    "train-size-a-boolean": (run_section(dataset={**SMALL_DATA, "train_size": True}), ("run.dataset.train_size",)),
    "temperature-a-word": ({"models": {"default": {**MODELS["default"], "temperature": "hot"}}}, ("temperature",)),
    "negative-train-size": (run_section(dataset={**SMALL_DATA, "train_size": -1}), ("run.dataset.train_size",)),
    "negative-test-size": (run_section(dataset={**SMALL_DATA, "test_size": -5}), ("run.dataset.test_size",)),
    "negative-concurrency": (run_section(concurrency=-4), ("run.concurrency",)),
    "negative-max-calls": (run_section(max_calls=-1), ("run.max_calls",)),
    "negative-max-cost": (run_section(max_cost=-0.5), ("run.max_cost",)),
    "negative-output-price": (
        {"models": {"judge": {"output_price_per_1k_tokens": -1}}},
        ("output_price_per_1k_tokens",),
    ),
    "steps-below-zero": (run_section(steps=-1), ("run.steps",)),
    "batch-zero": (run_section(batch_size=0), ("run.batch_size",)),
    "unknown-gate": (run_section(gate="accuracy"), ("accuracy", "mae")),
    "integer-scale-without-an-integer": (
        run_section(dataset={**SMALL_DATA, "criteria": [{"name": "fluency", "min_score": 0.2, "max_score": 0.8}]}),
        ("criteria", "no integer between 0.2 and 0.8"),
    ),
    "inverted-criterion-range": (
        run_section(dataset={**SMALL_DATA, "criteria": [{"name": "fluency", "min_score": 5, "max_score": 1}]}),
        ("criteria",),
    ),
    "empty-initial-instruction": (
        run_section(initial_instructions={"fluency": ""}),
        ("initial_instructions", "fluency"),
    ),
    "blank-initial-instruction": (
        run_section(initial_instructions={"coherence": " \n "}),
        ("initial_instructions", "coherence", "empty"),
    ),
    "top-level-a-list": ("- run\n- models\n", ("mapping",)),
    "not-yaml": ("run: [steps: 2\n", ("YAML",)),
    "not-utf8": (b"run:\n  steps: 2  # caf\xe9\n", ("judgeopt.yaml",)),
}


class TestInvalidConfig:
    @pytest.mark.parametrize("case", list(CONFIG_CASES))
    def test_invalid_config_file_is_one_line(
        self, case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Unknown keys, wrong types, negative sizes, steps < 0, batch 0, an unknown gate, a bad range, a file that is
        not a YAML mapping: `ConfigError:` naming the file and the setting."""
        content, names = CONFIG_CASES[case]
        path = config_file(tmp_path, content)
        refused(tmp_path, capsys, ["--config", path], error="ConfigError", names=(path, *names))

    @pytest.mark.parametrize(
        ("flags", "names"),
        [
            (["--steps", "-1"], ("steps",)),
            (["--batch-size", "0"], ("batch_size",)),
            (["--train-size", "-5"], ("train_size",)),
            (["--concurrency", "0"], ("concurrency",)),
            (["--gate", "accuracy"], ("accuracy",)),
            (["--instruction-max-tokens", "0"], ("instruction_max_tokens",)),
            (["--instruction-max-ratio", "-1.5"], ("instruction_max_ratio",)),
        ],
        ids=["steps", "batch", "train-size", "concurrency", "gate", "max-tokens", "max-ratio"],
    )
    def test_invalid_flags_are_one_line(
        self, flags: list[str], names: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The same settings given as flags are refused the same way."""
        refused(tmp_path, capsys, ["--endpoint", CLOSED, *flags], error="ConfigError", names=names)

    @pytest.mark.parametrize("where", ["flag", "config"])
    def test_unknown_mode(self, where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An unknown mode is a `PolicyError` listing the presets."""
        argv = (
            ["--endpoint", CLOSED, "--mode", "XYZ"]
            if where == "flag"
            else ["--config", config_file(tmp_path, run_section(mode="XYZ"))]
        )
        refused(tmp_path, capsys, argv, error="PolicyError", names=("'XYZ'", "SSS"))

    def test_a_judge_routing_the_protocol_cannot_use(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """The study's templates have no prefix-shared layout: --judge-routing prefix_shared with the study profile
        is refused by the policy's rules (checked with --dry-run, so that an accepting build starts no run)."""
        argv = ["--endpoint", CLOSED, "--profile", "study", "--judge-routing", "prefix_shared", "--dry-run"]
        refused(tmp_path, capsys, argv, error="PolicyError", names=("'SSS'", "prefix-shared"))

    def test_empty_initial_instruction_is_refused_by_the_dry_run(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An empty initial instruction would make every judge call invalid: --dry-run refuses it too, naming the
        criterion, instead of estimating a run that cannot start."""
        path = config_file(tmp_path, run_section(initial_instructions={"relevance": ""}))
        refused(tmp_path, capsys, ["--config", path, "--dry-run"], error="ConfigError", names=("relevance", "empty"))

    @pytest.mark.parametrize("setting", ["steps", "batch_size"])
    def test_boolean_for_a_run_count_is_refused(
        self, setting: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`steps: yes` is a typo, not one step: refused like any other wrong type (checked with --dry-run, so that
        an accepting build starts no run)."""
        path = config_file(tmp_path, run_section(**{setting: True}))
        refused(tmp_path, capsys, ["--config", path, "--dry-run"], error="ConfigError", names=(f"run.{setting}",))

    def test_split_larger_than_the_data_leaves_no_run_directory(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Asking for more training rows than SummEval has is refused before anything is created."""
        path = config_file(tmp_path, run_section(dataset={**SMALL_DATA, "train_size": 100_000}))
        refused(tmp_path, capsys, ["--config", path], error="DataError", names=("train 100000", "1600"))

    def test_a_test_size_beyond_the_studys_test_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """summeval-wgc applies --test-size (a sample of its 480 test rows) and refuses more than there are."""
        path = config_file(tmp_path, run_section(dataset={**SMALL_DATA, "name": "summeval-wgc"}))
        argv = ["--config", path, "--test-size", "481", "--dry-run"]
        refused(tmp_path, capsys, argv, error="DataError", names=("summeval-wgc", "test_size 481", "480"))


class TestGridFileWithoutDataset:
    """A grid file that names no dataset runs on the experiments' default, the study's split (as without a file),
    and says so in one line; it never falls back silently to other data."""

    GRID: ClassVar[dict[str, Any]] = {
        "models": MODELS,
        "run": {"steps": 1, "dataset": {"train_size": 12, "val_size": 4}},
        "grid": {"modes": ["SSS"], "gates": ["none"], "runs": 1},
    }

    def _experiment(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], test_size: int
    ) -> tuple[int, str, list[str]]:
        grid = yaml.safe_load(yaml.safe_dump(self.GRID))
        grid["run"]["dataset"]["test_size"] = test_size
        path = config_file(tmp_path, grid)
        code = main(["experiment", "--config", path, "--dir", str(tmp_path / "exp"), "--dry-run"])
        captured = capsys.readouterr()
        assert not (tmp_path / "exp").exists()
        return code, captured.out, captured.err.strip().splitlines()

    def test_the_study_split_is_used_and_named(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """The dry run says which data it uses, and its judge calls count the 6 test rows asked for: per evaluation
        (steps 0 and 1) 4 validation + 6 test rows, plus the batch of 3."""
        code, out, err = self._experiment(tmp_path, capsys, 6)
        assert code == 0
        (note,) = err
        assert note.startswith("note: ") and "judgeopt.yaml names no dataset" in note and "summeval-wgc" in note
        judge_calls = re.search(r"judge\s*│\s*(\d+)", out)
        assert judge_calls is not None and int(judge_calls.group(1)) == 2 * (4 + 6) + 3

    def test_sizes_are_checked_against_the_study_split(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """500 test rows fit SummEval's 1,600 but not the study's 480: refused, after the note, in one line."""
        code, _out, err = self._experiment(tmp_path, capsys, 500)
        assert code != 0
        note, error = err
        assert note.startswith("note: ")
        assert error.startswith("DataError: summeval-wgc: test_size 500")


class TestInvalidPolicy:
    @pytest.mark.parametrize(
        "content",
        ["- judge\n- loss\n- gradient\n- optimizer\n", "SSS\n", "", "42\n"],
        ids=["list", "string", "empty", "number"],
    )
    def test_policy_that_is_yaml_but_not_a_mapping(
        self, content: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A policy file that parses but is not a mapping of stages: `PolicyError` naming the file."""
        path = policy_file(tmp_path, content)
        refused(tmp_path, capsys, ["--endpoint", CLOSED, "--policy", path], error="PolicyError", names=(path,))

    @pytest.mark.parametrize(
        ("change", "names"),
        [
            ({"judge": "joint"}, ("judge",)),
            ({"judge": {"routing": "sideways", "fields": ["instruction", "sample"]}}, ("judge.routing",)),
            ({"loss": {"routing": "per_criterion", "fields": ["prediction", "password"]}}, ("'loss'", "'password'")),
            ({"critic": SSS_POLICY["loss"]}, ("'critic'",)),
        ],
        ids=["stage-not-a-mapping", "unknown-routing", "unknown-field", "unknown-stage"],
    )
    def test_malformed_policy_names_the_stage(
        self, change: dict[str, Any], names: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A stage that is not a mapping, an unknown routing, field or stage: `PolicyError` naming it."""
        path = policy_file(tmp_path, {**SSS_POLICY, **change})
        refused(tmp_path, capsys, ["--endpoint", CLOSED, "--policy", path], error="PolicyError", names=names)

    def test_policy_naming_an_unknown_criterion_in_a_scope_list(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A per-criterion stage whose scope lists a criterion the dataset does not have: `PolicyError` naming
        the stage and the criterion (checked against SummEval's criteria before any service starts)."""
        gradient = {**SSS_POLICY["gradient"], "scope": ["fluency", "humour"]}
        path = policy_file(tmp_path, {**SSS_POLICY, "gradient": gradient})
        argv = ["--config", config_file(tmp_path, run_section()), "--policy", path]
        refused(tmp_path, capsys, argv, error="PolicyError", names=("'gradient'", "'humour'"))


class TestUnknownCriteria:
    def test_unknown_criterion_on_summeval_names_it(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`--criteria fluency,humour` on SummEval: one line naming 'humour' and the valid criteria."""
        argv = ["--config", config_file(tmp_path, run_section()), "--criteria", "fluency,humour"]
        refused(tmp_path, capsys, argv, error="DataError", names=("'humour'", "fluency"))

    @pytest.mark.parametrize("criteria", ["flu ency", ",", "fluency,fluency"], ids=["space", "empty", "twice"])
    def test_malformed_criteria_list(self, criteria: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A criterion name that cannot be one, an empty list or a repeated name: one line, no run."""
        argv = ["--config", config_file(tmp_path, run_section()), "--criteria", criteria]
        run_dir = tmp_path / "run"
        code = main(["optimize", *argv, "--run-dir", str(run_dir)])
        lines = capsys.readouterr().err.strip().splitlines()
        assert code != 0 and len(lines) == 1 and not run_dir.exists()
        assert lines[0].split(":", 1)[0] in ("ConfigError", "DataError")
