"""Loading a dataset by kind (``DatasetConfig.name``):

- ``summeval``: ``summeval.jsonl``, 1,600 summaries of 100 articles, each label the mean of three experts' 1-5
  ratings. Splits are seeded and article-disjoint.
- ``summeval-wgc``: the exact train/test split of "When Gradients Collide" (integer labels). Validation is carved out
  of its 160 training rows.
- ``file``: a CSV, JSONL, JSON or Parquet file of one's own, validated row by row before use. Splits are seeded and
  disjoint by ``group_field``, as for ``summeval``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from judgeopt.core.errors import describe_validation_error
from judgeopt.core.wire import MAX_CRITERIA
from judgeopt.orchestrator.data.locating import locate_data_file, read_bytes
from judgeopt.orchestrator.data.readers import READERS, jsonl_rows, parquet_rows
from judgeopt.orchestrator.data.records import (
    MAX_TEXT_CHARS,
    SUMMEVAL_CRITERIA,
    WGC_CRITERIA,
    CriterionSpec,
    Dataset,
    DatasetConfig,
)
from judgeopt.orchestrator.data.validation import Layout, Row, build_records, dataset_of
from judgeopt.orchestrator.errors import DataError

WGC_FILES = ("wgc-summeval-split/train.parquet", "wgc-summeval-split/test.parquet")

SUMMEVAL_FILE = "summeval.jsonl"


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
    if len(names) > MAX_CRITERIA:
        raise DataError(
            f"dataset {config.name}: {len(names)} criteria, but one judge request holds at most {MAX_CRITERIA}"
        )
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


def _summeval_rows(origin: str, data: bytes) -> Iterator[Row]:
    """One row per summary, flattened out of the one-line-per-article file."""
    for line_number, doc in jsonl_rows(origin, data):
        try:
            doc_id, source, summaries = doc["doc_id"], doc["source"], doc["summaries"]
            for summary in summaries:
                system_id = summary["system_id"]
                values = {"doc_id": doc_id, "source": source, "summary": summary["summary"], **summary["scores"]}
                yield Row(origin, f"line {line_number}, summary {system_id}", f"{doc_id}/{system_id}", values)
        except (KeyError, TypeError) as exc:
            raise DataError(f"{origin}: line {line_number}: not a SummEval record ({exc!r})") from None


def _load_summeval(config: DatasetConfig, data_dir: Path | None) -> Dataset:
    path = locate_data_file(SUMMEVAL_FILE, data_dir, download_url=config.download_url)
    data = read_bytes(path)
    layout = Layout(
        text_columns=(("article", "source"), ("summary", "summary")),
        criteria=_select_criteria(config, SUMMEVAL_CRITERIA),
        group_column="doc_id",
        max_text_chars=config.max_text_chars,
    )
    records = build_records(_summeval_rows(str(path), data), layout, str(path))
    return dataset_of("summeval", layout, records, [(path, data)])


def _load_wgc(config: DatasetConfig, data_dir: Path | None) -> Dataset:
    """The study's two files; record ids are ``train-<i>``/``test-<i>`` with the 0-based position (its index)."""
    files = [
        (path, read_bytes(path))
        for path in (locate_data_file(name, data_dir, download_url=config.download_url) for name in WGC_FILES)
    ]
    layout = Layout(
        text_columns=(("article", "text"), ("summary", "machine_summary")),
        criteria=_select_criteria(config, WGC_CRITERIA),
        max_text_chars=config.max_text_chars,
    )
    rows = (
        Row(str(path), f"row {row_number}", f"{path.stem}-{row_number - 1}", values)
        for path, data in files
        for row_number, values in parquet_rows(str(path), data)
    )
    records = build_records(rows, layout, ", ".join(str(path) for path, _ in files))
    return dataset_of("summeval-wgc", layout, records, files)


def _load_file(config: DatasetConfig) -> Dataset:
    """A file of one's own; default record ids are ``row-<n>`` with the 1-based row number of error messages."""
    path = config.path
    if path is None or not config.text_fields or not config.criteria:
        missing = [setting for setting in ("path", "text_fields", "criteria") if not getattr(config, setting)]
        flag = " (--data-file, or" if "path" in missing else " (in"
        raise DataError(
            f"dataset 'file' needs {', '.join(missing)}{flag} the config file's run.dataset section; "
            f"`judgeopt init {config.path or 'DATA_FILE'}` writes one from the file's columns)"
        )
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
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(READERS)}")
    data = read_bytes(path)
    layout = Layout(
        text_columns=tuple((column, column) for column in text_fields),
        criteria=criteria,
        id_column=id_field,
        group_column=group_field,
        max_text_chars=max_text_chars,
    )
    origin = str(path)
    rows = (Row(origin, f"row {n}", f"row-{n}", values) for n, values in reader(origin, data))
    return dataset_of(path.name, layout, build_records(rows, layout, origin), [(path, data)])


def load_data_to_score(
    path: Path, text_fields: tuple[str, ...], criteria: tuple[CriterionSpec, ...], id_field: str | None = None
) -> tuple[Dataset, bool]:
    """Rows to judge with an exported judge. Human scores are used (and validated) only when the file has a column
    for every criterion; the flag says whether it had."""
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(READERS)}")
    first = next(iter(reader(str(path), read_bytes(path))), None)
    labelled = first is not None and all(c.name in first[1] for c in criteria)
    return _read_file(path, text_fields, criteria if labelled else (), id_field), labelled
