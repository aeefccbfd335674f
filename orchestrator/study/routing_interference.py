"""Interference at inference time, measured on any run: do the run's chosen instructions judge worse stitched into
one prompt than each judged with only its own instruction in view?

    judgeopt interference RUN_DIR|EXPERIMENT_DIR [--step best]

The chosen step's prompt (as ``judgeopt export`` chooses it) is scored on the validation and the test split twice,
through the judge service and the run's prediction cache: **joint** (every instruction stitched into one prompt,
one call per row) and **prefix-shared** (one call per criterion, all starting with the same task and sample, each
ending with one criterion's instruction, so the model sees no other criterion's). Per split and criterion, Δρ =
ρ(joint) − ρ(prefix-shared), and the macro Δ, each with a paired bootstrap 95% interval (the same rows resampled
for both routings); beside them each routing's halo (the mean Spearman ρ between its scores for different
criteria) and the human labels'. A negative Δ whose interval lies below zero is interference: the stitched
instructions hurt one another. The routing with the higher validation macro ρ is the deployable one (a tie goes
to joint, one call per row); its cost per row is measured from the calls made (or, where every row came from the
run's cache, the run's own calls at that step).

The result is written into the run directory (``routing_interference.json``) and read back instead of measured
again while it is about the same step and prompt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from judgeopt.core.errors import ConfigError
from judgeopt.core.private_files import write_private_text
from judgeopt.orchestrator.agent_clients import AgentClients, ClientSettings
from judgeopt.orchestrator.data.loading import load_dataset
from judgeopt.orchestrator.data.records import CriterionSpec, Dataset, Record, shown_criteria
from judgeopt.orchestrator.data.splits import split_dataset
from judgeopt.orchestrator.engine.artifacts import ScoredSample
from judgeopt.orchestrator.engine.executor import CallExecutor, CallRetries
from judgeopt.orchestrator.engine.metrics import Scores, halo, mean_delta_interval
from judgeopt.orchestrator.engine.policy import Routing
from judgeopt.orchestrator.engine.priority import PriorityLimiter
from judgeopt.orchestrator.engine.ratelimit import RateLimits
from judgeopt.orchestrator.engine.router import Router
from judgeopt.orchestrator.engine.run import agent_clients, default_concurrency, judge_key, open_run
from judgeopt.orchestrator.engine.scoring import Scorer, evaluation_of
from judgeopt.orchestrator.engine.store import RunStore
from judgeopt.orchestrator.engine.summary import refresh_spend
from judgeopt.orchestrator.study.apply import judge_policy
from judgeopt.orchestrator.study.export import RoutingChoice, RoutingCost, chosen_step

RESULT_FILE = "routing_interference.json"
COMPARED: tuple[Routing, Routing] = ("joint", "prefix_shared")
"""Stitched into one prompt, and judged per criterion with the shared prefix; Δ is the first minus the second."""
SPLITS: tuple[Literal["val", "test"], ...] = ("val", "test")
PURPOSE = "interference"


class SplitComparison(BaseModel):
    """Both routings on one split: ρ per criterion and macro, Δ (joint − prefix-shared) with paired bootstrap 95%
    intervals, and the halos. Each ρ (and so Δ) is over the rows its routing scored; an interval is over the rows
    both scored (``None`` without resamples or with fewer than 3 such rows)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: int
    rho: dict[str, dict[str, float]]
    """Per routing, per criterion."""
    macro_rho: dict[str, float]
    delta: dict[str, float]
    delta_ci: dict[str, tuple[float, float] | None]
    delta_macro: float
    delta_macro_ci: tuple[float, float] | None
    halo: dict[str, float | None]
    """Per routing, and ``human`` for the labels."""
    failed_rows: dict[str, int]
    """Per routing, rows whose call failed after its retries (left out of its ρ)."""


class RoutingInterference(BaseModel):
    """The measurement of one run's chosen step."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    step: int
    chosen_on: str
    prompt_id: str
    criteria: tuple[str, ...]
    resamples: int
    splits: dict[str, SplitComparison]
    cost_per_row: dict[str, RoutingCost]

    def choice(self) -> RoutingChoice:
        """The routing with the higher validation macro ρ (joint on a tie: one call per row), with its cost."""
        val = self.splits["val"].macro_rho
        winner = max(COMPARED, key=lambda routing: (val[routing], routing == "joint"))
        return RoutingChoice(winner=winner, val_macro_rho=dict(val), cost_per_row=dict(self.cost_per_row))


def _scores(scored: Sequence[ScoredSample | None], names: Sequence[str]) -> Scores:
    return {n: [s.scores.get(n) if s is not None else None for s in scored] for n in names}


def _compare(
    criteria: Sequence[CriterionSpec],
    records: Sequence[Record],
    scored: dict[str, list[ScoredSample | None]],
    seed: int,
    resamples: int,
) -> SplitComparison:
    """Both routings' predictions of ``records`` side by side."""
    names = [c.name for c in criteria]
    evaluations = {routing: evaluation_of(criteria, records, found, 0, seed) for routing, found in scored.items()}
    scores = {routing: _scores(found, names) for routing, found in scored.items()}
    truths = {n: [r.labels[n] for r in records] for n in names}
    rho = {routing: dict(zip(names, e.rho_vector(), strict=True)) for routing, e in evaluations.items()}
    stitched, shared = COMPARED
    paired = {"resamples": resamples, "seed": seed}
    return SplitComparison(
        rows=len(records),
        rho=rho,
        macro_rho={routing: e.macro_spearman for routing, e in evaluations.items()},
        delta={n: rho[stitched][n] - rho[shared][n] for n in names},
        delta_ci={
            n: mean_delta_interval([({n: scores[shared][n]}, {n: scores[stitched][n]})], {n: truths[n]}, **paired)
            for n in names
        },
        delta_macro=evaluations[stitched].macro_spearman - evaluations[shared].macro_spearman,
        delta_macro_ci=mean_delta_interval([(scores[shared], scores[stitched])], truths, **paired),
        halo={routing: halo(s) for routing, s in scores.items()} | {"human": halo(truths)},
        failed_rows={routing: sum(s is None for s in found) for routing, found in scored.items()},
    )


def _track(routing: Routing) -> str:
    return f"interference-{routing}"


def _cost(store: RunStore, routing: Routing, step: int) -> RoutingCost:
    """Per row, from this measurement's answered requests of ``routing``; where every row came from the cache, from
    the run's own judge calls at ``step`` (judged with the same routing, or no row would have been cached)."""
    usage = store.judge_usage(tracks=[_track(routing)], step=step, purposes=[PURPOSE])
    if not usage["requests"]:
        usage = store.judge_usage(tracks=store.manifest().tracks, step=step, purposes=SPLITS)
    rows = usage["requests"]
    if not rows:
        return RoutingCost(calls=None, prompt_tokens=None, cached_prompt_tokens=None)
    return RoutingCost(
        calls=usage["llm_calls"] / rows,
        prompt_tokens=usage["prompt_tokens"] / rows,
        cached_prompt_tokens=usage["cached_prompt_tokens"] / rows,
    )


async def measure(
    store: RunStore, clients: AgentClients, executor: CallExecutor, dataset: Dataset, *, step: str = "best"
) -> RoutingInterference:
    """Score ``step`` of the run in ``store`` (a writer: the calls are recorded there) both ways on validation and
    test, through ``clients`` (a judge service) and the run's prediction cache."""
    manifest = store.manifest()
    config = manifest.config
    if config.prompt_protocol == "study":
        raise ConfigError("interference: the study's prompt protocol has no prefix-shared judge layout to compare")
    if dataset.checksum != manifest.data_checksum:
        raise ConfigError("interference: the dataset changed since the run started (its checksum differs)")
    chosen = chosen_step(store, step)
    splits = split_dataset(dataset, config.dataset)
    records = {"val": splits.val, "test": splits.test}
    criteria = manifest.criteria
    shown = shown_criteria(criteria, definitions=config.criterion_definitions)

    async def judged(routing: Routing) -> dict[str, list[ScoredSample | None]]:
        router = Router(judge_policy(routing), shown, run_id=manifest.run_id, track=_track(routing))
        scorer = Scorer(
            router=router,
            executor=executor,
            clients=clients,
            store=store,
            cache_salt=(judge_key(manifest.models), config.seed),
            use_cache=not config.rejudge_unchanged_prompts,
        )
        return {
            split: await scorer.score(chosen.prompt, records[split], step=chosen.number, purpose=PURPOSE)
            for split in SPLITS
        }

    scored = dict(zip(COMPARED, await asyncio.gather(*(judged(r) for r in COMPARED)), strict=True))
    return RoutingInterference(
        run_id=manifest.run_id,
        step=chosen.number,
        chosen_on=chosen.chosen_on,
        prompt_id=chosen.prompt.id,
        criteria=tuple(c.name for c in criteria),
        resamples=config.bootstrap_resamples,
        splits={
            split: _compare(
                criteria,
                records[split],
                {routing: scored[routing][split] for routing in COMPARED},
                config.seed,
                config.bootstrap_resamples,
            )
            for split in SPLITS
        },
        cost_per_row={routing: _cost(store, routing, chosen.number) for routing in COMPARED},
    )


def read(run_dir: Path) -> RoutingInterference | None:
    """The measurement written in ``run_dir``; ``None`` when there is none (or an unreadable one: measured again)."""
    path = run_dir / RESULT_FILE
    if not path.is_file():
        return None
    try:
        return RoutingInterference.model_validate_json(path.read_text(encoding="utf-8"))
    except (ValidationError, UnicodeDecodeError):
        return None


def stored(run_dir: Path, step: str = "best") -> RoutingInterference | None:
    """The measurement written in ``run_dir`` if it is about ``step``'s current prompt, else ``None``."""
    result = read(run_dir)
    if result is None:
        return None
    store = open_run(run_dir)
    try:
        chosen = chosen_step(store, step)
    finally:
        store.close()
    return result if (result.step, result.prompt_id) == (chosen.number, chosen.prompt.id) else None


def write(run_dir: Path, result: RoutingInterference) -> Path:
    path = run_dir / RESULT_FILE
    write_private_text(path, result.model_dump_json(indent=2) + "\n")
    return path


async def _measure_into(run_dir: Path, clients: AgentClients, step: str, data_dir: Path | None) -> RoutingInterference:
    """Measure ``step`` of the run in ``run_dir`` on ``clients``, write it there and bring its summary's spend up
    to date with the calls."""
    store = open_run(run_dir, writer=True)
    try:
        manifest = store.manifest()
        config, models = manifest.config, manifest.models
        executor = CallExecutor(
            store,
            limit=PriorityLimiter(default_concurrency(config, models)),
            retries=CallRetries(attempts=config.call_attempts),
            rate_limits=RateLimits(models, ("judge",), window=config.rate_window_seconds),
        )
        result = await measure(store, clients, executor, load_dataset(config.dataset, data_dir), step=step)
        write(run_dir, result)
        refresh_spend(store, run_dir)
    finally:
        store.close()
    return result


async def measure_runs(
    run_dirs: Sequence[Path],
    *,
    services_dir: Path,
    step: str = "best",
    again: bool = False,
    data_dir: Path | None = None,
    local_model: Path | None = None,
    judge_address: str | None = None,
    settings: ClientSettings | None = None,
) -> list[tuple[RoutingInterference, bool]]:
    """Per run directory (a run, or an experiment's cells, which share their models), the measurement of ``step``:
    the one written there, unless ``again`` or it is about another step or prompt; else measured on one judge
    service started here (its logs in ``services_dir``; the first run's judge settings) or at ``judge_address``.
    The flag says whether it was measured now."""
    found = {run_dir: None if again else stored(run_dir, step) for run_dir in run_dirs}
    pending = [run_dir for run_dir, result in found.items() if result is None]
    measured: dict[Path, RoutingInterference] = {}
    if pending:
        store = open_run(pending[0])
        try:
            models = store.manifest().models
        finally:
            store.close()
        async with agent_clients(
            models,
            services_dir,
            addresses={"judge": judge_address} if judge_address else None,
            local_model=local_model,
            roles=("judge",),
            settings=settings,
        ) as clients:
            for run_dir in pending:
                measured[run_dir] = await _measure_into(run_dir, clients, step, data_dir)
    return [(found[run_dir] or measured[run_dir], found[run_dir] is None) for run_dir in run_dirs]
