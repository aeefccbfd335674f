"""The interference experiment: do the best per-criterion instructions still work stitched into one prompt?

From a Single-Task run, take each criterion's best instruction (step chosen on validation by default; on test to
reproduce the study's oracle choice), stitch them into one joint judge prompt and score it on the test set; compare
with the generic initial prompt (joint) and with the per-criterion prompts scored separately. Instruction lengths
are reported per criterion, since length imbalance between sections is the study's suspected cause.
"""

from __future__ import annotations

import re
from statistics import fmean
from typing import Any, Literal

from judgeopt.orchestrator.agent_clients import AgentClients
from judgeopt.orchestrator.data.records import Dataset
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
    "val": "best step per criterion chosen on validation",
    "test": "best step per criterion chosen on the test set (the study's oracle choice)",
}
_TOKEN = re.compile(r"\w+|[^\w\s]")


def approx_tokens(text: str) -> int:
    """Word pieces and punctuation marks: a tokenizer-free length measure that needs no vocabulary download."""
    return len(_TOKEN.findall(text))


def _best_step(records: list[StepRecord], criterion: str, select_on: SelectOn) -> StepRecord:
    if select_on == "val":
        scored = [r for r in records if r.val_metric is not None]
        return max(scored, key=lambda r: (r.val_metric, -r.step))
    tested = [r for r in records if r.test is not None]
    return max(tested, key=lambda r: (r.test["rho"][criterion] if r.test else 0.0, -r.step))


async def stitch_and_score(
    store: RunStore,
    clients: AgentClients,
    executor: CallExecutor,
    dataset: Dataset,
    *,
    select_on: SelectOn,
) -> dict[str, Any]:
    """Score the stitched, generic and separate prompts of the Single-Task run in ``store`` on its test split."""
    manifest = store.manifest()
    config, models = manifest.config, manifest.models
    criteria = dataset.criteria
    test = split_dataset(dataset, config.dataset).test
    run_id = manifest.run_id
    judge_only = PRESETS["SSS"]  # interference is judged like the study's joint judge: one call for all criteria
    best = {c.name: _best_step(store.steps(c.name), c.name, select_on) for c in criteria}
    stitched = PromptState(
        initial_prompt(config, criteria, dataset).task_description,
        tuple((c.name, best[c.name].prompt.instruction(c.name)) for c in criteria),
    )
    generic = initial_prompt(config, criteria, dataset)

    def scorer(track: str, specs: Any) -> Scorer:
        return Scorer(
            router=Router(judge_only, specs, run_id=run_id, track=track),
            executor=executor,
            clients=clients,
            store=store,
            cache_salt=(judge_key(models), config.seed),
        )

    names = [c.name for c in criteria]
    joint = scorer("interference", criteria)
    results: dict[str, Any] = {}
    for label, prompt in (("stitched", stitched), ("generic", generic)):
        scored = await joint.score(prompt, test, step=config.steps, purpose="interference")
        evaluation = evaluation_of(criteria, test, scored, 0, config.seed)
        results[label] = {
            "macro_rho": evaluation.macro_spearman,
            "rho": dict(zip(names, evaluation.rho_vector(), strict=True)),
        }
    separate: dict[str, float] = {}
    for spec in criteria:
        one = best[spec.name].prompt
        scored = await scorer(spec.name, (spec,)).score(one, test, step=best[spec.name].step, purpose="interference")
        separate[spec.name] = evaluation_of((spec,), test, scored, 0, config.seed).macro_spearman
    results["separate"] = {"macro_rho": fmean(separate.values()), "rho": separate}
    results["best_steps"] = {name: record.step for name, record in best.items()}
    results["instruction_tokens"] = {c.name: approx_tokens(stitched.instruction(c.name)) for c in criteria}
    results["generic_instruction_tokens"] = {c.name: approx_tokens(generic.instruction(c.name)) for c in criteria}
    results["select_on"] = select_on
    results["label"] = SELECTION_LABELS[select_on]
    return results
