"""Datasets of human-rated texts: finding the files, loading and validating them, and splitting them.

Three kinds (``DatasetConfig.name``):

- ``summeval``: ``summeval.jsonl``, 1,600 summaries of 100 articles, each label the mean of three experts' 1-5
  ratings. Splits are seeded and article-disjoint.
- ``summeval-wgc``: the exact train/test split of "When Gradients Collide" (integer labels). Validation is carved out
  of its 160 training rows.
- ``file``: a CSV, JSONL, JSON or Parquet file of one's own, validated row by row before use. Splits are seeded and
  disjoint by ``group_field``, as for ``summeval``.

Data files are looked for in ``data_dir``, ``$JUDGEOPT_DATA_DIR``, ``<checkout>/../shared/data`` and the user cache, in
that order. A file that is in none of them is downloaded into the cache once, if a URL is configured. Every data
problem is one ``DataError`` line that names the file and, where there is one, the row and the column.
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import io
import json
import math
import os
import random
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from judgeopt.core.errors import describe_validation_error
from judgeopt.orchestrator.errors import DataError

log = structlog.get_logger(__name__)

SUMMEVAL_FILE = "summeval.jsonl"
WGC_FILES = ("wgc-summeval-split/train.parquet", "wgc-summeval-split/test.parquet")
DOWNLOAD_TIMEOUT_S = 30.0
MAX_TEXT_CHARS = 1_000_000
"""Default longest text field: about 250,000 tokens, more than nearly any model's context, and well inside the agent
services' 16 MiB message limit. A longer text could never be judged, so it is refused when the data is loaded."""


def _not_a_boolean(value: object) -> object:
    """Refuse ``true``/``false`` where a number is expected (pydantic would read them as 1 and 0)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got the boolean {str(value).lower()}")
    return value


class CriterionSpec(BaseModel):
    """One rated quality: its scale, and how close a prediction must be to the human score to count as correct."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    description: str = ""
    min_score: float = Field(default=1.0, allow_inf_nan=False)
    max_score: float = Field(default=5.0, allow_inf_nan=False)
    integer_scores: bool = True
    tolerance: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)

    _no_booleans = field_validator("min_score", "max_score", "tolerance", mode="before")(_not_a_boolean)

    @model_validator(mode="after")
    def _check_range(self) -> Self:
        if self.max_score <= self.min_score:
            raise ValueError(f"max_score ({self.max_score:g}) must be greater than min_score ({self.min_score:g})")
        return self


# The labels are means of three experts (steps of 1/3), so a prediction half a point away still counts as correct.
SUMMEVAL_CRITERIA: tuple[CriterionSpec, ...] = tuple(
    CriterionSpec(name=name, description=description, integer_scores=False, tolerance=0.5)
    for name, description in (
        (
            "coherence",
            "The summary reads as an organized whole: each sentence follows from the one before, "
            "rather than a list of loosely related facts.",
        ),
        (
            "consistency",
            "Everything the summary states is backed by the article; it adds, distorts or contradicts no facts.",
        ),
        (
            "fluency",
            "Each sentence is grammatical and easy to read, free of fragments, repetitions and formatting debris.",
        ),
        (
            "relevance",
            "The summary keeps the article's main points and leaves out minor or repeated details.",
        ),
    )
)
_WGC_CRITERIA = tuple(c.model_copy(update={"integer_scores": True, "tolerance": 0.0}) for c in SUMMEVAL_CRITERIA)


@dataclass(frozen=True)
class Record:
    """One rated text: its text fields, most shared first (e.g. the article before its summary)."""

    id: str
    fields: tuple[tuple[str, str], ...]
    labels: dict[str, float] = field(hash=False)  # excluded from the hash so that records can go in sets
    group: str  # what must not straddle splits (SummEval: the article); the id when there is no such thing


@dataclass(frozen=True)
class Dataset:
    name: str
    records: tuple[Record, ...]
    criteria: tuple[CriterionSpec, ...]
    text_fields: tuple[str, ...]
    checksum: str  # sha256 (hex) of the bytes of the file(s) read, in order
    source: str  # the path(s) read, comma-separated


@dataclass(frozen=True)
class Splits:
    train: tuple[Record, ...]
    val: tuple[Record, ...]
    test: tuple[Record, ...]


class DatasetConfig(BaseModel):
    """The dataset section of a run config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["summeval", "summeval-wgc", "file"] = "summeval"
    path: Path | None = None
    text_fields: tuple[str, ...] = ()
    criteria: tuple[CriterionSpec, ...] = ()
    id_field: str | None = None
    group_field: str | None = None
    train_size: int = Field(default=160, ge=0)
    val_size: int = Field(default=100, ge=0)
    test_size: int = Field(default=480, ge=0)
    seed: int = 0
    val_overlaps_train: bool = False
    download_url: str | None = None
    max_text_chars: int = Field(default=MAX_TEXT_CHARS, ge=1)
    """Longest text field accepted, in characters; raise it for a model whose context holds longer texts."""

    _no_booleans = field_validator("train_size", "val_size", "test_size", "seed", "max_text_chars", mode="before")(
        _not_a_boolean
    )


# --- Finding data files ---------------------------------------------------------------------------------------------


def checkout_data_dir() -> Path:
    """``../shared/data`` beside the checkout, whose root holds the ``orchestrator`` package."""
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/judgeopt``, by default ``~/.cache/judgeopt``: where downloaded data files go."""
    cache_home = os.environ.get("XDG_CACHE_HOME")
    return (Path(cache_home) if cache_home else Path.home() / ".cache") / "judgeopt"


def _data_dirs(data_dir: Path | None) -> list[Path]:
    places = [] if data_dir is None else [data_dir]
    if env := os.environ.get("JUDGEOPT_DATA_DIR"):
        places.append(Path(env))
    places += [checkout_data_dir(), user_cache_dir()]
    return list(dict.fromkeys(places))


def locate_data_file(name: str, data_dir: Path | None = None, *, download_url: str | None = None) -> Path:
    """The first ``<dir>/<name>`` among the data dirs; failing that, the file downloaded into the user cache.

    ``name`` may hold a relative subpath (``wgc-summeval-split/train.parquet``). The URL is ``download_url``, else
    ``$JUDGEOPT_DATA_URL``; one that ends with ``/`` is a base to which ``name`` is appended.
    """
    relative = Path(name)
    if not relative.parts or relative.is_absolute() or ".." in relative.parts:
        raise DataError(f"a data file name must be a relative path inside the data dir, got {name!r}")
    places = _data_dirs(data_dir)
    for place in places:
        if (place / relative).is_file():
            return place / relative
    not_found = f"{name} not found in {', '.join(str(place) for place in places)}"
    base_url = download_url or os.environ.get("JUDGEOPT_DATA_URL")
    if not base_url:
        raise DataError(f"{not_found}; no download URL is set (download_url or $JUDGEOPT_DATA_URL)")
    url = base_url + urllib.parse.quote(relative.as_posix()) if base_url.endswith("/") else base_url
    target = user_cache_dir() / relative
    try:
        _download(url, target)
    except (OSError, http.client.HTTPException) as exc:
        raise DataError(f"{not_found}; download from {url} failed: {_download_failure(exc)}") from None
    log.info("data.downloaded", url=url, path=str(target))
    return target


def _download(url: str, target: Path) -> None:
    """Fetch into a temporary file beside ``target``, then rename it, so that a partial file is never found."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    partial = Path(name)
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            shutil.copyfileobj(response, out)
        partial.replace(target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _download_failure(exc: OSError | http.client.HTTPException) -> str:
    """Why a download failed, on one line; an HTTP error's connection is released."""
    if isinstance(exc, urllib.error.HTTPError):
        exc.close()
        reason = f"HTTP {exc.code} {exc.reason}"
    elif isinstance(exc, urllib.error.URLError):
        reason = str(exc.reason)
    else:
        reason = str(exc) or type(exc).__name__
    return " ".join(reason.split())


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror or exc})") from None


# --- Reading rows ---------------------------------------------------------------------------------------------------
# Each reader yields (1-based data row number, {column: value}). Row numbers in JSONL are line numbers; blank lines
# (and blank CSV rows) are skipped but counted.

_RawRows = Iterator[tuple[int, Mapping[str, Any]]]  # values as parsed: of any type


def _decode(origin: str, data: bytes) -> str:
    """UTF-8 text without a leading byte order mark (spreadsheets write one)."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{origin}: line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at byte offset {exc.start})"
        ) from None


def _csv_rows(origin: str, data: bytes) -> _RawRows:
    _decode(origin, data)  # validates the whole file first, so that an encoding error names its line
    # Decoded as it is read: an io.StringIO of the whole text would hold a 4-byte-per-character copy of it.
    reader = csv.reader(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline=""))
    row_number = 0
    try:
        header = next(reader, None)
        if header is None:
            raise DataError(f"{origin}: empty file, no header row")
        if duplicates := sorted({column for column in header if header.count(column) > 1}):
            raise DataError(f"{origin}: header: duplicate column(s) {', '.join(map(repr, duplicates))}")
        for row_number, cells in enumerate(reader, start=1):
            if not cells:
                continue
            if len(cells) != len(header):
                raise DataError(f"{origin}: row {row_number}: {len(cells)} fields, but the header has {len(header)}")
            yield row_number, dict(zip(header, cells, strict=True))
    except csv.Error as exc:
        raise DataError(f"{origin}: row {row_number + 1}: malformed CSV ({exc})") from None


def _lines(text: str) -> Iterator[tuple[str, bool]]:
    """Each line of ``text`` without its "\\n", one at a time, and whether it was the last one (unterminated).

    Split on "\\n" only: str.splitlines() would also split inside strings holding U+2028 and the like.
    """
    start = 0
    while (end := text.find("\n", start)) >= 0:
        yield text[start:end], False
        start = end + 1
    yield text[start:], True


def _json_error(exc: json.JSONDecodeError) -> str:
    """``Expecting ',' delimiter at column 9`` / ``Unterminated string starting at column 9``."""
    return f"{exc.msg} column {exc.colno}" if exc.msg.endswith(" at") else f"{exc.msg} at column {exc.colno}"


def _jsonl_rows(origin: str, data: bytes) -> _RawRows:
    for line_number, (line, last) in enumerate(_lines(_decode(origin, data)), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            cut = "; the file ends in the middle of this line (truncated?)" if last else ""
            raise DataError(f"{origin}: line {line_number}: not valid JSON ({_json_error(exc)}){cut}") from None
        yield line_number, _json_object(origin, f"line {line_number}", value)


def _json_rows(origin: str, data: bytes) -> _RawRows:
    try:
        items = json.loads(_decode(origin, data))
    except json.JSONDecodeError as exc:
        raise DataError(f"{origin}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(items, list):
        raise DataError(f"{origin}: expected a JSON list of objects, got {type(items).__name__}")
    for row_number, item in enumerate(items, start=1):
        yield row_number, _json_object(origin, f"row {row_number}", item)


def _json_object(origin: str, where: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise DataError(f"{origin}: {where}: expected a JSON object, got {type(value).__name__}")
    return value


def _parquet_rows(origin: str, data: bytes) -> _RawRows:
    import pyarrow as pa  # only Parquet files need it, and it is large: not on every `judgeopt` start
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{origin}: not a readable Parquet file ({' '.join(str(exc).split())})") from None
    rows: list[dict[str, Any]] = table.to_pylist()
    yield from enumerate(rows, start=1)


_READERS: dict[str, Callable[[str, bytes], _RawRows]] = {
    ".csv": _csv_rows,
    ".jsonl": _jsonl_rows,
    ".json": _json_rows,
    ".parquet": _parquet_rows,
}


# --- Rows to records ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    origin: str  # the file
    where: str  # "row 3": where in the file, for messages
    default_id: str  # the record id when the layout has no id column
    values: Mapping[str, object]

    def error(self, problem: str) -> DataError:
        return DataError(f"{self.origin}: {self.where}: {problem}")


@dataclass(frozen=True)
class _Layout:
    """Which column feeds each text field, label, id and group."""

    text_columns: tuple[tuple[str, str], ...]  # (field name, column)
    criteria: tuple[CriterionSpec, ...]  # each criterion's label is in the column of its name
    id_column: str | None = None
    group_column: str | None = None
    max_text_chars: int = MAX_TEXT_CHARS


def _value(row: _Row, column: str) -> object:
    if column not in row.values:
        raise row.error(f"missing column {column!r}; available: {', '.join(map(repr, row.values))}")
    return row.values[column]


def _is_blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _text(row: _Row, column: str, max_chars: int) -> str:
    value = _value(row, column)
    if _is_blank(value):
        raise row.error(f"column {column!r}: empty text")
    if not isinstance(value, str):
        raise row.error(f"column {column!r}: expected text, got {type(value).__name__} {_shown(value)}")
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


def _key(row: _Row, column: str, kind: str) -> str:
    value = _value(row, column)
    if _is_blank(value):
        raise row.error(f"column {column!r}: empty {kind}")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise row.error(f"column {column!r}: {kind} must be text or an integer, got {type(value).__name__}")
    return str(value)


def _label(row: _Row, criterion: CriterionSpec) -> float:
    column = criterion.name
    raw = _value(row, column)
    if _is_blank(raw):
        raise row.error(f"column {column!r}: missing label")
    try:
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            raise TypeError
        value = float(raw)
    except (TypeError, ValueError, OverflowError):
        raise row.error(f"column {column!r}: label {raw!r} is not a number") from None
    if math.isnan(value):
        raise row.error(f"column {column!r}: label is NaN")
    if not criterion.min_score <= value <= criterion.max_score:
        raise row.error(
            f"column {column!r}: label {raw!r} is outside the range {criterion.min_score:g}-{criterion.max_score:g}"
        )
    if criterion.integer_scores and not value.is_integer():
        raise row.error(f"column {column!r}: label {raw!r} is not an integer, but the criterion has integer scores")
    return value


def _record(row: _Row, layout: _Layout) -> Record:
    fields = tuple((name, _text(row, column, layout.max_text_chars)) for name, column in layout.text_columns)
    labels = {criterion.name: _label(row, criterion) for criterion in layout.criteria}
    record_id = row.default_id if layout.id_column is None else _key(row, layout.id_column, "id")
    group = record_id if layout.group_column is None else _key(row, layout.group_column, "group")
    return Record(id=record_id, fields=fields, labels=labels, group=group)


def _build_records(rows: Iterable[_Row], layout: _Layout, origin: str) -> tuple[Record, ...]:
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


def _dataset(name: str, layout: _Layout, records: tuple[Record, ...], files: Sequence[tuple[Path, bytes]]) -> Dataset:
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


# --- Loading --------------------------------------------------------------------------------------------------------


def load_dataset(config: DatasetConfig, data_dir: Path | None = None) -> Dataset:
    """The configured dataset, fully validated; every problem is one ``DataError`` line."""
    _check_config(config)
    match config.name:
        case "summeval":
            return _load_summeval(config, data_dir)
        case "summeval-wgc":
            return _load_wgc(config, data_dir)
        case "file":
            return _load_file(config)


def _check_config(config: DatasetConfig) -> None:
    """Reject settings that do not apply to the dataset, rather than silently ignore them."""
    names = [criterion.name for criterion in config.criteria]
    if duplicates := sorted({name for name in names if names.count(name) > 1}):
        raise DataError(f"dataset {config.name}: criteria listed twice: {', '.join(duplicates)}")
    file_only = {
        "path": config.path,
        "text_fields": config.text_fields,
        "id_field": config.id_field,
        "group_field": config.group_field,
    }
    if config.name == "file":
        if config.download_url:
            raise DataError("dataset 'file': download_url only applies to the summeval datasets")
        return
    if misplaced := [setting for setting, value in file_only.items() if value]:
        raise DataError(f"dataset {config.name}: {', '.join(misplaced)} only apply to dataset 'file'")
    if config.name == "summeval-wgc" and config.download_url and not config.download_url.endswith("/"):
        raise DataError(
            f"dataset summeval-wgc: download_url must be a base URL ending with '/' (it has two files), "
            f"got {config.download_url}"
        )


def _select_criteria(config: DatasetConfig, defaults: tuple[CriterionSpec, ...]) -> tuple[CriterionSpec, ...]:
    """``config.criteria`` picks and orders the defaults by name; the fields an entry sets replace the default's."""
    if not config.criteria:
        return defaults
    by_name = {criterion.name: criterion for criterion in defaults}
    selected = []
    for override in config.criteria:
        if override.name not in by_name:
            raise DataError(f"dataset {config.name}: unknown criterion {override.name!r}; valid: {', '.join(by_name)}")
        merged = by_name[override.name].model_dump() | override.model_dump(include=override.model_fields_set)
        try:
            selected.append(CriterionSpec.model_validate(merged))
        except ValidationError as exc:
            raise DataError(
                f"dataset {config.name}: criterion {override.name!r}: {describe_validation_error(exc)}"
            ) from None
    return tuple(selected)


def _summeval_rows(origin: str, data: bytes) -> Iterator[_Row]:
    """One row per summary, flattened out of the one-line-per-article file."""
    for line_number, doc in _jsonl_rows(origin, data):
        try:
            doc_id, source, summaries = doc["doc_id"], doc["source"], doc["summaries"]
            for summary in summaries:
                system_id = summary["system_id"]
                values = {"doc_id": doc_id, "source": source, "summary": summary["summary"], **summary["scores"]}
                yield _Row(origin, f"line {line_number}, summary {system_id}", f"{doc_id}/{system_id}", values)
        except (KeyError, TypeError) as exc:
            raise DataError(f"{origin}: line {line_number}: not a SummEval record ({exc!r})") from None


def _load_summeval(config: DatasetConfig, data_dir: Path | None) -> Dataset:
    path = locate_data_file(SUMMEVAL_FILE, data_dir, download_url=config.download_url)
    data = _read_bytes(path)
    layout = _Layout(
        text_columns=(("article", "source"), ("summary", "summary")),
        criteria=_select_criteria(config, SUMMEVAL_CRITERIA),
        group_column="doc_id",
        max_text_chars=config.max_text_chars,
    )
    records = _build_records(_summeval_rows(str(path), data), layout, str(path))
    return _dataset("summeval", layout, records, [(path, data)])


def _load_wgc(config: DatasetConfig, data_dir: Path | None) -> Dataset:
    """The study's two files; record ids are ``train-<i>``/``test-<i>`` with the 0-based position (its index)."""
    files = [
        (path, _read_bytes(path))
        for path in (locate_data_file(name, data_dir, download_url=config.download_url) for name in WGC_FILES)
    ]
    layout = _Layout(
        text_columns=(("article", "text"), ("summary", "machine_summary")),
        criteria=_select_criteria(config, _WGC_CRITERIA),
        max_text_chars=config.max_text_chars,
    )
    rows = (
        _Row(str(path), f"row {row_number}", f"{path.stem}-{row_number - 1}", values)
        for path, data in files
        for row_number, values in _parquet_rows(str(path), data)
    )
    records = _build_records(rows, layout, ", ".join(str(path) for path, _ in files))
    return _dataset("summeval-wgc", layout, records, files)


def _load_file(config: DatasetConfig) -> Dataset:
    """A file of one's own; default record ids are ``row-<n>`` with the 1-based row number of error messages."""
    path = config.path
    if path is None or not config.text_fields or not config.criteria:
        missing = [setting for setting in ("path", "text_fields", "criteria") if not getattr(config, setting)]
        raise DataError(f"dataset 'file' needs {', '.join(missing)}")
    return _read_file(
        path, config.text_fields, config.criteria, config.id_field, config.group_field, config.max_text_chars
    )


def _read_file(
    path: Path,
    text_fields: tuple[str, ...],
    criteria: tuple[CriterionSpec, ...],
    id_field: str | None,
    group_field: str | None = None,
    max_text_chars: int = MAX_TEXT_CHARS,
) -> Dataset:
    if len(set(text_fields)) != len(text_fields):
        raise DataError(f"dataset 'file': text_fields lists a column twice: {', '.join(text_fields)}")
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(_READERS)}")
    data = _read_bytes(path)
    layout = _Layout(
        text_columns=tuple((column, column) for column in text_fields),
        criteria=criteria,
        id_column=id_field,
        group_column=group_field,
        max_text_chars=max_text_chars,
    )
    origin = str(path)
    rows = (_Row(origin, f"row {n}", f"row-{n}", values) for n, values in reader(origin, data))
    return _dataset(path.name, layout, _build_records(rows, layout, origin), [(path, data)])


def load_data_to_score(
    path: Path, text_fields: tuple[str, ...], criteria: tuple[CriterionSpec, ...], id_field: str | None = None
) -> tuple[Dataset, bool]:
    """Rows to judge with an exported judge. Human scores are used (and validated) only when the file has a column
    for every criterion; the flag says whether it had."""
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(_READERS)}")
    first = next(iter(reader(str(path), _read_bytes(path))), None)
    labelled = first is not None and all(c.name in first[1] for c in criteria)
    return _read_file(path, text_fields, criteria if labelled else (), id_field), labelled


# --- Splitting ------------------------------------------------------------------------------------------------------


def split_dataset(dataset: Dataset, config: DatasetConfig) -> Splits:
    """Seeded train/val/test splits: the study's fixed split for ``summeval-wgc``, group-disjoint otherwise."""
    rng = random.Random(config.seed)
    splits = (
        _split_wgc(dataset, config, rng) if dataset.name == "summeval-wgc" else _split_by_group(dataset, config, rng)
    )
    log.info(
        "data.split",
        dataset=dataset.name,
        seed=config.seed,
        train=len(splits.train),
        val=len(splits.val),
        test=len(splits.test),
        val_overlaps_train=config.val_overlaps_train,
    )
    return splits


def _draw(records: Sequence[Record], count: int, rng: random.Random) -> tuple[tuple[Record, ...], tuple[Record, ...]]:
    """``count`` records chosen with ``rng``, and the rest; both keep the order of ``records``."""
    chosen = set(rng.sample(range(len(records)), count))
    return (
        tuple(record for i, record in enumerate(records) if i in chosen),
        tuple(record for i, record in enumerate(records) if i not in chosen),
    )


def _split_by_group(dataset: Dataset, config: DatasetConfig, rng: random.Random) -> Splits:
    """Fill test, then val, then train with whole groups taken in seeded order.

    The group that would overflow a split is trimmed to a seeded sample of the rows that fit, so every split has
    exactly its size; the trimmed group's other rows go unused, so that no group straddles two splits. Test is filled
    first so that it stays the same when only the train or val size changes.
    """
    groups: dict[str, list[Record]] = {}
    for record in dataset.records:
        groups.setdefault(record.group, []).append(record)
    order = list(groups)
    rng.shuffle(order)
    remaining = iter(order)
    val_size = 0 if config.val_overlaps_train else config.val_size
    filled: list[tuple[Record, ...]] = []
    for size in (config.test_size, val_size, config.train_size):
        taken: list[Record] = []
        while len(taken) < size:
            group = next(remaining, None)
            if group is None:
                raise DataError(
                    f"{dataset.name}: test {config.test_size} + val {val_size} + train {config.train_size} records "
                    f"requested, but there are {len(dataset.records)} in {len(groups)} groups (a group never "
                    f"straddles two splits, and the rest of a trimmed group is not used)"
                )
            rows = groups[group]
            room = size - len(taken)
            taken += rows if len(rows) <= room else _draw(rows, room, rng)[0]
        filled.append(tuple(taken))
    test, val, train = filled
    if config.val_overlaps_train:
        if config.val_size > len(train):
            raise DataError(
                f"{dataset.name}: val_size {config.val_size} is larger than train_size {len(train)}, "
                "but with val_overlaps_train the validation rows are drawn from the training rows"
            )
        val = _draw(train, config.val_size, rng)[0]
    return Splits(train=train, val=val, test=test)


def _split_wgc(dataset: Dataset, config: DatasetConfig, rng: random.Random) -> Splits:
    """The study's train and test files as they are, with ``val_size`` rows drawn from train.

    The drawn rows leave train (160 - 100 = 60 rows with the defaults, all the study's data allows) unless
    ``val_overlaps_train``, the study's own setting, keeps all 160 in train. ``train_size`` and ``test_size`` are only
    checked against what is available: the test file is always used whole.
    """
    train = tuple(record for record in dataset.records if record.id.startswith("train-"))
    test = tuple(record for record in dataset.records if record.id.startswith("test-"))
    for setting, size, available in (
        ("train_size", config.train_size, len(train)),
        ("val_size", config.val_size, len(train)),
        ("test_size", config.test_size, len(test)),
    ):
        if size > available:
            raise DataError(
                f"summeval-wgc: {setting} {size} is larger than the {available} rows available "
                f"(train {len(train)}, test {len(test)}, total {len(dataset.records)})"
            )
    val, rest = _draw(train, config.val_size, rng)
    return Splits(train=train if config.val_overlaps_train else rest, val=val, test=test)
