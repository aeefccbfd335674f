"""Run configurations against the scripted endpoint, and what tests read back from a finished run directory."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from helpers.fake_openai import FakeOpenAI, Handler, RecordedRequest
from helpers.scripts import SUMMEVAL, role_of
from judgeopt.cli import main

BATCH = 2
DATASET = {"name": "summeval", "train_size": 12, "val_size": 4, "test_size": 6}


def scripted_model(base_url: str, **overrides: Any) -> dict[str, Any]:
    """The default role model on the scripted endpoint: no openai-client retries (the orchestrator retries)."""
    return {
        "base_url": base_url,
        "model": "fake-model",
        "structured_output": "json_schema",
        "max_retries": 0,
        "timeout": 10,
        **overrides,
    }


def run_settings(**run: Any) -> dict[str, Any]:
    return {
        "steps": 2,
        "batch_size": BATCH,
        "gate": "none",
        "bootstrap_resamples": 0,
        "concurrency": 4,
        "dataset": DATASET,
        **run,
    }


def write_summeval_rows(path: Path, summaries: Iterable[str], *, article: str = "Article {i} about tides.") -> Path:
    """A JSON-lines data file of SummEval-shaped rows: ``id``, ``article`` (``{i}`` is the row's number), the summary,
    and a label from 1 to 5 for each SummEval criterion."""
    rows = (
        {"id": f"r{i}", "article": article.format(i=i), "summary": summary}
        | {name: 1 + (i + k) % 5 for k, name in enumerate(SUMMEVAL)}
        for i, summary in enumerate(summaries)
    )
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def file_dataset(path: Path, *, train_size: int, val_size: int, test_size: int, **settings: Any) -> dict[str, Any]:
    """The run config's ``dataset`` section for a file written by :func:`write_summeval_rows`."""
    return {
        "name": "file",
        "path": str(path),
        "text_fields": ["article", "summary"],
        "id_field": "id",
        "criteria": [{"name": name} for name in SUMMEVAL],
        "train_size": train_size,
        "val_size": val_size,
        "test_size": test_size,
        **settings,
    }


def write_config(path: Path, base_url: str, *, model: dict[str, Any] | None = None, **run: Any) -> Path:
    """A run config file: every role on ``base_url`` (with ``model`` overrides), ``run`` over the test defaults."""
    config = {"models": {"default": scripted_model(base_url, **(model or {}))}, "run": run_settings(**run)}
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass(frozen=True)
class FinishedRun:
    """A `judgeopt optimize` that ran to its end: its exit code, its directory and every request the endpoint got."""

    code: int
    run_dir: Path
    requests: list[RecordedRequest]

    def by_role(self, role: str) -> list[RecordedRequest]:
        found = [r for r in self.requests if role_of(r) == role]
        assert found, f"no {role} request"
        return found


def scripted_run(
    tmp_path: Path, handler: Handler, *, config: Callable[[str], Path] | None = None, **run: Any
) -> FinishedRun:
    """`judgeopt optimize` into ``tmp_path/run`` against a scripted endpoint answering with ``handler``. The config
    file is ``config(base_url)`` when given, else :func:`write_config` with ``run`` over the test defaults."""
    run_dir = tmp_path / "run"
    with FakeOpenAI(handler) as endpoint:
        path = config(endpoint.base_url) if config else write_config(tmp_path / "run.yaml", endpoint.base_url, **run)
        code = main(["optimize", "--config", str(path), "--run-dir", str(run_dir)])
        return FinishedRun(code, run_dir, list(endpoint.requests))


def train_calls(run_dir: Path) -> dict[tuple[int, str], int]:
    """Distinct training RPCs per (step, stage), from the store."""
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        rows = db.execute(
            "SELECT step, stage, COUNT(DISTINCT request_id) FROM calls WHERE purpose = 'train' GROUP BY step, stage"
        ).fetchall()
    return {(step, stage): n for step, stage, n in rows}


def final_prompts(run_dir: Path) -> dict[str, str]:
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        rows = db.execute(
            "SELECT s.track, p.body FROM steps s JOIN prompts p ON p.id = s.prompt_id "
            "WHERE s.step = (SELECT MAX(step) FROM steps) ORDER BY s.track"
        ).fetchall()
    return {track: body for track, body in rows}


OUTCOME_KEYS = ("initial", "best", "best_oracle", "hvi")
STEP_KEYS = ("step", "accepted", "val_metric", "macro_rho", "rho")


def outcome(run_dir: Path) -> dict[str, Any]:
    """What must not change when a run is disturbed: its headline figures, every step's figures, final prompts."""
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "status": summary["status"],
        **{key: summary[key] for key in OUTCOME_KEYS},
        "steps": [{k: s[k] for k in STEP_KEYS} for s in summary["steps"]],
        "prompts": final_prompts(run_dir),
    }


def routed_requests(run_dir: Path) -> int:
    """Calls the run's router logged: what `judgeopt audit` must find received in the services' ledgers."""
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        return int(db.execute("SELECT COUNT(*) FROM audit").fetchone()[0])


def assert_audited_every_call(output: str, run_dir: Path) -> None:
    """`judgeopt audit`'s output says it passed, and that every request the run routed was received and checked."""
    routed = routed_requests(run_dir)
    assert routed > 0, "the run routed no request"
    assert "audit ok: " in output and f"; {routed} of {routed} routed requests received" in output, output
