"""Request validation and small value semantics of the domain types (``agents/types.py``)."""

from __future__ import annotations

import math

import pytest

from judgeopt.agents.errors import InvalidRequestError
from judgeopt.agents.evaluator import SpecificityTask
from judgeopt.agents.types import (
    Criterion,
    CriterionEvidence,
    CriterionScore,
    CritiqueTask,
    Gradient,
    GradientTask,
    Instruction,
    JudgePrompt,
    ParseStatus,
    Prediction,
    Routing,
    Sample,
    ScoreTask,
    StepTask,
    Usage,
    focus_criteria,
)

FLUENCY = Criterion("fluency")
COHERENCE = Criterion("coherence")
BOTH = (FLUENCY, COHERENCE)
PROMPT = JudgePrompt((Instruction("fluency", "Rate fluency."), Instruction("coherence", "Rate coherence.")))
SAMPLE = Sample("s1", (("source", "The source text."), ("summary", "A summary.")))


def gradient(*criteria: str) -> Gradient:
    return Gradient(criteria, "s1", keep="k", problem="p", fix="f", status=ParseStatus.OK)


class TestCriterion:
    def test_valid_criterion_constructs(self) -> None:
        """A named criterion with an increasing finite range constructs."""
        criterion = Criterion("fluency", "How well it reads", 1.0, 5.0)
        assert criterion.name == "fluency"

    @pytest.mark.parametrize(("low", "high"), [(5.0, 1.0), (3.0, 3.0)])
    def test_inverted_or_empty_range_is_refused(self, low: float, high: float) -> None:
        """A range whose minimum is not below its maximum is refused, naming the criterion and range."""
        with pytest.raises(InvalidRequestError, match=r"'fluency'.*inverted or empty"):
            Criterion("fluency", min_score=low, max_score=high)

    @pytest.mark.parametrize("name", ["", "   "])
    def test_empty_name_is_refused(self, name: str) -> None:
        """A criterion with a blank name is refused."""
        with pytest.raises(InvalidRequestError, match="criterion name is empty"):
            Criterion(name)

    @pytest.mark.parametrize(("low", "high"), [(math.nan, 5.0), (1.0, math.inf), (-math.inf, 5.0), (1.0, math.nan)])
    def test_non_finite_range_is_refused(self, low: float, high: float) -> None:
        """A range with NaN or an infinity is refused."""
        with pytest.raises(InvalidRequestError, match=r"'fluency'.*must be finite"):
            Criterion("fluency", min_score=low, max_score=high)

    def test_allowed_scores_of_integer_scale(self) -> None:
        """An integer 1-5 scale allows exactly 1..5."""
        assert Criterion("fluency").allowed_scores == (1, 2, 3, 4, 5)

    def test_allowed_scores_of_continuous_scale(self) -> None:
        """A continuous 0-1 scale has no enumerated scores."""
        assert Criterion("fluency", min_score=0.0, max_score=1.0, integer_scores=False).allowed_scores == ()

    def test_allowed_scores_of_integer_scale_with_fractional_bounds(self) -> None:
        """Fractional bounds on an integer scale allow only the integers inside them."""
        assert Criterion("fluency", min_score=0.5, max_score=3.5).allowed_scores == (1, 2, 3)

    def test_integer_scale_without_an_integer_is_refused(self) -> None:
        """An integer scale between two fractions with no integer between them could never be answered."""
        with pytest.raises(InvalidRequestError, match=r"'fluency'.*no integer between 0.2 and 0.8"):
            Criterion("fluency", min_score=0.2, max_score=0.8)

    def test_wide_integer_scale_is_not_enumerated(self) -> None:
        """An integer scale of more than 100 values is given by its bounds: no tuple of a trillion scores."""
        wide = Criterion("fluency", min_score=1, max_score=1e12)
        assert wide.allowed_scores == ()
        assert wide.allows(7) and wide.allows(1e12) and not wide.allows(7.5) and not wide.allows(0)

    def test_contains_is_inclusive(self) -> None:
        """The bounds belong to the range; values outside do not."""
        assert FLUENCY.contains(1.0)
        assert FLUENCY.contains(5.0)
        assert not FLUENCY.contains(0.99)
        assert not FLUENCY.contains(5.01)


class TestSample:
    def test_valid_sample_constructs(self) -> None:
        """A sample with distinct field names constructs and keeps the field order."""
        assert [name for name, _ in SAMPLE.fields] == ["source", "summary"]

    def test_sample_without_fields_is_refused(self) -> None:
        """A sample without text fields is refused, naming the sample."""
        with pytest.raises(InvalidRequestError, match=r"'s1' has no text fields"):
            Sample("s1", ())

    def test_duplicate_field_names_are_refused(self) -> None:
        """A sample repeating a field name is refused, naming the sample and the fields."""
        with pytest.raises(InvalidRequestError, match=r"'s1' repeats a field name.*source"):
            Sample("s1", (("source", "a"), ("source", "b")))


class TestScoreTask:
    def test_valid_joint_task_constructs(self) -> None:
        """A joint score task with an instruction per criterion constructs."""
        task = ScoreTask(Routing.JOINT, BOTH, PROMPT, SAMPLE)
        assert task.criteria == BOTH

    def test_per_criterion_task_may_cover_several_criteria(self) -> None:
        """Per-criterion scoring fans out, so it may cover two criteria."""
        task = ScoreTask(Routing.PER_CRITERION, BOTH, PROMPT, SAMPLE)
        assert len(task.criteria) == 2

    def test_instruction_for_unknown_criterion_is_refused(self) -> None:
        """An instruction for a criterion the request does not define is refused, naming it."""
        prompt = JudgePrompt((*PROMPT.instructions, Instruction("relevance", "Rate relevance.")))
        with pytest.raises(InvalidRequestError, match=r"score: instruction for criterion not defined.*'relevance'"):
            ScoreTask(Routing.JOINT, BOTH, prompt, SAMPLE)

    @pytest.mark.parametrize("text", ["", "  \n"])
    def test_empty_instruction_text_is_refused(self, text: str) -> None:
        """A blank instruction is refused, naming its criterion."""
        prompt = JudgePrompt((Instruction("fluency", text), Instruction("coherence", "Rate coherence.")))
        with pytest.raises(InvalidRequestError, match=r"score: instruction for 'fluency' is empty"):
            ScoreTask(Routing.JOINT, BOTH, prompt, SAMPLE)

    def test_criterion_without_instruction_is_refused(self) -> None:
        """A criterion with no instruction is refused, naming it."""
        prompt = JudgePrompt((Instruction("fluency", "Rate fluency."),))
        with pytest.raises(InvalidRequestError, match=r"score: no instruction for criteria \['coherence'\]"):
            ScoreTask(Routing.JOINT, BOTH, prompt, SAMPLE)

    def test_64_criteria_are_accepted(self) -> None:
        """64 criteria in one request is the most a request may carry."""
        criteria = tuple(Criterion(f"c{i}") for i in range(64))
        prompt = JudgePrompt(tuple(Instruction(c.name, "Rate it.") for c in criteria))
        assert len(ScoreTask(Routing.JOINT, criteria, prompt, SAMPLE).criteria) == 64

    def test_more_than_64_criteria_are_refused(self) -> None:
        """A request with 65 criteria is refused with a message giving the count and the limit, for every kind of
        request (each would put them all into one prompt)."""
        criteria = tuple(Criterion(f"c{i}") for i in range(65))
        prompt = JudgePrompt(tuple(Instruction(c.name, "Rate it.") for c in criteria))
        limit = r"65 criteria in one request; at most 64 are allowed"
        with pytest.raises(InvalidRequestError, match=rf"score: {limit}"):
            ScoreTask(Routing.JOINT, criteria, prompt, SAMPLE)
        with pytest.raises(InvalidRequestError, match=rf"critique: {limit}"):
            CritiqueTask(Routing.JOINT, criteria, "s1", ())
        with pytest.raises(InvalidRequestError, match=rf"gradient: {limit}"):
            GradientTask(Routing.JOINT, criteria, "s1", ())
        with pytest.raises(InvalidRequestError, match=rf"step: {limit}"):
            StepTask(Routing.JOINT, criteria, prompt)
        with pytest.raises(InvalidRequestError, match=rf"specificity: {limit}"):
            SpecificityTask(criteria[0], criteria[1:], (gradient("c0"),))

    def test_no_criteria_is_refused(self) -> None:
        """A score task without criteria is refused."""
        with pytest.raises(InvalidRequestError, match="score: no criteria given"):
            ScoreTask(Routing.JOINT, (), JudgePrompt(()), SAMPLE)

    def test_repeated_criterion_is_refused(self) -> None:
        """Two criteria with the same name are refused."""
        with pytest.raises(InvalidRequestError, match="score: criteria repeat a name"):
            ScoreTask(Routing.JOINT, (FLUENCY, Criterion("fluency")), PROMPT.restricted_to(["fluency"]), SAMPLE)


class TestPerCriterionRouting:
    def test_per_criterion_call_is_about_its_first_criterion(self) -> None:
        """Per-criterion routing focuses on the first criterion; further criteria are shared context."""
        assert focus_criteria(Routing.PER_CRITERION, BOTH) == (BOTH[0].name,)
        assert focus_criteria(Routing.JOINT, BOTH) == tuple(c.name for c in BOTH)

    def test_per_criterion_tasks_accept_context_criteria(self) -> None:
        """A per-criterion task may carry other criteria as context (a policy with a wider scope): it keeps them
        all, and is about its first criterion only."""
        tasks = (
            CritiqueTask(Routing.PER_CRITERION, BOTH, "s1", ()),
            GradientTask(Routing.PER_CRITERION, BOTH, "s1", ()),
            StepTask(Routing.PER_CRITERION, BOTH, PROMPT),
        )
        for task in tasks:
            assert task.criteria == BOTH
            assert focus_criteria(task.routing, task.criteria) == ("fluency",)

    def test_per_criterion_tasks_with_one_criterion_construct(self) -> None:
        """Per-criterion critique, gradient and step tasks with one criterion construct and keep what they were
        given: the evidence, the prompt and the gradients."""
        evidence = (CriterionEvidence("fluency", prediction=4.0, ground_truth=2.0),)
        one = PROMPT.restricted_to(["fluency"])
        critique = CritiqueTask(Routing.PER_CRITERION, (FLUENCY,), "s1", evidence)
        assert (critique.criteria, critique.evidence, critique.sample, critique.judge_output) == (
            (FLUENCY,),
            evidence,
            None,
            None,
        )
        gradient_task = GradientTask(Routing.PER_CRITERION, (FLUENCY,), "s1", evidence, prompt=one)
        assert gradient_task.evidence == evidence and gradient_task.prompt == one
        assert gradient_task.prompt.instruction_for("fluency") == "Rate fluency."
        step = StepTask(Routing.PER_CRITERION, (FLUENCY,), one, (gradient("fluency"),))
        assert [g.criteria for g in step.gradients] == [("fluency",)]
        assert focus_criteria(step.routing, step.criteria) == ("fluency",)


class TestEvidenceAndGradients:
    def test_critique_evidence_for_unknown_criterion_is_refused(self) -> None:
        """Critique evidence about a criterion not in the request is refused, naming it."""
        with pytest.raises(InvalidRequestError, match=r"critique: evidence for criterion not defined.*'relevance'"):
            CritiqueTask(Routing.JOINT, BOTH, "s1", (CriterionEvidence("relevance", prediction=3.0),))

    def test_gradient_evidence_for_unknown_criterion_is_refused(self) -> None:
        """Gradient evidence about a criterion not in the request is refused, naming it."""
        with pytest.raises(InvalidRequestError, match=r"gradient: evidence for criterion not defined.*'relevance'"):
            GradientTask(Routing.JOINT, BOTH, "s1", (CriterionEvidence("relevance"),))

    def test_gradient_prompt_with_empty_instruction_is_refused(self) -> None:
        """A gradient task whose prompt has a blank instruction is refused."""
        prompt = JudgePrompt((Instruction("fluency", " "), Instruction("coherence", "Rate coherence.")))
        with pytest.raises(InvalidRequestError, match=r"gradient: instruction for 'fluency' is empty"):
            GradientTask(Routing.JOINT, BOTH, "s1", (), prompt=prompt)

    def test_step_gradient_for_unknown_criterion_is_refused(self) -> None:
        """A step task carrying a gradient about an undefined criterion is refused, naming it."""
        with pytest.raises(InvalidRequestError, match=r"step: gradient for criterion not defined.*'relevance'"):
            StepTask(Routing.JOINT, BOTH, PROMPT, (gradient("fluency", "relevance"),))

    def test_step_without_instruction_to_rewrite_is_refused(self) -> None:
        """A step task for a criterion without an instruction is refused, naming it."""
        prompt = PROMPT.restricted_to(["fluency"])
        with pytest.raises(InvalidRequestError, match=r"step: no instruction to rewrite.*'coherence'"):
            StepTask(Routing.JOINT, BOTH, prompt)

    def test_valid_joint_tasks_construct(self) -> None:
        """Joint critique, gradient and step tasks with known criteria construct."""
        evidence = tuple(CriterionEvidence(c.name, prediction=3.0, ground_truth=4.0, verdict="low") for c in BOTH)
        CritiqueTask(Routing.JOINT, BOTH, "s1", evidence, sample=SAMPLE, judge_output="{}")
        GradientTask(Routing.JOINT, BOTH, "s1", evidence, prompt=PROMPT, sample=SAMPLE)
        step = StepTask(Routing.JOINT, BOTH, PROMPT, (gradient("fluency", "coherence"), gradient("coherence")))
        assert len(step.gradients) == 2


class TestPrediction:
    def test_status_is_the_worst(self) -> None:
        """A prediction's status is the worst status over its scores."""
        scores = (
            CriterionScore("a", 4.0, ParseStatus.OK),
            CriterionScore("b", None, ParseStatus.MISSING),
            CriterionScore("c", 3.0, ParseStatus.REPAIRED),
        )
        assert Prediction("s1", scores, "").status is ParseStatus.MISSING

    def test_all_ok_is_ok(self) -> None:
        """A prediction whose scores are all OK is OK."""
        scores = (CriterionScore("a", 4.0, ParseStatus.OK), CriterionScore("b", 2.0, ParseStatus.OK))
        assert Prediction("s1", scores, "").status is ParseStatus.OK

    def test_no_scores_is_invalid(self) -> None:
        """A prediction without scores is INVALID."""
        assert Prediction("s1", (), "").status is ParseStatus.INVALID

    def test_usable_statuses(self) -> None:
        """Only OK and REPAIRED are usable."""
        assert {s for s in ParseStatus if s.usable} == {ParseStatus.OK, ParseStatus.REPAIRED}


class TestJudgePrompt:
    def test_restricted_to_keeps_only_the_named_criteria(self) -> None:
        """restricted_to keeps the named criteria's instructions, in order, and the rest of the prompt."""
        prompt = JudgePrompt(
            (Instruction("a", "A."), Instruction("b", "B."), Instruction("c", "C.")),
            task_description="Judge it.",
            omit_output_format=True,
        )
        restricted = prompt.restricted_to(["c", "a"])
        assert restricted.instructions == (Instruction("a", "A."), Instruction("c", "C."))
        assert restricted.task_description == "Judge it."
        assert restricted.omit_output_format is True
        assert restricted.instruction_for("b") is None

    def test_restricted_to_unknown_name_is_empty(self) -> None:
        """Restricting to names without instructions leaves no instructions."""
        assert PROMPT.restricted_to(["relevance"]).instructions == ()

    def test_instruction_for(self) -> None:
        """instruction_for gives a criterion's text, or None when it has none."""
        assert PROMPT.instruction_for("coherence") == "Rate coherence."
        assert PROMPT.instruction_for("relevance") is None


class TestUsage:
    def test_add_sums_counts_and_time(self) -> None:
        """Adding usages sums tokens, calls and time, and keeps the first non-empty model name."""
        total = Usage(10, 2, 1, 0.5, "") + Usage(20, 3, 1, 0.25, "m1") + Usage(1, 1, 1, 0.25, "m2")
        assert total == Usage(31, 6, 3, 1.0, "m1")

    def test_zero_usage_is_neutral(self) -> None:
        """Usage() is a neutral start for sum()."""
        parts = [Usage(5, 1, 1, 0.1, "m"), Usage(7, 2, 1, 0.2, "m")]
        total = sum(parts, Usage())
        assert (total.prompt_tokens, total.completion_tokens, total.llm_calls, total.model) == (12, 3, 2, "m")
        assert total.model_seconds == pytest.approx(0.3)
