"""A dataset's layout inferred from a file's columns, for ``judgeopt init``: numeric columns are criteria (their scale
from the values seen), text columns are what the judge reads, a column of unique short keys is the id, and a text
column whose values repeat (several rows about one source) is the group that keeps them in one split."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from judgeopt.orchestrator.data.locating import read_bytes
from judgeopt.orchestrator.data.readers import READERS
from judgeopt.orchestrator.errors import DataError

_COMMON_SCALES = ((0.0, 1.0), (1.0, 3.0), (1.0, 5.0), (0.0, 5.0), (1.0, 7.0), (1.0, 10.0), (0.0, 10.0), (0.0, 100.0))
_ID_NAMES = ("id", "uid", "key", "item_id", "example_id")
_LONGEST_KEY = 64


@dataclass(frozen=True)
class InferredCriterion:
    name: str
    min_score: float
    max_score: float
    integer_scores: bool
    seen: tuple[float, float]  # the lowest and highest label in the file


@dataclass(frozen=True)
class InferredLayout:
    rows: int
    text_fields: tuple[str, ...]
    criteria: tuple[InferredCriterion, ...]
    id_field: str | None
    group_field: str | None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _scale(low: float, high: float) -> tuple[float, float]:
    """The smallest common scale holding every label seen, else the range seen."""
    return next(((a, b) for a, b in _COMMON_SCALES if a <= low and high <= b), (low, high))


def _criterion(name: str, numbers: Sequence[float]) -> InferredCriterion:
    low, high = min(numbers), max(numbers)
    integer = all(number.is_integer() for number in numbers)
    min_score, max_score = _scale(low, high)
    return InferredCriterion(name, min_score, max_score, integer, (low, high))


def infer_layout(path: Path) -> InferredLayout:
    """Every row of ``path`` read (CSV, JSONL, JSON or Parquet); one ``DataError`` line when nothing can be
    inferred."""
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(READERS)}")
    rows = [_flattened(values) for _, values in reader(str(path), read_bytes(path))]
    if not rows:
        raise DataError(f"{path}: no data rows")
    columns = list(dict.fromkeys(column for row in rows for column in row))
    values: Mapping[str, list[Any]] = {column: [row.get(column) for row in rows] for column in columns}
    criteria: list[InferredCriterion] = []
    texts: list[str] = []
    keys: list[str] = []
    for column in columns:
        present = [value for value in values[column] if value not in (None, "")]
        numbers = [number for value in present if (number := _number(value)) is not None]
        if present and len(numbers) == len(present) and column.lower() not in _ID_NAMES:
            criteria.append(_criterion(column.rsplit(".", 1)[-1], numbers))  # a nested label is found by its name
        elif present and all(isinstance(value, str | int) and not isinstance(value, bool) for value in present):
            (keys if _is_key(column, present, len(rows)) else texts).append(column)
    if not criteria:
        raise DataError(f"{path}: no column of numbers to use as labels; columns: {', '.join(columns)}")
    if not texts:
        raise DataError(f"{path}: no text column for the judge to read; columns: {', '.join(columns)}")
    group = next((c for c in texts if len(set(map(str, values[c]))) < len(rows) and len(texts) > 1), None)
    ordered = [group, *(c for c in texts if c != group)] if group else texts  # the shared text first
    return InferredLayout(len(rows), tuple(ordered), tuple(criteria), keys[0] if keys else None, group)


def _flattened(row: Mapping[str, Any]) -> dict[str, Any]:
    """Objects nested one level down as dotted columns (``scores.fluency``), as the loader reads them."""
    flat: dict[str, Any] = {}
    for column, value in row.items():
        if isinstance(value, Mapping):
            flat.update({f"{column}.{key}": item for key, item in value.items()})
        else:
            flat[column] = value
    return flat


def _is_key(column: str, present: Sequence[Any], rows: int) -> bool:
    """Unique, short, one per row: an id rather than a text to judge."""
    unique = len(set(map(str, present))) == rows == len(present)
    short = all(len(str(value)) <= _LONGEST_KEY and " " not in str(value) for value in present)
    return unique and (column.lower() in _ID_NAMES or short)
