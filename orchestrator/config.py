"""The judgeopt config file (YAML) as the orchestrator reads it: the base layer's ``models`` and ``service``
sections (see ``judgeopt.core.config_file``) plus ``run`` (one optimization) and ``grid`` (an experiment)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from judgeopt.core.errors import ConfigError, describe_validation_error
from judgeopt.core.models import ModelsConfig
from judgeopt.core.service_config import ServiceConfig
from judgeopt.core.yaml_files import read_yaml_mapping
from judgeopt.orchestrator.data.records import DatasetConfig

GATE_METRICS: tuple[str, ...] = ("mae", "spearman", "kendall", "pearson", "off_by_one")
"""The metrics a gate may compare (``Evaluation.metric`` accepts them); ``none`` turns the gate off."""


class RunConfig(BaseModel):
    """Everything that defines an optimization run (stored with the run, so ``resume`` needs nothing else).

    Counts are strict integers: YAML's ``yes``/``true`` is refused rather than read as 1."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: str = "SSS"
    """A preset: SSS, SSC, SCC, CCC or single. Ignored when ``policy_file`` is set."""
    policy_file: Path | None = None
    gate: str = "mae"
    """Validation metric a candidate must not get worse on (``mae``, ``spearman``, …), or ``none``."""
    steps: StrictInt = Field(default=12, ge=0)
    batch_size: StrictInt = Field(default=3, ge=1)
    test_interval: StrictInt = Field(default=1, ge=1)
    """Evaluate on the test set every this many steps (and always at step 0 and the last step)."""
    seed: StrictInt = 0
    concurrency: StrictInt | None = Field(default=None, ge=1)
    """Calls in flight at once; default 1 against the embedded model (it serves one at a time), else 8."""
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    task_description: str | None = None
    """The judge prompt's fixed part; default: the agents' generic one."""
    initial_instructions: dict[str, str] = Field(default_factory=dict)
    """Per criterion; a criterion not listed starts from "Rate from <min> to <max>." as in the study."""
    call_attempts: StrictInt = Field(default=3, ge=1)
    step_retries: StrictInt = Field(default=1, ge=0)
    max_failure_share: float = Field(default=0.2, ge=0.0, le=1.0)
    """A step whose share of failed calls exceeds this is retried, then recorded as failed and rolled back."""
    bootstrap_resamples: StrictInt = Field(default=200, ge=0)
    drop_output_format_after_update: bool = False
    """Reproduce the study code's quirk: the judge's output-format block vanishes after the first update."""
    max_calls: StrictInt | None = Field(default=None, ge=0)
    """Budget: LLM calls the run may make (every attempt counts). A step that could exceed it is not started."""
    max_tokens: StrictInt | None = Field(default=None, ge=0)
    """Budget: prompt + completion tokens; checked with the step's estimate before each step."""
    rate_window_seconds: float = Field(default=60.0, gt=0)
    """The window of the models' requests/tokens-per-minute limits (shorter only for tests)."""

    @field_validator("gate")
    @classmethod
    def _known_gate(cls, value: str) -> str:
        if value != "none" and value not in GATE_METRICS:
            raise ValueError(f"unknown gate {value!r} (none, {', '.join(GATE_METRICS)})")
        return value


class GridConfig(BaseModel):
    """The grid of an experiment; by default the study's 10 configurations × 3 runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    modes: tuple[str, ...] = ("SSS", "SSC", "SCC", "CCC", "single")
    gates: tuple[str, ...] = ("mae", "none")
    runs: int = Field(default=3, ge=1)
    """Repeated runs per configuration; run k uses seed ``run.seed + k`` on the same data split."""
    diagnostics: bool = True
    interference: bool = True
    select_on: Literal["val", "test"] = "val"


class JudgeoptConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    run: RunConfig = Field(default_factory=RunConfig)
    grid: GridConfig = Field(default_factory=GridConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    """Relative file paths in a config file are relative to the file, not to the working directory."""
    run = raw.get("run")
    if not isinstance(run, dict):
        return
    dataset = run.get("dataset")
    if isinstance(dataset, dict) and isinstance(dataset.get("path"), str):
        dataset["path"] = str(base / dataset["path"])
    if isinstance(run.get("policy_file"), str):
        run["policy_file"] = str(base / run["policy_file"])


def load_config(path: Path | None) -> JudgeoptConfig:
    """Read and validate a config file; every problem becomes one ``ConfigError`` line naming the file."""
    if path is None:
        return JudgeoptConfig()
    raw = read_yaml_mapping(path, what="config file")
    _resolve_paths(raw, path.parent)
    try:
        return JudgeoptConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_validation_error(exc)}") from None
