"""Everything that talks to an LLM, and nothing that talks gRPC: the four agent roles and their model door."""

from agents.config import ModelsConfig, RoleModelConfig, StructuredOutput
from agents.gradient import GradientAgent
from agents.judge import JudgeAgent
from agents.local_model import LocalModelServer
from agents.loss import LossAgent
from agents.model_client import ModelRunner
from agents.optimizer import OptimizerAgent

__all__ = [
    "GradientAgent",
    "JudgeAgent",
    "LocalModelServer",
    "LossAgent",
    "ModelRunner",
    "ModelsConfig",
    "OptimizerAgent",
    "RoleModelConfig",
    "StructuredOutput",
]
