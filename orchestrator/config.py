"""The judgeopt config file (YAML) as the orchestrator reads it: the base layer's ``models`` and ``service``
sections (see ``judgeopt.core.config_file``) plus ``run`` (one optimization), ``grid`` (an experiment) and
``tracking`` (MLflow)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from judgeopt.core.errors import ConfigError, describe_validation_error
from judgeopt.core.models import ModelsConfig
from judgeopt.core.service_config import ServiceConfig
from judgeopt.core.yaml_files import read_yaml_mapping
from judgeopt.orchestrator.data.records import DatasetConfig

ArchiveChoice = Literal["hypervolume", "weights", "maxmin"]
GATE_METRICS: tuple[str, ...] = ("mae", "spearman", "kendall", "pearson", "off_by_one")
"""The metrics a gate may compare (``Evaluation.metric`` accepts them); ``none`` turns the gate off."""


class RunConfig(BaseModel):
    """Everything that defines an optimization run (stored with the run, so ``resume`` needs nothing else).

    Counts are strict integers: YAML's ``yes``/``true`` is refused rather than read as 1."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    mode: str = "SSS"
    """A preset: SSS, SSC, SCC, CCC or single. Ignored when ``policy_file`` is set."""
    policy_file: Path | None = None
    gate: str = "mae"
    """Validation metric a candidate must not get worse on (``mae``, ``spearman``, …), ``pareto`` (no criterion's
    ``gate_metric`` may drop by more than ``gate_epsilon``), or ``none``."""
    gate_metric: str = "mae"
    """The per-criterion metric of the ``pareto`` gate and of the archive every gate keeps (a ``GATE_METRICS``
    name)."""
    gate_epsilon: float = Field(default=0.0, ge=0.0)
    """The ``pareto`` gate's tolerance: how far one criterion's metric may drop (in the metric's units)."""
    gate_drop_interval: bool = False
    """With the ``pareto`` gate: refuse a drop only when its 95% paired-bootstrap interval over the validation items
    lies wholly beyond ``gate_epsilon`` (``bootstrap_resamples`` resamples), so noise alone does not refuse."""
    archive_choice: ArchiveChoice = "hypervolume"
    """How the archive's deployable member is chosen (with the ``pareto`` gate it is ``best``; under other gates it
    is shown beside ``best``): the largest hypervolume contribution, the largest ``archive_weights``-weighted sum, or
    the best worst criterion (each on the metric scaled to 0-1 over its range)."""
    archive_weights: dict[str, float] = Field(default_factory=dict)
    """Per criterion, for ``archive_choice: weights``; a criterion not listed weighs 1."""
    archive_recombine: bool = False
    """After the last step, stitch one prompt from the archive (each criterion's instruction from the member best on
    that criterion), validate it as a whole through the gate, and record it as step ``steps + 1`` with where each
    instruction came from. Tracks of one criterion (Single-Task) have nothing to stitch."""
    conflict_arbiter: bool = False
    """Turn on the conflict arbiter: before each joint optimizer call, find pairs of criteria whose gradients ask
    for contradictory changes and hand the optimizer a resolution (one more optimizer-model call per step)."""
    specificity_fallback: float | None = Field(default=None, ge=0.0, le=1.0)
    """Turn on the specificity fallback with this focus threshold (0-1): after a joint gradient call, criteria
    named in less than this share of its sentences get per-criterion gradient calls in the same step (and fresh
    per-criterion loss calls where the loss was joint). Sets the policy's ``specificity_fallback``."""
    judge_routing: Literal["joint", "per_criterion", "prefix_shared"] | None = None
    """Route the judge this way whatever the mode or policy file says: ``joint`` (every criterion in one call),
    ``per_criterion`` (one call per criterion, the criterion before the sample) or ``prefix_shared`` (one call per
    criterion, the sample first, so a prefix cache prefills it once). ``None`` keeps the policy's (joint in every
    preset)."""
    instruction_max_tokens: StrictInt | None = Field(default=None, ge=1)
    """Length-aware instruction synthesis: no rewritten instruction longer than this many tokens (approximate: words
    and punctuation marks). Stated in the optimizer's request; an instruction over it is asked for once more, then
    that criterion keeps its previous instruction (never cut)."""
    instruction_max_ratio: float | None = Field(default=None, gt=0)
    """Length-aware instruction synthesis, relative: no rewritten instruction longer than this many times the median
    length of the current instructions (with ``instruction_max_tokens`` too, the smaller limit holds)."""
    steps: StrictInt = Field(default=12, ge=0)
    batch_size: StrictInt = Field(default=3, ge=1)
    test_interval: StrictInt = Field(default=1, ge=1)
    """Evaluate on the test set every this many steps (and always at step 0 and the last step)."""
    seed: StrictInt = 0
    concurrency: StrictInt | None = Field(default=None, ge=1)
    """Calls in flight at once; default 1 against the embedded model (it serves one at a time), else 8."""
    concurrency_mode: Literal["fixed", "adaptive"] = "fixed"
    """``adaptive``: per model endpoint, the calls in flight follow an AIMD limit between 1 and ``concurrency``
    (grown while replies stay fast, cut on overload, timeouts or replies much slower than the fastest)."""
    pipeline_steps: bool = True
    """A step's test evaluation runs while the next step trains (training calls go first at every limit); off,
    each step finishes its test evaluation before the next starts. The results are the same either way."""
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
    max_cost: float | None = Field(default=None, ge=0)
    """Money budget, in the currency of the models' prices: stop at the step boundary before the run could cost more
    (a step's cost is estimated from its calls, as the dry run does; a role with no price costs nothing)."""
    rate_window_seconds: float = Field(default=60.0, gt=0)
    """The window of the models' requests/tokens-per-minute limits (shorter only for tests)."""

    profile: Literal["quick", "full", "study", "study-code", "custom"] = "custom"
    """The profile the run's settings started from (``judgeopt.orchestrator.profiles``); ``custom`` if none."""

    # --- where judgeopt departs from the study, each a setting (see ``judgeopt.orchestrator.profiles``) ---------
    prompt_protocol: Literal["judgeopt", "study"] = "judgeopt"
    """The agents' prompt templates: judgeopt's own, or the study's structure (``docs/study-protocol.md``)."""
    criterion_definitions: bool = True
    """Tell every role what each criterion means (its description). The study named the criteria only."""
    rejudge_unchanged_prompts: bool = False
    """Score an unchanged prompt again at every step, as the study did (its judge noise then shows in the
    trajectories). judgeopt answers it from the run's prediction cache."""
    gate_counts_parse_failures: bool = True
    """The gate's metric counts an item the judge failed to score as the worst possible error on that criterion,
    so a candidate cannot pass by failing on hard items. The study dropped such items."""
    same_batches_every_run: bool = False
    """Draw the training batches independently of the run's seed, as the study did (its repeated runs differ only
    by sampling). judgeopt seeds them per run."""
    training_parse_failure_fails_step: bool = False
    """The study code's quirk: a training batch with any judge reply that does not parse fails its step (rolled
    back, never a crash)."""

    @field_validator("gate")
    @classmethod
    def _known_gate(cls, value: str) -> str:
        if value not in ("none", "pareto") and value not in GATE_METRICS:
            raise ValueError(f"unknown gate {value!r} (none, pareto, {', '.join(GATE_METRICS)})")
        return value

    @field_validator("gate_metric")
    @classmethod
    def _known_gate_metric(cls, value: str) -> str:
        if value not in GATE_METRICS:
            raise ValueError(f"unknown gate metric {value!r} ({', '.join(GATE_METRICS)})")
        return value

    @field_validator("archive_weights")
    @classmethod
    def _non_negative_weights(cls, value: dict[str, float]) -> dict[str, float]:
        negative = [name for name, weight in value.items() if weight < 0]
        if negative:
            raise ValueError(f"the archive weight of criterion {negative[0]!r} is negative")
        return value

    @field_validator("initial_instructions")
    @classmethod
    def _no_empty_instruction(cls, value: dict[str, str]) -> dict[str, str]:
        """An empty instruction is refused by every agent, so a run starting from one could make no valid call."""
        empty = [name for name, text in value.items() if not text.strip()]
        if empty:
            raise ValueError(f"the instruction for criterion {empty[0]!r} is empty")
        return value


class GridConfig(BaseModel):
    """The grid of an experiment; by default the study's 10 configurations × 3 runs."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    modes: tuple[str, ...] = ("SSS", "SSC", "SCC", "CCC", "single")
    gates: tuple[str, ...] = ("mae", "none")
    runs: int = Field(default=3, ge=1)
    """Repeated runs per configuration; run k uses seed ``run.seed + k`` on the same data split."""
    diagnostics: bool = True
    interference: bool = True
    select_on: Literal["val", "test"] = "val"
    variants: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Named sets of run settings laid over ``run:`` (a mitigation turned on, say); every mode × gate × run is
    repeated once per variant. None: each cell takes ``run:`` as it is."""

    @field_validator("variants")
    @classmethod
    def _variants_set_other_settings(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, settings in value.items():
            if not re.fullmatch(r"[A-Za-z0-9_]+", name):
                raise ValueError(f"variant name {name!r}: use letters, digits and underscores")
            owned = sorted(set(settings) & {"mode", "gate", "seed", "policy_file"})
            if owned:
                raise ValueError(f"variant {name!r} sets {owned[0]!r}, which the grid decides")
        return value

    def variant_names(self) -> tuple[str | None, ...]:
        """The variants in order, or ``(None,)`` without any."""
        return tuple(self.variants) or (None,)


class MlflowSettings(BaseModel):
    """Where a run is tracked in MLflow."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    tracking_uri: str | None = None
    """The tracking store (``sqlite:///mlflow.db``, ``http://host:5000``, …); default ``$MLFLOW_TRACKING_URI``, else
    MLflow's own default (``mlflow.db`` in the working directory)."""
    experiment: str = "judgeopt"
    """The MLflow experiment the runs are logged to."""


class TrackingConfig(BaseModel):
    """The config file's ``tracking`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    mlflow: MlflowSettings | None = None
    """Log runs to MLflow (needs ``pip install 'judgeopt[mlflow]'``); ``--mlflow`` turns it on with the defaults."""


class JudgeoptConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    run: RunConfig = Field(default_factory=RunConfig)
    grid: GridConfig = Field(default_factory=GridConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)


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
    """Read and validate a config file; every problem becomes one ``ConfigError`` line naming the file. The file may
    name only judgeopt's own API-key variables (``judgeopt.core.models.FILE_KEY_VARIABLES``)."""
    if path is None:
        return JudgeoptConfig()
    raw = read_yaml_mapping(path, what="config file")
    _resolve_paths(raw, path.parent)
    try:
        config = JudgeoptConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_validation_error(exc, raw)}") from None
    config.models.check_file_key_variables(path)
    return config
