"""What a run will cost before it runs, and whether the next step still fits the budget.

Calls per step follow from the policy: per training step, B judge calls (B·K with a per-criterion
judge), B·K or B loss and gradient calls, K or 1 optimizer calls, then the candidate's validation scoring and, at
the test interval, the test scoring; step 0 scores validation and test once; the specificity fallback and the
conflict arbiter add their calls at most (see ``StepShape._mitigations``). These are upper bounds — the
prediction cache makes re-scoring an unchanged prompt free — and they are exact when every step changes the
prompt. Tokens are estimated from the texts the calls carry (about four characters per token) plus each role's
completion limit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import fmean
from typing import cast

from judgeopt.core.models import ModelsConfig, RoleModelConfig
from judgeopt.core.roles import ALL_ROLES, Role
from judgeopt.orchestrator.data.records import Record, Splits
from judgeopt.orchestrator.engine.policy import Policy, Stage

_CHARS_PER_TOKEN = 4
# Fixed prompt text per call (system prompt, task, criteria, instructions), in tokens, measured on the templates.
_OVERHEAD_TOKENS: dict[str, int] = {"judge": 250, "loss": 200, "gradient": 350, "optimizer": 300}


@dataclass
class CallEstimate:
    calls: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    completion_tokens: dict[str, int] = field(default_factory=dict)
    """The part of ``tokens`` the models write (priced apart from the prompt's)."""

    def add(self, stage: str, calls: int, tokens_per_call: int, completion_per_call: int = 0) -> None:
        self.calls[stage] = self.calls.get(stage, 0) + calls
        self.tokens[stage] = self.tokens.get(stage, 0) + calls * tokens_per_call
        self.completion_tokens[stage] = self.completion_tokens.get(stage, 0) + calls * completion_per_call

    def merge(self, other: CallEstimate) -> None:
        for stage, calls in other.calls.items():
            self.calls[stage] = self.calls.get(stage, 0) + calls
            self.tokens[stage] = self.tokens.get(stage, 0) + other.tokens[stage]
            self.completion_tokens[stage] = self.completion_tokens.get(stage, 0) + other.completion_tokens[stage]

    def cost_by_role(self, models: ModelsConfig) -> dict[str, float]:
        """The estimate's money per priced role, at its prompt and completion prices."""
        costs: dict[str, float] = {}
        for stage, tokens in self.tokens.items():
            completion = self.completion_tokens.get(stage, 0)
            cost = _settings(models, stage).cost(tokens - completion, completion)
            if cost is not None:
                costs[stage] = cost
        return costs

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens.values())


@dataclass(frozen=True)
class StepShape:
    """Everything the number of calls of a step depends on."""

    policy: Policy
    criteria: int
    """Criteria of the track (1 for a Single-Task track)."""
    batch: int
    val: int
    test: int
    models: ModelsConfig
    sample_tokens: int
    """Mean tokens of one sample's text fields."""

    def _per(self, stage: Stage) -> int:
        return 1 if self.policy.stage(stage).routing == "joint" else self.criteria  # prefix_shared: K model calls

    def _completion(self, role: Role) -> int:
        return _settings(self.models, role).max_tokens

    def _tokens(self, role: Role, *, sample: bool, extra: int = 0) -> int:
        return _OVERHEAD_TOKENS[role] + (self.sample_tokens if sample else 0) + extra + self._completion(role)

    def initial(self) -> CallEstimate:
        estimate = CallEstimate()
        estimate.add(
            "judge",
            (self.val + self.test) * self._per("judge"),
            self._tokens("judge", sample=True),
            self._completion("judge"),
        )
        return estimate

    def training(self, *, with_test: bool) -> CallEstimate:
        estimate = CallEstimate()
        judge_tokens = self._tokens("judge", sample=True)
        judge_completion = self._completion("judge")
        estimate.add("judge", self.batch * self._per("judge"), judge_tokens, judge_completion)
        estimate.add(
            "loss", self.batch * self._per("loss"), self._tokens("loss", sample=False), self._completion("loss")
        )
        estimate.add(
            "gradient",
            self.batch * self._per("gradient"),
            self._tokens("gradient", sample=True),
            self._completion("gradient"),
        )
        gradients_tokens = self.batch * self.criteria * 100
        estimate.add(
            "optimizer",
            self._per("optimizer"),
            self._tokens("optimizer", sample=False, extra=gradients_tokens),
            self._completion("optimizer"),
        )
        self._mitigations(estimate, gradients_tokens)
        estimate.add("judge", self.val * self._per("judge"), judge_tokens, judge_completion)
        if with_test:
            estimate.add("judge", self.test * self._per("judge"), judge_tokens, judge_completion)
        return estimate

    def _mitigations(self, estimate: CallEstimate, gradients_tokens: int) -> None:
        """At most: the specificity fallback's per-criterion calls for every criterion of every sample (its loss
        calls too where the loss is joint), and the conflict arbiter's one call per joint optimizer call."""
        if self.criteria < 2:
            return
        policy = self.policy
        if policy.specificity_fallback is not None and policy.gradient.routing == "joint":
            fallback = self.batch * self.criteria
            estimate.add("gradient", fallback, self._tokens("gradient", sample=True), self._completion("gradient"))
            if policy.loss.routing == "joint":
                estimate.add("loss", fallback, self._tokens("loss", sample=False), self._completion("loss"))
        if policy.conflict_arbiter and policy.optimizer.routing == "joint":
            estimate.add(
                "optimizer",
                1,
                self._tokens("optimizer", sample=False, extra=gradients_tokens),
                self._completion("optimizer"),
            )


def tests_at(step: int, steps: int, interval: int) -> bool:
    return step == 0 or step == steps or step % interval == 0


def mean_sample_tokens(records: Sequence[Record]) -> int:
    if not records:
        return 0
    return int(fmean(sum(len(text) for _, text in r.fields) for r in records) / _CHARS_PER_TOKEN)


def estimate_run(
    policy: Policy,
    track_sizes: Sequence[int],
    splits: Splits,
    models: ModelsConfig,
    *,
    steps: int,
    batch: int,
    test_interval: int,
    from_step: int = 0,
) -> CallEstimate:
    """Calls and tokens of steps ``from_step``..``steps`` of every track (``track_sizes``: criteria per track)."""
    sample_tokens = mean_sample_tokens([*splits.train, *splits.val, *splits.test])
    total = CallEstimate()
    for size in track_sizes:
        shape = StepShape(
            policy, size, min(batch, len(splits.train)), len(splits.val), len(splits.test), models, sample_tokens
        )
        for step in range(from_step, steps + 1):
            total.merge(
                shape.initial() if step == 0 else shape.training(with_test=tests_at(step, steps, test_interval))
            )
    return total


def _settings(models: ModelsConfig, stage: str) -> RoleModelConfig:
    return models.for_role(cast(Role, stage), local_base_url="http://local")


def spend_by_role(models: ModelsConfig, usage: Mapping[str, Mapping[str, int]]) -> dict[str, float]:
    """What the tokens a run used cost, per priced role (``usage`` as ``RunStore.usage_by_role`` gives it)."""
    spend: dict[str, float] = {}
    for stage, used in usage.items():
        if stage in ALL_ROLES:
            cost = _settings(models, stage).cost(used["prompt_tokens"], used["completion_tokens"])
            if cost is not None:
                spend[stage] = cost
    return spend


@dataclass(frozen=True)
class RunBudget:
    max_calls: int | None
    max_tokens: int | None
    max_cost: float | None = None
    """In the currency of the models' prices; a role with no price costs nothing."""
    models: ModelsConfig | None = None
    """The prices ``max_cost`` is counted in."""

    def allows(self, spent_calls: int, spent_tokens: int, next_step: CallEstimate, spent_cost: float = 0.0) -> bool:
        """Whether the next step fits: it is not started when it could take the run past any limit (its cost is
        estimated at the prices of ``models``)."""
        if self.max_calls is not None and spent_calls + next_step.total_calls > self.max_calls:
            return False
        if self.max_tokens is not None and spent_tokens + next_step.total_tokens > self.max_tokens:
            return False
        return self.max_cost is None or spent_cost + self._next_cost(next_step) <= self.max_cost

    def _next_cost(self, next_step: CallEstimate) -> float:
        return sum(next_step.cost_by_role(self.models).values()) if self.models is not None else 0.0
