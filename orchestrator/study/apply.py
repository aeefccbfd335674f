"""Scoring new data with an exported judge: ``judgeopt judge --judge judge.yaml --data FILE --out scores.csv``.

The output CSV is also the resume record: rows are appended in input order as they are scored (flushed to disk chunk
by chunk), and a restarted scoring run skips every id already in the file; a last row a crash tore is cut off and
scored again. A row is written only when the judge gave it a score: one whose call failed, or whose reply held no
valid score at all, counts as failed and is tried again by the next run. Calls and the prediction cache live in
``<out>.state/`` beside it, which one process at a time may write. When the data carries a human score for every
criterion, the agreement with the judge is reported.
"""

from __future__ import annotations

import csv
import io
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from judgeopt.core.errors import ConfigError
from judgeopt.core.files import write_atomic
from judgeopt.core.private_files import open_private_text
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

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ScoringOutcome:
    scored: int
    skipped: int
    failed: int
    """Rows not scored: their call failed after its retries, or (``unscored`` of them) the judge's reply held no
    valid score for any criterion."""
    unscored: int
    evaluation: Evaluation | None


def state_dir(out: Path) -> Path:
    """Where the scoring of ``out`` keeps its calls and prediction cache (and its services' logs)."""
    return out.parent / f"{out.name}.state"


def judge_policy(routing: Routing) -> Policy:
    """Only the judge stage matters here; it sees what it saw during optimization."""
    judge = StagePolicy(routing=routing, fields=frozenset({"task_description", "instruction", "sample"}))
    return PRESETS["SSS"].model_copy(update={"judge": judge, "name": f"judge-{routing}"})


def _columns(judge: ExportedJudge) -> list[str]:
    names = [c.name for c in judge.criteria]
    return ["id", *names, *(f"{n}_status" for n in names)]


def _csv_line(cells: Sequence[str]) -> str:
    line = io.StringIO()
    csv.writer(line).writerow(cells)
    return line.getvalue()


def _whole_rows(text: str, width: int) -> tuple[list[list[str]], int]:
    """The rows of a CSV written whole (ending in a newline, ``width`` cells), up to the first that is not, and
    how many characters of ``text`` they take."""
    consumed = 0

    def lines() -> Iterator[str]:
        nonlocal consumed
        while consumed < len(text):
            end = text.find("\n", consumed)
            start, consumed = consumed, len(text) if end < 0 else end + 1
            yield text[start:consumed]

    rows: list[list[str]] = []
    whole = 0
    try:
        for row in csv.reader(lines()):
            if len(row) != width or text[consumed - 1] != "\n":
                break
            rows.append(row)
            whole = consumed
    except csv.Error:  # a quoted cell cut short
        pass
    return rows, whole


def _done_ids(out: Path, columns: Sequence[str]) -> set[str]:
    """The ids already scored in ``out``, its header (re)written whole when it has none yet.

    A file cut short by a crash keeps its whole rows: a torn last row (cut mid-row, or a column short) is removed,
    so that its row is scored again, as is anything after it."""
    header = _csv_line(columns)
    text = ""
    if out.exists():
        with out.open(newline="", encoding="utf-8") as handle:  # line ends as written: a lone "\r" is a torn row
            text = handle.read()
    if header.startswith(text) and text != header:  # no file, an empty one, or a header cut short
        write_atomic(out, header)
        return set()
    rows, whole = _whole_rows(text, len(columns))
    if not rows or rows[0] != list(columns):
        raise ConfigError(f"{out} exists with other columns ({text.splitlines()[0][:200]}); choose another --out")
    if whole < len(text):
        log.warning("scores.torn_row_removed", file=str(out), characters=len(text) - whole)
        write_atomic(out, text[:whole])
    return {row[0] for row in rows[1:]}


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
    store = RunStore(state_dir(out), writer=True)  # taken first: one process at a time reads and writes ``out``
    try:
        dataset, labelled = load_data_to_score(data, judge.text_fields, judge.criteria, id_field)
        done = _done_ids(out, _columns(judge))
        pending = [r for r in dataset.records if r.id not in done]
        if store.get_meta("run_id") is None:
            store.set_meta("run_id", uuid.uuid4().hex[:12])
        router = Router(judge_policy(routing), judge.criteria, run_id=store.get_meta("run_id"), track="judge")
        scorer = Scorer(
            router=router,
            executor=executor_for(store),
            clients=clients,
            store=store,
            cache_salt=(content_id(judge.model.model_dump(mode="json")), 0),
        )
        names = [c.name for c in judge.criteria]
        failed = unscored = 0
        with open_private_text(out, append=True, newline="") as handle:
            writer = csv.writer(handle)
            for start in range(0, len(pending), chunk_size):
                chunk = pending[start : start + chunk_size]
                results = await scorer.score(judge.prompt(), chunk, step=0, purpose="score")
                for record, result in zip(chunk, results, strict=True):
                    if result is None or all(result.scores.get(n) is None for n in names):
                        failed += 1  # not written: a rerun scores it again
                        if result is not None:
                            unscored += 1
                        continue
                    values = ["" if result.scores.get(n) is None else f"{result.scores[n]:g}" for n in names]
                    statuses = [convert.status_name(result.statuses.get(n, convert.MISSING_STATUS)) for n in names]
                    writer.writerow([record.id, *values, *statuses])
                handle.flush()
                os.fsync(handle.fileno())
                if on_progress is not None:
                    on_progress(start + len(chunk), len(pending))
    finally:
        store.close()
    evaluation = _agreement(out, dataset.records, judge) if labelled else None
    return ScoringOutcome(len(pending) - failed, len(done), failed, unscored, evaluation)


def _agreement(out: Path, records: Sequence[Record], judge: ExportedJudge) -> Evaluation:
    with out.open(newline="", encoding="utf-8") as handle:
        scored = {row["id"]: row for row in csv.DictReader(handle)}
    rows = [r for r in records if r.id in scored]
    names = [c.name for c in judge.criteria]
    predictions = {n: [float(v) if (v := scored[r.id][n]) else None for r in rows] for n in names}
    truths = {n: [r.labels[n] for r in rows] for n in names}
    return evaluate(predictions, truths, within={c.name: c.off_by_one_width for c in judge.criteria})
