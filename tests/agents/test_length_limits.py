"""Length-aware instruction synthesis in the optimizer agent: the limit is stated in the request only when set, an
over-long instruction is asked for again once, then rejected (the previous one kept), never cut."""

from __future__ import annotations

import json

import pytest
from helpers.runners import ScriptedRunner

from judgeopt.agents.optimizer import OptimizerAgent
from judgeopt.agents.types import (
    Criterion,
    Instruction,
    JudgePrompt,
    ParseStatus,
    PromptProtocol,
    Routing,
    StepTask,
    Usage,
)
from judgeopt.core.tokens import approx_tokens

FLUENCY = Criterion("fluency", "How naturally the text reads.")
COHERENCE = Criterion("coherence", "How well the ideas hang together.")
PROMPT = JudgePrompt((Instruction("fluency", "Old fluency."), Instruction("coherence", "Old coherence.")))
SHORT = "Penalise awkward phrasing."
LONG = " ".join(["Penalise awkward phrasing"] * 20) + "."
LIMIT = 10


def reply(routing: Routing, protocol: PromptProtocol, texts: dict[str, str]) -> str:
    if routing is Routing.JOINT:
        return json.dumps({"instructions": texts})
    (text,) = texts.values()
    return text if protocol == "study" else json.dumps({"instruction": text})


def task(routing: Routing, protocol: PromptProtocol, limits: dict[str, int]) -> StepTask:
    criteria = (FLUENCY, COHERENCE) if routing is Routing.JOINT else (FLUENCY,)
    prompt = PROMPT.restricted_to([c.name for c in criteria])
    return StepTask(routing, criteria, prompt, protocol=protocol, max_tokens=limits)


async def step(runner: ScriptedRunner, step_task: StepTask) -> tuple[dict[str, str], tuple[str, ...], Usage]:
    result, usage = await OptimizerAgent(runner.as_model_runner()).step(step_task)
    return {i.criterion: i.text for i in result.instructions}, result.length_rejected, usage


CASES = [(r, p) for r in (Routing.PER_CRITERION, Routing.JOINT) for p in ("judgeopt", "study")]


@pytest.mark.parametrize(("routing", "protocol"), CASES)
async def test_too_long_twice_is_rejected_not_cut(routing: Routing, protocol: PromptProtocol) -> None:
    assert approx_tokens(LONG) > LIMIT >= approx_tokens(SHORT)
    texts = {"fluency": LONG, "coherence": SHORT} if routing is Routing.JOINT else {"fluency": LONG}
    runner = ScriptedRunner([reply(routing, protocol, texts)] * 2)
    instructions, rejected, usage = await step(runner, task(routing, protocol, {"fluency": LIMIT, "coherence": LIMIT}))
    assert len(runner.users) == 2 and usage.llm_calls == 2
    overshoot = approx_tokens(LONG) - LIMIT
    assert "too long" in runner.users[1] and str(overshoot) in runner.users[1]
    assert runner.users[1].startswith(runner.users[0])
    assert rejected == ("fluency",)
    assert instructions["fluency"] == "Old fluency."  # the previous instruction, not a cut of the long one
    if routing is Routing.JOINT:
        assert instructions["coherence"] == SHORT  # a criterion within its limit keeps its update


@pytest.mark.parametrize(("routing", "protocol"), CASES)
async def test_second_answer_within_limit_is_applied(routing: Routing, protocol: PromptProtocol) -> None:
    names = ["fluency", "coherence"] if routing is Routing.JOINT else ["fluency"]
    runner = ScriptedRunner([reply(routing, protocol, dict.fromkeys(names, t)) for t in (LONG, SHORT)])
    instructions, rejected, _ = await step(runner, task(routing, protocol, dict.fromkeys(names, LIMIT)))
    assert len(runner.users) == 2 and rejected == ()
    assert instructions == dict.fromkeys(names, SHORT)


@pytest.mark.parametrize(("routing", "protocol"), CASES)
async def test_within_limit_is_applied_with_one_call(routing: Routing, protocol: PromptProtocol) -> None:
    names = ["fluency", "coherence"] if routing is Routing.JOINT else ["fluency"]
    runner = ScriptedRunner([reply(routing, protocol, dict.fromkeys(names, SHORT))])
    instructions, rejected, usage = await step(runner, task(routing, protocol, dict.fromkeys(names, LIMIT)))
    assert len(runner.users) == 1 and usage.llm_calls == 1 and rejected == ()
    assert instructions == dict.fromkeys(names, SHORT)


@pytest.mark.parametrize(("routing", "protocol"), CASES)
async def test_limit_stated_only_when_set(routing: Routing, protocol: PromptProtocol) -> None:
    names = ["fluency", "coherence"] if routing is Routing.JOINT else ["fluency"]
    unlimited, limited = (ScriptedRunner([reply(routing, protocol, dict.fromkeys(names, LONG))]) for _ in range(2))
    instructions, rejected, _ = await step(unlimited, task(routing, protocol, {}))
    await step(limited, task(routing, protocol, {"fluency": 99}))
    assert "length limit" not in unlimited.users[0] and instructions["fluency"] == LONG and rejected == ()
    assert "length limit" in limited.users[0] and '"fluency": at most 99' in limited.users[0]


async def test_unusable_second_answer_rejects_the_long_one() -> None:
    runner = ScriptedRunner([json.dumps({"instruction": LONG}), ""])
    result, _ = await OptimizerAgent(runner.as_model_runner()).step(
        task(Routing.PER_CRITERION, "judgeopt", {"fluency": LIMIT})
    )
    assert result.length_rejected == ("fluency",) and result.status is ParseStatus.OK
    assert result.instructions == (Instruction("fluency", "Old fluency."),)
