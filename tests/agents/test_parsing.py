"""Tolerant reading of model replies (``agents/parsing.py``): what is accepted, repaired or refused."""

from __future__ import annotations

import pytest

from judgeopt.agents import parsing
from judgeopt.agents.parsing import find_json_object, find_text_field, parse_feedback, parse_scores, strip_wrapping
from judgeopt.agents.types import Criterion, CriterionScore, ParseStatus

FLUENCY = Criterion("fluency")
COHERENCE = Criterion("coherence")
BOTH = (FLUENCY, COHERENCE)
CONTINUOUS = Criterion("fluency", min_score=0.0, max_score=1.0, integer_scores=False)

CLEAN = '{"fluency": 4, "coherence": 2}'


def by_name(scores: tuple[CriterionScore, ...]) -> dict[str, CriterionScore]:
    return {s.criterion: s for s in scores}


def values_and_statuses(scores: tuple[CriterionScore, ...]) -> list[tuple[str, float | None, ParseStatus]]:
    return [(s.criterion, s.value, s.status) for s in scores]


class TestFindJsonObject:
    def test_whole_reply_is_json(self) -> None:
        """A reply that is exactly a JSON object is read as is, not repaired."""
        reading = find_json_object(CLEAN)
        assert reading is not None
        assert reading.value == {"fluency": 4, "coherence": 2}
        assert reading.repaired is False

    def test_surrounding_whitespace_is_not_a_repair(self) -> None:
        """Whitespace around a JSON object does not count as a repair."""
        reading = find_json_object(f"\n  {CLEAN}  \n")
        assert reading is not None
        assert reading.repaired is False

    @pytest.mark.parametrize(
        "text",
        [
            f"```json\n{CLEAN}\n```",
            f"```JSON\n{CLEAN}\n```",
            f"```\n{CLEAN}\n```",
        ],
        ids=["json-fence", "JSON-fence", "bare-fence"],
    )
    def test_fenced_object_is_repaired(self, text: str) -> None:
        """A JSON object inside a code fence is found and marked repaired."""
        reading = find_json_object(text)
        assert reading is not None
        assert reading.value == {"fluency": 4, "coherence": 2}
        assert reading.repaired is True

    def test_object_inside_prose_is_repaired(self) -> None:
        """A JSON object between a chatty preamble and trailing text is dug out and marked repaired."""
        reading = find_json_object(f"Sure! Here are my scores: {CLEAN} Let me know if you need more.")
        assert reading is not None
        assert reading.value == {"fluency": 4, "coherence": 2}
        assert reading.repaired is True

    def test_braces_inside_strings_do_not_end_the_object(self) -> None:
        """A closing brace inside a JSON string does not cut the object short."""
        reading = find_json_object('Result: {"note": "a } b", "fluency": 4} done')
        assert reading is not None
        assert reading.value == {"note": "a } b", "fluency": 4}

    def test_nested_objects_stay_inside_the_outer_one(self) -> None:
        """The first top-level object is returned whole, with its nested objects."""
        reading = find_json_object('x {"fluency": {"score": 4}} y {"other": 1}')
        assert reading is not None
        assert reading.value == {"fluency": {"score": 4}}

    def test_unparsable_span_is_skipped(self) -> None:
        """A balanced span that is not JSON is skipped in favour of a later valid object."""
        reading = find_json_object('{not json} and then {"fluency": 4}')
        assert reading is not None
        assert reading.value == {"fluency": 4}
        assert reading.repaired is True

    def test_object_inside_a_top_level_list(self) -> None:
        """A reply that is a JSON list holding an object yields that object, repaired."""
        reading = find_json_object('[{"fluency": 4}]')
        assert reading is not None
        assert reading.value == {"fluency": 4}
        assert reading.repaired is True

    @pytest.mark.parametrize("text", ["", "lorem ipsum", "[1, 2]", '{"fluency": 4', "42"])
    def test_no_object(self, text: str) -> None:
        """Text without a complete JSON object gives None."""
        assert find_json_object(text) is None

    def test_stray_open_brace_before_object(self) -> None:
        """A stray unbalanced '{' in the preamble does not hide a later JSON object."""
        reading = find_json_object('Scores { as asked. {"fluency": 4}')
        assert reading is not None
        assert reading.value == {"fluency": 4}


class TestParseScores:
    def test_clean_json_is_ok(self) -> None:
        """A clean JSON answer gives every criterion its value with status OK."""
        assert values_and_statuses(parse_scores(CLEAN, BOTH)) == [
            ("fluency", 4.0, ParseStatus.OK),
            ("coherence", 2.0, ParseStatus.OK),
        ]

    def test_scores_follow_the_criteria_order(self) -> None:
        """Scores come back in the order of the criteria asked, not of the reply's keys."""
        scores = parse_scores('{"coherence": 2, "fluency": 4}', BOTH)
        assert [s.criterion for s in scores] == ["fluency", "coherence"]

    @pytest.mark.parametrize(
        "text",
        [f"```json\n{CLEAN}\n```", f"```\n{CLEAN}\n```"],
        ids=["json-fence", "bare-fence"],
    )
    def test_fenced_json_is_repaired(self, text: str) -> None:
        """Scores inside a code fence are read and marked REPAIRED."""
        assert values_and_statuses(parse_scores(text, BOTH)) == [
            ("fluency", 4.0, ParseStatus.REPAIRED),
            ("coherence", 2.0, ParseStatus.REPAIRED),
        ]

    def test_chatty_reply_is_repaired(self) -> None:
        """Scores in JSON between a preamble and trailing text are read and marked REPAIRED."""
        text = f"Sure! Here is my evaluation:\n{CLEAN}\nThe summary reads well but jumps around."
        assert values_and_statuses(parse_scores(text, BOTH)) == [
            ("fluency", 4.0, ParseStatus.REPAIRED),
            ("coherence", 2.0, ParseStatus.REPAIRED),
        ]

    @pytest.mark.parametrize("key", ["Fluency", "FLUENCY", "flu-ency", "Flu_ency"])
    def test_key_equal_up_to_case_and_punctuation_is_repaired(self, key: str) -> None:
        """A key equal to the criterion name once lower-cased and stripped of punctuation counts, REPAIRED."""
        scores = by_name(parse_scores(f'{{"{key}": 4, "coherence": 2}}', BOTH))
        assert (scores["fluency"].value, scores["fluency"].status) == (4.0, ParseStatus.REPAIRED)
        assert scores["coherence"].status is ParseStatus.OK

    def test_key_with_extra_word_does_not_match(self) -> None:
        """'fluency_score' normalises to 'fluencyscore', not 'fluency': with two criteria it is MISSING."""
        scores = by_name(parse_scores('{"fluency_score": 4, "coherence": 2}', BOTH))
        assert (scores["fluency"].value, scores["fluency"].status) == (None, ParseStatus.MISSING)
        assert (scores["coherence"].value, scores["coherence"].status) == (2.0, ParseStatus.OK)

    def test_key_with_extra_word_single_criterion_falls_back_to_the_lone_number(self) -> None:
        """With one criterion, an unmatched key still yields its value through the lone-number fallback."""
        assert values_and_statuses(parse_scores('{"fluency_score": 4}', [FLUENCY])) == [
            ("fluency", 4.0, ParseStatus.REPAIRED)
        ]

    def test_generic_score_key_for_a_single_criterion(self) -> None:
        """With one criterion, a plain {"score": n} answer is that criterion's score."""
        assert values_and_statuses(parse_scores('{"score": 4}', [FLUENCY])) == [("fluency", 4.0, ParseStatus.OK)]

    def test_generic_score_key_is_ambiguous_for_two_criteria(self) -> None:
        """With two criteria, {"score": n} belongs to neither: both MISSING."""
        scores = parse_scores('{"score": 4}', BOTH)
        assert [s.status for s in scores] == [ParseStatus.MISSING, ParseStatus.MISSING]
        assert [s.value for s in scores] == [None, None]

    def test_nested_score_object(self) -> None:
        """A nested {"score": n, "reason": ...} object per criterion is read."""
        text = '{"fluency": {"score": 4, "reason": "smooth"}, "coherence": {"Score": 2}}'
        scores = by_name(parse_scores(text, BOTH))
        assert scores["fluency"].value == 4.0
        assert scores["coherence"].value == 2.0
        assert all(s.status.usable for s in scores.values())

    @pytest.mark.parametrize(("raw", "expected"), [('"4"', 4.0), ('"4/5"', 4.0), ('"3 out of 5"', 3.0)])
    def test_string_numbers(self, raw: str, expected: float) -> None:
        """A score written as a string ("4", "4/5") is read as its first number (status OK as implemented)."""
        [score] = parse_scores(f'{{"fluency": {raw}}}', [FLUENCY])
        assert score.value == expected
        assert score.status is ParseStatus.OK

    def test_non_integer_on_integer_scale_is_rounded_and_repaired(self) -> None:
        """3.6 on an integer 1-5 scale becomes 4.0 and is marked REPAIRED."""
        scores = by_name(parse_scores('{"fluency": 3.6, "coherence": 2}', BOTH))
        assert (scores["fluency"].value, scores["fluency"].status) == (4.0, ParseStatus.REPAIRED)
        assert scores["coherence"].status is ParseStatus.OK

    def test_integral_float_on_integer_scale_is_ok(self) -> None:
        """4.0 on an integer scale is already an integer: status OK."""
        [score] = parse_scores('{"fluency": 4.0}', [FLUENCY])
        assert (score.value, score.status) == (4.0, ParseStatus.OK)

    @pytest.mark.parametrize("value", ["7", "0", "-1", "5.5"])
    def test_out_of_range_has_no_value(self, value: str) -> None:
        """A score outside 1-5 is OUT_OF_RANGE with value None (never clipped)."""
        scores = by_name(parse_scores(f'{{"fluency": {value}, "coherence": 2}}', BOTH))
        assert (scores["fluency"].value, scores["fluency"].status) == (None, ParseStatus.OUT_OF_RANGE)
        assert scores["coherence"].status is ParseStatus.OK

    def test_range_bounds_are_inclusive(self) -> None:
        """The scale's minimum and maximum themselves are accepted."""
        scores = parse_scores('{"fluency": 1, "coherence": 5}', BOTH)
        assert values_and_statuses(scores) == [("fluency", 1.0, ParseStatus.OK), ("coherence", 5.0, ParseStatus.OK)]

    def test_missing_criterion_in_valid_json(self) -> None:
        """A criterion absent from an otherwise valid JSON answer is MISSING; the others are kept."""
        assert values_and_statuses(parse_scores('{"fluency": 4}', BOTH)) == [
            ("fluency", 4.0, ParseStatus.OK),
            ("coherence", None, ParseStatus.MISSING),
        ]

    def test_null_value_is_missing(self) -> None:
        """A criterion whose value is null is MISSING."""
        scores = by_name(parse_scores('{"fluency": 4, "coherence": null}', BOTH))
        assert (scores["coherence"].value, scores["coherence"].status) == (None, ParseStatus.MISSING)

    @pytest.mark.parametrize("text", ["", "   \n\t "])
    def test_empty_reply_is_invalid_for_all(self, text: str) -> None:
        """An empty reply gives INVALID with no value for every criterion."""
        assert values_and_statuses(parse_scores(text, BOTH)) == [
            ("fluency", None, ParseStatus.INVALID),
            ("coherence", None, ParseStatus.INVALID),
        ]

    def test_garbage_is_invalid(self) -> None:
        """Prose without JSON or scores gives INVALID for every criterion."""
        assert values_and_statuses(parse_scores("lorem ipsum dolor sit amet", BOTH)) == [
            ("fluency", None, ParseStatus.INVALID),
            ("coherence", None, ParseStatus.INVALID),
        ]

    def test_truncated_json_keeps_what_was_written(self) -> None:
        """JSON cut off mid-key: the complete score is recovered from prose (REPAIRED), the cut one is INVALID."""
        assert values_and_statuses(parse_scores('{"fluency": 4, "coher', BOTH)) == [
            ("fluency", 4.0, ParseStatus.REPAIRED),
            ("coherence", None, ParseStatus.INVALID),
        ]

    @pytest.mark.parametrize("text", ["Fluency: 4", "fluency - 4/5", "I'd rate the fluency 4 overall."])
    def test_prose_for_a_single_criterion(self, text: str) -> None:
        """'<criterion>: n' in prose is read for that criterion and marked REPAIRED."""
        assert values_and_statuses(parse_scores(text, [FLUENCY])) == [("fluency", 4.0, ParseStatus.REPAIRED)]

    def test_prose_for_two_criteria(self) -> None:
        """Each criterion named in prose gets the number after its name, REPAIRED."""
        assert values_and_statuses(parse_scores("Fluency: 4\nCoherence: 2", BOTH)) == [
            ("fluency", 4.0, ParseStatus.REPAIRED),
            ("coherence", 2.0, ParseStatus.REPAIRED),
        ]

    def test_lone_number_for_a_single_criterion(self) -> None:
        """A reply that is just '4' is the score of the only criterion asked, REPAIRED."""
        assert values_and_statuses(parse_scores("4", [FLUENCY])) == [("fluency", 4.0, ParseStatus.REPAIRED)]

    def test_lone_number_for_two_criteria_gives_no_scores(self) -> None:
        """A lone number cannot be attributed when two criteria are asked: no values."""
        scores = parse_scores("4", BOTH)
        assert [s.value for s in scores] == [None, None]
        assert not any(s.status.usable for s in scores)

    def test_several_numbers_for_a_single_criterion_are_ambiguous(self) -> None:
        """Prose with several numbers and no criterion name gives no score."""
        [score] = parse_scores("I give it 4/5", [FLUENCY])
        assert (score.value, score.status) == (None, ParseStatus.INVALID)

    def test_continuous_scale_keeps_fractions(self) -> None:
        """On a continuous 0-1 scale 0.75 is kept as is, status OK."""
        assert values_and_statuses(parse_scores('{"fluency": 0.75}', [CONTINUOUS])) == [
            ("fluency", 0.75, ParseStatus.OK)
        ]

    def test_continuous_scale_out_of_range(self) -> None:
        """On a continuous 0-1 scale 1.5 is OUT_OF_RANGE."""
        [score] = parse_scores('{"fluency": 1.5}', [CONTINUOUS])
        assert (score.value, score.status) == (None, ParseStatus.OUT_OF_RANGE)

    def test_booleans_are_not_numbers(self) -> None:
        """true/false are not read as 1/0: the criteria are MISSING."""
        scores = parse_scores('{"fluency": true, "coherence": false}', BOTH)
        assert values_and_statuses(scores) == [
            ("fluency", None, ParseStatus.MISSING),
            ("coherence", None, ParseStatus.MISSING),
        ]

    @pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", '"nan"', '"inf"'])
    def test_non_finite_values_are_not_accepted(self, value: str) -> None:
        """NaN and infinities (JSON extensions or strings) never become a score."""
        [score] = parse_scores(f'{{"fluency": {value}}}', [FLUENCY])
        assert score.value is None
        assert not score.status.usable

    def test_overflowing_float_is_not_a_score(self) -> None:
        """A float literal that overflows to infinity is not read as a score."""
        scores = by_name(parse_scores('{"fluency": 1e400, "coherence": 2}', BOTH))
        assert scores["fluency"].value is None
        assert not scores["fluency"].status.usable

    def test_huge_integer_does_not_raise(self) -> None:
        """A 400-digit integer score is refused (OUT_OF_RANGE or unusable), never raised."""
        scores = by_name(parse_scores('{"fluency": ' + "9" * 400 + ', "coherence": 2}', BOTH))
        assert scores["fluency"].value is None
        assert scores["coherence"].value == 2.0

    def test_prose_fallback_does_not_borrow_a_longer_criterion_name(self) -> None:
        """A missing criterion does not take the score of another criterion whose name ends with its name."""
        local = Criterion("local_coherence")
        scores = by_name(parse_scores('{"local_coherence": 4}', [COHERENCE, local]))
        assert (scores["local_coherence"].value, scores["local_coherence"].status) == (4.0, ParseStatus.OK)
        assert (scores["coherence"].value, scores["coherence"].status) == (None, ParseStatus.MISSING)


class TestFindTextField:
    def test_clean_json_is_ok(self) -> None:
        """The string under the key of a clean JSON reply is returned stripped, status OK."""
        assert find_text_field('{"instruction": "  Rate fluency.  "}', "instruction") == (
            "Rate fluency.",
            ParseStatus.OK,
        )

    @pytest.mark.parametrize(
        "text",
        [
            '```json\n{"instruction": "Rate fluency."}\n```',
            'Sure, here it is: {"instruction": "Rate fluency."} Hope it helps.',
            '{"Instruction": "Rate fluency."}',
        ],
        ids=["fenced", "chatty", "key-case"],
    )
    def test_dug_out_or_case_differing_key_is_repaired(self, text: str) -> None:
        """A fenced or embedded object, or a key differing in case, gives the value REPAIRED."""
        assert find_text_field(text, "instruction") == ("Rate fluency.", ParseStatus.REPAIRED)

    def test_truncated_value_is_repaired(self) -> None:
        """JSON cut off inside the value (max_tokens) gives the text so far, REPAIRED."""
        assert find_text_field('{"instruction": "Rate flu', "instruction") == ("Rate flu", ParseStatus.REPAIRED)

    def test_truncated_value_unescapes_json_escapes(self) -> None:
        """Escapes in a truncated value are decoded like JSON."""
        assert find_text_field('{"instruction": "Say \\"good\\" \\u00e9', "instruction") == (
            'Say "good" é',
            ParseStatus.REPAIRED,
        )

    def test_missing_closing_brace_is_repaired(self) -> None:
        """A complete value with only the closing brace missing is REPAIRED."""
        assert find_text_field('{"instruction": "Rate fluency."', "instruction") == (
            "Rate fluency.",
            ParseStatus.REPAIRED,
        )

    @pytest.mark.parametrize(
        "text",
        ['{"instruction": "<placeholder>"}', "<placeholder>", "<your improved instruction>", '{"instruction": "<impr'],
    )
    def test_placeholder_echo_is_invalid(self, text: str) -> None:
        """A reply that only echoes a <placeholder> gives no text and INVALID."""
        assert find_text_field(text, "instruction") == ("", ParseStatus.INVALID)

    @pytest.mark.parametrize(
        "text", ['{"other": 1}', '{"instruction": ""}', '{"instruction": "   "}', '{"instruction": 5}']
    )
    def test_object_without_usable_value_is_missing(self, text: str) -> None:
        """A complete JSON object without a non-empty string under the key is MISSING."""
        assert find_text_field(text, "instruction") == ("", ParseStatus.MISSING)

    @pytest.mark.parametrize("text", ["{", '{"other": "x", "instr'])
    def test_truncated_object_without_the_key_is_invalid(self, text: str) -> None:
        """Cut-off JSON that never reached the key is INVALID."""
        assert find_text_field(text, "instruction") == ("", ParseStatus.INVALID)

    @pytest.mark.parametrize(
        "text",
        [
            "Rate the fluency of the text.",
            "Here is the improved instruction:\nRate the fluency of the text.",
            '"Rate the fluency of the text."',
            "```\nRate the fluency of the text.\n```",
        ],
    )
    def test_plain_prose_is_the_value_repaired(self, text: str) -> None:
        """A reply without JSON is itself the value, unwrapped, REPAIRED."""
        assert find_text_field(text, "instruction") == ("Rate the fluency of the text.", ParseStatus.REPAIRED)

    @pytest.mark.parametrize("text", ["", "  \n "])
    def test_empty_reply_is_invalid(self, text: str) -> None:
        """An empty reply is INVALID."""
        assert find_text_field(text, "instruction") == ("", ParseStatus.INVALID)

    def test_tags_inside_real_text_are_not_a_placeholder(self) -> None:
        """Text that merely contains tags is kept, not mistaken for a placeholder."""
        assert find_text_field('{"instruction": "Use <b>bold</b> tags"}', "instruction") == (
            "Use <b>bold</b> tags",
            ParseStatus.OK,
        )


class TestParseFeedback:
    def test_complete_json_is_ok(self) -> None:
        """JSON with non-empty keep, problem and fix is OK."""
        text = '{"keep": "the scale", "problem": "too vague", "fix": "add anchors"}'
        assert parse_feedback(text) == (
            {"keep": "the scale", "problem": "too vague", "fix": "add anchors"},
            ParseStatus.OK,
        )

    def test_json_with_an_empty_part_is_repaired(self) -> None:
        """JSON where one part is empty keeps the others and is REPAIRED."""
        parts, status = parse_feedback('{"keep": "", "problem": "too vague", "fix": "add anchors"}')
        assert status is ParseStatus.REPAIRED
        assert parts["problem"] == "too vague"
        assert parts["fix"] == "add anchors"
        assert not parts.get("keep")

    def test_json_with_a_missing_part_is_repaired(self) -> None:
        """JSON without one of the three keys is REPAIRED."""
        parts, status = parse_feedback('{"keep": "the scale", "problem": "too vague"}')
        assert status is ParseStatus.REPAIRED
        assert parts == {"keep": "the scale", "problem": "too vague"}

    @pytest.mark.parametrize(
        "text",
        [
            '```json\n{"keep": "the scale", "problem": "too vague", "fix": "add anchors"}\n```',
            '{"Keep": "the scale", "Problem": "too vague", "Fix": "add anchors"}',
        ],
        ids=["fenced", "key-case"],
    )
    def test_dug_out_or_case_differing_json_is_repaired(self, text: str) -> None:
        """Complete feedback that was fenced or used differently cased keys is REPAIRED."""
        assert parse_feedback(text) == (
            {"keep": "the scale", "problem": "too vague", "fix": "add anchors"},
            ParseStatus.REPAIRED,
        )

    @pytest.mark.parametrize(
        "text",
        [
            "Keep: the scale\nWhat went wrong: too vague\nHow to fix: add anchors",
            "Keep: the scale\nProblem: too vague\nFix: add anchors",
            "**Keep**: the scale\n**Problem**: too vague\n**Fix**: add anchors",
            "## Keep:\nthe scale\n## Problem:\ntoo vague\n## Fix:\nadd anchors",
            "1. What works: the scale\n2. Cause: too vague\n3. How to fix: add anchors",
        ],
    )
    def test_headed_sections_are_repaired(self, text: str) -> None:
        """Headed sections (plain, bold, markdown, numbered, synonyms) map onto the three parts, REPAIRED."""
        assert parse_feedback(text) == (
            {"keep": "the scale", "problem": "too vague", "fix": "add anchors"},
            ParseStatus.REPAIRED,
        )

    def test_headings_with_the_same_meaning_are_joined(self) -> None:
        """Two headings for the same part ('Problem', 'Cause') are joined into one part."""
        assert parse_feedback("Problem: too vague\nCause: no anchors") == (
            {"problem": "too vague no anchors"},
            ParseStatus.REPAIRED,
        )

    def test_free_text_is_the_problem(self) -> None:
        """Free text without headings becomes the problem part, REPAIRED."""
        assert parse_feedback("The instruction never says what a 3 means.") == (
            {"problem": "The instruction never says what a 3 means."},
            ParseStatus.REPAIRED,
        )

    @pytest.mark.parametrize("text", ["", "  \n "])
    def test_empty_is_invalid(self, text: str) -> None:
        """An empty reply gives no parts and INVALID."""
        assert parse_feedback(text) == ({}, ParseStatus.INVALID)

    @pytest.mark.parametrize("text", ['{"keep": "", "problem": "", "fix": ""}', '{"other": "x"}'])
    def test_json_without_usable_parts_is_not_feedback(self, text: str) -> None:
        """A JSON reply with no non-empty keep/problem/fix is not usable feedback."""
        parts, status = parse_feedback(text)
        assert not status.usable
        assert not any(parts.values())


class TestStripWrapping:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("Rate it.", "Rate it."),
            ("  Rate it.  \n", "Rate it."),
            ("```\nRate it.\n```", "Rate it."),
            ('```json\n{"a": 1}\n```', '{"a": 1}'),
            ("Sure, here is the instruction:\nRate it.", "Rate it."),
            ("Okay:\nRate it.", "Rate it."),
            ('Here\'s the new instruction:\n\n"Rate it."', "Rate it."),
            ('"Rate it."', "Rate it."),
            ("'Rate it.'", "Rate it."),
            ("", ""),
        ],
    )
    def test_wrapping_is_removed(self, text: str, expected: str) -> None:
        """Code fences, a chatty preamble line and surrounding quotes are removed."""
        assert strip_wrapping(text) == expected

    @pytest.mark.parametrize("text", ["Sure: rate it", '"Rate it.', '"', "Surely this: x\ny"])
    def test_text_that_only_looks_wrapped_is_kept(self, text: str) -> None:
        """A preamble word without its own line, an unmatched quote, or a lookalike word is kept."""
        assert strip_wrapping(text) == text


class TestJsonRepair:
    """Near-JSON a model writes (single quotes, trailing commas, comments) is parsed by the JSON-repair library and
    marked REPAIRED, within its size limits; past them it stays unread."""

    @pytest.mark.parametrize(
        "reply",
        [
            "{'fluency': 4, 'coherence': 2}",
            '{"fluency": 4, "coherence": 2,}',
            '{"fluency": 4, // clear sentences\n "coherence": 2}',
            'Scores: {"fluency": 4, /* ok */ "coherence": 2,} as asked',
            "{fluency: 4, coherence: 2}",
        ],
        ids=["single-quotes", "trailing-comma", "line-comment", "block-comment-in-prose", "bare-keys"],
    )
    def test_near_json_scores_are_parsed_as_repaired(self, reply: str) -> None:
        """Read as the object it is (not by the prose fallback, which would also find these numbers)."""
        reading = parsing.find_answer_object(reply, ["fluency", "coherence"])
        assert reading is not None and reading.repaired
        assert reading.value == {"fluency": 4, "coherence": 2}
        assert values_and_statuses(parse_scores(reply, BOTH)) == [
            ("fluency", 4.0, ParseStatus.REPAIRED),
            ("coherence", 2.0, ParseStatus.REPAIRED),
        ]

    def test_a_text_field_in_single_quotes_is_parsed(self) -> None:
        assert find_text_field("{'instruction': 'Rate the summary.',}", "instruction") == (
            "Rate the summary.",
            ParseStatus.REPAIRED,
        )

    def test_feedback_with_a_trailing_comma_is_parsed(self) -> None:
        feedback, status = parse_feedback("{'keep': 'the scale', 'problem': 'vague', 'fix': 'anchors',}")
        assert feedback == {"keep": "the scale", "problem": "vague", "fix": "anchors"}
        assert status is ParseStatus.REPAIRED

    def test_a_reply_past_the_size_limit_is_not_repaired(self) -> None:
        near_json = "{'fluency': 4, 'coherence': 2}"
        assert find_json_object(near_json + " " * (parsing.REPAIR_MAX_CHARS - len(near_json))) is not None
        assert find_json_object(near_json + " " * parsing.REPAIR_MAX_CHARS) is None

    def test_a_reply_with_too_many_openings_is_not_repaired(self) -> None:
        reply = "{'fluency': 4, 'coherence': 2}" + "[" * parsing.REPAIR_MAX_OPENINGS
        assert find_json_object(reply) is None
        assert find_json_object("{'fluency': 4, 'coherence': 2}") is not None
