"""The optimizer role: one textual gradient-descent step, rewriting one instruction or a whole set.

A reply that cannot be used keeps the previous instruction and says so in its status; it is never fatal.
"""

from __future__ import annotations

from typing import Any

from judgeopt.agents import prompting
from judgeopt.agents.model_client import ModelRunner
from judgeopt.agents.parsing import find_json_object, find_text_field, is_placeholder, lookup_key, strip_wrapping
from judgeopt.agents.types import Criterion, Instruction, ParseStatus, Routing, StepResult, StepTask, Usage


def instruction_schema(criteria: tuple[Criterion, ...], routing: Routing) -> dict[str, Any]:
    text = {"type": "string", "minLength": 1}
    if routing is Routing.PER_CRITERION:
        return {"type": "object", "properties": {"instruction": text}, "required": ["instruction"]}
    names = [c.name for c in criteria]
    inner = {"type": "object", "properties": dict.fromkeys(names, text), "required": names}
    return {"type": "object", "properties": {"instructions": inner}, "required": ["instructions"]}


def _parse_joint(text: str, task: StepTask) -> StepResult:
    reading = find_json_object(text)
    mapping: dict[str, Any] = {}
    repaired = True
    if reading is not None:
        nested = reading.value.get("instructions")
        mapping = nested if isinstance(nested, dict) else reading.value
        repaired = reading.repaired or not isinstance(nested, dict)
    instructions: list[Instruction] = []
    statuses: list[ParseStatus] = []
    for criterion in task.criteria:
        old = task.prompt.instruction_for(criterion.name) or ""
        entry = lookup_key(mapping, criterion.name)
        new = strip_wrapping(entry[0]) if entry is not None and isinstance(entry[0], str) else ""
        if new and not is_placeholder(new):
            instructions.append(Instruction(criterion.name, new))
            statuses.append(ParseStatus.REPAIRED if repaired or (entry and entry[1]) else ParseStatus.OK)
        else:
            instructions.append(Instruction(criterion.name, old))
            statuses.append(ParseStatus.MISSING if reading is not None else ParseStatus.INVALID)
    return StepResult(tuple(instructions), max(statuses), text)


def _parse_single(text: str, task: StepTask) -> StepResult:
    criterion = task.criteria[0].name
    new, status = find_text_field(text, "instruction")
    if not status.usable:
        new = task.prompt.instruction_for(criterion) or ""
    return StepResult((Instruction(criterion, new),), status, text)


class OptimizerAgent:
    def __init__(self, runner: ModelRunner) -> None:
        self._runner = runner

    async def step(self, task: StepTask) -> tuple[StepResult, Usage]:
        gradients = prompting.format_gradients(task.gradients)
        if task.routing is Routing.PER_CRITERION:
            criterion = task.criteria[0]
            user = prompting.render(
                "optimizer_user_per_criterion",
                criterion=prompting.format_scope(task.routing, task.criteria),
                instruction=task.prompt.instruction_for(criterion.name) or "",
                gradients=gradients,
            )
        else:
            task_description = (
                f"The judge's task:\n<task>\n{task.prompt.task_description}\n</task>\n"
                if task.prompt.task_description
                else ""
            )
            user = prompting.render(
                "optimizer_user_joint",
                task_description=task_description,
                instructions=prompting.format_instructions(task.prompt, task.criteria),
                gradients=gradients,
            )
        completion = await self._runner.complete(
            prompting.render("optimizer_system"),
            user,
            schema=instruction_schema(task.criteria, task.routing),
            schema_name="instructions",
        )
        parse = _parse_single if task.routing is Routing.PER_CRITERION else _parse_joint
        return parse(completion.text, task), completion.usage
