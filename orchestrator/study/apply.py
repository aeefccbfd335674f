"""Scoring new data with an exported judge: ``judgeopt judge --judge judge.yaml --data FILE --out scores.csv``.

The output CSV is also the resume record: rows are appended in input order as they are scored, and a restarted
scoring run skips every id already in the file. Calls and the prediction cache live in ``<out>.state/`` beside
it. When the data carries a human score for every criterion, the agreement with the judge is reported.
"""

from __future__ import annotations

import csv
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from judgeopt.core.errors import ConfigError
from judgeopt.orchestrator import convert
from judgeopt.orchestrator.agent_clients import AgentClients
from judgeopt.orchestrator.data.loading import load_data_to_score
from judgeopt.orchestrator.data.records import Record
from judgeopt.orchestrator.engine.artifacts import content_id
from judgeopt.orchestrator.engine.executor import CallExecutor
from judgeopt.orchestrator.engine.metrics import Evaluation, evaluate
from judgeopt.orchestrator.engine.policy import PRESETS, Policy, Routing, StagePolicy
from judgeopt.orchestrator.engine.router import Router
from judgeopt.orchestrator.engine.scoring import Scorer
from judgeopt.orchestrator.engine.store import RunStore
from judgeopt.orchestrator.study.export import ExportedJudge


@dataclass(frozen=True)
class ScoringOutcome:
    scored: int
    skipped: int
    failed: int
    evaluation: Evaluation | None


def _judge_policy(routing: Routing) -> Policy:
    """Only the judge stage matters here; it sees what it saw during optimization."""
    judge = StagePolicy(routing=routing, fields=frozenset({"task_description", "instruction", "sample"}))
    return PRESETS["SSS"].model_copy(update={"judge": judge, "name": f"judge-{routing}"})


def _columns(judge: ExportedJudge) -> list[str]:
    names = [c.name for c in judge.criteria]
    return ["id", *names, *(f"{n}_status" for n in names)]


def _done_ids(out: Path, columns: Sequence[str]) -> set[str] | None:
    """Ids already in the output, or ``None`` when there is no output yet."""
    if not out.exists():
        return None
    with out.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames != list(columns):
            raise ConfigError(f"{out} exists with other columns ({reader.fieldnames}); choose another --out")
        return {row["id"] for row in reader}


async def score_file(
    judge: ExportedJudge,
    data: Path,
    out: Path,
    clients: AgentClients,
    executor_for: Callable[[RunStore], CallExecutor],
    *,
    routing: Routing,
    id_field: str | None = None,
    chunk_size: int = 16,
    on_progress: Callable[[int, int], None] | None = None,
) -> ScoringOutcome:
    dataset, labelled = load_data_to_score(data, judge.text_fields, judge.criteria, id_field)
    columns = _columns(judge)
    existing = _done_ids(out, columns)
    new_file = existing is None
    done = existing or set()
    pending = [r for r in dataset.records if r.id not in done]
    store = RunStore(out.parent / f"{out.name}.state")
    try:
        if store.get_meta("run_id") is None:
            store.set_meta("run_id", uuid.uuid4().hex[:12])
        router = Router(_judge_policy(routing), judge.criteria, run_id=store.get_meta("run_id"), track="judge")
        scorer = Scorer(
            router=router,
            executor=executor_for(store),
            clients=clients,
            store=store,
            cache_salt=(content_id(judge.model.model_dump(mode="json")), 0),
        )
        failed = 0
        with out.open("a", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            if new_file:
                writer.writerow(columns)
            for start in range(0, len(pending), chunk_size):
                chunk = pending[start : start + chunk_size]
                results = await scorer.score(judge.prompt(), chunk, step=0, purpose="score")
                for record, result in zip(chunk, results, strict=True):
                    if result is None:
                        failed += 1  # not written: a rerun scores it again
                        continue
                    names = [c.name for c in judge.criteria]
                    values = ["" if result.scores.get(n) is None else f"{result.scores[n]:g}" for n in names]
                    statuses = [convert.status_name(result.statuses.get(n, convert.MISSING_STATUS)) for n in names]
                    writer.writerow([record.id, *values, *statuses])
                handle.flush()
                if on_progress is not None:
                    on_progress(start + len(chunk), len(pending))
    finally:
        store.close()
    evaluation = _agreement(out, dataset.records, judge) if labelled else None
    return ScoringOutcome(len(pending) - failed, len(done), failed, evaluation)


def _agreement(out: Path, records: Sequence[Record], judge: ExportedJudge) -> Evaluation:
    with out.open(newline="", encoding="utf-8") as handle:
        scored = {row["id"]: row for row in csv.DictReader(handle)}
    rows = [r for r in records if r.id in scored]
    names = [c.name for c in judge.criteria]
    predictions = {n: [float(v) if (v := scored[r.id][n]) else None for r in rows] for n in names}
    truths = {n: [r.labels[n] for r in rows] for n in names}
    return evaluate(predictions, truths)
