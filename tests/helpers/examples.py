"""The shipped code-review example (three criteria on three scales) as the tests run it against a scripted
endpoint, and its rows as new data to score."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "code_review"


def example_config(path: Path, base_url: str, run: dict[str, Any] | None = None, **models: Any) -> Path:
    """The shipped code-review example, pointed at the scripted endpoint."""
    config = yaml.safe_load((EXAMPLE / "judgeopt.yaml").read_text())
    config["run"]["dataset"]["path"] = str(EXAMPLE / "reviews.csv")
    config["run"].update({"bootstrap_resamples": 0, "concurrency": 4, "steps": 2, "gate": "none", **(run or {})})
    default = {"base_url": base_url, "model": "fake-model", "structured_output": "json_schema", "max_retries": 0}
    config["models"] = {"default": {**default, **models}}
    path.write_text(yaml.safe_dump(config))
    return path


def write_test_rows(run_dir: Path, out: Path) -> None:
    """Write the run's test split (ids, text fields and human scores) as a CSV, as a user would bring new data."""
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        test_ids = json.loads(db.execute("SELECT value FROM meta WHERE key = 'manifest'").fetchone()[0])["splits"][
            "test"
        ]
    with (EXAMPLE / "reviews.csv").open(newline="") as handle:
        rows = {r["id"]: r for r in csv.DictReader(handle)}
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(next(iter(rows.values()))))
        writer.writeheader()
        writer.writerows(rows[i] for i in test_ids)
