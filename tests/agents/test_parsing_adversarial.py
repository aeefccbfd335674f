"""Every reader of model replies against hostile replies: it takes time linear in the reply, never raises, and always
answers with a typed status.

A model endpoint is untrusted: a broken or hostile one can send megabytes of newlines, braces, unterminated fences
or key-like lines. Linearity is checked by feeding each reader each such reply at 1x and 4x its size and comparing
the times (a ratio well under 16, the quadratic one); the wall-clock bound is only a sanity check. In all, the
readers read a few hundred megabytes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from judgeopt.agents.evaluator import Rating, read_rating
from judgeopt.agents.judge import logprob_weighted_scores
from judgeopt.agents.optimizer import read_step
from judgeopt.agents.parsing import (
    JsonReading,
    find_answer_object,
    find_json_object,
    find_text_field,
    is_placeholder,
    parse_feedback,
    parse_scores,
    strip_wrapping,
)
from judgeopt.agents.raw_reply import TokenLogprob
from judgeopt.agents.types import (
    Criterion,
    CriterionScore,
    Instruction,
    JudgePrompt,
    ParseStatus,
    Routing,
    StepResult,
    StepTask,
)

FLUENCY = Criterion("fluency")
COHERENCE = Criterion("coherence", min_score=0.0, max_score=1.0, integer_scores=False)
BOTH = (FLUENCY, COHERENCE)
MANY = tuple(Criterion(f"criterion-{i}") for i in range(64))
PROMPT = JudgePrompt(tuple(Instruction(c.name, f"Rate {c.name}.") for c in BOTH))
JOINT_STEP = StepTask(Routing.JOINT, BOTH, PROMPT)
SINGLE_STEP = StepTask(Routing.PER_CRITERION, (FLUENCY,), PROMPT.restricted_to(["fluency"]))

Reply = str | list[TokenLogprob]
"""A reply as text, or as the tokens of an endpoint that returns log-probabilities."""

BASE = 128 * 1024
"""The 1x size of a reply, in characters; the 4x one is half a megabyte."""


def _repeat(unit: str, size: int) -> str:
    return unit * (size // len(unit) + 1)


ADVERSARIAL: dict[str, Callable[[int], str]] = {
    "newlines": lambda n: "\n" * n,
    "spaces": lambda n: " " * n,
    "mixed-whitespace": lambda n: _repeat("\n \t\r", n),
    "open-braces": lambda n: "{" * n,
    "nested-objects-then-array": lambda n: '{"x":' * 200 + "[" + _repeat("1,", n),
    "nested-objects-then-string": lambda n: '{"x":' * 200 + '"' + _repeat("a", n),
    "deep-nesting": lambda n: _repeat('{"a":[', n),
    "unterminated-fence": lambda n: "```json\n" + " " * n,
    "many-fences": lambda n: _repeat("```json\n{", n),
    "backticks": lambda n: "`" * n,
    "key-lines": lambda n: _repeat("fix:\n", n),
    "key-lines-without-colon": lambda n: _repeat("- keep \n", n),
    "header-then-spaces": lambda n: "## Problem" + " " * n,
    "repeated-answer-keys": lambda n: _repeat('"instruction": "x" ', n),
    "truncated-value-then-spaces": lambda n: '{"instruction": "a"' + " " * n + "x",
    "escapes": lambda n: '{"instruction": "' + _repeat('\\"', n),
    "quotes": lambda n: '"' * n,
    "digits": lambda n: "1" * n,
    "number-like": lambda n: _repeat("1.", n),
    "placeholder-like": lambda n: "<" + "a" * n,
    "preamble-then-spaces": lambda n: "Sure:" + " " * n + "x",
    "many-keys": lambda n: "{" + ",".join(f'"k{i}": 1' for i in range(n // 10)) + "}",
    "prose-key-lines": lambda n: _repeat("criterion-7 is about -\n", n),
}


def _logprobs(tokens: list[str], alternatives: tuple[str, ...] = ("3",)) -> list[TokenLogprob]:
    """The reply's tokens, each with the same alternatives, as an endpoint with logprobs returns them."""
    return [TokenLogprob(t, -0.1, tuple((a, -0.1) for a in alternatives)) for t in tokens]


def _weigh(tokens: list[TokenLogprob]) -> dict[str, float]:
    """The weighting as the judge calls it, with the scores parsed from the same reply."""
    reply = "".join(t.text for t in tokens)
    sampled = {s.criterion: s.value for s in parse_scores(reply, BOTH) if s.value is not None}
    return logprob_weighted_scores(tokens, BOTH, sampled)


def _tokens(text: str) -> list[str]:
    return [text[i : i + 8] for i in range(0, len(text), 8)]


READERS: dict[str, Callable[[str], object]] = {
    "parse_scores": lambda text: parse_scores(text, BOTH),
    "parse_scores-64": lambda text: parse_scores(text, MANY),
    "parse_feedback": parse_feedback,
    "find_text_field": lambda text: find_text_field(text, "instruction"),
    "strip_wrapping": strip_wrapping,
    "find_json_object": find_json_object,
    "find_answer_object": lambda text: find_answer_object(text, [c.name for c in MANY]),
    "is_placeholder": is_placeholder,
    "read_rating": read_rating,
    "read_step-joint": lambda text: read_step(text, JOINT_STEP),
    "read_step-single": lambda text: read_step(text, SINGLE_STEP),
}


def _seconds(read: Callable[[Reply], object], reply: Reply) -> float:
    started = time.perf_counter()
    read(reply)
    return time.perf_counter() - started


def _superlinear(read: Callable[[Reply], object], small: Reply, large: Reply) -> tuple[float, float] | None:
    """``(1x, 4x)`` seconds when 4x the text took 8x the time or more (times under 50 ms count as 50 ms, the noise
    of a shared machine) or over 5 s per megabyte; measured again before it counts, the best of three."""
    megabytes = (len(large) if isinstance(large, str) else sum(len(t.text) for t in large)) / 1e6
    for tries in (1, 3):
        fast = min(_seconds(read, small) for _ in range(tries))
        slow = min(_seconds(read, large) for _ in range(tries))
        if slow / max(fast, 0.05) < 8 and slow < 5 * megabytes:
            return None
    return round(fast, 3), round(slow, 3)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("reply", list(ADVERSARIAL))
def test_every_reader_takes_linear_time_on_a_hostile_reply(reply: str) -> None:
    """Each reader on the reply at 1x and 4x: 4x the text takes less than 8x the time (a quadratic reader takes
    16x) and well under 5 s per megabyte."""
    small, large = ADVERSARIAL[reply](BASE), ADVERSARIAL[reply](4 * BASE)
    slow = {name: times for name, read in READERS.items() if (times := _superlinear(read, small, large))}
    assert not slow, f"{reply}: (1x, 4x) seconds {slow}"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("reply", ["mixed-whitespace", "deep-nesting", "key-lines", "escapes"])
def test_logprob_scoring_takes_linear_time_on_a_hostile_reply(reply: str) -> None:
    """The G-Eval weighting walks the reply's tokens once: 4x the tokens, less than 8x the time."""
    small, large = (_logprobs(_tokens(ADVERSARIAL[reply](size))) for size in (BASE, 4 * BASE))
    assert _superlinear(_weigh, small, large) is None


def test_a_heading_in_look_alike_letters_is_not_a_heading() -> None:
    """``Cauſe:`` (a long s) is no "cause" heading: Unicode case folding once matched it and then crashed on it."""
    assert parse_feedback("Cau\u017fe: x\nFix: y") == ({"fix": "y"}, ParseStatus.REPAIRED)


# --- fuzzing: never raises, always a typed status ---------------------------------------------------------------

_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "fluency",
                    "Fluency",
                    "coherence",
                    "score",
                    "keep",
                    "problem",
                    "fix",
                    "instruction",
                    "instructions",
                    "rationale",
                    "x",
                ]
            )
            | st.text(max_size=8),
            children,
            max_size=5,
        )
    ),
    max_leaves=12,
)
_PIECES = st.sampled_from(
    [
        "```",
        "```json\n",
        "{",
        "}",
        "[",
        "]",
        '"',
        "\\",
        ":",
        ",",
        "\n",
        " ",
        "fluency",
        "coherence",
        "score",
        "keep:",
        "Problem:",
        "## Fix",
        "<",
        ">",
        "Sure, here it is:\n",
        "4",
        "-1",
        "1e999",
        "NaN",
        "\ud800",
        "\x00",
        "instruction",
        "Cau\u017fe:",
        "\u212aeep:",
        "\u00b2",
    ]
)
REPLIES = st.one_of(
    st.text(),
    _JSON_VALUES.map(lambda value: json.dumps(value, allow_nan=True)),
    st.lists(_PIECES | st.text(max_size=6), max_size=40).map("".join),
    st.tuples(st.text(max_size=20), _JSON_VALUES, st.text(max_size=20)).map(
        lambda parts: f"{parts[0]}```json\n{json.dumps(parts[1])}\n```{parts[2]}"
    ),
)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_scores(scores: Any, criteria: tuple[Criterion, ...]) -> None:
    assert isinstance(scores, tuple) and [s.criterion for s in scores] == [c.name for c in criteria]
    for score, criterion in zip(scores, criteria, strict=True):
        assert isinstance(score, CriterionScore) and isinstance(score.status, ParseStatus)
        if score.status.usable:
            assert score.value is not None and criterion.contains(score.value)
        else:
            assert score.value is None


@FUZZ
@given(REPLIES)
def test_fuzzed_scores(text: str) -> None:
    """parse_scores: one typed score per criterion, a value only where usable and then inside the scale."""
    for criteria in ((FLUENCY,), BOTH):
        _check_scores(parse_scores(text, criteria), criteria)


@FUZZ
@given(REPLIES)
def test_fuzzed_feedback(text: str) -> None:
    """parse_feedback: text parts under known names only, and a typed status."""
    parts, status = parse_feedback(text)
    assert isinstance(status, ParseStatus)
    assert set(parts) <= {"keep", "problem", "fix"} and all(isinstance(v, str) for v in parts.values())


@FUZZ
@given(REPLIES)
def test_fuzzed_text_field(text: str) -> None:
    """find_text_field: text exactly when usable, and a typed status."""
    value, status = find_text_field(text, "instruction")
    assert isinstance(value, str) and isinstance(status, ParseStatus)
    assert bool(value) == status.usable


@FUZZ
@given(REPLIES)
def test_fuzzed_wrapping_and_objects(text: str) -> None:
    """strip_wrapping, is_placeholder and the JSON finders return their types, whatever the text."""
    assert isinstance(strip_wrapping(text), str)
    assert isinstance(is_placeholder(text), bool)
    for reading in (find_json_object(text), find_answer_object(text, ["fluency", "score"])):
        assert reading is None or (isinstance(reading, JsonReading) and isinstance(reading.value, dict))


@FUZZ
@given(REPLIES)
def test_fuzzed_rating_and_step(text: str) -> None:
    """read_rating and read_step: typed results, and a rewrite keeps one instruction per criterion."""
    rating = read_rating(text)
    assert isinstance(rating, Rating) and isinstance(rating.status, ParseStatus)
    assert (rating.score is not None) == rating.status.usable
    for task in (JOINT_STEP, SINGLE_STEP):
        result = read_step(text, task)
        assert isinstance(result, StepResult) and isinstance(result.status, ParseStatus)
        assert [i.criterion for i in result.instructions] == [c.name for c in task.criteria]
        assert all(i.text.strip() for i in result.instructions)


@FUZZ
@given(
    st.lists(st.text(max_size=6) | st.sampled_from(['"fluency"', ":", " ", "4", '"']), max_size=60),
    st.lists(st.text(max_size=3) | st.sampled_from(["1", "5", "9", "²", "٣"]), min_size=1, max_size=4).map(tuple),
)
def test_fuzzed_logprob_tokens(tokens: list[str], alternatives: tuple[str, ...]) -> None:
    """logprob_weighted_scores: a weighted score only for integer criteria, inside their scale."""
    weighted = _weigh(_logprobs(tokens, alternatives))
    assert set(weighted) <= {"fluency"}
    assert all(FLUENCY.contains(v) for v in weighted.values())
