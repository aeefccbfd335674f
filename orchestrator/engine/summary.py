"""A run's results from its store: ``summary.json`` (what scripts read) and the Table-1 view (what people read).

``best`` is chosen on validation; ``best_oracle`` on test, as the study did, and labelled as such. With several
tracks (Single-Task) a step's figures combine the tracks: each contributes its own criteria's ρ, and the
validation metric is the tracks' mean. Under every gate, ``archive`` holds each track's non-dominated prompts and
the member its rule chose; with the Pareto gate and one track that member is ``best`` (when its step was tested),
under a scalar gate it stands beside ``best`` for a user who wants a Pareto member. With archive recombination,
``recombination`` gives per track the stitched prompt's step, gate outcome and provenance. With the
specificity fallback, ``fallback`` says how often it fell back and what its calls cost; with the conflict arbiter,
``conflicts`` lists what it found per step.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from statistics import fmean
from typing import Any

from rich.table import Table

from judgeopt.core.private_files import write_private_text
from judgeopt.orchestrator.engine.budget import spend_by_role
from judgeopt.orchestrator.engine.lengths import asymmetry, instruction_lengths
from judgeopt.orchestrator.engine.manifest import RunManifest
from judgeopt.orchestrator.engine.metrics import hypervolume_indicator, paired_delta_interval
from judgeopt.orchestrator.engine.pareto import choose, metric_bounds
from judgeopt.orchestrator.engine.risks import run_risks
from judgeopt.orchestrator.engine.store import RunStore, StepRecord
from judgeopt.orchestrator.profiles import study_differences

SUMMARY_FILE = "summary.json"
SUMMARY_SCHEMA_VERSION = 1
"""``summary.json``'s ``schema_version``: raised when a field is removed, renamed or changes meaning; a field may be
added within a version, so readers ignore the ones they do not know."""
ORACLE_LABEL = "chosen on the test set (the study's choice; an oracle, optimistic)"


def _combined_steps(store: RunStore, tracks: Sequence[str], criteria: Sequence[str]) -> list[dict[str, Any]]:
    by_step: dict[int, dict[str, StepRecord]] = {}
    for record in store.steps():
        by_step.setdefault(record.step, {})[record.track] = record
    rejected = store.length_rejected()
    steps = []
    for step in sorted(by_step):
        records = by_step[step]
        if set(records) != set(tracks):
            continue  # a step some track has not finished (a run stopped mid-step)
        ordered = [records[t] for t in tracks]
        tested = all(r.test is not None for r in ordered)
        rho: dict[str, float] = {}
        constant: list[str] = []
        if tested:
            for r in ordered:
                assert r.test is not None
                rho.update(r.test["rho"])
                constant += r.test.get("constant", [])
        metrics = [r.val_metric for r in ordered if r.val_metric is not None]
        lengths: dict[str, int] = {}
        for r in ordered:
            lengths |= instruction_lengths(r.prompt)
        steps.append(
            {
                "step": step,
                "status": {r.track: r.status for r in ordered} if len(tracks) > 1 else ordered[0].status,
                "accepted": None if step == 0 else all(r.status == "accepted" for r in ordered),
                "val_metric": fmean(metrics) if metrics else None,
                "macro_rho": fmean(rho[c] for c in criteria) if tested else None,
                "rho": {c: rho[c] for c in criteria} if tested else None,
                "constant": sorted(constant) if tested else None,
                "halo": ordered[0].test.get("halo") if tested and len(ordered) == 1 and ordered[0].test else None,
                "failed_calls": sum(r.failed_calls for r in ordered),
                "instruction_tokens": {c: lengths[c] for c in criteria if c in lengths},
                "length_asymmetry": asymmetry(lengths),
                "length_rejected": sorted(rejected.get(step, [])),
            }
        )
    return steps


def scores_on_test(store: RunStore, manifest: RunManifest, step: int) -> dict[str, list[float | None]]:
    """Per criterion, the judge's test-set scores under the prompt each track held after ``step``, in split order."""
    test_ids = manifest.splits.get("test", ())
    scores: dict[str, list[float | None]] = {}
    for track in manifest.tracks:
        record = next(r for r in store.steps(track) if r.step == step)
        by_sample: dict[str, dict[str, float | None]] = {}
        for prediction in store.predictions_of(record.prompt.id):
            by_sample.setdefault(prediction.sample_id, {}).update(prediction.scores)
        for criterion in manifest.track_criteria(track):
            scores[criterion] = [by_sample.get(i, {}).get(criterion) for i in test_ids]
    return scores


def _delta(store: RunStore, manifest: RunManifest, initial: dict[str, Any] | None, best: dict[str, Any] | None) -> Any:
    """Δ macro ρ of the best step (chosen on validation) over the initial prompt, with its paired-bootstrap 95%
    interval over the test items (``None`` without bootstrap resamples)."""
    if initial is None or best is None:
        return None
    interval = None
    if manifest.test_truths:
        interval = paired_delta_interval(
            scores_on_test(store, manifest, initial["step"]),
            scores_on_test(store, manifest, best["step"]),
            {c: manifest.test_truths[c] for c in manifest.criterion_names},
            resamples=manifest.config.bootstrap_resamples,
            seed=manifest.config.seed,
        )
    return {"value": best["macro_rho"] - initial["macro_rho"], "ci95": None if interval is None else list(interval)}


def _pick(steps: Sequence[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """The step with the highest ``key`` among tested steps; the earliest wins a tie."""
    tested = [s for s in steps if s["macro_rho"] is not None and s[key] is not None]
    if not tested:
        return None
    best = max(tested, key=lambda s: (s[key], -s["step"]))
    keys = ("step", "macro_rho", "rho", "val_metric", "constant")
    return {k: best.get(k) for k in keys}


def _archives(store: RunStore, manifest: RunManifest) -> dict[str, Any]:
    """Per track, the archive of non-dominated prompts (members with their per-criterion validation values, and
    ``recombined`` for the prompt stitched after the last step) and its chosen member."""
    config = manifest.config
    archives = {}
    for track in manifest.tracks:
        members = store.archive(track)
        if not members:
            continue
        names = set(manifest.track_criteria(track))
        bounds = metric_bounds(config.gate_metric, [c for c in manifest.criteria if c.name in names])
        weights = {c: w for c, w in config.archive_weights.items() if c in names}
        chosen = choose(members, rule=config.archive_choice, bounds=bounds, weights=weights)
        archives[track] = {
            "metric": config.gate_metric,
            "rule": config.archive_choice,
            "members": [
                {"step": m.step, "prompt_id": m.prompt_id, "values": m.values, "recombined": m.step > config.steps}
                for m in members
            ],
            "chosen": chosen.step,
        }
    return archives


def _recombination(store: RunStore, manifest: RunManifest) -> dict[str, Any]:
    """Per track of several criteria, the prompt stitched from the archive after the last step: its step, whether
    the gate accepted it and whether it is in the archive, and per criterion its source member and validation ρ
    there and stitched; or why there is none."""
    config = manifest.config
    result: dict[str, Any] = {}
    for track in manifest.tracks:
        if len(manifest.track_criteria(track)) < 2:
            continue
        record = next((r for r in store.steps(track) if r.step == config.steps + 1), None)
        if record is None or record.val is None:
            done = store.status == "complete"
            result[track] = {"skipped": "one archive member is best on every criterion" if done else "not reached"}
            continue
        result[track] = {
            "step": record.step,
            "status": record.status,
            "in_archive": any(m.step == record.step for m in store.archive(track)),
            **record.val["recombination"],
        }
    return result


def _fallback(store: RunStore, manifest: RunManifest) -> dict[str, Any]:
    """How often the specificity fallback fell back and what it cost: joint gradients measured, how many lost
    focus on some criterion, per criterion how often, the share of (joint gradient, criterion) pairs that got a
    per-criterion call, and the fallback calls' attempts and tokens per stage."""
    records = [record for _track, _step, record in store.focus_records()]
    per_criterion = {c: sum(c in r.diluted for r in records) for c in manifest.criterion_names}
    pairs = sum(len(r.shares) for r in records)
    return {
        "threshold": manifest.policy.specificity_fallback,
        "joint_gradients": len(records),
        "fell_back": sum(bool(r.diluted) for r in records),
        "per_criterion": per_criterion,
        "rate": sum(per_criterion.values()) / pairs if pairs else None,
        "mean_focus": {c: fmean(r.shares[c] for r in records) if records else None for c in manifest.criterion_names},
        "cost": store.usage_by_purpose("fallback"),
    }


def _conflicts(store: RunStore) -> dict[str, Any]:
    """What the conflict arbiter found per step (pairs of criteria and the issue) and what its calls cost."""
    per_step: dict[str, list[dict[str, Any]]] = {}
    for track, step, conflict, _resolution in store.conflicts():
        per_step.setdefault(str(step), []).append(
            {"track": track, "criteria": list(conflict.criteria), "issue": conflict.issue}
        )
    return {
        "total": sum(len(found) for found in per_step.values()),
        "per_step": per_step,
        "cost": store.usage_by_purpose("arbiter"),
    }


def build_summary(store: RunStore) -> dict[str, Any]:
    manifest = store.manifest()
    config = manifest.config
    criteria = list(manifest.criterion_names)
    steps = _combined_steps(store, list(manifest.tracks), criteria)
    tested = [s for s in steps if s["rho"] is not None]
    initial = _pick(steps[:1], "macro_rho")
    best = _pick(steps, "val_metric")
    archives = _archives(store, manifest)
    if config.gate == "pareto" and len(archives) == 1 and len(manifest.tracks) == 1:  # the archive's choice is best
        (archive,) = archives.values()
        best = _pick([s for s in steps if s["step"] == archive["chosen"]], "val_metric") or best
    oracle = _pick(steps, "macro_rho")
    summary: dict[str, Any] = {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "run_id": manifest.run_id,
        "status": store.status,
        "mode": manifest.policy.name,
        "gate": config.gate,
        "profile": config.profile,
        "differs_from_study": study_differences(config, manifest.models),
        "warnings": run_risks(config),
        "criteria": criteria,
        "initial": initial,
        "best": best,
        "delta_macro_rho": _delta(store, manifest, initial, best),
        "best_oracle": None if oracle is None else {**oracle, "label": ORACLE_LABEL},
        "archive": archives,
        **({"recombination": _recombination(store, manifest)} if config.archive_recombine else {}),
        **({"fallback": _fallback(store, manifest)} if manifest.policy.specificity_fallback is not None else {}),
        **({"conflicts": _conflicts(store)} if manifest.policy.conflict_arbiter else {}),
        "hvi": hypervolume_indicator([[s["rho"][c] for c in criteria] for s in tested]) if tested else None,
        "steps": steps,
        **_spend(store),
        "judge_scoring": _judge_scoring(store, manifest),
        "provenance": {
            "judgeopt_version": metadata.version("judgeopt"),
            "dataset": config.dataset.name,
            "data_checksum": manifest.data_checksum,
            "models": manifest.model_names,
            "seed": config.seed,
        },
    }
    return _finite(summary)


def _judge_scoring(store: RunStore, manifest: RunManifest) -> dict[str, Any]:
    """How the judge's valid scores were obtained: what was asked (``logprob_weighted`` where the judge's model
    settings ask for log probabilities) and how many scores were weighted and how many sampled."""
    counts = store.scoring_methods()
    asked = manifest.models.for_role("judge").logprobs
    return {
        "asked": "logprob_weighted" if asked else "sampled",
        "logprob_weighted": counts.get("logprob_weighted", 0),
        "sampled": counts.get("sampled", 0),
    }


def _finite(summary: dict[str, Any]) -> dict[str, Any]:
    """``summary`` with every NaN and infinity (an MAE over no scored item, say) as ``None``: JSON has no such
    numbers, and a reader of summary.json must not meet ``NaN`` or ``Infinity``."""

    def strict(value: Any) -> Any:
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        if isinstance(value, dict):
            return {key: strict(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [strict(item) for item in value]
        return value

    return {key: strict(value) for key, value in summary.items()}


def _spend(store: RunStore) -> dict[str, Any]:
    """Calls, attempts, tokens and cost per role, from the store's call records."""
    usage = store.usage_by_role()
    return {
        "llm_calls": {stage: u["llm_calls"] for stage, u in usage.items()},
        "rpc_attempts": {stage: u["rpc_attempts"] for stage, u in usage.items()},
        "failed_attempts": {stage: u["failed_attempts"] for stage, u in usage.items()},
        "truncated_replies": {stage: u["truncated_replies"] for stage, u in usage.items()},
        "tokens": {
            stage: {
                "prompt": u["prompt_tokens"],
                "completion": u["completion_tokens"],
                "cached_prompt": u["cached_prompt_tokens"],
            }
            for stage, u in usage.items()
        },
        "call_seconds": {stage: times.as_json() for stage, times in sorted(store.call_times_by_stage().items())},
        "cost": _cost(store, usage),
    }


def _cost(store: RunStore, usage: dict[str, dict[str, int]]) -> dict[str, Any] | None:
    """Spend per role at the models' prompt and completion prices, when any role is priced."""
    per_role = spend_by_role(store.manifest().models, usage)
    return {"per_role": per_role, "total": sum(per_role.values())} if per_role else None


def write_summary(
    store: RunStore, run_dir: Path, *, concurrency: dict[str, dict[str, int]] | None = None
) -> dict[str, Any]:
    """``concurrency``: in adaptive mode, the limits each endpoint reached in this invocation (not kept in the
    store: a resumed run reports its own invocation's)."""
    summary = build_summary(store)
    if concurrency is not None:
        summary["concurrency"] = concurrency
    write_private_text(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return summary


def refresh_spend(store: RunStore, run_dir: Path) -> dict[str, Any]:
    """The finished run's summary with its spend brought up to date (calls made after the run, such as the
    evaluator's diagnostics), everything else as written at the run's end: the Δ interval's bootstrap is not
    redone. Without a summary, a full one is written."""
    path = run_dir / SUMMARY_FILE
    if not path.is_file():
        return write_summary(store, run_dir)
    summary: dict[str, Any] = {**json.loads(path.read_text(encoding="utf-8")), **_finite(_spend(store))}
    write_private_text(path, json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return summary


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:+.3f}" if value < 0 else f"{value:.3f}"


def summary_tables(summary: dict[str, Any]) -> list[Table]:
    """Table 1 of the study for this run (per-criterion and macro ρ), and calls and tokens per role."""
    initial, best, oracle = summary["initial"], summary["best"], summary["best_oracle"]
    title = f"{summary['mode']} · gate {summary['gate']} · HVI {_fmt(summary['hvi'])}"
    marked = False

    def value(point: dict[str, Any] | None, name: str) -> float | None:
        if point is None:
            return None
        result: float = point["macro_rho"] if name == "macro" else point["rho"][name]
        return result

    def shown(point: dict[str, Any] | None, name: str) -> str:
        """The value, with † where ρ was undefined (constant scores) and counted as 0."""
        nonlocal marked
        undefined = set((point or {}).get("constant") or ())
        if name in undefined or (name == "macro" and undefined):
            marked = True
            return f"{_fmt(value(point, name))}†"
        return _fmt(value(point, name))

    rows = []
    for name in [*summary["criteria"], "macro"]:
        start = value(initial, name)
        chosen = value(best, name)
        delta = chosen - start if chosen is not None and start is not None else None
        rows.append(
            (
                name,
                shown(initial, name),
                f"{shown(best, name)} ({best['step']})" if best else "—",
                _fmt(delta),
                f"{shown(oracle, name)} ({oracle['step']})" if oracle else "—",
            )
        )
    caption = (
        "† the judge's test scores (or the truths) were all equal: ρ is undefined, counted as 0" if marked else None
    )
    table = Table(title=title, caption=caption)
    for column in ("criterion", "initial ρ", "best ρ (step, on val)", "Δ", "oracle ρ (step, on test)"):
        table.add_column(column, justify="right" if column != "criterion" else "left")
    for row in rows:
        table.add_row(*row)
    scoring = summary.get("judge_scoring")  # absent from the summaries of older runs
    caption = "s per call: median seconds at the service per attempt (its wait for a slot left out)"
    if scoring:
        caption += (
            f"\njudge scores: {scoring['logprob_weighted']} logprob-weighted, {scoring['sampled']} sampled "
            f"({scoring['asked'].replace('_', '-')} asked)"
        )
    spend = Table(title="calls and tokens per role", caption=caption)
    columns = (
        "role",
        "LLM calls",
        "RPC attempts",
        "failed",
        "truncated",
        "prompt tokens",
        "cached prompt tokens",
        "completion tokens",
        "s per call",
    )
    for column in columns:
        spend.add_column(column, justify="right" if column != "role" else "left")
    for role, calls in summary["llm_calls"].items():
        tokens = summary["tokens"][role]
        speed = summary.get("call_seconds", {}).get(role, {}).get("endpoint_median")
        spend.add_row(
            role,
            str(calls),
            str(summary["rpc_attempts"][role]),
            str(summary["failed_attempts"][role]),
            str(summary["truncated_replies"][role]),
            str(tokens["prompt"]),
            str(tokens.get("cached_prompt", 0)),
            str(tokens["completion"]),
            "—" if speed is None else f"{speed:.3f}",
        )
    return [table, spend]
