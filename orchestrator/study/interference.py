"""The interference experiment, as the study ran it: do the best per-criterion instructions still work stitched
into one prompt?

For each criterion, the best instruction over *every* Single-Task run of a gate setting and every tested step of
those runs (chosen on the test set, the study's oracle choice, or on validation), stitched into one joint judge
prompt and scored once on the test set. Three rows per gate setting, as in the study:

- **generic**: the initial joint prompt ("Rate from 1 to 5." for every criterion), scored on the test set;
- **separate**: each picked instruction's test ρ when it was judged alone (recorded at its step; no new call);
- **stitched**: the picked instructions in one joint prompt (the original skeleton and output format).

Gated and ungated runs are never pooled: each gate setting has its own picks and rows. Instruction lengths are
reported per criterion, since length imbalance between sections is the study's suspected cause.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import fmean
from typing import Any, Literal

from judgeopt.core.errors import ConfigError
from judgeopt.core.tokens import approx_tokens
from judgeopt.orchestrator.agent_clients import AgentClients
from judgeopt.orchestrator.data.records import Dataset, shown_criteria
from judgeopt.orchestrator.data.splits import split_dataset
from judgeopt.orchestrator.engine.artifacts import PromptState
from judgeopt.orchestrator.engine.executor import CallExecutor
from judgeopt.orchestrator.engine.policy import PRESETS
from judgeopt.orchestrator.engine.router import Router
from judgeopt.orchestrator.engine.run import initial_prompt, judge_key
from judgeopt.orchestrator.engine.scoring import Scorer, evaluation_of
from judgeopt.orchestrator.engine.store import RunStore, StepRecord

SelectOn = Literal["val", "test"]
SELECTION_LABELS = {
    "val": "best instruction per criterion over every Single-Task run and step, chosen on validation",
    "test": "best instruction per criterion over every Single-Task run and step, chosen on the test set "
    "(the study's oracle choice)",
}
ROWS = ("generic", "separate", "stitched")
"""The study's three rows: the generic prompt, the picks judged alone, the picks stitched into one prompt."""


@dataclass(frozen=True)
class Pick:
    """One criterion's best instruction: where it comes from and its test ρ when judged alone there."""

    criterion: str
    cell: str
    step: int
    rho: float
    instruction: str


def pick_best(criterion: str, runs: Mapping[str, Sequence[StepRecord]], select_on: SelectOn) -> Pick:
    """The best instruction for ``criterion`` over every run (cell name → the criterion's step records) and every
    step tested on the test set: the highest test ρ of the criterion (``test``) or the highest validation metric
    (``val``); ties go to the earliest step, then to the first run."""
    candidates = [
        (record, order)
        for order, records in enumerate(runs.values())
        for record in records
        if record.test is not None and (select_on == "test" or record.val_metric is not None)
    ]
    if not candidates:
        raise ConfigError(f"interference: no tested step of criterion {criterion!r} in {', '.join(runs) or 'no run'}")

    def merit(record: StepRecord) -> float:
        if select_on == "test":
            return float(record.test["rho"][criterion]) if record.test else float("-inf")
        return float(record.val_metric) if record.val_metric is not None else float("-inf")

    record, order = max(candidates, key=lambda pair: (merit(pair[0]), -pair[0].step, -pair[1]))
    assert record.test is not None
    return Pick(
        criterion=criterion,
        cell=list(runs)[order],
        step=record.step,
        rho=float(record.test["rho"][criterion]),
        instruction=record.prompt.instruction(criterion),
    )


def picks_of(stores: Mapping[str, RunStore], criteria: Sequence[str], select_on: SelectOn) -> dict[str, Pick]:
    """Each criterion's pick over the Single-Task runs in ``stores`` (cell name → store; a track per criterion)."""
    return {c: pick_best(c, {name: store.steps(c) for name, store in stores.items()}, select_on) for c in criteria}


async def stitch_and_score(
    owner: RunStore,
    picks: Mapping[str, Pick],
    clients: AgentClients,
    executor: CallExecutor,
    dataset: Dataset,
) -> dict[str, Any]:
    """The three rows for ``picks``: the stitched and generic prompts are scored on the test split, judged as the
    runs judged (their prompt protocol, criterion definitions and caching), their calls recorded in ``owner``, one
    of the Single-Task runs the picks come from."""
    manifest = owner.manifest()
    config, models = manifest.config, manifest.models
    criteria = dataset.criteria
    names = [c.name for c in criteria]
    test = split_dataset(dataset, config.dataset).test
    generic = initial_prompt(config, criteria, dataset)
    stitched = PromptState(generic.task_description, tuple((n, picks[n].instruction) for n in names))
    scorer = Scorer(
        router=Router(
            PRESETS["SSS"],  # a joint judge: one call for all criteria, as the study's stitched prompt was judged
            shown_criteria(criteria, definitions=config.criterion_definitions),
            run_id=manifest.run_id,
            track="interference",
            protocol=config.prompt_protocol,
        ),
        executor=executor,
        clients=clients,
        store=owner,
        cache_salt=(judge_key(models), config.seed),
        use_cache=not config.rejudge_unchanged_prompts,
    )
    rows: dict[str, Any] = {}
    for label, prompt in (("generic", generic), ("stitched", stitched)):
        scored = await scorer.score(prompt, test, step=config.steps, purpose="interference")
        evaluation = evaluation_of(criteria, test, scored, 0, config.seed)
        rows[label] = {
            "macro_rho": evaluation.macro_spearman,
            "rho": dict(zip(names, evaluation.rho_vector(), strict=True)),
        }
    rows["separate"] = {"macro_rho": fmean(p.rho for p in picks.values()), "rho": {n: picks[n].rho for n in names}}
    return {
        **rows,
        "test_rows": len(test),
        "picks": {
            n: {"cell": p.cell, "step": p.step, "rho": p.rho, "instruction_tokens": approx_tokens(p.instruction)}
            for n, p in picks.items()
        },
        "generic_instruction_tokens": {n: approx_tokens(generic.instruction(n)) for n in names},
    }
