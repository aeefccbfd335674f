"""The conflict arbiter: its tolerant reading of a reply, and an SSC run on the scripted endpoint where planted
contradictory gradients (step 1) produce a recorded conflict whose resolution reaches the optimizer, compatible
ones (step 2) none; the arbiter's calls are routed and audited as the joint optimizer call they serve."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from helpers.fake_openai import Completion, FakeOpenAI, RecordedRequest, Reply
from helpers.runs import assert_audited_every_call, write_config
from helpers.scripts import ARBITER_MARK, deterministic_handler, role_of

from judgeopt.agents.optimizer import read_arbitration
from judgeopt.agents.types import ArbitrateTask, Criterion, Gradient, ParseStatus
from judgeopt.cli import main

TASK = ArbitrateTask(
    (Criterion("coherence", "", 1, 5), Criterion("relevance", "", 1, 5)),
    (Gradient(("coherence",), "s", "", "", "Penalise short summaries.", ParseStatus.OK),),
)


def test_an_arbiter_reply_is_read_tolerantly() -> None:
    reply = {
        "conflicts": [
            {"criteria": ["coherence", "relevance"], "issue": "length"},
            {"criteria": ["coherence", "tone"], "issue": "an unknown criterion"},
            {"criteria": ["coherence"], "issue": "one criterion"},
        ],
        "resolution": " Penalise only summaries too short to cover the key points. ",
    }
    read = read_arbitration("Sure:\n" + json.dumps(reply), TASK)
    assert [(c.criteria, c.issue) for c in read.conflicts] == [(("coherence", "relevance"), "length")]
    assert read.resolution == "Penalise only summaries too short to cover the key points."
    assert read.status is ParseStatus.REPAIRED
    none = read_arbitration(json.dumps({"conflicts": [], "resolution": "ignored without a conflict"}), TASK)
    assert none.conflicts == () and none.resolution == "" and none.status is ParseStatus.OK
    unreadable = read_arbitration("no JSON here", TASK)
    assert unreadable.conflicts == () and unreadable.status is ParseStatus.INVALID


PENALISE, IGNORE = "Penalise short summaries.", "Ignore the length of the summary."
RESOLUTION = "RESOLVED: penalise a summary only when it is too short to cover the key points."


def conflicting_handler() -> object:
    """Deterministic roles; on the initial prompt the coherence gradient asks to penalise short summaries and the
    relevance gradient to ignore length; the arbiter reports a conflict when both requests are in front of it."""
    scripted = deterministic_handler()

    def handle(request: RecordedRequest) -> Reply:
        text = request.last_user_text
        if ARBITER_MARK in request.system_text:
            found = PENALISE in text and IGNORE in text
            conflicts = [{"criteria": ["coherence", "relevance"], "issue": "summary length"}] if found else []
            return Completion(json.dumps({"conflicts": conflicts, "resolution": RESOLUTION if found else ""}))
        if role_of(request) == "gradient" and "revision" not in text:
            for criterion, fix in (("coherence", PENALISE), ("relevance", IGNORE)):
                if f"Criterion: {criterion}" in text:
                    return Completion(json.dumps({"keep": "The scale.", "problem": "Length.", "fix": fix}))
        return scripted(request)

    return handle


def test_contradictory_gradients_bring_a_resolution_to_the_optimizer_and_compatible_ones_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeOpenAI(conflicting_handler()) as server:  # type: ignore[arg-type]
        config = write_config(tmp_path / "run.yaml", server.base_url, mode="SSC", conflict_arbiter=True)
        run_dir = tmp_path / "run"
        assert main(["optimize", "--config", str(config), "--run-dir", str(run_dir)]) == 0
        optimizer = [r.last_user_text for r in server.requests if role_of(r) == "optimizer"]
        arbiter = [r.last_user_text for r in server.requests if ARBITER_MARK in r.system_text]
    assert len(optimizer) == 2 and len(arbiter) == 2  # one joint optimizer call per step, one arbiter call before it
    first, second = sorted(optimizer, key=lambda text: PENALISE not in text)
    assert PENALISE in first and IGNORE in first and RESOLUTION in first
    assert PENALISE not in second and "reconcile it as follows" not in second
    summary = json.loads((run_dir / "summary.json").read_text())["conflicts"]
    assert summary["total"] == 1
    assert summary["per_step"] == {
        "1": [{"track": "all", "criteria": ["coherence", "relevance"], "issue": "summary length"}]
    }
    assert summary["cost"]["optimizer"]["calls"] == 2
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        purposes = db.execute(
            "SELECT step, purpose, stage FROM calls WHERE purpose = 'arbiter' ORDER BY step"
        ).fetchall()
    assert purposes == [(1, "arbiter", "optimizer"), (2, "arbiter", "optimizer")]
    ledger = [json.loads(line) for line in (run_dir / "services" / "optimizer.ledger.jsonl").read_text().splitlines()]
    steps = [e for e in ledger if e["rpc"].endswith("/Step")]
    assert sorted("*:resolution" in e["fields"] for e in steps) == [False, True]
    capsys.readouterr()
    assert main(["audit", str(run_dir)]) == 0
    assert_audited_every_call(capsys.readouterr().out, run_dir)
