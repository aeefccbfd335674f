"""The work the study's own code was measured on, run by judgeopt: SSS and CCC, 2 steps, batch 3, the MAE gate on
20 validation rows, test on 40, against the scripted endpoint in tie mode (the judge answers a constant, so every
candidate passes the gate and no judge call is served from the cache). judgeopt makes exactly the study's calls."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from helpers.fake_openai import FakeOpenAI
from helpers.runs import write_config
from helpers.scripts import deterministic_handler, fake_models, role_of

from judgeopt.cli import main
from judgeopt.orchestrator.fleet import ServiceFleet

STUDY_WORK = {
    "steps": 2,
    "batch_size": 3,
    "gate": "mae",
    "concurrency": 8,
    "dataset": {"name": "summeval", "train_size": 24, "val_size": 20, "test_size": 40},
}
# Step 0 judges validation and test (60 calls); each step then judges its batch, the 20 validation and 40 test rows
# (63 judge calls) and makes the mode's loss, gradient and optimizer calls for 3 samples and 4 criteria.
STUDY_CALLS = {
    "SSS": {"judge": 186, "loss": 24, "gradient": 24, "optimizer": 8},  # 242
    "CCC": {"judge": 186, "loss": 6, "gradient": 6, "optimizer": 2},  # 200
}


@pytest.fixture(scope="module")
def tied() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(deterministic_handler(tie=True)) as server:
        yield server


@pytest.fixture(scope="module")
async def tied_fleet(tied: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServiceFleet]:
    """One set of services for both modes (a run started on given addresses does not start its own)."""
    async with ServiceFleet(fake_models(tied.base_url), tmp_path_factory.mktemp("fleet")) as running:
        yield running


@pytest.mark.parametrize("mode", list(STUDY_CALLS))
def test_the_study_work_makes_the_study_calls(
    mode: str, tied: FakeOpenAI, tied_fleet: ServiceFleet, tmp_path: Path
) -> None:
    tied.clear()
    config = write_config(tmp_path / "run.yaml", tied.base_url, mode=mode, **STUDY_WORK)
    addresses = [flag for role, address in tied_fleet.addresses.items() for flag in (f"--{role}-addr", address)]
    run_dir = tmp_path / "run"
    assert main(["optimize", "--config", str(config), "--run-dir", str(run_dir), *addresses]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [s["accepted"] for s in summary["steps"]] == [None, True, True]  # every candidate tied and passed
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        stored = dict(db.execute("SELECT stage, COUNT(*) FROM calls WHERE outcome = 'ok' GROUP BY stage").fetchall())
        failed = db.execute("SELECT COUNT(*) FROM calls WHERE outcome != 'ok'").fetchone()[0]
    assert failed == 0
    assert stored == STUDY_CALLS[mode]
    assert Counter(role_of(r) for r in tied.requests) == STUDY_CALLS[mode]  # what reached the endpoint
    assert sum(stored.values()) == {"SSS": 242, "CCC": 200}[mode]
