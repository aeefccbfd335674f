"""Stored call times: each attempt's wait for a slot apart from its time at the service, so that a slow-looking
call is not mistaken for a slow endpoint when it only queued."""

from __future__ import annotations

import json
import sqlite3
import statistics
from pathlib import Path

from helpers.fake_openai import FakeOpenAI
from helpers.runs import write_config
from helpers.scripts import deterministic_handler, with_latency

from judgeopt.cli import main
from judgeopt.orchestrator.engine.store import RunStore

LATENCY = 0.15


def test_one_slot_and_a_slow_endpoint_keep_queue_wait_and_endpoint_time_apart(tmp_path: Path) -> None:
    """At concurrency 1 the calls a stage issues together wait their turn: the k-th of them queues about k
    latencies, while each one's time at the service stays about the endpoint's latency; the summary's per-call
    speed is that latency, not the queueing."""
    with FakeOpenAI(with_latency(deterministic_handler(), LATENCY)) as slow:
        config = write_config(tmp_path / "run.yaml", slow.base_url, mode="CCC", steps=1, concurrency=1)
        run_dir = tmp_path / "run"
        assert main(["optimize", "--config", str(config), "--run-dir", str(run_dir)]) == 0
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        rows = db.execute(
            "SELECT stage, purpose, step, queue_seconds, endpoint_seconds FROM calls WHERE outcome = 'ok'"
        ).fetchall()
    assert len(rows) == 27  # step 0: 4 val + 6 test judge calls; step 1: 2 + 2 + 2 + 1 training, 4 val, 6 test
    endpoint = [e for *_, e in rows]
    assert all(LATENCY <= e < LATENCY + 0.25 for e in endpoint), endpoint
    assert statistics.median(endpoint) < LATENCY + 0.1
    # the 6 test judge calls of step 0 were issued together: one went at once, the others waited for the slot
    waits = sorted(q for stage, purpose, step, q, _ in rows if (purpose, step) == ("test", 0))
    assert len(waits) == 6
    assert waits[0] < LATENCY / 2
    assert all(wait >= k * LATENCY * 0.9 for k, wait in enumerate(waits)), waits

    summary = json.loads((run_dir / "summary.json").read_text())
    judge = summary["call_seconds"]["judge"]
    assert judge["attempts"] == 22  # 10 at step 0; 2 training, 4 val and 6 test at step 1
    assert LATENCY <= judge["endpoint_median"] < LATENCY + 0.1
    assert judge["queue_total"] >= 15 * LATENCY * 0.9  # the 6 test calls alone queue 0+1+…+5 latencies


def test_a_store_from_before_the_split_reads_with_its_queue_wait_unknown(tmp_path: Path) -> None:
    """An older store kept one ``seconds`` per attempt, queue included: it is read as the time at the service with
    no queue wait recorded, rather than refused or shown as a zero wait."""
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        db.execute(
            "CREATE TABLE calls (id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL, "
            "attempt INTEGER NOT NULL, track TEXT NOT NULL, step INTEGER NOT NULL, stage TEXT NOT NULL, "
            "purpose TEXT NOT NULL, outcome TEXT NOT NULL, code TEXT, error TEXT, prompt_tokens INTEGER NOT NULL, "
            "completion_tokens INTEGER NOT NULL, llm_calls INTEGER NOT NULL, model TEXT, seconds REAL NOT NULL, "
            "at REAL NOT NULL, UNIQUE (request_id, attempt))"
        )
        old_attempt = (1, "r", 1, "all", 0, "judge", "val", "ok", None, None, 1, 1, 1, "m", 2.5, 9.0)
        db.execute(f"INSERT INTO calls VALUES ({', '.join('?' * len(old_attempt))})", old_attempt)
    store = RunStore(run_dir)
    try:
        times = store.call_times_by_stage()
    finally:
        store.close()
    assert set(times) == {"judge"}
    assert times["judge"].endpoint == [2.5] and times["judge"].queue == []
    assert times["judge"].as_json()["queue_total"] is None
