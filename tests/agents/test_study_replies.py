"""Reading the replies of the study protocol's calls (``docs/study-protocol.md`` G4, O2, O3, O5): plain-text
gradients and per-criterion instructions, and criteria left out instead of kept when an answer is missing."""

from __future__ import annotations

import json

import pytest
from helpers.runners import ScriptedRunner

from judgeopt.agents.gradient import parse_paragraphs
from judgeopt.agents.optimizer import OptimizerAgent
from judgeopt.agents.types import (
    Criterion,
    Instruction,
    JudgePrompt,
    ParseStatus,
    PromptProtocol,
    Routing,
    StepTask,
)

BOTH = (Criterion("fluency"), Criterion("coherence"))
PROMPT = JudgePrompt((Instruction("fluency", "Rate from 1 to 5."), Instruction("coherence", "Rate from 1 to 5.")))


async def step(reply: str, routing: Routing, protocol: PromptProtocol = "study") -> tuple[dict[str, str], int]:
    criteria = BOTH if routing is Routing.JOINT else BOTH[:1]
    task = StepTask(routing, criteria, PROMPT.restricted_to([c.name for c in criteria]), protocol=protocol)
    result, _ = await OptimizerAgent(ScriptedRunner(reply).as_model_runner()).step(task)
    return {i.criterion: i.text for i in result.instructions}, result.status


class TestGradientParagraphs:
    def test_three_paragraphs_are_keep_problem_fix(self) -> None:
        parts, status = parse_paragraphs("A\n\nB\n\nC")
        assert (parts, status) == ({"keep": "A", "problem": "B", "fix": "C"}, ParseStatus.OK)

    @pytest.mark.parametrize("text", ["only one", "A\n\nB", "A\n\nB\n\nC\n\nD"])
    def test_any_other_shape_is_kept_whole_as_the_problem(self, text: str) -> None:
        parts, status = parse_paragraphs(text)
        assert (parts, status) == ({"problem": text}, ParseStatus.REPAIRED)

    def test_an_empty_reply_is_invalid(self) -> None:
        assert parse_paragraphs("  \n\n ") == ({}, ParseStatus.INVALID)


class TestOptimizerReplies:
    async def test_plain_text_is_the_new_instruction(self) -> None:
        assert await step("Rate fluency by counting errors.", Routing.PER_CRITERION) == (
            {"fluency": "Rate fluency by counting errors."},
            ParseStatus.OK,
        )

    async def test_an_empty_per_criterion_answer_yields_no_instruction(self) -> None:
        instructions, status = await step('""', Routing.PER_CRITERION)
        assert instructions == {} and status == ParseStatus.INVALID

    async def test_a_criterion_left_out_of_a_joint_answer_is_left_out(self) -> None:
        reply = json.dumps({"instructions": {"coherence": "Check the order of ideas."}})
        instructions, status = await step(reply, Routing.JOINT)
        assert instructions == {"coherence": "Check the order of ideas."}
        assert status == ParseStatus.MISSING

    async def test_judgeopt_keeps_the_previous_instruction_instead(self) -> None:
        reply = json.dumps({"instructions": {"coherence": "Check the order of ideas."}})
        instructions, _ = await step(reply, Routing.JOINT, protocol="judgeopt")
        assert instructions == {"coherence": "Check the order of ideas.", "fluency": "Rate from 1 to 5."}
