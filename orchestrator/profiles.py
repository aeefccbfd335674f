"""Run profiles, and every setting in which a run departs from the study (arXiv 2605.26046).

- ``quick``: a minutes-long run on the embedded model (2 steps, batch 2, 20 training / 4 validation / 8 test rows),
  with judgeopt's own settings. The default when no endpoint and no config file is given.
- ``full``: the study's sizes (12 steps, batch 3, validation 100, test 480) with judgeopt's own settings: criterion
  definitions, the prediction cache, a gate that counts parse failures, batches seeded per run.
- ``study``: the study's protocol as the study meant it (``docs/study-protocol.md``): its prompt structure, output
  caps and effective temperatures, its data split, an unchanged prompt re-judged at every step, a gate that drops
  items the judge failed to score, the same training batches in every run. The quirks of the study's code stay off.
- ``study-code``: ``study`` with every quirk of the study's code on (the output-format block dropped after an
  update, validation drawn from the training rows, a training batch with an unparsable judge reply failing its
  step).

:func:`study_differences` names each setting in which a run differs from the study; ``summary.json`` and the
report list them ("differs from the study in: …").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from judgeopt.core.models import ModelsConfig
from judgeopt.core.roles import ALL_ROLES, Role
from judgeopt.orchestrator.config import RunConfig

Profile = Literal["quick", "full", "study", "study-code"]
PROFILES: tuple[Profile, ...] = ("quick", "full", "study", "study-code")

QUICK_RUN: dict[str, Any] = {"steps": 2, "batch_size": 2}
QUICK_DATASET: dict[str, Any] = {"train_size": 20, "val_size": 4, "test_size": 8}

STUDY_SIZES: dict[str, Any] = {"steps": 12, "batch_size": 3}
STUDY_DATASET: dict[str, Any] = {"name": "summeval-wgc", "val_size": 100, "test_size": 480}
STUDY_PROTOCOL: dict[str, Any] = {
    "prompt_protocol": "study",
    "criterion_definitions": False,
    "rejudge_unchanged_prompts": True,
    "gate_counts_parse_failures": False,
    "same_batches_every_run": True,
}
"""What the study did, where judgeopt by default does otherwise."""
CODE_QUIRKS: dict[str, Any] = {
    "drop_output_format_after_update": True,
    "training_parse_failure_fails_step": True,
}
DATASET_QUIRKS: dict[str, Any] = {"val_overlaps_train": True}
STUDY_MODELS: dict[Role, dict[str, Any]] = {
    "judge": {"temperature": 0.1, "max_tokens": 256},
    "loss": {"temperature": 0.7, "max_tokens": 1024},
    "gradient": {"temperature": 0.7, "max_tokens": 8192},
    "optimizer": {"temperature": 0.7, "max_tokens": 16384},
    "evaluator": {"temperature": 0.0, "max_tokens": 10},
}
"""The study's output caps and the temperatures its code ran at (its scripts asked for 0.3 for loss and gradient,
which were recorded but never applied); its diagnostics' evaluator answered a bare integer, deterministically."""
LOCAL_CONTEXT_CAP = 3072
"""The embedded model's context holds 8,192 tokens, prompt included: a study cap above this is clipped to it (and
the clipping is listed among the differences)."""


def apply_profile(
    profile: Profile, run: Mapping[str, Any], models: ModelsConfig
) -> tuple[dict[str, Any], ModelsConfig]:
    """``run`` (a run section, as given) and ``models`` with the profile's settings beneath what the user gave:
    a value the user set explicitly wins over the profile's."""
    given = dict(run)
    given_dataset = dict(given.pop("dataset", None) or {})
    layered: dict[str, Any] = {}
    dataset: dict[str, Any] = {}
    if profile == "quick":
        layered, dataset = dict(QUICK_RUN), dict(QUICK_DATASET)
    elif profile in ("study", "study-code"):
        layered, dataset = {**STUDY_SIZES, **STUDY_PROTOCOL}, dict(STUDY_DATASET)
        if profile == "study-code":
            layered |= CODE_QUIRKS
            dataset |= DATASET_QUIRKS
    elif profile == "full":
        layered, dataset = dict(STUDY_SIZES), {k: v for k, v in STUDY_DATASET.items() if k != "name"}
    merged = {**layered, **given, "profile": profile, "dataset": {**dataset, **given_dataset}}
    if profile in ("study", "study-code"):
        models = _with_study_models(models)
    return merged, models


def _with_study_models(models: ModelsConfig) -> ModelsConfig:
    """The study's caps, temperatures and free-text replies for each role, where the user's config sets nothing
    (neither in ``default`` nor in the role's section); a cap the embedded model's context cannot hold is clipped,
    and the embedded model keeps its grammar-constrained output (it rarely answers in the format without)."""
    for role in ALL_ROLES:
        section = dict(STUDY_MODELS[role])
        if models.needs_local_model((role,)):
            section["max_tokens"] = min(section["max_tokens"], LOCAL_CONTEXT_CAP)
        else:
            section["structured_output"] = "none"
        user = {**models.default, **getattr(models, role)}
        models = models.with_role(role, **{k: v for k, v in section.items() if k not in user}, **user)
    return models


def study_differences(config: RunConfig, models: ModelsConfig) -> list[str]:
    """Every setting in which a run differs from the study, by name (quirks of the study's code that are off
    included: the study ran with them)."""
    differences: list[str] = []
    for name, value in {**STUDY_SIZES, **STUDY_PROTOCOL, **CODE_QUIRKS}.items():
        if getattr(config, name) != value:
            differences.append(name)
    for name, value in {**STUDY_DATASET, **DATASET_QUIRKS}.items():
        if getattr(config.dataset, name) != value:
            differences.append(f"dataset.{name}")
    if config.gate not in ("mae", "none"):
        differences.append("gate")
    differences += [n for n in ("instruction_max_tokens", "instruction_max_ratio") if getattr(config, n) is not None]
    if config.judge_routing not in (None, "joint"):  # the study's judge scored every criterion in one call
        differences.append("judge_routing")
    if config.archive_recombine:
        differences.append("archive_recombine")
    for role in ALL_ROLES:
        settings = models.for_role(role, local_base_url="http://local")
        for name, value in STUDY_MODELS[role].items():
            if getattr(settings, name) != value:
                differences.append(f"{name}.{role}")
        if settings.structured_output != "none":
            differences.append(f"structured_output.{role}")
    return differences
