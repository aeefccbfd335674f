"""A stand-in for ``ModelRunner`` with no network, for agent tests that need exact replies and the exact requests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from judgeopt.agents.model_client import Completion, ModelRunner
from judgeopt.agents.types import Usage
from judgeopt.core.models import RoleModelConfig


@dataclass
class ScriptedRunner:
    """Answers requests with ``replies``: one string answers every request; a list answers them in turn, and a
    request past its end fails the test. Each completion ends with ``finish_reason``; every request's system
    prompt, user prompt and schema are recorded."""

    replies: str | list[str]
    finish_reason: str = "stop"
    config: RoleModelConfig = field(default_factory=RoleModelConfig)
    systems: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    schemas: list[dict[str, Any] | None] = field(default_factory=list)

    async def complete(self, system: str, user: str, *, schema: dict[str, Any] | None = None, **_: Any) -> Completion:
        self.systems.append(system)
        self.users.append(user)
        self.schemas.append(schema)
        if isinstance(self.replies, str):
            text = self.replies
        else:
            assert len(self.users) <= len(self.replies), f"request {len(self.users)} has no scripted reply"
            text = self.replies[len(self.users) - 1]
        return Completion(text=text, logprobs=None, usage=Usage(llm_calls=1), finish_reason=self.finish_reason)

    def as_model_runner(self) -> ModelRunner:
        return cast(ModelRunner, self)
