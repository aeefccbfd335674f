"""Reading raw rows out of a file's bytes (CSV, JSONL, JSON, Parquet), each problem one ``DataError`` line naming the
file and, where there is one, the row."""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from judgeopt.orchestrator.errors import DataError

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
    # No field is longer than the file: the csv module's own limit (131,072 characters by default, process-wide) must
    # not decide, max_text_chars does, naming the column. The limit is only ever raised.
    csv.field_size_limit(max(csv.field_size_limit(), len(data)))
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


_DECODER = json.JSONDecoder()
_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def _skip_space(text: str, position: int) -> int:
    match = _JSON_SPACE.match(text, position)
    return position if match is None else match.end()


def _unreadable_member(text: str, start: int = 0) -> tuple[int, str | None, int] | None:
    """In the JSON object or array at ``start`` of ``text`` (valid JSON up to the failure): the index, key (None in
    an array) and offset of the first member Python cannot read, nested too deeply or an integer too long. Only
    called once a whole file or line failed so, to name the place."""
    position = _skip_space(text, start)
    if text[position : position + 1] not in ("[", "{"):
        return None
    closing = "]" if text[position] == "[" else "}"
    position = _skip_space(text, position + 1)
    index = 0
    try:
        while text[position : position + 1] not in ("", closing):
            key = None
            if closing == "}":
                key, position = _DECODER.raw_decode(text, position)
                position = _skip_space(text, _skip_space(text, position) + 1)  # past the colon
            try:
                _, position = _DECODER.raw_decode(text, position)
            except (RecursionError, ValueError):
                return index, None if key is None else str(key), position
            position = _skip_space(text, position)
            if text[position : position + 1] == ",":
                position = _skip_space(text, position + 1)
            index += 1
    except ValueError:  # not the valid JSON it was said to be: no member to name
        return None
    return None


def _unreadable(exc: ValueError | RecursionError) -> str:
    """Why Python could not read valid JSON, for a message."""
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply to read"
    return f"an integer of more than {sys.get_int_max_str_digits():,} digits, the most Python reads as a number"


def _column(found: tuple[int, str | None, int] | None) -> str:
    return "" if found is None or found[1] is None else f"column {found[1]!r}: "


def jsonl_rows(origin: str, data: bytes) -> _RawRows:
    for line_number, (line, last) in enumerate(_lines(_decode(origin, data)), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            cut = "; the file ends in the middle of this line (truncated?)" if last else ""
            raise DataError(f"{origin}: line {line_number}: not valid JSON ({_json_error(exc)}){cut}") from None
        except (ValueError, RecursionError) as exc:  # valid JSON Python cannot hold
            where = _column(_unreadable_member(line))
            raise DataError(f"{origin}: line {line_number}: {where}{_unreadable(exc)}") from None
        yield line_number, _json_object(origin, f"line {line_number}", value)


def _json_rows(origin: str, data: bytes) -> _RawRows:
    text = _decode(origin, data)
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{origin}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # valid JSON Python cannot hold
        row = _unreadable_member(text)
        where = "" if row is None else f"row {row[0] + 1}: {_column(_unreadable_member(text, row[2]))}"
        raise DataError(f"{origin}: {where}{_unreadable(exc)}") from None
    if not isinstance(items, list):
        raise DataError(f"{origin}: expected a JSON list of objects, got {type(items).__name__}")
    for row_number, item in enumerate(items, start=1):
        yield row_number, _json_object(origin, f"row {row_number}", item)


def _json_object(origin: str, where: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise DataError(f"{origin}: {where}: expected a JSON object, got {type(value).__name__}")
    return value


def parquet_rows(origin: str, data: bytes) -> _RawRows:
    import pyarrow as pa  # only Parquet files need it, and it is large: not on every `judgeopt` start
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{origin}: not a readable Parquet file ({' '.join(str(exc).split())})") from None
    rows: list[dict[str, Any]] = table.to_pylist()
    yield from enumerate(rows, start=1)


READERS: dict[str, Callable[[str, bytes], _RawRows]] = {
    ".csv": _csv_rows,
    ".jsonl": jsonl_rows,
    ".json": _json_rows,
    ".parquet": parquet_rows,
}
