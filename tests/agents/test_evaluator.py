"""The evaluator's prompts and replies: a specificity prompt never says which criteria a gradient was written for,
and under the study's protocol it is the study's rubric (criteria named, never defined; a bare integer answer)."""

from __future__ import annotations

import pytest
from helpers.runners import ScriptedRunner

from judgeopt.agents.evaluator import AdherenceTask, EvaluatorAgent, SpecificityTask, read_study_rating
from judgeopt.agents.types import Criterion, Gradient, ParseStatus, PromptProtocol

CRITERIA = (
    Criterion("coherence", "The summary reads as an organized whole."),
    Criterion("consistency", "The summary states only facts the source supports."),
    Criterion("fluency", "How naturally the text reads."),
    Criterion("relevance", "The summary keeps the source's important content."),
)
FLUENCY, OTHERS = CRITERIA[2], (CRITERIA[0], CRITERIA[1], CRITERIA[3])
TEXT = ("Keep the 1-5 scale.", "The instruction never says what a low score means.", "Describe each anchor.")
PROTOCOLS: tuple[PromptProtocol, ...] = ("judgeopt", "study")


def gradient(*criteria: str) -> Gradient:
    return Gradient(criteria, "s1", *TEXT, ParseStatus.OK)


async def specificity_prompt(protocol: PromptProtocol, written_for: tuple[str, ...], reply: str = "8") -> str:
    runner = ScriptedRunner(reply)
    agent = EvaluatorAgent(runner.as_model_runner())
    await agent.specificity(SpecificityTask(FLUENCY, OTHERS, (gradient(*written_for),) * 3, protocol=protocol))
    return runner.users[0]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_specificity_prompt_does_not_tell_a_joint_gradient(protocol: PromptProtocol) -> None:
    """The same feedback text gives the same prompt whether it was written for fluency alone or for all four
    criteria: the evaluator must judge from the text what the feedback is about."""
    joint = await specificity_prompt(protocol, tuple(c.name for c in CRITERIA))
    alone = await specificity_prompt(protocol, ("fluency",))
    assert joint == alone
    assert all(part in joint for part in TEXT)


async def test_study_specificity_is_the_study_rubric() -> None:
    """Under the study's protocol: the target task named, the four possible tasks listed, no definition, the
    gradients as plain paragraphs (no tags), an integer from 1 to 10 asked for."""
    prompt = await specificity_prompt("study", tuple(c.name for c in CRITERIA))
    assert "Target task: fluency" in prompt
    listed = prompt.split("Possible tasks:", 1)[1].splitlines()[0]
    assert sorted(n.strip() for n in listed.split(",")) == [c.name for c in CRITERIA]
    assert not any(c.description in prompt for c in CRITERIA)
    assert "<feedback" not in prompt and prompt.count(TEXT[1]) == 3
    assert "1 to 10" in prompt


async def test_judgeopt_specificity_keeps_the_definitions() -> None:
    """judgeopt's own rubric defines the target criterion (a run without definitions sends none to show)."""
    assert FLUENCY.description in await specificity_prompt("judgeopt", ("fluency",))


@pytest.mark.parametrize(
    ("reply", "score"),
    [("7", 7.0), ("10", 10.0), ("Score: 9.", 9.0), ('{"score": 3}', 3.0), ("8/10", 8.0), ("1", 1.0)],
)
def test_study_rating_reads_the_first_integer(reply: str, score: float) -> None:
    rating = read_study_rating(reply)
    assert (rating.score, rating.status) == (score, ParseStatus.OK)


@pytest.mark.parametrize("reply", ["", "0", "11", "100", "focused", "-"])
def test_study_rating_outside_1_to_10_is_no_rating(reply: str) -> None:
    """The study's reading: anything but a first integer in 1..10 is no rating (left out of the means)."""
    rating = read_study_rating(reply)
    assert (rating.score, rating.status) == (None, ParseStatus.INVALID)


async def test_study_adherence_reads_a_bare_integer() -> None:
    """Under the study's protocol the adherence rubric names the task, shows old and new instructions and the
    gradient, and its bare-integer answer is the rating."""
    runner = ScriptedRunner("6")
    task = AdherenceTask(FLUENCY, "Rate from 1 to 5.", "Rate grammar and flow.", (gradient("fluency"),), "study")
    rating, _ = await EvaluatorAgent(runner.as_model_runner()).adherence(task)
    assert rating.score == 6.0 and rating.status == ParseStatus.OK
    prompt = runner.users[0]
    assert "Target task: fluency" in prompt and FLUENCY.description not in prompt
    assert prompt.index("Rate from 1 to 5.") < prompt.index("Rate grammar and flow.") < prompt.index(TEXT[1])
