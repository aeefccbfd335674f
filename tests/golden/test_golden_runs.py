"""Behaviour pinned across refactors: each preset's 2-step run on the scripted endpoint, compared with a recording.

For every preset the recording holds what the model endpoint received from each role (every request body, in a
canonical order), what each service's ledger says it carried, and the run's ``summary.json`` without the fields
that vary between identical runs (times, paths, versions). A refactor that changes any request or any figure fails
here; a deliberate change of behaviour re-records with ``JUDGEOPT_UPDATE_GOLDEN=1``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from helpers.fake_openai import FakeOpenAI
from helpers.runs import write_config
from helpers.scripts import deterministic_handler, role_of

from judgeopt.cli import main

GOLDEN_DIR = Path(__file__).parent / "recordings"
PRESETS = ("SSS", "SSC", "SCC", "CCC", "single")
UPDATE = os.environ.get("JUDGEOPT_UPDATE_GOLDEN") == "1"

VOLATILE_KEYS = frozenset(
    {
        "run_id",
        "run_dir",
        "created_at",
        "started_at",
        "finished_at",
        "updated_at",
        "wall_seconds",
        "seconds",
        "provenance",
        "request_id",
        "received_at",
        "time",
        "timestamp",
        "duration_ms",
        "endpoint_seconds",
        "queue_seconds",
        "peer",
    }
)


def _stable(value: Any) -> Any:
    """``value`` without the keys whose values differ between two identical runs (times, ids, paths)."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE_KEYS and not k.endswith("_seconds")}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _canonical(items: list[Any]) -> list[Any]:
    return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))


def record(server: FakeOpenAI, run_dir: Path) -> dict[str, Any]:
    requests: dict[str, list[Any]] = {}
    for request in server.requests:
        body = {k: v for k, v in request.body.items() if k not in ("model", "user")}
        requests.setdefault(role_of(request), []).append(body)
    ledgers: dict[str, list[Any]] = {}
    for path in sorted((run_dir / "services").glob("*.ledger.jsonl")):
        entries = [_stable(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
        ledgers[path.name.split(".")[0]] = _canonical(entries)
    summary = _stable(json.loads((run_dir / "summary.json").read_text()))
    return {
        "requests": {role: _canonical(bodies) for role, bodies in sorted(requests.items())},
        "ledgers": ledgers,
        "summary": summary,
    }


@pytest.mark.parametrize("mode", PRESETS)
def test_preset_run_matches_its_recording(mode: str, tmp_path: Path) -> None:
    """The requests every service made and received, and the run's summary, equal the recording."""
    with FakeOpenAI(deterministic_handler()) as server:
        config = write_config(tmp_path / "run.yaml", server.base_url, mode=mode, concurrency=1)
        run_dir = tmp_path / "run"
        assert main(["optimize", "--config", str(config), "--run-dir", str(run_dir)]) == 0
        observed = record(server, run_dir)
    golden = GOLDEN_DIR / f"{mode}.json"
    if UPDATE:
        GOLDEN_DIR.mkdir(exist_ok=True)
        golden.write_text(json.dumps(observed, indent=1, sort_keys=True) + "\n")
    expected = json.loads(golden.read_text())
    assert sum(len(bodies) for bodies in observed["requests"].values()) > 0
    assert set(observed["requests"]) == {"judge", "loss", "gradient", "optimizer"}
    for role in expected["requests"]:
        assert observed["requests"][role] == expected["requests"][role], f"{mode}: {role} requests differ"
    assert observed["ledgers"] == expected["ledgers"], f"{mode}: service ledgers differ"
    assert observed["summary"] == expected["summary"], f"{mode}: summary differs"
