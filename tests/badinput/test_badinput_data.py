"""Malformed and huge datasets: each is refused with one ``DataError`` line naming the file and where, or loads.

Fixture files are generated in ``tmp_path`` at test time; nothing large is committed.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from judgeopt.cli import main
from judgeopt.orchestrator.data.loading import load_dataset
from judgeopt.orchestrator.data.records import MAX_TEXT_CHARS, DatasetConfig
from judgeopt.orchestrator.errors import DataError

REPO_ROOT = Path(__file__).resolve().parents[2]
CRITERIA = [{"name": "fluency"}, {"name": "coherence"}]
TEN_MB = 10 * 1024 * 1024


def file_config(path: Path, **settings: Any) -> DatasetConfig:
    return DatasetConfig.model_validate(
        {"name": "file", "path": path, "text_fields": ["text"], "criteria": CRITERIA, **settings}
    )


def refusal(path: Path, **settings: Any) -> str:
    """The one-line message of the DataError that loading ``path`` raises."""
    with pytest.raises(DataError) as caught:
        load_dataset(file_config(path, **settings))
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


def jsonl(*rows: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


GOOD_ROW = {"text": "A fine text.", "fluency": 4, "coherence": 3}


class TestMalformedFiles:
    @pytest.mark.parametrize(
        ("name", "content", "line"),
        [
            ("latin1.csv", "text,fluency,coherence\nok,3,3\ncafé,4,2\n".encode("latin-1"), 3),
            ("latin1.jsonl", jsonl(GOOD_ROW) + '{"text": "café", "fluency": 4, "coherence": 2}\n'.encode("latin-1"), 2),
            ("utf16.csv", "text,fluency,coherence\nok,3,3\n".encode("utf-16"), 1),
            ("stray-byte.jsonl", jsonl(GOOD_ROW, GOOD_ROW) + b'{"text": "\xff", "fluency": 1, "coherence": 1}\n', 3),
        ],
        ids=["latin1-csv", "latin1-jsonl", "utf16-csv", "stray-byte-jsonl"],
    )
    def test_non_utf8_bytes_name_the_file_and_line(self, tmp_path: Path, name: str, content: bytes, line: int) -> None:
        """Bytes that are not UTF-8: one line naming the file, the line and the byte."""
        path = tmp_path / name
        path.write_bytes(content)
        message = refusal(path)
        assert f"line {line}:" in message and "UTF-8" in message and "byte 0x" in message

    @pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json", ".parquet"])
    def test_empty_file(self, tmp_path: Path, suffix: str) -> None:
        """A zero-byte file of every supported kind is refused, not taken as an empty dataset."""
        path = tmp_path / f"empty{suffix}"
        path.write_bytes(b"")
        refusal(path)

    @pytest.mark.parametrize(
        ("name", "content"),
        [
            ("header.csv", b"text,fluency,coherence\n"),
            ("header-no-newline.csv", b"text,fluency,coherence"),
            ("blank-lines.jsonl", b"\n\n  \n"),
            ("empty-list.json", b"[]"),
        ],
    )
    def test_header_only_or_no_rows(self, tmp_path: Path, name: str, content: bytes) -> None:
        """A file with a header (or only blank lines) and no data rows says so."""
        path = tmp_path / name
        path.write_bytes(content)
        assert "no data rows" in refusal(path)

    def test_jsonl_with_a_truncated_last_line(self, tmp_path: Path) -> None:
        """A JSONL file cut off in the middle of its last record is refused at that line (its rows are not
        silently dropped)."""
        path = tmp_path / "cut.jsonl"
        path.write_bytes(jsonl(GOOD_ROW, GOOD_ROW) + b'{"text": "The third row was cut off in the mid')
        message = refusal(path)
        assert "line 3:" in message and "JSON" in message

    def test_csv_with_a_truncated_last_row(self, tmp_path: Path) -> None:
        """A CSV file cut off inside its last row (fewer fields than the header) is refused at that row."""
        path = tmp_path / "cut.csv"
        path.write_bytes(b"text,fluency,coherence\nfine,4,3\nalso fine,3")
        assert "row 2:" in refusal(path)

    @pytest.mark.parametrize(
        "content",
        [b"text,fluency,coherence\nok,3,3\n", b"PAR1 but not really\n", b"\x00" * 64],
        ids=["csv-text", "magic-then-text", "zeros"],
    )
    def test_parquet_file_that_is_not_parquet(self, tmp_path: Path, content: bytes) -> None:
        """A .parquet file holding text (or zeros) is refused as not Parquet, naming the file."""
        path = tmp_path / "data.parquet"
        path.write_bytes(content)
        assert "Parquet" in refusal(path)


LONG_INTEGER = "9" * 5_000
"""More digits than Python converts to an int (4,300 by default)."""
DEEP = "[" * 100_000 + "]" * 100_000
"""Nested deeper than Python's JSON reader recurses."""


class TestUnreadableValues:
    """Values that pass as JSON or CSV but that a run could not use: each refused when the data is loaded, before
    any model call, on one line naming the file, the row and the column."""

    def test_lone_surrogate_in_jsonl_text(self, tmp_path: Path) -> None:
        """``\\ud800`` (half of a UTF-16 pair) decodes as JSON but is no Unicode text: no request could carry it."""
        path = tmp_path / "surrogate.jsonl"
        path.write_bytes(jsonl(GOOD_ROW, {**GOOD_ROW, "text": "Half a pair: \ud800 here."}))
        message = refusal(path)
        assert "row 2:" in message and "column 'text'" in message and "surrogate" in message
        assert "\\ud800" in message and "character 14" in message

    def test_lone_surrogate_in_an_id(self, tmp_path: Path) -> None:
        path = tmp_path / "surrogate-id.json"
        path.write_text(json.dumps([{**GOOD_ROW, "id": "a"}, {**GOOD_ROW, "id": "b\udfff"}]))
        message = refusal(path, id_field="id")
        assert "row 2:" in message and "column 'id'" in message and "surrogate" in message

    @pytest.mark.parametrize(("suffix", "where"), [(".jsonl", "line 2:"), (".json", "row 2:")])
    def test_integer_of_more_than_4300_digits(self, tmp_path: Path, suffix: str, where: str) -> None:
        """A 5,000-digit label is valid JSON that Python refuses to convert: named, not a traceback."""
        good = json.dumps(GOOD_ROW)
        bad = f'{{"text": "A fine text.", "fluency": {LONG_INTEGER}, "coherence": 3}}'
        path = tmp_path / f"long-integer{suffix}"
        path.write_text(f"{good}\n{bad}\n" if suffix == ".jsonl" else f"[{good}, {bad}]")
        message = refusal(path)
        assert where in message and "column 'fluency'" in message and "4,300 digits" in message
        assert len(message) < 300

    @pytest.mark.parametrize(("suffix", "where"), [(".jsonl", "line 1:"), (".json", "row 1:")])
    def test_deeply_nested_json(self, tmp_path: Path, suffix: str, where: str) -> None:
        """A column nested 100,000 levels deep: named, not a RecursionError."""
        row = f'{{"text": "A fine text.", "notes": {DEEP}, "fluency": 4, "coherence": 3}}'
        path = tmp_path / f"deep{suffix}"
        path.write_text(f"{row}\n" if suffix == ".jsonl" else f"[{row}]")
        message = refusal(path)
        assert where in message and "column 'notes'" in message and "nested too deeply" in message
        assert len(message) < 300

    def test_csv_field_over_131072_characters_loads(self, tmp_path: Path) -> None:
        """A 200,000-character CSV field is within the default max_text_chars: it loads (the csv module's own
        131,072-character limit does not decide)."""
        path = tmp_path / "long.csv"
        text = "word " * 40_000
        path.write_text(f"text,fluency,coherence\nshort,4,3\n{text},2,1\n")
        dataset = load_dataset(file_config(path))
        assert [len(dict(r.fields)["text"]) for r in dataset.records] == [5, 200_000]

    def test_csv_field_over_max_text_chars_names_row_and_column(self, tmp_path: Path) -> None:
        """Over max_text_chars, the same field is refused like any other long text: row, column and the limit."""
        path = tmp_path / "long.csv"
        path.write_text(f"text,fluency,coherence\nshort,4,3\n{'word ' * 40_000},2,1\n")
        message = refusal(path, max_text_chars=150_000)
        assert "row 2:" in message and "column 'text'" in message and "200,000 characters" in message
        assert "max_text_chars (150,000)" in message and "malformed" not in message

    def test_a_huge_non_numeric_label_is_shown_cut_short(self, tmp_path: Path) -> None:
        """A 200,000-character label is refused on a line of sane length."""
        path = tmp_path / "label.csv"
        path.write_text(f"text,fluency,coherence\nshort,{'x' * 200_000},1\n")
        message = refusal(path)
        assert "row 1:" in message and "column 'fluency'" in message and len(message) < 300

    def test_more_criteria_than_one_request_holds(self, tmp_path: Path) -> None:
        """65 criteria cannot go into one judge request (at most 64): refused before anything runs."""
        path = tmp_path / "wide.jsonl"
        path.write_bytes(jsonl(GOOD_ROW))
        criteria = [{"name": f"c{i}"} for i in range(65)]
        with pytest.raises(DataError, match=r"65 criteria.*at most 64"):
            load_dataset(file_config(path, criteria=criteria))

    @pytest.mark.parametrize("case", ["surrogate", "long-integer", "deep"])
    def test_optimize_refuses_them_in_one_line_without_a_run_directory(
        self, case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`judgeopt optimize` on such a file: one `DataError:` line naming file, line and column, exit 1, no run
        directory (a surrogate used to pass and crash the run mid-way with a traceback, leaving it "running")."""
        rows = {
            "surrogate": json.dumps({**GOOD_ROW, "text": "\ud800"}),
            "long-integer": f'{{"text": "A fine text.", "fluency": {LONG_INTEGER}, "coherence": 3}}',
            "deep": f'{{"text": "A fine text.", "fluency": {DEEP}, "coherence": 3}}',
        }
        data = tmp_path / "data.jsonl"
        data.write_text(json.dumps(GOOD_ROW) + "\n" + rows[case] + "\n")
        config = tmp_path / "run.yaml"
        sizes = {"train_size": 1, "val_size": 0, "test_size": 1}
        dataset = {"name": "file", "path": str(data), "text_fields": ["text"], "criteria": CRITERIA, **sizes}
        config.write_text(
            yaml.safe_dump({"models": {"default": {"base_url": "http://127.0.0.1:9/v1"}}, "run": {"dataset": dataset}})
        )
        code = main(["optimize", "--config", str(config), "--run-dir", str(tmp_path / "run")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 1 and len(err) == 1, err
        where = "row 2: column 'text'" if case == "surrogate" else "line 2: column 'fluency'"
        assert err[0].startswith(f"DataError: {data}: {where}: "), err[0]
        assert not (tmp_path / "run").exists()


class TestHugeText:
    @pytest.fixture
    def huge(self, tmp_path: Path) -> Path:
        """A JSONL file whose third row holds a 10 MB text."""
        path = tmp_path / "huge.jsonl"
        big = {
            "text": "All work and no play makes Jack a dull boy. " * (TEN_MB // 44 + 1),
            "fluency": 2,
            "coherence": 1,
        }
        path.write_bytes(jsonl(GOOD_ROW, GOOD_ROW, big, GOOD_ROW))
        return path

    def test_a_10mb_text_is_refused_by_default_naming_row_column_and_limit(self, huge: Path) -> None:
        """No judge prompt can hold 10 MB of text: the row is refused when the data is loaded, before any model
        call, with the row, the column, the size and the setting that allows it — quickly, without hanging."""
        started = time.perf_counter()
        message = refusal(huge)
        assert time.perf_counter() - started < 10
        assert "row 3:" in message and "'text'" in message and "max_text_chars" in message
        assert f"{MAX_TEXT_CHARS:,}" in message

    def test_a_10mb_text_loads_when_the_limit_allows_it(self, huge: Path) -> None:
        """With max_text_chars raised, the same file loads whole (what a run then does with it is in
        test_badinput_runs.py)."""
        dataset = load_dataset(file_config(huge, max_text_chars=20_000_000))
        assert len(dataset.records) == 4
        assert len(dict(dataset.records[2].fields)["text"]) > TEN_MB

    def test_optimize_refuses_it_in_one_line_without_a_run_directory(
        self, huge: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`judgeopt optimize` on the file: one `DataError:` line, non-zero exit, no run directory."""
        config = tmp_path / "run.yaml"
        dataset = {"name": "file", "path": str(huge), "text_fields": ["text"], "criteria": CRITERIA}
        config.write_text(
            yaml.safe_dump({"models": {"default": {"base_url": "http://127.0.0.1:9/v1"}}, "run": {"dataset": dataset}})
        )
        code = main(["optimize", "--config", str(config), "--run-dir", str(tmp_path / "run")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code != 0 and len(err) == 1
        assert err[0].startswith("DataError: ") and "huge.jsonl" in err[0] and "row 3" in err[0]
        assert not (tmp_path / "run").exists()


# Loads and splits in a fresh interpreter, reporting its own time and peak memory.
_MEASURE = """
import json, logging, resource, sys, time
import structlog
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
from judgeopt.orchestrator.data.records import DatasetConfig
from judgeopt.orchestrator.data.loading import load_dataset
from judgeopt.orchestrator.data.splits import split_dataset
config = DatasetConfig.model_validate_json(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
splits = split_dataset(load_dataset(config), config)
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
parts = (splits.train, splits.val, splits.test)
groups = [{record.group for record in part} for part in parts]
disjoint = not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
report = {"seconds": seconds, "grown_mb": (peak - before) / 1024, "sizes": [len(p) for p in parts]}
print(json.dumps({**report, "disjoint": disjoint}))
"""


class TestManyRows:
    def test_100k_rows_load_and_split_quickly_in_sane_memory(self, tmp_path: Path) -> None:
        """A 100,000-row CSV (about 40 MB: SummEval-like articles, summaries with quotes and commas, four criteria,
        16 summaries per article) loads, validates and splits group-disjointly in well under 30 s, and the peak
        memory it adds stays under six times the file's size."""
        path = tmp_path / "many.csv"
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["doc", "article", "summary", "coherence", "consistency", "fluency", "relevance"])
            for i in range(100_000):
                article = f"Article {i // 16}: " + "lorem ipsum dolor sit amet, consectetur " * 9
                summary = f'Summary {i}, with a comma and "quotes".'
                writer.writerow([f"doc-{i // 16}", article, summary, 1 + i % 5, 1 + i // 5 % 5, 1 + i // 25 % 5, 3])
        size_mb = path.stat().st_size / 1024 / 1024
        config = DatasetConfig.model_validate(
            {
                "name": "file",
                "path": path,
                "text_fields": ["article", "summary"],
                "group_field": "doc",
                "criteria": [{"name": n} for n in ("coherence", "consistency", "fluency", "relevance")],
                "train_size": 60_000,
                "val_size": 10_000,
                "test_size": 20_000,
            }
        )
        child = subprocess.run(
            [sys.executable, "-c", _MEASURE, config.model_dump_json()],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        measured = json.loads(child.stdout.strip().splitlines()[-1])
        assert measured["sizes"] == [60_000, 10_000, 20_000] and measured["disjoint"]
        assert measured["seconds"] < 30, measured
        assert measured["grown_mb"] < 6 * size_mb, (measured, size_mb)
