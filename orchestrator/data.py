"""Locating and reading the SummEval data. (Issue 3 grows this into the general dataset loader.)"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import DataError

SUMMEVAL_FILE = "summeval.jsonl"
SUMMEVAL_CRITERIA = ("coherence", "consistency", "fluency", "relevance")


@dataclass(frozen=True)
class SummevalRow:
    id: str
    source: str
    summary: str
    scores: dict[str, float]


def data_dir_candidates(explicit: Path | None) -> list[Path]:
    """Where data is looked for, in order: ``--data-dir``, ``$JUDGEOPT_DATA_DIR``, ``../shared/data``."""
    places = []
    if explicit is not None:
        places.append(explicit)
    if env := os.environ.get("JUDGEOPT_DATA_DIR"):
        places.append(Path(env))
    checkout = Path(__file__).resolve().parent.parent
    places.append(checkout.parent / "shared" / "data")
    return places


def find_data_file(name: str, explicit: Path | None = None) -> Path:
    places = data_dir_candidates(explicit)
    for place in places:
        if (place / name).is_file():
            return place / name
    raise DataError(f"{name} not found; looked in: {', '.join(str(p) for p in places)}")


def load_summeval(path: Path, *, limit: int | None = None) -> list[SummevalRow]:
    """Rows of the SummEval JSONL (one article per line, 16 summaries each), in file order."""
    rows: list[SummevalRow] = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            try:
                doc = json.loads(line)
                for summary in doc["summaries"]:
                    rows.append(
                        SummevalRow(
                            id=f"{doc['doc_id']}/{summary['system_id']}",
                            source=doc["source"],
                            summary=summary["summary"],
                            scores={c: float(summary["scores"][c]) for c in SUMMEVAL_CRITERIA},
                        )
                    )
            except (ValueError, KeyError, TypeError) as exc:
                raise DataError(f"{path}: line {line_number}: not a SummEval record ({exc})") from None
            if limit is not None and len(rows) >= limit:
                return rows[:limit]
    return rows
