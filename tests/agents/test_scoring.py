"""The judge's answer schema and log-probability weighting, and the optimizer's reply parsing."""

from __future__ import annotations

import json
import math

import pytest

from judgeopt.agents.judge import logprob_weighted_scores, score_schema
from judgeopt.agents.optimizer import _parse_joint, _parse_single, instruction_schema
from judgeopt.agents.parsing import parse_scores
from judgeopt.agents.raw_reply import TokenLogprob
from judgeopt.agents.types import Criterion, Instruction, JudgePrompt, ParseStatus, Routing, StepTask

FLUENCY = Criterion("fluency")
COHERENCE = Criterion("coherence")
BOTH = (FLUENCY, COHERENCE)
RELEVANCE = Criterion("relevance", min_score=0.0, max_score=1.0, integer_scores=False)

Tops = dict[str, float]
"""Candidate token text -> probability at one position."""


def token(text: str, tops: Tops | None = None) -> TokenLogprob:
    top = () if tops is None else tuple((t, math.log(p)) for t, p in tops.items())
    return TokenLogprob(text, -0.1, top)


def weigh(tokens: list[TokenLogprob], criteria: list[Criterion] | tuple[Criterion, ...]) -> dict[str, float]:
    """The weighting as the judge calls it: with the scores the parser read from the same reply."""
    reply = "".join(t.text for t in tokens)
    sampled = {s.criterion: s.value for s in parse_scores(reply, criteria) if s.value is not None}
    return logprob_weighted_scores(tokens, criteria, sampled)


def answer(fluency_tops: Tops | None, coherence_tops: Tops | None) -> list[TokenLogprob]:
    """``{"fluency": 4, "coherence": 2}`` as a tokenizer splits it, with top logprobs at the two score tokens."""
    return [
        token('{"'),
        token("fluency"),
        token('":'),
        token(" "),
        token("4", fluency_tops),
        token(","),
        token(' "'),
        token("coherence"),
        token('":'),
        token(" "),
        token("2", coherence_tops),
        token("}"),
    ]


def expected_mean(pairs: dict[int, float]) -> float:
    """The probability-weighted mean over (score -> log-probability) pairs, computed independently."""
    weights = {score: math.exp(logprob) for score, logprob in pairs.items()}
    return sum(score * w for score, w in weights.items()) / sum(weights.values())


class TestScoreSchema:
    def test_integer_scale_is_an_enum(self) -> None:
        """An integer 1-5 criterion is an integer property restricted to 1..5."""
        schema = score_schema([FLUENCY])
        assert schema["properties"] == {"fluency": {"type": "integer", "enum": [1, 2, 3, 4, 5]}}

    def test_continuous_scale_has_bounds(self) -> None:
        """A continuous criterion is a number property with its minimum and maximum."""
        schema = score_schema([RELEVANCE])
        assert schema["properties"] == {"relevance": {"type": "number", "minimum": 0.0, "maximum": 1.0}}

    def test_integer_scale_of_100_values_is_still_an_enum(self) -> None:
        """A 1-100 integer scale is spelled out: 100 values is the most an enum holds."""
        schema = score_schema([Criterion("fluency", min_score=1, max_score=100)])
        assert schema["properties"]["fluency"] == {"type": "integer", "enum": list(range(1, 101))}

    @pytest.mark.parametrize(("low", "high"), [(0, 100), (1, 1e12), (-1e300, 1e300)])
    def test_wider_integer_scale_has_bounds_instead_of_an_enum(self, low: float, high: float) -> None:
        """An integer scale of more than 100 values (up to astronomically many) is an integer property with its
        bounds: the schema stays small, and building it takes no time or memory."""
        schema = score_schema([Criterion("fluency", min_score=low, max_score=high)])
        assert schema["properties"]["fluency"] == {"type": "integer", "minimum": int(low), "maximum": int(high)}
        assert len(json.dumps(schema)) < 1_000

    def test_object_requires_every_criterion_and_nothing_else(self) -> None:
        """The answer is an object requiring every criterion, in order, with no additional properties."""
        schema = score_schema([FLUENCY, COHERENCE, RELEVANCE])
        assert schema["type"] == "object"
        assert schema["required"] == ["fluency", "coherence", "relevance"]
        assert list(schema["properties"]) == ["fluency", "coherence", "relevance"]
        assert schema["additionalProperties"] is False


class TestLogprobWeightedScores:
    def test_weighted_means_at_the_score_tokens(self) -> None:
        """Each criterion's value is the probability-weighted mean of the allowed scores at its score token."""
        logprobs = answer({"4": 0.6, "3": 0.3, "5": 0.1}, {"2": 0.5, "1": 0.3, "3": 0.2})
        weighted = weigh(logprobs, BOTH)
        assert weighted.keys() == {"fluency", "coherence"}
        assert weighted["fluency"] == pytest.approx(
            expected_mean({4: math.log(0.6), 3: math.log(0.3), 5: math.log(0.1)})
        )
        assert weighted["coherence"] == pytest.approx(
            expected_mean({2: math.log(0.5), 1: math.log(0.3), 3: math.log(0.2)})
        )
        assert weighted["fluency"] == pytest.approx(3.8)
        assert weighted["coherence"] == pytest.approx(1.9)

    def test_probabilities_are_renormalised_over_allowed_scores(self) -> None:
        """Mass on tokens that are not allowed scores is dropped and the rest renormalised."""
        logprobs = answer({"4": 0.4, "5": 0.2, "7": 0.2, "0": 0.1, "four": 0.05, "": 0.05}, None)
        weighted = weigh(logprobs, BOTH)
        assert weighted["fluency"] == pytest.approx(expected_mean({4: math.log(0.4), 5: math.log(0.2)}))

    def test_score_tokens_with_surrounding_space_count(self) -> None:
        """Top candidates like ' 3' are read as the score 3."""
        logprobs = answer({"4": 0.5, " 3": 0.5}, None)
        assert weigh(logprobs, [FLUENCY])["fluency"] == pytest.approx(3.5)

    def test_candidates_without_text_are_ignored(self) -> None:
        """A top candidate whose text is empty (neither token nor bytes sent) is ignored."""
        logprobs = answer({"4": 0.5, "2": 0.25, "": 0.25}, None)
        assert weigh(logprobs, BOTH)["fluency"] == pytest.approx(expected_mean({4: math.log(0.5), 2: math.log(0.25)}))

    @pytest.mark.parametrize(
        "coherence_tops",
        [None, {}, {"7": 0.5, "x": 0.5}],
        ids=["no-top-logprobs", "empty-top-logprobs", "only-disallowed"],
    )
    def test_criterion_without_usable_top_logprobs_is_absent(self, coherence_tops: Tops | None) -> None:
        """A criterion whose score token has no usable top candidates is left out (the sampled value stays)."""
        weighted = weigh(answer({"4": 1.0}, coherence_tops), BOTH)
        assert weighted == {"fluency": pytest.approx(4.0)}

    def test_continuous_criterion_is_absent(self) -> None:
        """A continuous-scale criterion is never logprob-weighted."""
        logprobs = [
            token('{"'),
            token("fluency"),
            token('":'),
            token(" "),
            token("4", {"4": 0.5, "5": 0.5}),
            token(","),
            token(' "'),
            token("relevance"),
            token('":'),
            token(" "),
            token("0", {"0": 0.5, "1": 0.5}),
            token(".75"),
            token("}"),
        ]
        assert weigh(logprobs, [FLUENCY, RELEVANCE]) == {"fluency": pytest.approx(4.5)}

    def test_criterion_not_asked_is_absent(self) -> None:
        """Only the criteria passed in are weighted, even if the answer holds other keys."""
        weighted = weigh(answer({"4": 1.0}, {"2": 1.0}), [COHERENCE])
        assert weighted == {"coherence": pytest.approx(2.0)}

    def test_quoted_score_value(self) -> None:
        """A score written as a JSON string ("4") is weighted at its digit token."""
        logprobs = [
            token('{"'),
            token("fluency"),
            token('":'),
            token(' "'),
            token("4", {"4": 0.75, "5": 0.25}),
            token('"}'),
        ]
        assert weigh(logprobs, [FLUENCY])["fluency"] == pytest.approx(4.25)

    @pytest.mark.parametrize("high", [10, 1000])
    def test_scale_beyond_single_digits_keeps_the_sampled_score(self, high: int) -> None:
        """On a 1-10 (or wider) scale an alternative "1" may begin "10": such criteria are not weighted."""
        wide = Criterion("fluency", min_score=1, max_score=high)
        assert weigh(answer({"4": 0.5, "6": 0.5}, None), [wide]) == {}

    def test_quoted_json_before_the_answer_is_not_taken_for_it(self) -> None:
        """A JSON object the model quotes before its answer does not give the weighting its position: the score
        token is the one reading as the parsed score, in the answer."""
        logprobs = [
            token('The text says {"fluency": '),
            token("1", {"1": 0.9, "2": 0.1}),
            token("} but "),
            token('{"'),
            token("fluency"),
            token('": '),
            token("4", {"4": 0.5, "3": 0.5}),
            token("}"),
        ]
        assert weigh(logprobs, [FLUENCY]) == {"fluency": pytest.approx(3.5)}

    def test_value_token_merged_with_punctuation_is_found(self) -> None:
        """A score token that also carries the colon and space (``": 4"``) is still the score's token, and its
        alternatives written the same way count."""
        logprobs = [token('{"fluency'), token('": 4', {'": 4': 0.5, '": 2': 0.5}), token("}")]
        assert weigh(logprobs, [FLUENCY]) == {"fluency": pytest.approx(3.0)}

    def test_key_spelled_differently_is_found_like_the_parser_finds_it(self) -> None:
        """``"Fluency"`` is the fluency key, for the weighting as for the parser."""
        found = [token('{"Fluency": '), token("4", {"4": 0.5, "5": 0.5}), token("}")]
        assert weigh(found, [FLUENCY]) == {"fluency": pytest.approx(4.5)}

    def test_token_holding_two_numbers_is_not_a_score_token(self) -> None:
        """A token that holds more than the score (``4, "coherence": 2``) gives neither criterion a weighting."""
        merged = [token('{"fluency": '), token('4, "coherence": 2', {"3": 1.0}), token("}")]
        assert weigh(merged, BOTH) == {}

    def test_empty_logprobs(self) -> None:
        """No tokens give no weighted scores."""
        assert weigh([], BOTH) == {}


def joint_task() -> StepTask:
    prompt = JudgePrompt((Instruction("fluency", "Old fluency."), Instruction("coherence", "Old coherence.")))
    return StepTask(Routing.JOINT, BOTH, prompt)


def single_task() -> StepTask:
    return StepTask(Routing.PER_CRITERION, (FLUENCY,), JudgePrompt((Instruction("fluency", "Old fluency."),)))


def texts(instructions: tuple[Instruction, ...]) -> dict[str, str]:
    return {i.criterion: i.text for i in instructions}


class TestParseJoint:
    def test_nested_instructions_are_ok(self) -> None:
        """{"instructions": {name: text}} replaces every instruction, status OK."""
        text = '{"instructions": {"fluency": "New fluency.", "coherence": "New coherence."}}'
        result = _parse_joint(text, joint_task())
        assert texts(result.instructions) == {"fluency": "New fluency.", "coherence": "New coherence."}
        assert result.status is ParseStatus.OK
        assert result.raw_output == text

    def test_instructions_follow_the_criteria_order(self) -> None:
        """New instructions come back in the task's criteria order."""
        text = '{"instructions": {"coherence": "New coherence.", "fluency": "New fluency."}}'
        result = _parse_joint(text, joint_task())
        assert [i.criterion for i in result.instructions] == ["fluency", "coherence"]

    def test_flat_mapping_is_repaired(self) -> None:
        """A flat {name: text} object without the "instructions" wrapper is accepted as REPAIRED."""
        result = _parse_joint('{"fluency": "New fluency.", "coherence": "New coherence."}', joint_task())
        assert texts(result.instructions) == {"fluency": "New fluency.", "coherence": "New coherence."}
        assert result.status is ParseStatus.REPAIRED

    def test_fenced_reply_is_repaired(self) -> None:
        """A fenced nested answer is accepted as REPAIRED."""
        text = '```json\n{"instructions": {"fluency": "New fluency.", "coherence": "New coherence."}}\n```'
        result = _parse_joint(text, joint_task())
        assert texts(result.instructions) == {"fluency": "New fluency.", "coherence": "New coherence."}
        assert result.status is ParseStatus.REPAIRED

    def test_missing_criterion_keeps_its_old_instruction(self) -> None:
        """A criterion absent from the answer keeps its old instruction and the result is MISSING."""
        result = _parse_joint('{"instructions": {"fluency": "New fluency."}}', joint_task())
        assert texts(result.instructions) == {"fluency": "New fluency.", "coherence": "Old coherence."}
        assert result.status is ParseStatus.MISSING

    def test_blank_instruction_keeps_the_old_one(self) -> None:
        """A blank or non-string new instruction keeps the old one (MISSING)."""
        result = _parse_joint('{"instructions": {"fluency": "  ", "coherence": 3}}', joint_task())
        assert texts(result.instructions) == {"fluency": "Old fluency.", "coherence": "Old coherence."}
        assert result.status is ParseStatus.MISSING

    @pytest.mark.parametrize("text", ["", "lorem ipsum", '{"instructions": {"fluency": "cut'])
    def test_garbage_keeps_all_old_instructions(self, text: str) -> None:
        """An unreadable reply keeps every old instruction and is INVALID."""
        result = _parse_joint(text, joint_task())
        assert texts(result.instructions) == {"fluency": "Old fluency.", "coherence": "Old coherence."}
        assert result.status is ParseStatus.INVALID
        assert result.raw_output == text

    def test_case_differing_key_is_repaired(self) -> None:
        """A criterion key differing only in case is accepted (as REPAIRED), like parse_scores does."""
        text = '{"instructions": {"Fluency": "New fluency.", "Coherence": "New coherence."}}'
        result = _parse_joint(text, joint_task())
        assert texts(result.instructions) == {"fluency": "New fluency.", "coherence": "New coherence."}
        assert result.status is ParseStatus.REPAIRED

    def test_placeholder_echo_keeps_the_old_instruction(self) -> None:
        """An echoed <placeholder> is not accepted as a new instruction."""
        text = '{"instructions": {"fluency": "<its improved instruction>", "coherence": "New coherence."}}'
        result = _parse_joint(text, joint_task())
        assert texts(result.instructions)["fluency"] == "Old fluency."
        assert result.status is not ParseStatus.OK


class TestParseSingle:
    def test_json_reply_is_ok(self) -> None:
        """{"instruction": text} replaces the instruction, status OK."""
        result = _parse_single('{"instruction": "New fluency."}', single_task())
        assert result.instructions == (Instruction("fluency", "New fluency."),)
        assert result.status is ParseStatus.OK

    def test_prose_reply_is_repaired(self) -> None:
        """A plain-text reply becomes the instruction, REPAIRED."""
        result = _parse_single("Rate how naturally the summary reads.", single_task())
        assert result.instructions == (Instruction("fluency", "Rate how naturally the summary reads."),)
        assert result.status is ParseStatus.REPAIRED

    @pytest.mark.parametrize("text", ["<your improved instruction>", '{"instruction": "<the improved instruction>"}'])
    def test_placeholder_keeps_the_old_instruction(self, text: str) -> None:
        """An echoed placeholder keeps the old instruction and is INVALID."""
        result = _parse_single(text, single_task())
        assert result.instructions == (Instruction("fluency", "Old fluency."),)
        assert result.status is ParseStatus.INVALID

    @pytest.mark.parametrize(("text", "status"), [("", ParseStatus.INVALID), ('{"other": 1}', ParseStatus.MISSING)])
    def test_unusable_reply_keeps_the_old_instruction(self, text: str, status: ParseStatus) -> None:
        """An empty reply or JSON without the field keeps the old instruction."""
        result = _parse_single(text, single_task())
        assert result.instructions == (Instruction("fluency", "Old fluency."),)
        assert result.status is status


class TestInstructionSchema:
    def test_per_criterion_shape(self) -> None:
        """Per-criterion: an object with one required non-empty string "instruction"."""
        assert instruction_schema((FLUENCY,), Routing.PER_CRITERION) == {
            "type": "object",
            "properties": {"instruction": {"type": "string", "minLength": 1}},
            "required": ["instruction"],
        }

    def test_joint_shape(self) -> None:
        """Joint: "instructions" maps every criterion name to a required non-empty string."""
        text = {"type": "string", "minLength": 1}
        assert instruction_schema(BOTH, Routing.JOINT) == {
            "type": "object",
            "properties": {
                "instructions": {
                    "type": "object",
                    "properties": {"fluency": text, "coherence": text},
                    "required": ["fluency", "coherence"],
                }
            },
            "required": ["instructions"],
        }
