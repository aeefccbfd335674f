"""A run's chosen judge as a self-contained file, and reading it back.

    judgeopt export RUN_DIR --step best|best_oracle|N --out judge.yaml

The file holds everything needed to judge new data the same way: the prompt (task description, one instruction
per criterion, the output-format switch), the criteria with their scales, the text fields the samples are made
of, the judge's model settings, how to judge (joint, per criterion or prefix-shared), and where it came from with
its validation and test figures. When the judge routings were measured on the run (``judgeopt interference``), the
file records the one that won on validation, with each routing's cost per row (``routing_choice``), and judges
with it; a file without ``routing_choice`` (exported before, or without the measurement) judges as the run did.
It holds no secret and points at none: no API-key variable (the command that uses it names one, ``judgeopt judge
--api-key-env VAR``, when the endpoint needs a key) and no ``user:password@`` in the endpoint; read back, it may
name only judgeopt's own key variables, like any file. A Single-Task run's tracks are stitched into one prompt;
judging it per criterion reproduces the run's own one-criterion scoring.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, HttpUrl, ValidationError

from judgeopt.core.errors import ConfigError, describe_validation_error
from judgeopt.core.models import RoleModelConfig, check_file_key_variable
from judgeopt.core.private_files import write_private_text
from judgeopt.core.redact import strip_url_credentials
from judgeopt.core.yaml_files import read_yaml_mapping
from judgeopt.orchestrator.data.records import CriterionSpec
from judgeopt.orchestrator.engine.artifacts import PromptState
from judgeopt.orchestrator.engine.policy import Routing
from judgeopt.orchestrator.engine.run import open_run
from judgeopt.orchestrator.engine.store import RunStore
from judgeopt.orchestrator.engine.summary import build_summary

EXPORT_FORMAT = 1


class RoutingCost(BaseModel):
    """What judging one row costs under a routing, averaged over the requests measured (``None``: no request of
    this routing was made or recorded at the step)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    calls: float | None
    prompt_tokens: float | None
    cached_prompt_tokens: float | None


class RoutingChoice(BaseModel):
    """The judge routing that won on validation (the higher macro Spearman ρ; a tie goes to ``joint``, one call per
    row), with each compared routing's validation figure and cost per row."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    winner: Routing
    chosen_on: str = "validation macro Spearman rho"
    val_macro_rho: dict[str, float]
    cost_per_row: dict[str, RoutingCost]


class ExportedJudge(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    judgeopt_judge: int = EXPORT_FORMAT
    task_description: str
    instructions: dict[str, str]
    omit_output_format: bool = False
    criteria: tuple[CriterionSpec, ...]
    text_fields: tuple[str, ...]
    routing: Routing
    routing_choice: RoutingChoice | None = None
    """How ``routing`` was chosen, when the routings were measured (absent in files exported before, or without)."""
    model: RoleModelConfig
    source: dict[str, Any]

    def rubric_head(self, criterion: str, escape: Callable[[str], str]) -> tuple[CriterionSpec, tuple[str, ...]]:
        """What every exported rubric of ``criterion`` opens with: the task, the criterion (with its description)
        and its optimized instruction, each through the target tool's ``escape``; with the criterion's spec."""
        spec = next(c for c in self.criteria if c.name == criterion)
        described = f" ({escape(spec.description)})" if spec.description else ""
        head = (
            escape(self.task_description.strip()),
            f"Criterion: {criterion}{described}",
            escape(self.instructions[criterion].strip()),
        )
        return spec, head

    def prompt(self) -> PromptState:
        return PromptState(
            self.task_description,
            tuple((c.name, self.instructions[c.name]) for c in self.criteria),
            self.omit_output_format,
        )


@dataclass(frozen=True)
class ChosenStep:
    """The step a judge is taken from: its number, on what it was chosen, its prompt (a Single-Task run's tracks
    stitched into one) and its figures as ``summary.json`` gives them."""

    number: int
    chosen_on: str
    prompt: PromptState
    figures: dict[str, Any]


def _step_number(summary: dict[str, Any], step: str) -> tuple[int, str]:
    if step in ("best", "best_oracle"):
        chosen = summary[step]
        if chosen is None:
            raise ConfigError(f"the run has no {step} step yet (no test evaluation)")
        return int(chosen["step"]), "validation" if step == "best" else "test (oracle)"
    try:
        number = int(step)
    except ValueError:
        raise ConfigError(f"--step must be best, best_oracle or a step number, got {step!r}") from None
    if number not in {s["step"] for s in summary["steps"]}:
        raise ConfigError(f"--step {number}: the run has no such complete step")
    return number, "given step"


def chosen_step(store: RunStore, step: str) -> ChosenStep:
    """``step`` (``best``, ``best_oracle`` or a number) of the run in ``store``, with its prompt."""
    summary = build_summary(store)
    number, chosen_on = _step_number(summary, step)
    records = [r for r in store.steps() if r.step == number]
    instructions = {name: r.prompt.instruction(name) for r in records for name in r.prompt.criteria}
    first = records[0].prompt
    prompt = PromptState(
        first.task_description,
        tuple((c.name, instructions[c.name]) for c in store.manifest().criteria),
        first.omit_output_format,
    )
    figures = next(s for s in summary["steps"] if s["step"] == number)
    return ChosenStep(number, chosen_on, prompt, figures)


def export_judge(run_dir: Path, step: str, routing_choice: RoutingChoice | None = None) -> ExportedJudge:
    """The judge of ``step``; it judges with ``routing_choice``'s winner when given (a measurement of the routings
    on validation), else as the run judged."""
    store = open_run(run_dir)
    try:
        chosen = chosen_step(store, step)
        manifest = store.manifest()
    finally:
        store.close()
    policy, prompt, figures = manifest.policy, chosen.prompt, chosen.figures
    run_routing: Routing = "per_criterion" if policy.independent_criteria else policy.judge.routing
    return ExportedJudge(
        task_description=prompt.task_description,
        instructions=dict(prompt.instructions),
        omit_output_format=prompt.omit_output_format,
        criteria=manifest.criteria,
        text_fields=manifest.text_fields,
        routing=run_routing if routing_choice is None else routing_choice.winner,
        routing_choice=routing_choice,
        model=_without_credentials(manifest.models.for_role("judge")),
        source={
            "run_dir": str(run_dir),
            "run_id": manifest.run_id,
            "mode": policy.name,
            "step": chosen.number,
            "chosen_on": chosen.chosen_on,
            "val_metric": figures["val_metric"],
            "test_macro_rho": figures["macro_rho"],
            "test_rho": figures["rho"],
        },
    )


def _without_credentials(model: RoleModelConfig) -> RoleModelConfig:
    """The judge's settings with neither the run's API-key variable nor the endpoint's ``user:password@``."""
    base_url = None if model.base_url is None else HttpUrl(strip_url_credentials(str(model.base_url)))
    return model.model_copy(update={"api_key_env": None, "base_url": base_url})


def write_judge(judge: ExportedJudge, out: Path) -> None:
    """The judge file, 0600 (it holds the prompt optimized on the run's data)."""
    write_private_text(out, yaml.safe_dump(judge.model_dump(mode="json"), sort_keys=False, allow_unicode=True))


def read_judge(path: Path) -> ExportedJudge:
    data = read_yaml_mapping(path, what="judge file")
    if data.get("judgeopt_judge") != EXPORT_FORMAT:
        raise ConfigError(f"{path}: not a judge exported by `judgeopt export` (format {EXPORT_FORMAT})")
    try:
        judge = ExportedJudge.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_validation_error(exc)}") from None
    missing = [c.name for c in judge.criteria if c.name not in judge.instructions]
    if missing:
        raise ConfigError(f"{path}: no instruction for criterion {missing[0]!r}")
    check_file_key_variable(path, "model.api_key_env", judge.model.api_key_env)
    return judge
