"""What a request actually carried: its criteria and which fields, per criterion, were set.

Services append one manifest per request to their ledger, so an audit can check what each agent *received*
against the run's policy, independently of what the orchestrator says it sent. Field names match the policy's
vocabulary (``judgeopt.orchestrator.engine.policy``); shared fields are recorded under the criterion ``*``, and so
are a joint call's conversations (a per-criterion call's are its criterion's).
"""

from __future__ import annotations

from typing import Any

from judgeopt.v1 import common_pb2, evaluator_pb2, gradient_pb2, judge_pb2, loss_pb2, optimizer_pb2

SHARED = "*"
_EVIDENCE_FIELDS = ("instruction", "prediction", "ground_truth", "verdict", "critique")


def _prompt_fields(prompt: common_pb2.JudgePrompt) -> set[tuple[str, str]]:
    seen = {(i.criterion, "instruction") for i in prompt.instructions}
    if prompt.task_description:
        seen.add((SHARED, "task_description"))
    return seen


def _evidence_fields(items: Any) -> set[tuple[str, str]]:
    return {(e.criterion, name) for e in items for name in _EVIDENCE_FIELDS if e.HasField(name)}


def received_fields(request: Any) -> set[tuple[str, str]]:
    """(criterion, field) pairs present in a request; ``*`` marks fields shared by all criteria."""
    match request:
        case judge_pb2.ScoreRequest():
            seen = _prompt_fields(request.prompt)
            if request.HasField("sample"):
                seen.add((SHARED, "sample"))
            return seen
        case loss_pb2.CritiqueRequest():
            seen = _evidence_fields(request.evidence)
        case gradient_pb2.GradientRequest():
            seen = _evidence_fields(request.evidence)
            if request.HasField("prompt"):
                seen |= _prompt_fields(request.prompt)
        case optimizer_pb2.StepRequest():
            seen = _prompt_fields(request.prompt)
            seen |= {(c, "gradient") for g in request.gradients for c in g.criteria}
            if request.HasField("resolution"):
                seen.add((SHARED, "resolution"))
            if request.conversations:
                per_criterion = request.routing == common_pb2.ROUTING_PER_CRITERION and request.criteria
                seen.add((request.criteria[0].name if per_criterion else SHARED, "conversations"))
            return seen
        case evaluator_pb2.SpecificityRequest() | evaluator_pb2.AdherenceRequest() | optimizer_pb2.ArbitrateRequest():
            return {(c, "gradient") for g in request.gradients for c in g.criteria}
        case _:
            raise TypeError(f"no manifest for {type(request).__name__}")
    if request.HasField("sample"):
        seen.add((SHARED, "sample"))
    if request.HasField("judge_output"):
        seen.add((SHARED, "judge_output"))
    return seen


def _criteria_names(request: Any) -> list[str]:
    if hasattr(request, "criteria"):
        return [c.name for c in request.criteria]
    return [request.criterion.name, *(c.name for c in getattr(request, "other_criteria", []))]


def manifest(request: Any, rpc: str) -> dict[str, Any]:
    """One ledger entry: ids, the criteria the request defines, and the fields it carried."""
    return {
        "request_id": request.meta.request_id,
        "run_id": request.meta.run_id,
        "rpc": rpc,
        "criteria": _criteria_names(request),
        "fields": sorted(f"{criterion}:{field}" for criterion, field in received_fields(request)),
    }
