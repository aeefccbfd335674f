"""Prompt templates (``agents/prompts/*.txt``) and the pieces they are assembled from.

Every user message runs from the most shared text to the least shared (task description, criteria and
instructions, then source text, then candidate text) so that endpoint prefix caches are reused across calls.

Data stays data: under judgeopt's protocol every text that did not come from a template and that another role
assesses (samples, the task description, instructions, the judge's answers, critiques, feedback, conversations)
sits inside one of the :data:`DATA_TAGS`, and each role's system prompt declares the text inside them data to
assess, never instructions to follow. One helper, :class:`TagGuard`, neutralises every opening or closing tag of a
protocol's tags inside inserted text (``</critique>`` becomes ``<\\/critique>``, ``<sample>`` becomes
``<\\sample>``, in any case and spacing): such text can neither end its tag early nor forge a tag of its own.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Sequence
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from string import Template

from judgeopt.agents.types import Conversation, Criterion, CriterionEvidence, Gradient, JudgePrompt, Routing, Sample


def _prompts() -> Traversable:
    return resources.files("judgeopt.agents").joinpath("prompts")


@cache
def template(name: str) -> Template:
    """The template ``agents/prompts/<name>.txt``."""
    return Template(_prompts().joinpath(f"{name}.txt").read_text(encoding="utf-8"))


ROLE_TEMPLATE_PREFIXES: dict[str, tuple[str, ...]] = {
    "judge": ("judge_", "study_judge_"),
    "loss": ("loss_", "study_loss_", "study_backward_"),
    "gradient": ("gradient_", "study_gradient_", "study_backward_"),
    "optimizer": ("optimizer_", "study_optimizer_"),
    "evaluator": ("evaluator_", "study_evaluator_"),
}
"""The templates each role may render, under either prompt protocol."""


def template_hashes(role: str) -> dict[str, str]:
    """sha256 (hex) of the bytes of every template ``role`` may use (``ROLE_TEMPLATE_PREFIXES``), by name: what a
    run records to tell whether a service's prompts changed."""
    prompts = _prompts()
    prefixes = ROLE_TEMPLATE_PREFIXES[role]
    names = sorted(f.name for f in prompts.iterdir() if f.name.startswith(prefixes) and f.name.endswith(".txt"))
    return {n.removesuffix(".txt"): hashlib.sha256(prompts.joinpath(n).read_bytes()).hexdigest() for n in names}


class TagGuard:
    """Neutralises a prompt protocol's tags inside text inserted into its templates: the tag's ``<`` is followed by
    a backslash (``<\\/sample>``, ``<\\sample>``), whatever the tag's case or spacing, so that the text cannot close
    the tag it sits in nor open one that looks like the template's. Idempotent."""

    def __init__(self, tags: Sequence[str]) -> None:
        self.tags = tuple(tags)
        self._tag = re.compile(r"<(?=\s*/?\s*(?:" + "|".join(self.tags) + r")(?![\w-]))", re.IGNORECASE)

    def __call__(self, text: str) -> str:
        return self._tag.sub("<\\\\", text)


DATA_TAGS = ("sample", "field", "task", "instruction", "answer", "critique", "feedback", "conversation")
"""judgeopt's data tags: what the system prompts declare to be data."""
fence = TagGuard(DATA_TAGS)
"""Text for judgeopt's templates."""


# Placeholders that receive plain text (not a fragment built here) and sit inside a tag of their template: render
# fences them, so that the agents may pass such text as it is.
_TEXT_PLACEHOLDERS: dict[str, frozenset[str]] = {
    "optimizer_user_per_criterion": frozenset({"instruction"}),
    "optimizer_resolution": frozenset({"resolution"}),
    "evaluator_adherence": frozenset({"old_instruction", "new_instruction"}),
}


def render(name: str, **values: str) -> str:
    """The template ``name`` filled with ``values`` (plain-text placeholders fenced; values are not re-scanned, so a
    ``$name`` inside a value stays as it is)."""
    text_placeholders = _TEXT_PLACEHOLDERS.get(name, frozenset())
    filled = {key: fence(value) if key in text_placeholders else value for key, value in values.items()}
    return template(name).substitute(filled).strip() + "\n"


def routed(name: str, routing: Routing) -> str:
    """Template name of a role's per-criterion or joint user message, e.g. ``loss_user_joint``."""
    return f"{name}_{routing.value}"


def _attribute(text: str) -> str:
    """Text for a double-quoted tag attribute: no quote, no ``<`` or ``>`` left to end it or the tag."""
    return html.escape(text, quote=True)


def format_sample(sample: Sample) -> str:
    return "\n".join(f'<field name="{_attribute(name)}">\n{fence(text)}\n</field>' for name, text in sample.fields)


def scale(criterion: Criterion) -> str:
    low, high = criterion.min_score, criterion.max_score
    kind = "integer" if criterion.integer_scores else "number"
    return f"{kind} from {low:g} to {high:g}"


def format_criteria(criteria: Sequence[Criterion]) -> str:
    lines = []
    for c in criteria:
        described = f": {c.description}" if c.description else ""
        lines.append(f"- {c.name} ({scale(c)}){described}")
    return "\n".join(lines)


def format_scope_single(criterion: Criterion) -> str:
    return format_criteria((criterion,)).removeprefix("- ")


def format_scope(routing: Routing, criteria: Sequence[Criterion]) -> str:
    """The criteria a call covers: its focus inline for a per-criterion call, a list for a joint one."""
    if routing is Routing.PER_CRITERION:
        return format_scope_single(criteria[0])
    return format_criteria(criteria)


def format_judge_criteria(criteria: Sequence[Criterion], prompt: JudgePrompt) -> str:
    """Each criterion with its scale, description and current instruction (the optimized part of the prompt)."""
    blocks = []
    for c in criteria:
        described = f" {c.description}" if c.description else ""
        blocks.append(f"## {c.name} ({scale(c)}).{described}\n{fence(prompt.instruction_for(c.name) or '')}")
    return "\n\n".join(blocks)


def format_task(task_description: str) -> str:
    return f"<task>\n{fence(task_description)}\n</task>"


def format_prompt(prompt: JudgePrompt) -> str:
    """The judge prompt as another agent is shown it: task description and instructions."""
    parts = ["\nThe judge's prompt:"]
    if prompt.task_description:
        parts.append(format_task(prompt.task_description))
    parts.extend(
        f'<instruction criterion="{_attribute(i.criterion)}">\n{fence(i.text)}\n</instruction>'
        for i in prompt.instructions
    )
    return "\n".join(parts)


def format_context(sample: Sample | None, judge_output: str | None) -> str:
    """The judged sample and the judge's raw answer, each only if the caller sent it."""
    parts = []
    if sample is not None:
        parts.append(f"\nThe judged sample:\n<sample>\n{format_sample(sample)}\n</sample>")
    if judge_output is not None:
        parts.append(f"\nThe judge's answer:\n<answer>\n{fence(judge_output)}\n</answer>")
    return "\n".join(parts)


def format_evidence(evidence: Sequence[CriterionEvidence]) -> str:
    """Only the fields that were sent, one block per criterion; the instruction and the critique (model text) in
    their tags."""
    blocks = []
    for e in evidence:
        lines = [f"[{e.criterion}]"]
        if e.instruction is not None:
            lines.append(f"Instruction:\n<instruction>\n{fence(e.instruction)}\n</instruction>")
        if e.prediction is not None:
            lines.append(f"Predicted score: {e.prediction:g}")
        if e.ground_truth is not None:
            lines.append(f"Correct score: {e.ground_truth:g}")
        if e.verdict is not None:
            lines.append(f"Verdict: {fence(e.verdict)}")
        if e.critique is not None:
            lines.append(f"Critique:\n<critique>\n{fence(e.critique)}\n</critique>")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def judge_output_example(criteria: Sequence[Criterion]) -> str:
    """A shape to copy, with the scale in place of a value (a concrete number would anchor small models)."""
    return "{" + ", ".join(f"{json.dumps(c.name)}: <{scale(c)}>" for c in criteria) + "}"


def format_gradients(gradients: Sequence[Gradient], *, show_criteria: bool = True) -> str:
    """Numbered ``<feedback>`` blocks; ``show_criteria``: name in each block the criteria it was written for (the
    specificity rating leaves them out: the evaluator must judge from the text what a gradient is about)."""
    if not gradients:
        return "(no feedback collected)"
    blocks = []
    for n, g in enumerate(gradients, start=1):
        about = f' criteria="{_attribute(", ".join(g.criteria))}"' if show_criteria else ""
        parts = [f"<feedback n={n}{about}>"]
        for label, text in (("Keep", g.keep), ("Problem", g.problem), ("Fix", g.fix)):
            if text:
                parts.append(f"{label}: {fence(text)}")
        parts.append("</feedback>")
        blocks.append("\n".join(parts))
    return "\n\n".join(blocks)


def format_conversations(conversations: Sequence[Conversation]) -> str:
    """The batch's judged samples with the judge's answers, when the caller sent them."""
    if not conversations:
        return ""
    blocks = [
        f"<conversation n={n}>\n<sample>\n{format_sample(c.sample)}\n</sample>\n"
        f"<answer>\n{fence(c.output)}\n</answer>\n</conversation>"
        for n, c in enumerate(conversations, start=1)
    ]
    return "\nThe judged samples and the judge's answers:\n" + "\n\n".join(blocks) + "\n"


def format_instructions(prompt: JudgePrompt, criteria: Sequence[Criterion]) -> str:
    return "\n\n".join(
        f"## {c.name} ({scale(c)})\n<instruction>\n{fence(prompt.instruction_for(c.name) or '')}\n</instruction>"
        for c in criteria
    )


# --- the study's protocol (docs/study-protocol.md) -----------------------------------------------------------------

STUDY_TAGS = (
    "ROLE",
    "VARIABLE",
    "CONTEXT",
    "CONVERSATION",
    "FEEDBACK",
    "LM_SYSTEM_PROMPT",
    "LM_INPUT",
    "LM_OUTPUT",
    "OBJECTIVE_FUNCTION",
    "INPUTS_TO_FUNCTION",
    "OUTPUT_OF_FUNCTION",
)
"""The TextGrad-style tags of the study's templates."""

study_fence = TagGuard(STUDY_TAGS)
"""Text for the study's templates."""
SOURCE_LABEL = "Source Text"
NOT_SHOWN = "(not shown)"


def study_sample(sample: Sample) -> str:
    """``Label: text`` lines, least shared field first (the study shows the Summary before the Source Text). The
    most shared field is labelled "Source Text", the others by their names."""
    labelled = [
        (SOURCE_LABEL if index == 0 else name.replace("_", " ").capitalize(), text)
        for index, (name, text) in enumerate(sample.fields)
    ]
    return "\n".join(f"{label}: {study_fence(text)}" for label, text in reversed(labelled))


def study_number(value: float | None) -> str:
    return NOT_SHOWN if value is None else f"{value:g}"


def study_judge_prompt(criteria: Sequence[Criterion], prompt: JudgePrompt) -> str:
    """The study's judge prompt without its sample: the skeleton, the output-format block (unless the prompt omits
    it) and one ``- <criterion>: <instruction>`` line per criterion the prompt has an instruction for. Criteria are
    named, never defined."""
    shown = [c for c in criteria if prompt.instruction_for(c.name) is not None]
    lines = ",\n".join(
        f"  {json.dumps(c.name)}: " + ("|".join(str(v) for v in c.allowed_scores) or f"<{scale(c)}>") for c in shown
    )
    output_format = "" if prompt.omit_output_format else render("study_judge_output_format", lines=lines) + "\n"
    return render(
        "study_judge_prompt",
        task_description=prompt.task_description or render("study_judge_task").strip(),
        output_format=output_format,
        instructions="\n".join(f"- {c.name}: {study_fence(prompt.instruction_for(c.name) or '')}" for c in shown),
    ).strip()


def study_feedback(gradient: Gradient) -> str:
    """A gradient as the study's plain paragraphs."""
    return "\n\n".join(study_fence(part) for part in (gradient.keep, gradient.problem, gradient.fix) if part)


def study_bullets(gradients: Sequence[Gradient]) -> str:
    if not gradients:
        return "(no feedback collected)"
    return "\n".join(f"- {study_feedback(g)}" for g in gradients)
