"""The optimizer role: one textual gradient-descent step, rewriting one instruction or a whole set.

A reply that cannot be used (unreadable, empty, lacking a criterion, or cut off at the output cap) keeps the previous
instruction and says so in its status; it is never fatal. With length limits, an instruction over its limit is asked
for again once (one more model call, told by how much it was over); still over, that criterion keeps its previous
instruction and is named in ``length_rejected``. Text is never cut. Under the study's protocol a criterion the reply
does not answer is left out instead (the caller falls back to its initial instruction). Per-criterion and joint replies
follow the same rule.
"""

from __future__ import annotations

import json
from typing import Any

from judgeopt.agents import prompting
from judgeopt.agents.model_client import ModelRunner
from judgeopt.agents.parsing import KeyIndex, find_json_object, find_text_field, is_placeholder, strip_wrapping
from judgeopt.agents.types import (
    ArbitrateTask,
    Arbitration,
    ConflictNote,
    Criterion,
    Instruction,
    ParseStatus,
    Routing,
    StepResult,
    StepTask,
    Usage,
)
from judgeopt.core.tokens import approx_tokens


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
    index = KeyIndex(mapping)
    instructions: list[Instruction] = []
    statuses: list[ParseStatus] = []
    for criterion in task.criteria:
        old = task.prompt.instruction_for(criterion.name) or ""
        entry = index.get(criterion.name)
        new = strip_wrapping(entry[0]) if entry is not None and isinstance(entry[0], str) else ""
        if new and not is_placeholder(new):
            instructions.append(Instruction(criterion.name, new))
            statuses.append(ParseStatus.REPAIRED if repaired or (entry and entry[1]) else ParseStatus.OK)
        else:
            if task.protocol != "study":
                instructions.append(Instruction(criterion.name, old))
            statuses.append(ParseStatus.MISSING if reading is not None else ParseStatus.INVALID)
    return StepResult(tuple(instructions), max(statuses), text)


def _parse_plain(text: str, task: StepTask) -> StepResult:
    """The study's per-criterion reply: the instruction as plain text. Empty (or a placeholder) yields nothing."""
    new = strip_wrapping(text)
    if not new or is_placeholder(new):
        return _nothing_taken(text, task, ParseStatus.INVALID)
    status = ParseStatus.OK if new == text.strip() else ParseStatus.REPAIRED
    return StepResult((Instruction(task.criteria[0].name, new),), status, text)


def _study_conversations(task: StepTask) -> str:
    return "\n\n".join(
        f"<CONVERSATION>\n<LM_INPUT>\n{prompting.study_sample(c.sample)}\n</LM_INPUT>\n"
        f"<LM_OUTPUT>\n{prompting.study_fence(c.output)}\n</LM_OUTPUT>\n</CONVERSATION>"
        for c in task.conversations
    )


def _study_user(task: StepTask) -> str:
    """The study's TGD message: role, variable, context (judge prompt, conversations, feedback), the ask."""
    names = [c.name for c in task.criteria]
    if task.routing is Routing.PER_CRITERION:
        name = names[0]
        role = f"instruction for the '{name}' task in the system prompt to a language model"
        subject = "the instruction"
        variable = prompting.study_fence(task.prompt.instruction_for(name) or "")
        feedback = prompting.study_bullets([g for g in task.gradients if name in g.criteria])
        answer = prompting.render("study_optimizer_answer_per_criterion", task=name)
    else:
        role = "task instructions in the system prompt to a language model"
        subject = "the instructions"
        current = {n: task.prompt.instruction_for(n) or "" for n in names}
        variable = prompting.study_fence(json.dumps(current, indent=2, ensure_ascii=False))
        feedback = "\n---\n".join(
            f"Feedback for task '{n}':\n{prompting.study_bullets([g for g in task.gradients if n in g.criteria])}"
            for n in names
        )
        example = ", ".join(f'{json.dumps(n)}: "..."' for n in names)
        answer = prompting.render("study_optimizer_answer_joint", example=example)
    return prompting.render(
        "study_optimizer_user",
        role=role,
        variable=variable,
        system_prompt=prompting.study_judge_prompt(task.criteria, task.prompt),
        conversations=_study_conversations(task) or prompting.NOT_SHOWN,
        subject=subject,
        feedback=feedback,
        answer=answer.strip(),
    )


def _parse_single(text: str, task: StepTask) -> StepResult:
    new, status = find_text_field(text, "instruction")
    if not status.usable:
        return _nothing_taken(text, task, status)
    return StepResult((Instruction(task.criteria[0].name, new),), status, text)


def _nothing_taken(text: str, task: StepTask, status: ParseStatus) -> StepResult:
    """A reply with no usable instruction: the previous ones are kept, or (study protocol) left out."""
    kept = (
        ()
        if task.protocol == "study"
        else tuple(Instruction(c.name, task.prompt.instruction_for(c.name) or "") for c in task.criteria)
    )
    return StepResult(kept, status, text)


def read_step(text: str, task: StepTask, *, truncated: bool = False) -> StepResult:
    """The rewritten instruction(s) in an optimizer reply; the previous ones where the reply holds none. A reply
    ``truncated`` at the output cap holds none, whatever it reads."""
    if truncated:
        return _nothing_taken(text, task, ParseStatus.TRUNCATED)
    if task.routing is Routing.JOINT:
        return _parse_joint(text, task)
    return _parse_plain(text, task) if task.protocol == "study" else _parse_single(text, task)


ARBITRATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "conflicts": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "criteria": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2},
                    "issue": {"type": "string"},
                },
                "required": ["criteria", "issue"],
            },
        },
        "resolution": {"type": "string"},
    },
    "required": ["conflicts", "resolution"],
}


def read_arbitration(text: str, task: ArbitrateTask) -> Arbitration:
    """The conflicts in an arbiter's reply: entries that do not name two distinct known criteria are dropped (and
    the status says REPAIRED); a reply with no JSON object is INVALID and finds no conflict."""
    reading = find_json_object(text)
    if reading is None:
        return Arbitration((), "", ParseStatus.INVALID, text)
    known = {c.name for c in task.criteria}
    entries = reading.value.get("conflicts")
    conflicts, dropped = [], not isinstance(entries, list)
    for entry in entries if isinstance(entries, list) else []:
        names = entry.get("criteria") if isinstance(entry, dict) else None
        pair = tuple(n for n in names if isinstance(n, str) and n in known) if isinstance(names, list) else ()
        if len(pair) != 2 or pair[0] == pair[1]:
            dropped = True
            continue
        issue = entry.get("issue")
        conflicts.append(ConflictNote((pair[0], pair[1]), issue.strip() if isinstance(issue, str) else ""))
    resolution = reading.value.get("resolution")
    resolution = resolution.strip() if isinstance(resolution, str) and conflicts else ""
    status = ParseStatus.REPAIRED if dropped or reading.repaired else ParseStatus.OK
    return Arbitration(tuple(conflicts), resolution, status, text)


def length_limit_sentence(task: StepTask) -> str:
    """The request's statement of the length limits ("" when none is set)."""
    limits = [f'"{c.name}": at most {task.max_tokens[c.name]}' for c in task.criteria if c.name in task.max_tokens]
    if not limits:
        return ""
    return (
        f"Keep each instruction within its length limit, in tokens (words and punctuation marks): {'; '.join(limits)}."
        " An instruction over its limit is rejected.\n"
    )


def _excess(result: StepResult, task: StepTask) -> dict[str, tuple[int, int]]:
    """The rewritten instructions over their limit: criterion -> (its length, its limit)."""
    old = {c.name: task.prompt.instruction_for(c.name) for c in task.criteria}
    over = {}
    for instruction in result.instructions:
        limit = task.max_tokens.get(instruction.criterion)
        length = approx_tokens(instruction.text)
        if limit is not None and instruction.text != old.get(instruction.criterion) and length > limit:
            over[instruction.criterion] = (length, limit)
    return over


def too_long_note(over: dict[str, tuple[int, int]]) -> str:
    """What the second call is told: which instructions were too long, and by how much."""
    parts = [
        f'"{name}" had {length} tokens, {length - limit} over its limit of {limit}'
        for name, (length, limit) in over.items()
    ]
    return (
        f"\n\nYour previous answer was too long: {'; '.join(parts)}."
        " Answer again, keeping every instruction within its limit.\n"
    )


def _within_limits(
    first: StepResult, second: StepResult, task: StepTask, over: dict[str, tuple[int, int]]
) -> StepResult:
    """The first reply with each over-long instruction replaced by the second reply's, if that one is usable and
    within its limit, else by the previous instruction (named in ``length_rejected``)."""
    retried = {i.criterion: i.text for i in second.instructions} if second.status.usable else {}
    still_over = _excess(second, task) if second.status.usable else over
    instructions, rejected = [], []
    for instruction in first.instructions:
        name = instruction.criterion
        if name not in over:
            instructions.append(instruction)
        elif name in retried and name not in still_over:
            instructions.append(Instruction(name, retried[name]))
        else:
            instructions.append(Instruction(name, task.prompt.instruction_for(name) or ""))
            rejected.append(name)
    raw = f"{first.raw_output}\n\n[asked again: too long]\n\n{second.raw_output}"
    return StepResult(tuple(instructions), first.status, raw, tuple(rejected))


class OptimizerAgent:
    def __init__(self, runner: ModelRunner) -> None:
        self._runner = runner

    async def step(self, task: StepTask) -> tuple[StepResult, Usage]:
        if task.protocol == "study":
            return await self._study_step(task)
        gradients = prompting.format_gradients(task.gradients)
        if task.resolution:
            gradients += (
                "\n\n" + prompting.render("optimizer_resolution", resolution=prompting.fence(task.resolution)).strip()
            )
        conversations = prompting.format_conversations(task.conversations)
        if task.routing is Routing.PER_CRITERION:
            criterion = task.criteria[0]
            user = prompting.render(
                "optimizer_user_per_criterion",
                criterion=prompting.format_scope(task.routing, task.criteria),
                instruction=task.prompt.instruction_for(criterion.name) or "",
                conversations=conversations,
                gradients=gradients,
                length_limit=length_limit_sentence(task),
            )
        else:
            task_description = (
                f"The judge's task:\n{prompting.format_task(task.prompt.task_description)}\n"
                if task.prompt.task_description
                else ""
            )
            user = prompting.render(
                "optimizer_user_joint",
                task_description=task_description,
                instructions=prompting.format_instructions(task.prompt, task.criteria),
                conversations=conversations,
                gradients=gradients,
                length_limit=length_limit_sentence(task),
            )
        schema = instruction_schema(task.criteria, task.routing)
        return await self._limited_step(task, prompting.render("optimizer_system"), user, schema)

    async def arbitrate(self, task: ArbitrateTask) -> tuple[Arbitration, Usage]:
        """The conflict arbiter. A method of the optimizer, not a role of its own: it writes for the optimizer's
        next step and sees exactly what a joint optimizer call sees (every criterion's gradients), so it runs on the
        optimizer's model and service, and the policy and the audit treat it as that call."""
        user = prompting.render(
            "optimizer_arbiter_user",
            criteria=prompting.format_criteria(task.criteria),
            gradients=prompting.format_gradients(task.gradients),
        )
        completion = await self._runner.complete(
            prompting.render("optimizer_arbiter_system"), user, schema=ARBITRATION_SCHEMA, schema_name="arbitration"
        )
        return read_arbitration(completion.text, task), completion.usage

    async def _study_step(self, task: StepTask) -> tuple[StepResult, Usage]:
        """The study's templates stay as they are; a length limit (a departure from the study) follows the message."""
        schema = instruction_schema(task.criteria, task.routing) if task.routing is Routing.JOINT else None
        user = _study_user(task)
        if task.max_tokens:
            user += "\n" + length_limit_sentence(task)
        return await self._limited_step(task, prompting.render("study_optimizer_system"), user, schema)

    async def _limited_step(
        self, task: StepTask, system: str, user: str, schema: dict[str, Any] | None
    ) -> tuple[StepResult, Usage]:
        """One optimizer call, and one more when an instruction is over its length limit."""
        completion = await self._runner.complete(system, user, schema=schema, schema_name="instructions")
        result = read_step(completion.text, task, truncated=completion.truncated)
        over = _excess(result, task)
        if not over:
            return result, completion.usage
        again = await self._runner.complete(
            system, user + too_long_note(over), schema=schema, schema_name="instructions"
        )
        second = read_step(again.text, task, truncated=again.truncated)
        return _within_limits(result, second, task, over), completion.usage + again.usage
