"""A judge exported from a run (``judgeopt export``, or ``Run.judge``), scoring rows of text held in memory."""

from __future__ import annotations

import contextlib
import csv
import json
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from judgeopt.api._common import PathLike, as_local_model, quiet_logging, translated_errors
from judgeopt.api._sync import run_sync
from judgeopt.core.errors import ConfigError
from judgeopt.core.models import ModelsConfig
from judgeopt.core.roles import Role
from judgeopt.orchestrator.data.loading import load_data_to_score
from judgeopt.orchestrator.engine.executor import CallExecutor
from judgeopt.orchestrator.engine.priority import PriorityLimiter
from judgeopt.orchestrator.engine.ratelimit import RateLimits
from judgeopt.orchestrator.engine.run import LOCAL_CONCURRENCY, REMOTE_CONCURRENCY, agent_clients
from judgeopt.orchestrator.errors import DataError
from judgeopt.orchestrator.study.apply import score_file
from judgeopt.orchestrator.study.export import ExportedJudge, read_judge, write_judge

Scores = dict[str, float | None]


class Judge:
    """A judge prompt with its criteria, text fields and model settings, as ``judgeopt export`` writes it."""

    def __init__(self, exported: ExportedJudge) -> None:
        self._exported = exported

    def __repr__(self) -> str:
        return f"Judge(criteria={self.criteria}, text_fields={self.text_fields}, source={self.source})"

    @property
    def criteria(self) -> tuple[str, ...]:
        return tuple(c.name for c in self._exported.criteria)

    @property
    def text_fields(self) -> tuple[str, ...]:
        """The fields every row must carry, as text."""
        return self._exported.text_fields

    @property
    def task_description(self) -> str:
        return self._exported.task_description

    @property
    def instructions(self) -> dict[str, str]:
        """One instruction per criterion."""
        return dict(self._exported.instructions)

    @property
    def routing(self) -> str:
        """``joint`` (every criterion in one call) or ``per_criterion``: how the run judged."""
        return self._exported.routing

    @property
    def source(self) -> dict[str, Any]:
        """Where it came from: run directory and id, mode, step, and its validation and test figures."""
        return dict(self._exported.source)

    def save(self, path: PathLike) -> None:
        """Write the judge file (what ``judgeopt judge --judge`` and :func:`load_judge` read)."""
        with translated_errors():
            write_judge(self._exported, Path(path))

    def score(
        self,
        rows: Iterable[Mapping[str, Any]],
        *,
        local_model: PathLike | None = None,
        address: str | None = None,
        concurrency: int | None = None,
    ) -> list[Scores]:
        """The synchronous twin of :meth:`score_async`."""
        return run_sync(
            lambda: self.score_async(rows, local_model=local_model, address=address, concurrency=concurrency)
        )

    async def score_async(
        self,
        rows: Iterable[Mapping[str, Any]],
        *,
        local_model: PathLike | None = None,
        address: str | None = None,
        concurrency: int | None = None,
    ) -> list[Scores]:
        """Per row (a mapping holding the judge's text fields), the score of every criterion, in row order; a
        criterion's score is ``None`` where the judge failed on it after its retries.

        A judge service is started for the call (with the embedded local model if the judge's settings name no
        endpoint, ``local_model`` choosing its GGUF file: a path, or a Hugging Face Hub reference as ``--local-model``
        takes it), unless ``address`` gives a running one. ``concurrency``: calls in flight, by default 1 on the local
        model, else 8."""
        rows = list(rows)
        if concurrency is not None and concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
        if not rows:
            return []
        quiet_logging()
        judge = self._exported
        models = ModelsConfig(default=judge.model.model_dump(mode="json"))
        limit = PriorityLimiter(
            concurrency or (LOCAL_CONCURRENCY if models.needs_local_model(("judge",)) else REMOTE_CONCURRENCY)
        )
        rates = RateLimits(models, ("judge",), window=60.0)
        addresses: dict[Role, str] | None = {"judge": address} if address else None
        with translated_errors(), tempfile.TemporaryDirectory(prefix="judgeopt-score-") as state:
            data, out = Path(state) / "rows.jsonl", Path(state) / "scores.csv"
            _write_rows(data, rows, judge.text_fields)
            with _named_as_rows(data):
                load_data_to_score(data, judge.text_fields, judge.criteria)  # bad rows are refused before any start
                async with agent_clients(
                    models,
                    Path(state) / "services",
                    addresses=addresses,
                    local_model=as_local_model(local_model),
                    roles=("judge",),
                ) as clients:
                    await score_file(
                        judge,
                        data,
                        out,
                        clients,
                        lambda store: CallExecutor(store, limit=limit, rate_limits=rates),
                        routing=judge.routing,
                    )
            scored = _read_scores(out, self.criteria)
        missing = dict.fromkeys(self.criteria)
        return [scored.get(f"row-{n}", missing).copy() for n in range(1, len(rows) + 1)]


@contextlib.contextmanager
def _named_as_rows(data: Path) -> Iterator[None]:
    """Data errors name the rows as the caller knows them, not the file they went through."""
    try:
        yield
    except DataError as exc:
        raise DataError(str(exc).replace(str(data), "rows")) from None


def _write_rows(path: Path, rows: Sequence[Mapping[str, Any]], text_fields: Sequence[str]) -> None:
    """The rows' text fields as JSONL, one line per row, so that row n gets the reader's id ``row-<n>``."""
    lines = []
    for n, row in enumerate(rows, start=1):
        if not isinstance(row, Mapping):
            raise DataError(f"rows: row {n}: expected a mapping of text fields, got {type(row).__name__}")
        try:
            # ASCII escapes: a lone surrogate in a row stays writable, to be refused by the reader naming its row.
            lines.append(json.dumps({f: row[f] for f in text_fields if f in row}))
        except (TypeError, ValueError) as exc:
            raise DataError(f"rows: row {n}: {exc}") from None
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _read_scores(out: Path, criteria: Sequence[str]) -> dict[str, Scores]:
    """The scores CSV of ``score_file`` by row id; a failed row is not in it."""
    with out.open(newline="", encoding="utf-8") as handle:
        return {r["id"]: {c: float(r[c]) if r[c] else None for c in criteria} for r in csv.DictReader(handle)}


def load_judge(path: PathLike) -> Judge:
    """The judge in a file written by ``judgeopt export`` (or :meth:`Judge.save`)."""
    with translated_errors():
        return Judge(read_judge(Path(path)))
