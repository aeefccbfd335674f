"""Which gRPC service of the contract serves each role, and which method does each role's work: one table, read
by the services (to register and name their health status) and by the orchestrator (to audit what they received)."""

from __future__ import annotations

from judgeopt.core.roles import Role
from judgeopt.v1 import evaluator_pb2, gradient_pb2, judge_pb2, loss_pb2, optimizer_pb2

_SERVICES = {
    "judge": judge_pb2.DESCRIPTOR.services_by_name["JudgeService"],
    "loss": loss_pb2.DESCRIPTOR.services_by_name["LossService"],
    "gradient": gradient_pb2.DESCRIPTOR.services_by_name["GradientService"],
    "optimizer": optimizer_pb2.DESCRIPTOR.services_by_name["OptimizerService"],
    "evaluator": evaluator_pb2.DESCRIPTOR.services_by_name["EvaluatorService"],
}

SERVICE_NAMES: dict[Role, str] = {role: service.full_name for role, service in _SERVICES.items()}  # type: ignore[misc]
"""Role → fully qualified gRPC service name, e.g. ``judgeopt.v1.JudgeService``."""

WORK_METHODS: dict[str, Role] = {
    f"/{service.full_name}/{method.name}": role  # type: ignore[misc]
    for role, service in _SERVICES.items()
    if role != "evaluator"
    for method in service.methods
}
"""Method path → the loop role whose work it is (the evaluator's ratings are outside any policy's stages)."""
