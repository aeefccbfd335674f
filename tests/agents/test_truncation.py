"""A reply that stopped at the output cap is never used, in every role, per criterion and jointly alike.

Each reply below would parse cleanly if it had ended normally (checked first, so the test tells the two apart);
ending with finish_reason "length" it yields a TRUNCATED status and nothing taken from it."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from helpers.runners import ScriptedRunner

from judgeopt.agents.evaluator import AdherenceTask, EvaluatorAgent
from judgeopt.agents.gradient import GradientAgent
from judgeopt.agents.judge import JudgeAgent
from judgeopt.agents.loss import LossAgent
from judgeopt.agents.model_client import CUT_OFF, ModelRunner
from judgeopt.agents.optimizer import OptimizerAgent
from judgeopt.agents.types import (
    Criterion,
    CriterionEvidence,
    CritiqueTask,
    Gradient,
    GradientTask,
    Instruction,
    JudgePrompt,
    ParseStatus,
    PromptProtocol,
    Routing,
    Sample,
    ScoreTask,
    StepTask,
)

BOTH = (Criterion("fluency"), Criterion("coherence"))
OLD = "Rate from 1 to 5."
PROMPT = JudgePrompt((Instruction("fluency", OLD), Instruction("coherence", OLD)))
SAMPLE = Sample("s1", (("article", "A text."), ("summary", "A summary.")))
GRADIENT = Gradient(("fluency",), "s1", "keep", "problem", "fix", ParseStatus.OK)


def runner(reply: str, finish_reason: str) -> ModelRunner:
    return ScriptedRunner(reply, finish_reason).as_model_runner()


def criteria_for(routing: Routing) -> tuple[Criterion, ...]:
    return BOTH if routing is Routing.JOINT else BOTH[:1]


async def judge(reply: str, end: str, routing: Routing, protocol: PromptProtocol) -> tuple[Any, ParseStatus]:
    task = ScoreTask(routing, BOTH, PROMPT, SAMPLE, protocol=protocol)
    prediction, _ = await JudgeAgent(runner(reply, end)).score(task)
    return {s.criterion: s.value for s in prediction.scores if s.value is not None}, prediction.status


async def loss(reply: str, end: str, routing: Routing, protocol: PromptProtocol) -> tuple[Any, ParseStatus]:
    evidence = tuple(CriterionEvidence(c.name, prediction=4.0, ground_truth=3.0) for c in BOTH)
    task = CritiqueTask(routing, criteria_for(routing), "s1", evidence[: len(criteria_for(routing))], protocol=protocol)
    critique, _ = await LossAgent(runner(reply, end)).critique(task)
    return critique.text, critique.status


async def gradient(reply: str, end: str, routing: Routing, protocol: PromptProtocol) -> tuple[Any, ParseStatus]:
    criteria = criteria_for(routing)
    evidence = tuple(CriterionEvidence(c.name, critique="Too high.") for c in criteria)
    prompt = PROMPT.restricted_to([c.name for c in criteria])
    task = GradientTask(routing, criteria, "s1", evidence, prompt=prompt, protocol=protocol)
    result, _ = await GradientAgent(runner(reply, end)).compute(task)
    return (result.keep, result.problem, result.fix), result.status


async def optimizer(reply: str, end: str, routing: Routing, protocol: PromptProtocol) -> tuple[Any, ParseStatus]:
    criteria = criteria_for(routing)
    task = StepTask(routing, criteria, PROMPT.restricted_to([c.name for c in criteria]), protocol=protocol)
    result, _ = await OptimizerAgent(runner(reply, end)).step(task)
    return {i.criterion: i.text for i in result.instructions}, result.status


async def evaluator(reply: str, end: str, routing: Routing, protocol: PromptProtocol) -> tuple[Any, ParseStatus]:
    del routing, protocol  # the evaluator has one form
    task = AdherenceTask(BOTH[0], OLD, "Count the errors.", (GRADIENT,))
    rating, _ = await EvaluatorAgent(runner(reply, end)).adherence(task)
    return rating.score, rating.status


Role = Callable[[str, str, Routing, PromptProtocol], Awaitable[tuple[Any, ParseStatus]]]
NEW = "Count the grammatical errors; 5 means none."
JOINT_ANSWER = json.dumps({"instructions": {"fluency": NEW, "coherence": NEW}})
CASES: list[tuple[str, Role, Routing, PromptProtocol, str, Any]] = [
    # role, call, routing, protocol, a reply that parses when it ends normally, what is left of it when cut off
    ("judge", judge, Routing.JOINT, "judgeopt", '{"fluency": 4, "coherence": 3}', {}),
    ("judge", judge, Routing.PER_CRITERION, "study", '{"fluency": 4, "coherence": 3}', {}),
    ("loss", loss, Routing.PER_CRITERION, "judgeopt", "One point too high.", ""),
    ("loss", loss, Routing.JOINT, "study", "One point too high.", ""),
    ("gradient", gradient, Routing.PER_CRITERION, "study", "Keep.\n\nProblem.\n\nFix.", ("", "", "")),
    ("gradient", gradient, Routing.JOINT, "judgeopt", json.dumps({"keep": "k", "problem": "p", "fix": "f"}), ("",) * 3),
    ("optimizer", optimizer, Routing.PER_CRITERION, "judgeopt", json.dumps({"instruction": NEW}), {"fluency": OLD}),
    ("optimizer", optimizer, Routing.JOINT, "judgeopt", JOINT_ANSWER, {"fluency": OLD, "coherence": OLD}),
    ("optimizer", optimizer, Routing.PER_CRITERION, "study", NEW, {}),
    ("optimizer", optimizer, Routing.JOINT, "study", JOINT_ANSWER, {}),
    ("evaluator", evaluator, Routing.JOINT, "judgeopt", json.dumps({"score": 8, "rationale": "ok"}), None),
]


@pytest.mark.parametrize(
    ("call", "routing", "protocol", "reply", "left"),
    [case[1:] for case in CASES],
    ids=[f"{c[0]}-{c[2].value}-{c[3]}" for c in CASES],
)
async def test_a_reply_cut_off_at_the_cap_is_recorded_and_not_used(
    call: Role, routing: Routing, protocol: PromptProtocol, reply: str, left: Any
) -> None:
    taken, status = await call(reply, "stop", routing, protocol)
    assert status.usable and taken != left  # ending normally, the same reply is used
    taken, status = await call(reply, CUT_OFF, routing, protocol)
    assert status is ParseStatus.TRUNCATED
    assert taken == left
