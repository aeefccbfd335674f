"""The orchestrator's border with the contract: every protobuf message it sends is built here, and every reply it
reads is turned into plain values here. The rest of the orchestrator handles artifacts and records only."""

from __future__ import annotations

from collections.abc import Sequence

from judgeopt.orchestrator.data.records import CriterionSpec, Record
from judgeopt.orchestrator.engine.artifacts import Critique, Gradient, PromptState, ScoredSample
from judgeopt.orchestrator.engine.policy import Routing
from judgeopt.v1 import common_pb2, evaluator_pb2, gradient_pb2, judge_pb2, loss_pb2

_ROUTING = {
    "per_criterion": common_pb2.ROUTING_PER_CRITERION,
    "joint": common_pb2.ROUTING_JOINT,
    "prefix_shared": common_pb2.ROUTING_JOINT,  # one request for every criterion, laid out by the judge
}
USABLE_STATUSES = frozenset({common_pb2.PARSE_STATUS_OK, common_pb2.PARSE_STATUS_REPAIRED})
"""Parse statuses whose content a later stage may use."""


# --- building requests -------------------------------------------------------------------------------------------


def routing(name: Routing) -> common_pb2.Routing.ValueType:
    return _ROUTING[name]


def judge_layout(name: Routing) -> judge_pb2.JudgeLayout.ValueType:
    """How the judge lays out a request routed ``name``."""
    return judge_pb2.JUDGE_LAYOUT_PREFIX_SHARED if name == "prefix_shared" else judge_pb2.JUDGE_LAYOUT_UNSPECIFIED


def request_meta(request_id: str, run_id: str, call_label: str) -> common_pb2.RequestMeta:
    return common_pb2.RequestMeta(request_id=request_id, run_id=run_id, call_label=call_label)


def criterion(spec: CriterionSpec) -> common_pb2.Criterion:
    return common_pb2.Criterion(
        name=spec.name,
        description=spec.description,
        min_score=spec.min_score,
        max_score=spec.max_score,
        integer_scores=spec.integer_scores,
    )


def sample(record: Record) -> common_pb2.Sample:
    return common_pb2.Sample(id=record.id, fields=[common_pb2.TextField(name=n, text=t) for n, t in record.fields])


def judge_prompt(prompt: PromptState, names: Sequence[str], *, task_description: bool) -> common_pb2.JudgePrompt:
    """The prompt's instructions for ``names``; the task description only where the call may see it."""
    return common_pb2.JudgePrompt(
        task_description=prompt.task_description if task_description else "",
        instructions=[common_pb2.Instruction(criterion=n, text=prompt.instruction(n)) for n in names],
        omit_output_format=prompt.omit_output_format,
    )


def gradient(gradient: Gradient, visible: Sequence[str] | None = None) -> common_pb2.Gradient:
    """A gradient as a call may see it: attributed only to the ``visible`` criteria it covers (all when ``None``)."""
    return common_pb2.Gradient(
        criteria=[c for c in gradient.criteria if visible is None or c in visible],
        sample_id=gradient.sample_id,
        keep=gradient.keep,
        problem=gradient.problem,
        fix=gradient.fix,
        status=gradient.status,  # type: ignore[arg-type]
    )


def specificity_request(
    spec: CriterionSpec, others: Sequence[CriterionSpec], gradients: Sequence[Gradient]
) -> evaluator_pb2.SpecificityRequest:
    """The evaluator's request to rate how focused ``gradients`` are on ``spec`` (the study's specificity)."""
    return evaluator_pb2.SpecificityRequest(
        criterion=criterion(spec),
        other_criteria=[criterion(c) for c in others],
        gradients=[gradient(g) for g in gradients],
    )


def adherence_request(
    spec: CriterionSpec, old: str, new: str, gradients: Sequence[Gradient]
) -> evaluator_pb2.AdherenceRequest:
    """The evaluator's request to rate how well the rewrite ``old`` → ``new`` follows ``gradients``."""
    return evaluator_pb2.AdherenceRequest(
        criterion=criterion(spec),
        old_instruction=old,
        new_instruction=new,
        gradients=[gradient(g) for g in gradients],
    )


# --- reading replies ---------------------------------------------------------------------------------------------


def scored_sample(prediction: common_pb2.Prediction) -> ScoredSample:
    return ScoredSample(
        sample_id=prediction.sample_id,
        scores={s.criterion: (s.value if s.HasField("value") else None) for s in prediction.scores},
        statuses={s.criterion: int(s.status) for s in prediction.scores},
        raw_output=prediction.raw_output,
    )


def critique_of(
    reply: loss_pb2.CritiqueResponse, request_id: str, sample_id: str, criteria: tuple[str, ...]
) -> Critique:
    return Critique(request_id, sample_id, criteria, reply.critique.text, reply.critique.status)


def gradient_of(reply: gradient_pb2.GradientResponse, request_id: str, criteria: tuple[str, ...]) -> Gradient:
    g = reply.gradient
    return Gradient(request_id, g.sample_id, criteria, g.keep, g.problem, g.fix, g.status)


def status_name(status: int) -> str:
    """``OK``, ``REPAIRED``, ``MISSING``, … for a parse status."""
    return common_pb2.ParseStatus.Name(status).removeprefix("PARSE_STATUS_")  # type: ignore[arg-type]


MISSING_STATUS = int(common_pb2.PARSE_STATUS_MISSING)
