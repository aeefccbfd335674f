"""The store's calls table: truncated replies counted per role, in new stores and in stores written before."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from judgeopt.orchestrator.engine.store import STORE_FILE, CallAttempt, RunStore

OLD_CALLS = """
CREATE TABLE calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL, attempt INTEGER NOT NULL,
    track TEXT NOT NULL, step INTEGER NOT NULL, stage TEXT NOT NULL, purpose TEXT NOT NULL,
    outcome TEXT NOT NULL, code TEXT, error TEXT,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, llm_calls INTEGER NOT NULL,
    model TEXT, seconds REAL NOT NULL, at REAL NOT NULL,
    UNIQUE (request_id, attempt)
);
INSERT INTO calls VALUES (1, 'r0', 1, 'all', 1, 'judge', 'train', 'ok', NULL, NULL, 10, 5, 1, 'm', 0.1, 0.0);
"""
"""The calls table as stores were written before truncated replies were counted, with one judge call."""


def attempt(request_id: str, stage: str, *, llm_calls: int, truncated: int) -> CallAttempt:
    return CallAttempt(request_id, 1, "all", 1, stage, "train", "ok", llm_calls=llm_calls, truncated=truncated)


def test_truncated_replies_are_counted_per_role(tmp_path: Path) -> None:
    store = RunStore(tmp_path, writer=True)
    try:
        store.record_attempt(attempt("r1", "optimizer", llm_calls=1, truncated=1))
        store.record_attempt(attempt("r2", "judge", llm_calls=4, truncated=2))
        store.record_attempt(attempt("r3", "judge", llm_calls=4, truncated=0))
        usage = store.usage_by_role()
    finally:
        store.close()
    assert {role: u["truncated_replies"] for role, u in usage.items()} == {"judge": 2, "optimizer": 1}
    assert usage["judge"]["llm_calls"] == 8


def test_a_store_written_before_counts_none_and_keeps_recording(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / STORE_FILE) as db:
        db.executescript(OLD_CALLS)
    store = RunStore(tmp_path, writer=True)
    try:
        store.record_attempt(attempt("r1", "judge", llm_calls=1, truncated=1))
        usage = store.usage_by_role()
    finally:
        store.close()
    assert usage["judge"]["rpc_attempts"] == 2
    assert usage["judge"]["truncated_replies"] == 1
