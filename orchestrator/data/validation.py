"""Rows to records: every text field and label checked against the dataset's layout, each problem one ``DataError``
line naming the file, the row and the column."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from judgeopt.orchestrator.data.records import MAX_TEXT_CHARS, CriterionSpec, Dataset, Record
from judgeopt.orchestrator.errors import DataError

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Row:
    origin: str  # the file
    where: str  # "row 3": where in the file, for messages
    default_id: str  # the record id when the layout has no id column
    values: Mapping[str, object]

    def error(self, problem: str) -> DataError:
        return DataError(f"{self.origin}: {self.where}: {problem}")


@dataclass(frozen=True)
class Layout:
    """Which column feeds each text field, label, id and group."""

    text_columns: tuple[tuple[str, str], ...]  # (field name, column)
    criteria: tuple[CriterionSpec, ...]  # each criterion's label is in the column of its name
    id_column: str | None = None
    group_column: str | None = None
    max_text_chars: int = MAX_TEXT_CHARS


def _nested(values: Mapping[str, object]) -> dict[str, object]:
    """The keys of objects nested one level down, by dotted path (``scores.fluency``)."""
    return {
        f"{column}.{key}": item
        for column, value in values.items()
        if isinstance(value, Mapping)
        for key, item in value.items()
    }


def _value(row: Row, column: str) -> object:
    """A column's value; in JSON, a dotted path (``scores.fluency``) reads into a nested object, and a name found in
    no column is looked for in the nested objects, when exactly one holds it (``{"scores": {"fluency": 4}}``)."""
    if column in row.values:
        return row.values[column]
    nested = _nested(row.values)
    if column in nested:
        return nested[column]
    holders = [path for path in nested if path.rsplit(".", 1)[1] == column]
    if len(holders) == 1:
        return nested[holders[0]]
    available = [*row.values, *nested]
    raise row.error(f"missing column {column!r}; available: {', '.join(map(repr, available))}")


def _is_blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _check_unicode(row: Row, column: str, value: str) -> str:
    """``value``, unless it holds a lone surrogate (JSON's ``\\ud800``, half of a UTF-16 pair): no UTF-8 text, so
    no request could carry it."""
    found = _SURROGATE.search(value)
    if found is not None:
        raise row.error(
            f"column {column!r}: a lone surrogate (\\u{ord(found.group()):04x} at character {found.start() + 1:,}) "
            "is not Unicode text; JSON escapes a character outside the BMP as a pair (\\ud83d\\ude00)"
        )
    return value


def _text(row: Row, column: str, max_chars: int) -> str:
    value = _value(row, column)
    if _is_blank(value):
        raise row.error(f"column {column!r}: empty text")
    if not isinstance(value, str):
        raise row.error(f"column {column!r}: expected text, got {type(value).__name__} {_shown(value)}")
    _check_unicode(row, column, value)
    if len(value) > max_chars:
        raise row.error(
            f"column {column!r}: text of {len(value):,} characters is longer than max_text_chars ({max_chars:,}): "
            "no judge prompt could hold it (raise max_text_chars in the dataset config for a larger model context)"
        )
    return value


def _shown(value: object) -> str:
    """A value for an error message: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _key(row: Row, column: str, kind: str) -> str:
    value = _value(row, column)
    if _is_blank(value):
        raise row.error(f"column {column!r}: empty {kind}")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise row.error(f"column {column!r}: {kind} must be text or an integer, got {type(value).__name__}")
    return _check_unicode(row, column, str(value))


def _label(row: Row, criterion: CriterionSpec) -> float:
    column = criterion.name
    raw = _value(row, column)
    if _is_blank(raw):
        raise row.error(f"column {column!r}: missing label")
    try:
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            raise TypeError
        value = float(raw)
    except (TypeError, ValueError, OverflowError):
        raise row.error(f"column {column!r}: label {_shown(raw)} is not a number") from None
    if math.isnan(value):
        raise row.error(f"column {column!r}: label is NaN")
    if not criterion.min_score <= value <= criterion.max_score:
        raise row.error(
            f"column {column!r}: label {_shown(raw)} is outside the range "
            f"{criterion.min_score:g}-{criterion.max_score:g} of criterion {criterion.name!r} (set its min_score and "
            "max_score; they are 1 and 5 unless set)"
        )
    if criterion.integer_scores and not value.is_integer():
        raise row.error(
            f"column {column!r}: label {_shown(raw)} is not a whole number, but criterion {criterion.name!r} has "
            "integer_scores (the default; set integer_scores: false for averaged or continuous labels)"
        )
    return value


def _record(row: Row, layout: Layout) -> Record:
    fields = tuple((name, _text(row, column, layout.max_text_chars)) for name, column in layout.text_columns)
    labels = {criterion.name: _label(row, criterion) for criterion in layout.criteria}
    record_id = row.default_id if layout.id_column is None else _key(row, layout.id_column, "id")
    group = record_id if layout.group_column is None else _key(row, layout.group_column, "group")
    return Record(id=record_id, fields=fields, labels=labels, group=group)


def build_records(rows: Iterable[Row], layout: Layout, origin: str) -> tuple[Record, ...]:
    """Every row validated and converted, or a ``DataError`` for the first bad one."""
    records: list[Record] = []
    first_seen: dict[str, str] = {}
    for row in rows:
        record = _record(row, layout)
        if record.id in first_seen:
            column = f"column {layout.id_column!r}: " if layout.id_column else ""
            raise row.error(f"{column}duplicate id {record.id!r} (also at {first_seen[record.id]})")
        first_seen[record.id] = row.where
        records.append(record)
    if not records:
        raise DataError(f"{origin}: no data rows")
    return tuple(records)


def dataset_of(name: str, layout: Layout, records: tuple[Record, ...], files: Sequence[tuple[Path, bytes]]) -> Dataset:
    digest = hashlib.sha256()
    for _, data in files:
        digest.update(data)
    dataset = Dataset(
        name=name,
        records=records,
        criteria=layout.criteria,
        text_fields=tuple(field_name for field_name, _ in layout.text_columns),
        checksum=digest.hexdigest(),
        source=", ".join(str(path) for path, _ in files),
    )
    log.info("data.loaded", dataset=name, records=len(records), source=dataset.source, checksum=dataset.checksum)
    return dataset
