"""The run store: one SQLite file per run directory.

Written as the run goes: every call attempt (so spend is reported truthfully) and every routed request (the
audit log) the moment they happen; judge predictions into a cache keyed by prompt, sample, model settings and run
seed; and each finished step — its artifacts, prompt versions, gate decision and metrics — in one transaction,
so a killed run loses at most the step in flight. ``last_step`` is where ``judgeopt resume`` picks up.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, astuple, dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from judgeopt.core.errors import ConfigError, describe_validation_error
from judgeopt.core.files import DirectoryLock
from judgeopt.core.private_files import private_dir, private_file
from judgeopt.orchestrator.engine import STORE_FILE as STORE_FILE
from judgeopt.orchestrator.engine.artifacts import (
    Conflict,
    FocusRecord,
    Gradient,
    PromptState,
    ScoredSample,
    StepArtifacts,
)
from judgeopt.orchestrator.engine.manifest import MANIFEST_VERSION, RunManifest, RunStatus
from judgeopt.orchestrator.engine.pareto import ArchiveMember
from judgeopt.orchestrator.engine.router import AuditEntry

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS prompts (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS steps (
    track TEXT NOT NULL, step INTEGER NOT NULL, status TEXT NOT NULL,
    prompt_id TEXT NOT NULL, candidate_id TEXT, val_metric REAL, val TEXT, test TEXT,
    batch TEXT NOT NULL, failed_calls INTEGER NOT NULL, total_calls INTEGER NOT NULL, attempts INTEGER NOT NULL,
    finished_at REAL NOT NULL,
    PRIMARY KEY (track, step)
);
CREATE TABLE IF NOT EXISTS artifacts (
    id TEXT PRIMARY KEY, track TEXT NOT NULL, step INTEGER NOT NULL, kind TEXT NOT NULL,
    sample_id TEXT, criteria TEXT NOT NULL, body TEXT NOT NULL, status INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS predictions (
    cache_key TEXT PRIMARY KEY, prompt_id TEXT NOT NULL, sample_id TEXT NOT NULL,
    scores TEXT NOT NULL, statuses TEXT NOT NULL, raw TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL, attempt INTEGER NOT NULL,
    track TEXT NOT NULL, step INTEGER NOT NULL, stage TEXT NOT NULL, purpose TEXT NOT NULL,
    outcome TEXT NOT NULL, code TEXT, error TEXT,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, llm_calls INTEGER NOT NULL,
    model TEXT, queue_seconds REAL, endpoint_seconds REAL NOT NULL, at REAL NOT NULL,
    truncated INTEGER NOT NULL DEFAULT 0, cached_prompt_tokens INTEGER NOT NULL DEFAULT 0,
    UNIQUE (request_id, attempt)
);
CREATE TABLE IF NOT EXISTS diagnostics (
    track TEXT NOT NULL, step INTEGER NOT NULL, criterion TEXT NOT NULL, kind TEXT NOT NULL,
    score REAL, status INTEGER NOT NULL, rationale TEXT NOT NULL,
    PRIMARY KEY (track, step, criterion, kind)
);
CREATE TABLE IF NOT EXISTS archive (
    track TEXT NOT NULL, step INTEGER NOT NULL, prompt_id TEXT NOT NULL, vals TEXT NOT NULL,
    PRIMARY KEY (track, step)
);
CREATE TABLE IF NOT EXISTS audit (
    request_id TEXT PRIMARY KEY, track TEXT NOT NULL, step INTEGER NOT NULL, stage TEXT NOT NULL,
    criteria TEXT NOT NULL, visible TEXT NOT NULL, artifacts TEXT NOT NULL, fields TEXT NOT NULL
);
"""


_ADDED_COLUMNS = {
    "calls": {"truncated": "INTEGER NOT NULL DEFAULT 0", "cached_prompt_tokens": "INTEGER NOT NULL DEFAULT 0"}
}
"""Columns added since a table was first created: a store written before them gets them (as zeros) when opened."""


def _upgrade_tables(db: sqlite3.Connection) -> None:
    """Bring a store written by an earlier judgeopt up to today's tables, so old runs still read and resume.

    One ``seconds`` per call attempt (queue wait included) becomes ``endpoint_seconds`` with the queue wait unknown
    (NULL), and columns added since get their defaults."""
    if "seconds" in {row[1] for row in db.execute("PRAGMA table_info(calls)")}:
        db.execute("ALTER TABLE calls RENAME COLUMN seconds TO endpoint_seconds")
        db.execute("ALTER TABLE calls ADD COLUMN queue_seconds REAL")
    for table, columns in _ADDED_COLUMNS.items():
        present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for name, declaration in columns.items():
            if name not in present:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")


@dataclass(frozen=True)
class CallAttempt:
    request_id: str
    attempt: int
    track: str
    step: int
    stage: str
    purpose: str
    """``train`` for the step's own calls, ``val`` / ``test`` for evaluations."""
    outcome: str
    """``ok`` or ``failed``."""
    code: str | None = None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_calls: int = 0
    model: str | None = None
    queue_seconds: float = 0.0
    """Waiting for a slot: the run's concurrency limit, then the endpoint's rate limits."""
    endpoint_seconds: float = 0.0
    """From sending the request to the service until its reply (or failure): the call's own speed."""
    truncated: int = 0
    """Of ``llm_calls``, the replies that stopped at the model's output cap (recorded, never used)."""
    cached_prompt_tokens: int = 0
    """Prompt tokens the endpoint's prefix cache served, where it reports them."""


@dataclass(frozen=True)
class CallTimes:
    """The attempts of one stage: seconds at the service, and seconds spent waiting for a slot (recorded ones)."""

    endpoint: list[float]
    queue: list[float]

    def as_json(self) -> dict[str, float | int | None]:
        """Per-call speed from the time at the service (a queued call is not a slow one), and the queueing apart."""
        return {
            "attempts": len(self.endpoint),
            "endpoint_median": statistics.median(self.endpoint) if self.endpoint else None,
            "endpoint_total": sum(self.endpoint),
            "queue_median": statistics.median(self.queue) if self.queue else None,
            "queue_total": sum(self.queue) if self.queue else None,
        }


@dataclass(frozen=True)
class Diagnostic:
    """An evaluator rating (1-10) of one criterion at one step: ``specificity`` of its gradients, or
    ``adherence`` of its rewritten instruction to them."""

    track: str
    step: int
    criterion: str
    kind: str
    score: float | None
    status: int
    rationale: str


@dataclass(frozen=True)
class StepRecord:
    """A finished step of one track. ``status``: initial, accepted, rejected or failed (rolled back)."""

    track: str
    step: int
    status: str
    prompt: PromptState
    candidate: PromptState | None
    val_metric: float | None
    val: dict[str, Any] | None
    test: dict[str, Any] | None
    batch: tuple[str, ...]
    failed_calls: int = 0
    total_calls: int = 0
    attempts: int = 1


class RunStore:
    def __init__(self, run_dir: Path, *, writer: bool = False) -> None:
        """Open (creating if need be) the store of ``run_dir``. A ``writer`` holds the directory's lock until
        :meth:`close`, so that a second process writing the same run is refused (``DirectoryInUse``, naming the
        holder's pid); readers (summaries, reports, the audit) take no lock."""
        private_dir(run_dir)
        self._lock = DirectoryLock(run_dir).acquire() if writer else None
        try:
            self.path = private_file(run_dir / STORE_FILE)  # its -wal and -shm files take its mode
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            _upgrade_tables(self._db)
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise
        self._manifest: RunManifest | None = None

    def close(self) -> None:
        self._db.close()
        if self._lock is not None:
            self._lock.release()

    # --- meta ------------------------------------------------------------------------------------------------------

    def set_meta(self, key: str, value: Any) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def holds_run(self) -> bool:
        return self.get_meta("manifest") is not None

    def write_manifest(self, manifest: RunManifest) -> None:
        self.set_meta("manifest", manifest.model_dump(mode="json"))
        self._manifest = manifest

    def manifest(self) -> RunManifest:
        """The run's manifest; a store without one (or of another version) is refused in one line."""
        if self._manifest is None:
            where = self.path.parent
            raw = self.get_meta("manifest")
            if not isinstance(raw, dict):
                raise ConfigError(f"{where} holds no run manifest (not a run, or one written by an older judgeopt)")
            if raw.get("version") != MANIFEST_VERSION:
                raise ConfigError(f"{where}: run manifest version {raw.get('version')!r}, expected {MANIFEST_VERSION}")
            try:
                self._manifest = RunManifest.model_validate(raw)
            except ValidationError as exc:
                raise ConfigError(f"{where}: run manifest: {describe_validation_error(exc)}") from None
        return self._manifest

    @property
    def status(self) -> RunStatus | None:
        status: RunStatus | None = self.get_meta("status")
        return status

    def set_status(self, status: RunStatus) -> None:
        self.set_meta("status", status)

    # --- written as they happen ----------------------------------------------------------------------------------

    def record_attempt(self, attempt: CallAttempt) -> None:
        fields = asdict(attempt)
        columns = ", ".join(fields) + ", at"
        marks = ", ".join("?" for _ in fields) + ", ?"
        self._db.execute(f"INSERT OR REPLACE INTO calls ({columns}) VALUES ({marks})", (*fields.values(), time.time()))

    def attempts_made(self, request_id: str) -> int:
        """Attempts already stored for a request id (a resumed run asks again under the same id)."""
        row = self._db.execute("SELECT MAX(attempt) FROM calls WHERE request_id = ?", (request_id,)).fetchone()
        return int(row[0] or 0)

    def record_audit(self, entry: AuditEntry) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry.request_id,
                entry.track,
                entry.step,
                entry.stage,
                json.dumps(entry.criteria),
                json.dumps(entry.visible),
                json.dumps(entry.artifacts),
                json.dumps(entry.fields),
            ),
        )

    def cached_prediction(self, cache_key: str) -> ScoredSample | None:
        row = self._db.execute(
            "SELECT sample_id, scores, statuses, raw FROM predictions WHERE cache_key = ?", (cache_key,)
        ).fetchone()
        if row is None:
            return None
        return ScoredSample(row[0], json.loads(row[1]), json.loads(row[2]), row[3])

    def predictions_of(self, prompt_id: str) -> list[ScoredSample]:
        """Every judge reply stored under a prompt, one per judge call (a per-criterion call holds one criterion)."""
        rows = self._db.execute(
            "SELECT sample_id, scores, statuses, raw FROM predictions WHERE prompt_id = ? ORDER BY sample_id",
            (prompt_id,),
        )
        return [ScoredSample(r[0], json.loads(r[1]), json.loads(r[2]), r[3]) for r in rows]

    def cache_prediction(self, cache_key: str, prompt_id: str, scored: ScoredSample) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?, ?, ?)",
            (
                cache_key,
                prompt_id,
                scored.sample_id,
                json.dumps(scored.scores),
                json.dumps(scored.statuses),
                scored.raw_output,
            ),
        )

    def record_diagnostic(self, diagnostic: Diagnostic) -> None:
        self._db.execute("INSERT OR REPLACE INTO diagnostics VALUES (?, ?, ?, ?, ?, ?, ?)", astuple(diagnostic))

    def diagnostics(self) -> list[Diagnostic]:
        rows = self._db.execute("SELECT * FROM diagnostics ORDER BY track, step, criterion, kind")
        return [Diagnostic(*row) for row in rows]

    # --- one transaction per finished step ---------------------------------------------------------------------

    def commit_step(
        self, record: StepRecord, artifacts: StepArtifacts | None, archive: Sequence[ArchiveMember] | None = None
    ) -> None:
        """The step, its artifacts and (with the Pareto gate) its track's archive as it stands after the step."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for prompt in filter(None, (record.prompt, record.candidate)):
                db.execute("INSERT OR IGNORE INTO prompts VALUES (?, ?)", (prompt.id, json.dumps(prompt.to_json())))
            db.execute(
                "INSERT OR REPLACE INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.track,
                    record.step,
                    record.status,
                    record.prompt.id,
                    record.candidate.id if record.candidate else None,
                    record.val_metric,
                    json.dumps(record.val) if record.val is not None else None,
                    json.dumps(record.test) if record.test is not None else None,
                    json.dumps(record.batch),
                    record.failed_calls,
                    record.total_calls,
                    record.attempts,
                    time.time(),
                ),
            )
            if artifacts is not None:
                self._insert_artifacts(record.track, record.step, artifacts)
            if archive is not None:
                db.execute("DELETE FROM archive WHERE track = ?", (record.track,))
                db.executemany(
                    "INSERT INTO archive VALUES (?, ?, ?, ?)",
                    [(record.track, m.step, m.prompt_id, json.dumps(m.values)) for m in archive],
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _insert_artifacts(self, track: str, step: int, artifacts: StepArtifacts) -> None:
        rows: list[tuple[Any, ...]] = []
        for p in artifacts.predictions:
            body = {"scores": p.scores, "statuses": p.statuses, "raw": p.raw_output}
            rows.append((f"pred-{track}-{step}-{p.sample_id}", "prediction", p.sample_id, [], body, 0))
        for c in artifacts.critiques:
            rows.append((c.id, "critique", c.sample_id, c.criteria, {"text": c.text}, c.status))
        for g in artifacts.gradients:
            rows.append(
                (
                    g.id,
                    "gradient",
                    g.sample_id,
                    g.criteria,
                    {"keep": g.keep, "problem": g.problem, "fix": g.fix},
                    g.status,
                )
            )
        for f in artifacts.focus:
            rows.append((f"focus-{f.gradient_id}", "focus", f.sample_id, f.diluted, {"shares": f.shares}, 0))
        for n, conflict in enumerate(artifacts.conflicts):
            body = {"issue": conflict.issue, "resolution": artifacts.resolution}
            rows.append((f"conflict-{track}-{step}-{n}", "conflict", None, conflict.criteria, body, 0))
        for criterion, status in artifacts.optimizer_statuses.items():
            outcome = {"length_rejected": True} if criterion in artifacts.length_rejected else {}
            rows.append((f"opt-{track}-{step}-{criterion}", "optimizer_status", None, [criterion], outcome, status))
        self._db.executemany(
            "INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (rid, track, step, kind, sid, json.dumps(list(crit)), json.dumps(body), status)
                for rid, kind, sid, crit, body, status in rows
            ],
        )

    # --- reading ------------------------------------------------------------------------------------------------------

    def steps(self, track: str | None = None) -> list[StepRecord]:
        query = "SELECT * FROM steps" + (" WHERE track = ?" if track else "") + " ORDER BY step, track"
        return [self._step_from_row(r) for r in self._db.execute(query, (track,) if track else ())]

    def last_step(self, track: str) -> StepRecord | None:
        rows = self.steps(track)
        return rows[-1] if rows else None

    def _prompt(self, prompt_id: str | None) -> PromptState | None:
        if prompt_id is None:
            return None
        row = self._db.execute("SELECT body FROM prompts WHERE id = ?", (prompt_id,)).fetchone()
        return PromptState.from_json(json.loads(row[0]))

    def _step_from_row(self, row: tuple[Any, ...]) -> StepRecord:
        track, step, status, prompt_id, candidate_id, val_metric, val, test, batch, failed, total, attempts, _ = row
        prompt = self._prompt(prompt_id)
        assert prompt is not None
        return StepRecord(
            track=track,
            step=step,
            status=status,
            prompt=prompt,
            candidate=self._prompt(candidate_id),
            val_metric=val_metric,
            val=json.loads(val) if val else None,
            test=json.loads(test) if test else None,
            batch=tuple(json.loads(batch)),
            failed_calls=failed,
            total_calls=total,
            attempts=attempts,
        )

    def archive(self, track: str) -> list[ArchiveMember]:
        """The track's archive of non-dominated prompts (Pareto gate), in step order; empty without one."""
        rows = self._db.execute("SELECT step, prompt_id, vals FROM archive WHERE track = ? ORDER BY step", (track,))
        return [ArchiveMember(step, prompt_id, json.loads(vals)) for step, prompt_id, vals in rows]

    def count_scoring_methods(self, counts: Mapping[str, int]) -> None:
        """Add to the run's count of the judge's valid scores by method (``sampled``, ``logprob_weighted``)."""
        total = Counter(self.scoring_methods())
        total.update(counts)
        self.set_meta("scoring_methods", dict(total))

    def scoring_methods(self) -> dict[str, int]:
        counts: dict[str, int] = self.get_meta("scoring_methods", {})
        return counts

    def usage_by_role(self) -> dict[str, dict[str, int]]:
        """Calls (every attempt), replies cut off at the output cap and tokens per stage: what the run really spent."""
        usage: dict[str, dict[str, int]] = {}
        query = (
            "SELECT stage, COUNT(*), SUM(outcome = 'failed'), SUM(llm_calls), SUM(truncated), SUM(prompt_tokens), "
            "SUM(completion_tokens), SUM(cached_prompt_tokens) FROM calls GROUP BY stage ORDER BY stage"
        )
        rows = self._db.execute(query)
        for stage, attempts, failed, llm_calls, truncated, prompt_tokens, completion_tokens, cached in rows:
            usage[stage] = {
                "rpc_attempts": attempts,
                "failed_attempts": failed,
                "llm_calls": llm_calls,
                "truncated_replies": truncated,
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "cached_prompt_tokens": cached,
            }
        return usage

    def spent(self) -> tuple[int, int]:
        """Call attempts made so far (each may have reached the model) and tokens used."""
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM calls")
        calls, tokens = row.fetchone()
        return int(calls), int(tokens)

    def calls(self) -> Iterator[tuple[Any, ...]]:
        yield from self._db.execute("SELECT request_id, attempt, track, step, stage, purpose, outcome FROM calls")

    def audit_entries(self) -> list[AuditEntry]:
        return [
            AuditEntry(r[0], r[2], r[1], r[3], *(tuple(json.loads(x)) for x in r[4:8]))
            for r in self._db.execute("SELECT * FROM audit")
        ]

    def gradients(self) -> list[tuple[str, int, Gradient]]:
        """Every stored gradient as (track, step, gradient), in step order."""
        rows = self._db.execute(
            "SELECT track, step, id, sample_id, criteria, body, status FROM artifacts WHERE kind = 'gradient' "
            "ORDER BY step, track, id"
        )
        result = []
        for track, step, gid, sample_id, criteria, body, status in rows:
            parts = json.loads(body)
            gradient = Gradient(
                gid, sample_id, tuple(json.loads(criteria)), parts["keep"], parts["problem"], parts["fix"], status
            )
            result.append((track, step, gradient))
        return result

    def artifact_criteria(self) -> dict[str, tuple[str, ...]]:
        """The criteria each stored critique and gradient is about, by id (what the audit checks carried ids by)."""
        rows = self._db.execute("SELECT id, criteria FROM artifacts WHERE kind IN ('critique', 'gradient')")
        return {aid: tuple(json.loads(criteria)) for aid, criteria in rows}

    def length_rejected(self) -> dict[int, list[str]]:
        """Per step, the criteria whose rewrite the optimizer left over its length limit (so not applied)."""
        rows = self._db.execute(
            "SELECT step, criteria, body FROM artifacts WHERE kind = 'optimizer_status' ORDER BY step, track, id"
        )
        result: dict[int, list[str]] = {}
        for step, criteria, body in rows:
            if json.loads(body).get("length_rejected"):
                result.setdefault(step, []).extend(json.loads(criteria))
        return result

    def conflicts(self) -> list[tuple[str, int, Conflict, str]]:
        """Every conflict the arbiter found, as (track, step, conflict, the resolution the optimizer received)."""
        rows = self._db.execute(
            "SELECT track, step, criteria, body FROM artifacts WHERE kind = 'conflict' ORDER BY step, track, id"
        )
        result = []
        for track, step, criteria, body in rows:
            first, second = json.loads(criteria)
            parts = json.loads(body)
            result.append((track, step, Conflict((first, second), parts["issue"]), parts["resolution"]))
        return result

    def focus_records(self) -> list[tuple[str, int, FocusRecord]]:
        """Every joint gradient's focus the specificity fallback measured, as (track, step, record)."""
        rows = self._db.execute(
            "SELECT track, step, id, sample_id, criteria, body FROM artifacts WHERE kind = 'focus' ORDER BY step, id"
        )
        return [
            (
                track,
                step,
                FocusRecord(sample_id, fid.removeprefix("focus-"), json.loads(body)["shares"], tuple(json.loads(crit))),
            )
            for track, step, fid, sample_id, crit, body in rows
        ]

    def usage_by_purpose(self, purpose: str) -> dict[str, dict[str, int]]:
        """RPC attempts and tokens per stage of the calls made for ``purpose`` (e.g. ``fallback``)."""
        query = (
            "SELECT stage, COUNT(*), COUNT(DISTINCT request_id), SUM(prompt_tokens), SUM(completion_tokens) "
            "FROM calls WHERE purpose = ? GROUP BY stage ORDER BY stage"
        )
        return {
            stage: {"rpc_attempts": attempts, "calls": calls, "prompt_tokens": prompt, "completion_tokens": completion}
            for stage, attempts, calls, prompt, completion in self._db.execute(query, (purpose,))
        }

    def judge_usage(self, *, tracks: Sequence[str], step: int, purposes: Sequence[str]) -> dict[str, int]:
        """Over the judge's answered requests of ``tracks`` at ``step`` for ``purposes``: how many requests, and
        their model calls, prompt tokens and cached prompt tokens (answered attempts only)."""
        marks = ", ".join("?" * len(tracks)), ", ".join("?" * len(purposes))
        query = (
            "SELECT COUNT(DISTINCT request_id), COALESCE(SUM(llm_calls), 0), COALESCE(SUM(prompt_tokens), 0), "
            f"COALESCE(SUM(cached_prompt_tokens), 0) FROM calls WHERE stage = 'judge' AND outcome = 'ok' "
            f"AND step = ? AND track IN ({marks[0]}) AND purpose IN ({marks[1]})"
        )
        requests, llm_calls, prompt, cached = self._db.execute(query, (step, *tracks, *purposes)).fetchone()
        return {"requests": requests, "llm_calls": llm_calls, "prompt_tokens": prompt, "cached_prompt_tokens": cached}

    def call_times_by_stage(self) -> dict[str, CallTimes]:
        """Per stage, the attempts' time at the service and their wait for a slot (``None`` where not recorded)."""
        times: dict[str, CallTimes] = {}
        for stage, endpoint, queue in self._db.execute("SELECT stage, endpoint_seconds, queue_seconds FROM calls"):
            entry = times.setdefault(stage, CallTimes([], []))
            entry.endpoint.append(endpoint)
            if queue is not None:
                entry.queue.append(queue)
        return times

    def wall_seconds(self) -> float:
        """From the moment the first call was issued to the last step committed."""
        first = self._db.execute("SELECT MIN(at - endpoint_seconds - COALESCE(queue_seconds, 0)) FROM calls")
        last = self._db.execute("SELECT MAX(finished_at) FROM steps").fetchone()[0]
        start = first.fetchone()[0]
        return float(last - start) if start is not None and last is not None else 0.0
