"""Tolerant reading of model replies. Model output is untrusted input: every function here returns a typed
result with a :class:`ParseStatus`, never raises on what a model wrote.

Every reader takes time linear in the reply, whatever it holds (a broken endpoint may send megabytes of newlines,
braces or unterminated fences): no pattern here lets two quantifiers share the characters they repeat over, repeats
that could only give characters back in vain are possessive (``*+``), a heading is looked for within its own line,
and the search for a JSON object in prose reads at most a few times the reply's length.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import json_repair

from judgeopt.agents.types import Criterion, CriterionScore, ParseStatus

_FENCE = re.compile(r"```(?:json|JSON)?+\s*+(.*?)```", re.DOTALL)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class JsonReading:
    """A JSON object found in a reply; ``repaired`` when it had to be dug out of surrounding text."""

    value: dict[str, Any]
    repaired: bool


_DECODER = json.JSONDecoder()
_MAX_OBJECT_STARTS = 200  # bounds the work on a pathological reply full of braces
_DECODE_BUDGET = 4
"""Failed attempts to decode an object may read this many times the reply (plus ``_DECODE_SLACK``) in all: the
nested starts of one unterminated object would otherwise each read it to its end."""
_DECODE_SLACK = 64 * 1024


def _whole_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text.strip())
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _json_objects(text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Every top-level JSON object in ``text`` with its offset, in order (objects nested in one are not listed):
    from each ``{``, the object that decodes there, the search going on after it; unbalanced braces are skipped."""
    budget = _DECODE_BUDGET * len(text) + _DECODE_SLACK
    start = text.find("{")
    for _ in range(_MAX_OBJECT_STARTS):
        if start < 0 or budget < 0:
            return
        try:
            value, end = _DECODER.raw_decode(text, start)
        except json.JSONDecodeError as exc:
            budget -= exc.pos - start
            start = text.find("{", start + 1)
        except (ValueError, RecursionError):  # an integer too long to convert, or nesting too deep: charge it all
            budget -= len(text) - start
            start = text.find("{", start + 1)
        else:
            if isinstance(value, dict):
                yield start, value
            start = text.find("{", end)


REPAIR_MAX_CHARS = 64 * 1024
"""Only a reply up to this long is handed to the JSON-repair library, whose time grows faster than the reply's."""
REPAIR_MAX_OPENINGS = 64
"""Nor one with more ``{`` and ``[`` than this: a run of open braces takes the library quadratic time."""


def _repaired_object(text: str) -> dict[str, Any] | None:
    """What json-repair makes of the reply from its first ``{`` to its last ``}``, when no strict JSON object is in
    it: single quotes, trailing commas, comments, unquoted keys. ``None`` unless that is a non-empty object, and for
    a reply past the limits above. A reply cut off before its closing brace is left to the truncation readers, which
    tell what was cut."""
    start, end = text.find("{"), text.rfind("}")
    if not 0 <= start < end or len(text) > REPAIR_MAX_CHARS:
        return None
    if text.count("{") + text.count("[") > REPAIR_MAX_OPENINGS:
        return None
    try:
        value = json_repair.loads(text[start : end + 1])
    except (ValueError, RecursionError, TypeError, IndexError):  # a library reading untrusted text: never raise
        return None
    return value if isinstance(value, dict) and value else None


def find_json_object(text: str) -> JsonReading | None:
    """The first JSON object in ``text``: the whole reply, else the first ``{`` from which a JSON object decodes
    (inside a code fence or prose; unbalanced stray braces before it are skipped), else the object JSON repair
    makes of it."""
    whole = _whole_object(text)
    if whole is not None:
        return JsonReading(whole, repaired=False)
    found = next(_json_objects(text), None)
    if found is not None:
        return JsonReading(found[1], repaired=True)
    repaired = _repaired_object(text)
    return None if repaired is None else JsonReading(repaired, repaired=True)


def _fenced_spans(text: str) -> list[tuple[int, int]]:
    return [match.span(1) for match in _FENCE.finditer(text)]


def find_answer_object(text: str, keys: Sequence[str]) -> JsonReading | None:
    """The JSON object in ``text`` that answers with ``keys``, when the reply may also quote other JSON.

    The whole reply when it is one object; else, among the top-level objects, the one holding the most of ``keys``,
    then one inside a code fence, then the last one: a model that quotes JSON found in a sample (text trying to
    dictate its answer) before giving its own answer is read for its own answer.
    """
    whole = _whole_object(text)
    if whole is not None:
        return JsonReading(whole, repaired=False)
    candidates = list(_json_objects(text))
    if not candidates:
        repaired = _repaired_object(text)
        return None if repaired is None else JsonReading(repaired, repaired=True)
    fences = _fenced_spans(text)

    def rank(candidate: tuple[int, dict[str, Any]]) -> tuple[int, bool, int]:
        offset, value = candidate
        index = KeyIndex(value)
        held = sum(index.get(key) is not None for key in keys)
        return held, any(low <= offset < high for low, high in fences), offset

    _, value = max(candidates, key=rank)
    return JsonReading(value, repaired=True)


_NOT_KEY_CHARACTERS = re.compile(r"[^a-z0-9]+")


def normalise_key(key: str) -> str:
    return _NOT_KEY_CHARACTERS.sub("", key.lower())


class KeyIndex:
    """A JSON object's entries by name: the exact key, else a key equal up to case and punctuation (then
    ``repaired`` is True). The loose form of every key is made once, at the first inexact lookup, so looking up
    many names in an object with many keys stays linear."""

    def __init__(self, mapping: Mapping[str, Any]) -> None:
        self._mapping = mapping
        self._loose: dict[str, Any] | None = None

    def get(self, name: str) -> tuple[Any, bool] | None:
        """``(value, repaired)`` under ``name``, or ``None``."""
        if name in self._mapping:
            return self._mapping[name], False
        if self._loose is None:
            self._loose = {}
            for key, value in self._mapping.items():
                self._loose.setdefault(normalise_key(str(key)), value)
        wanted = normalise_key(name)
        return (self._loose[wanted], True) if wanted in self._loose else None


def lookup_key(mapping: Mapping[str, Any], name: str) -> tuple[Any, bool] | None:
    """``mapping[name]``, else a key equal up to case and punctuation (then ``repaired`` is True)."""
    return KeyIndex(mapping).get(name)


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # a 400-digit integer
            return None
        return number if math.isfinite(number) else None
    if isinstance(value, str):
        match = _NUMBER.search(value)
        return _as_number(float(match.group())) if match else None
    if isinstance(value, dict):  # {"score": 4, "reason": ...}
        inner = lookup_key(value, "score")
        return _as_number(inner[0]) if inner else None
    return None


def _judge_score(criterion: Criterion, value: float, repaired: bool) -> CriterionScore:
    if not criterion.contains(value):
        return CriterionScore(criterion.name, None, ParseStatus.OUT_OF_RANGE)
    if criterion.integer_scores and not value.is_integer():
        repaired = True
        value = float(round(value))
    return CriterionScore(criterion.name, value, ParseStatus.REPAIRED if repaired else ParseStatus.OK)


_WORD = re.compile(r"[\w-]+")
_WORD_AND_NUMBER = re.compile(rf"(?<![\w-])([\w-]+)(?![\w-])\W{{0,5}}?({_NUMBER.pattern})")


def _numbers_after_words(text: str) -> dict[str, float]:
    """Each word's first number in prose (``fluency: 4``, ``Fluency - 4/5``), by the word in lower case: one pass
    over the reply whatever the number of criteria, so a reply with no JSON costs the same for 4 criteria or 64."""
    numbers: dict[str, float] = {}
    for match in _WORD_AND_NUMBER.finditer(text):
        numbers.setdefault(match.group(1).lower(), float(match.group(2)))
    return numbers


def _score_from_prose(
    text: str, criterion: Criterion, after_words: dict[str, float], sole: bool
) -> tuple[float, bool] | None:
    """``fluency: 4`` / ``Fluency - 4/5`` in prose; a lone number counts only when one criterion is asked."""
    if _WORD.fullmatch(criterion.name):
        value = after_words.get(criterion.name.lower())
    else:  # a name of several words (or signs) is looked for on its own
        pattern = rf"(?<![\w-]){re.escape(criterion.name)}(?![\w-])\W{{0,5}}?({_NUMBER.pattern})"
        match = re.search(pattern, text, re.IGNORECASE)
        value = float(match.group(1)) if match else None
    if value is not None:
        return value, True
    if sole:
        numbers = [m.group() for m in itertools.islice(_NUMBER.finditer(text), 2)]
        if len(numbers) == 1:
            return float(numbers[0]), True
    return None


def parse_scores(text: str, criteria: Sequence[Criterion]) -> tuple[CriterionScore, ...]:
    """Read one score per criterion from a judge reply (JSON object, fenced, or as a last resort prose)."""
    if not text.strip():
        return tuple(CriterionScore(c.name, None, ParseStatus.INVALID) for c in criteria)
    keys = [c.name for c in criteria] + (["score"] if len(criteria) == 1 else [])
    reading = find_answer_object(text, keys)
    index = None if reading is None else KeyIndex(reading.value)
    scores: list[CriterionScore] = []
    after_words: dict[str, float] | None = None
    for criterion in criteria:
        found: tuple[float, bool] | None = None
        entry = None
        if reading is not None and index is not None:
            entry = index.get(criterion.name)
            if entry is None and len(criteria) == 1:
                entry = index.get("score")
            number = _as_number(entry[0]) if entry else None
            if entry is not None and number is not None:
                found = (number, reading.repaired or entry[1])
        if found is None and entry is None:  # a key with an unreadable value is not looked for in prose
            if after_words is None:
                after_words = _numbers_after_words(text)
            found = _score_from_prose(text, criterion, after_words, sole=len(criteria) == 1)
        if found is None:
            status = ParseStatus.MISSING if reading is not None else ParseStatus.INVALID
            scores.append(CriterionScore(criterion.name, None, status))
        else:
            scores.append(_judge_score(criterion, *found))
    return tuple(scores)


_PLACEHOLDER = re.compile(r"^<[^<>]*>?$")


def is_placeholder(text: str) -> bool:
    """``<the improved instruction>``: a model echoing the answer template instead of answering."""
    return _PLACEHOLDER.match(text.strip()) is not None


def _truncated_string_value(text: str, key: str) -> str | None:
    """The value of ``"key": "…`` in JSON cut off before its closing quote (a reply that hit max_tokens)."""
    match = re.search(rf'"{re.escape(key)}"\s*+:\s*+"((?:[^"\\]|\\.)*+)"?+\s*+}}?+\s*+$', text, re.DOTALL)
    if match is None:
        return None
    try:
        return str(json.loads(f'"{match.group(1)}"')).strip() or None
    except ValueError:
        return match.group(1).strip() or None


def find_text_field(text: str, key: str) -> tuple[str, ParseStatus]:
    """The string under ``key`` in a JSON reply; a truncated JSON value or plain prose count as ``REPAIRED``.

    A reply that opens a JSON object but holds no usable value, or that only echoes a ``<placeholder>``, is
    ``MISSING`` / ``INVALID`` rather than text.
    """
    reading = find_json_object(text)
    value: str | None = None
    status = ParseStatus.MISSING
    if reading is not None:
        entry = lookup_key(reading.value, key)
        if entry is not None and isinstance(entry[0], str) and entry[0].strip():
            value = entry[0].strip()
            status = ParseStatus.REPAIRED if reading.repaired or entry[1] else ParseStatus.OK
    elif strip_wrapping(text).startswith("{"):
        value = _truncated_string_value(text, key)
        status = ParseStatus.REPAIRED if value else ParseStatus.INVALID
    else:
        value = strip_wrapping(text) or None
        status = ParseStatus.REPAIRED if value else ParseStatus.INVALID
    if value is None or is_placeholder(value):
        return "", status if status in (ParseStatus.MISSING, ParseStatus.INVALID) else ParseStatus.INVALID
    return value, status


_PREAMBLE = re.compile(r"^\s*(?:sure|certainly|okay|ok|here(?:'s| is| are))\b[^\n]*:\s*\n", re.IGNORECASE)


def strip_wrapping(text: str) -> str:
    """Plain text without code fences, a chatty preamble line or surrounding quotes."""
    fenced = _FENCE.search(text)
    body = fenced.group(1) if fenced else text
    body = _PREAMBLE.sub("", body).strip()
    if len(body) >= 2 and body[0] == body[-1] and body[0] in "\"'":
        body = body[1:-1].strip()
    return body


_SECTION = re.compile(
    r"^(?:[#*.\d-]|[^\S\n])*+(?P<name>keep|what works|problem|what went wrong|cause|fix|how to fix)\b[^:\n]*+:",
    re.IGNORECASE | re.MULTILINE | re.ASCII,
)
"""A heading line: ``## Problem:``, ``- **Fix**:``, ``2. What went wrong (cause):``. Matched within its line (a
leading run that could cross lines made megabytes of blank lines take hours), and in ASCII only: Unicode case folding
would let ``cauſe:`` (long s) match a name it is not."""
_SECTION_KEYS = {
    "keep": "keep",
    "what works": "keep",
    "problem": "problem",
    "what went wrong": "problem",
    "cause": "problem",
    "fix": "fix",
    "how to fix": "fix",
}


def _headed_sections(text: str) -> dict[str, list[str]]:
    """The text under each heading, by part, in order; read in one pass (a reply may hold a million headings)."""
    sections: dict[str, list[str]] = {}
    heading: re.Match[str] | None = None
    for following in itertools.chain(_SECTION.finditer(text), [None]):
        if heading is not None:
            key = _SECTION_KEYS[heading.group("name").lower()]
            sections.setdefault(key, []).append(text[heading.end() : following.start() if following else None].strip())
        heading = following
    return sections


def parse_feedback(text: str) -> tuple[dict[str, str], ParseStatus]:
    """The three parts of a gradient (keep / problem / fix) from JSON, headed sections, or free text."""
    reading = find_json_object(text)
    if reading is not None:
        parts: dict[str, str] = {}
        repaired = reading.repaired
        index = KeyIndex(reading.value)
        for key in ("keep", "problem", "fix"):
            entry = index.get(key)
            if entry is not None and isinstance(entry[0], str):
                parts[key] = entry[0].strip()
                repaired = repaired or entry[1]
        if not any(parts.values()):
            return {}, ParseStatus.MISSING
        complete = all(parts.get(k) for k in ("keep", "problem", "fix"))
        return parts, ParseStatus.OK if complete and not repaired else ParseStatus.REPAIRED
    sections = _headed_sections(text)
    if sections:
        return {key: " ".join(filter(None, texts)) for key, texts in sections.items()}, ParseStatus.REPAIRED
    plain = strip_wrapping(text)
    if not plain:
        return {}, ParseStatus.INVALID
    return {"problem": plain}, ParseStatus.REPAIRED
