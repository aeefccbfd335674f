"""Decomposition modes as data: a policy says, per stage, how calls are routed and what each call may see.

A stage's **routing** is ``per_criterion`` (one call per criterion) or ``joint`` (one call for all criteria of a
track); the judge may also be ``prefix_shared``: one request per sample, which the judge answers with one model call
per criterion, each starting with the same text (task description, sample) and ending with its own criterion, so an
endpoint's prefix cache prefills the sample once per sample rather than once per criterion. Its **fields** are what
a call may carry; per-criterion fields (``instruction``, ``prediction``, ``ground_truth``, ``verdict``,
``critique``, ``gradient``) are visible for the criteria in the call's **scope**
(``own``: the call's own criterion; ``all``: every criterion; or a list of extra criteria), shared fields
(``task_description``, ``sample``, ``judge_output``) are visible or not, and routed fields (``conversations``: the
batch's samples with the judge's output) belong to the call's own criterion in a per-criterion call and are shared
in a joint one. A joint output is handed back to
criteria by ``copy`` (the study: every criterion gets the joint critique or gradient as its own).

SSS, SSC, SCC, CCC and ``single`` (Single-Task: one independent track per criterion) are presets of this one
structure; users write their own in YAML. Once loss, gradient or optimizer combines, every later one must too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from judgeopt.core.errors import describe_validation_error
from judgeopt.core.yaml_files import read_yaml_mapping
from judgeopt.orchestrator.engine.focus import focus_shares
from judgeopt.orchestrator.errors import PolicyError

if TYPE_CHECKING:
    from judgeopt.orchestrator.engine.artifacts import StepArtifacts

Stage = Literal["judge", "loss", "gradient", "optimizer"]
STAGES: tuple[Stage, ...] = ("judge", "loss", "gradient", "optimizer")
LEARNING_STAGES: tuple[Stage, ...] = ("loss", "gradient", "optimizer")
Routing = Literal["per_criterion", "joint", "prefix_shared"]
ONE_REQUEST: frozenset[Routing] = frozenset({"joint", "prefix_shared"})
"""Routings that send one request for all of a track's criteria."""

SHARED_FIELDS = frozenset({"task_description", "sample", "judge_output", "resolution"})
PER_CRITERION_FIELDS = frozenset({"instruction", "prediction", "ground_truth", "verdict", "critique", "gradient"})
ROUTED_FIELDS = frozenset({"conversations"})
"""Fields about the call's focus: its own criterion's in a per-criterion call, shared (``*``) in a joint one."""

_EVIDENCE = frozenset({"prediction", "ground_truth", "verdict"})
STAGE_FIELDS: dict[Stage, frozenset[str]] = {
    "judge": frozenset({"task_description", "instruction", "sample"}),
    "loss": frozenset({"instruction", "sample", "judge_output"}) | _EVIDENCE,
    "gradient": frozenset({"task_description", "instruction", "sample", "judge_output", "critique"}) | _EVIDENCE,
    "optimizer": frozenset({"task_description", "instruction", "gradient", "conversations", "resolution"}),
}
"""What each stage's calls can carry at all (the contract's fields); a policy picks a subset."""

REQUIRED_FIELDS: dict[Stage, frozenset[str]] = {
    "judge": frozenset({"instruction", "sample"}),
    "loss": frozenset(),
    "gradient": frozenset({"instruction"}),
    "optimizer": frozenset({"instruction"}),
}
"""Without these a stage cannot do its job (a judge with no sample, an optimizer with no instruction)."""


class StagePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    routing: Routing
    fields: frozenset[str]
    scope: Literal["own", "all"] | tuple[str, ...] = "own"
    """For per-criterion calls: whose per-criterion fields the call sees. Joint calls always see all."""
    handoff: Literal["copy"] = "copy"
    """How a joint output is handed back to criteria: ``copy`` gives every criterion the joint text."""


@dataclass(frozen=True)
class RoutingState:
    """What a policy may read when it decides a call: the step, the track's criteria (in order) and what the step
    has produced so far (for a sample's chain, that sample's artifacts; for the optimizer, the whole batch's). A
    dynamic policy can add calls mid-step from it, e.g. per-criterion gradient calls after a diluted joint one."""

    step: int
    track: tuple[str, ...]
    artifacts: StepArtifacts | None = None


@dataclass(frozen=True)
class CallView:
    """What one call may see, decided by :meth:`Policy.view`: the router builds the request from it and the audit
    checks what the services received against it."""

    stage: Stage
    routing: Routing
    focus: tuple[str, ...]
    """What the call is about: one criterion, or all of the track's for a joint call."""
    visible: tuple[str, ...]
    """The criteria whose per-criterion fields the call may carry: the focus first, then the others in track order."""
    fields: frozenset[str]

    def can_see(self, field: str) -> bool:
        return field in self.fields

    def allowed(self) -> set[str]:
        """``criterion:field`` pairs the call may carry (``*`` for shared fields)."""
        allowed = {f"*:{f}" for f in self.fields & SHARED_FIELDS}
        allowed |= {f"{c}:{f}" for c in self.visible for f in self.fields & PER_CRITERION_FIELDS}
        owners = ("*",) if self.routing == "joint" else self.focus
        return allowed | {f"{c}:{f}" for c in owners for f in self.fields & ROUTED_FIELDS}


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "custom"
    judge: StagePolicy
    loss: StagePolicy
    gradient: StagePolicy
    optimizer: StagePolicy
    independent_criteria: bool = False
    """Single-Task: one independent optimization track per criterion, each with a one-criterion prompt."""
    conflict_arbiter: bool = False
    """The conflict arbiter: before a joint optimizer call, the optimizer service's ``Arbitrate`` reads the batch's
    gradients with that call's view, names pairs of criteria whose gradients contradict each other and writes a
    resolution, which the optimizer call then carries (its ``resolution`` field). No effect without a joint
    optimizer stage."""
    specificity_fallback: float | None = Field(default=None, ge=0.0, le=1.0)
    """The specificity fallback: after a joint gradient call, criteria whose focus in its gradient (the share of
    its sentences naming them, ``judgeopt.orchestrator.engine.focus``) is below this get per-criterion gradient
    calls in the same step; where the loss was joint too, per-criterion loss calls first, from the raw prediction
    (a fresh per-criterion chain: no combined text is split). No effect where gradients are per criterion."""

    @model_validator(mode="before")
    @classmethod
    def _known_stages(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = sorted(
                str(k)
                for k in set(data)
                - {*STAGES, "name", "independent_criteria", "specificity_fallback", "conflict_arbiter"}
            )
            if unknown:
                raise ValueError(f"unknown stage {unknown[0]!r} (stages: {', '.join(STAGES)})")
            missing = [s for s in STAGES if s not in data]
            if missing:
                raise ValueError(f"stage {missing[0]!r} is not defined")
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for stage in STAGES:
            policy = self.stage(stage)
            unknown = sorted(policy.fields - STAGE_FIELDS[stage])
            if unknown:
                allowed = ", ".join(sorted(STAGE_FIELDS[stage]))
                raise ValueError(f"stage {stage!r}: unknown field {unknown[0]!r} (allowed: {allowed})")
            missing = sorted(REQUIRED_FIELDS[stage] - policy.fields)
            if missing:
                raise ValueError(f"stage {stage!r}: cannot work without field {missing[0]!r}")
            if stage != "judge" and policy.routing == "prefix_shared":
                raise ValueError(f"stage {stage!r}: prefix_shared is a judge routing (per_criterion or joint here)")
            if stage == "judge" and policy.routing == "per_criterion" and policy.scope != "own":
                raise ValueError("stage 'judge': a per-criterion judge call sees only its own instruction (scope: own)")
            if policy.routing == "joint" and policy.scope not in ("own", "all"):
                raise ValueError(f"stage {stage!r}: a joint call sees every criterion; a criteria list has no effect")
        combined: Stage | None = None
        for stage in LEARNING_STAGES:
            routing = self.stage(stage).routing
            if routing == "joint":
                combined = combined or stage
            elif combined is not None:
                raise ValueError(
                    f"stage {stage!r}: per_criterion after the joint stage {combined!r} "
                    "(combined text cannot be split back)"
                )
        return self

    def stage(self, stage: Stage) -> StagePolicy:
        policy: StagePolicy = getattr(self, stage)
        return policy

    def routing_at(self, stage: Stage, state: RoutingState) -> Routing:
        """The routing of ``stage`` for the step described by ``state``. A static policy ignores the state; a
        dynamic one (e.g. fall back to per-criterion gradients when focus drops) overrides this or :meth:`calls`."""
        del state
        return self.stage(stage).routing

    def with_conflict_arbiter(self) -> Policy:
        """This policy with the conflict arbiter on: its optimizer may also carry the arbiter's resolution."""
        optimizer = self.optimizer.model_copy(update={"fields": self.optimizer.fields | {"resolution"}})
        return self.model_copy(update={"conflict_arbiter": True, "optimizer": optimizer})

    def with_judge_routing(self, routing: Routing) -> Policy:
        """This policy with its judge routed by ``routing``, checked by the same rules as a policy file (a
        per-criterion judge call sees only its own instruction, so its scope becomes ``own``)."""
        judge = {**self.judge.model_dump(), "routing": routing}
        if routing == "per_criterion":
            judge["scope"] = "own"
        return policy_from_mapping(
            {**self.model_dump(), "judge": judge}, origin=f"policy {self.name!r} with judge routing {routing}"
        )

    def diluted(self, state: RoutingState) -> tuple[str, ...]:
        """The criteria the specificity fallback adds per-criterion calls for: those under its threshold in the
        focus of the joint gradient among ``state``'s artifacts (a sample's chain); none before that gradient
        exists, or without the fallback."""
        threshold = self.specificity_fallback
        if threshold is None or self.gradient.routing != "joint" or state.artifacts is None:
            return ()
        joint = [g for g in state.artifacts.gradients if set(g.criteria) == set(state.track) and len(state.track) > 1]
        if not joint:
            return ()
        shares = focus_shares(joint[0], state.track)
        return tuple(c for c in state.track if shares[c] < threshold)

    def calls(self, stage: Stage, state: RoutingState) -> list[tuple[str, ...]]:
        """The focus of each call ``stage`` makes in the step described by ``state``: the whole track for a joint
        stage, one criterion per call otherwise. Once a sample's joint gradient has lost focus on some criteria
        (:meth:`diluted`), the gradient stage adds one call per such criterion, and a joint loss stage one fresh
        per-criterion loss call each (a per-criterion loss stage has its critiques already)."""
        diluted = self.diluted(state) if stage in ("loss", "gradient") else ()
        if diluted:
            return [] if self.stage(stage).routing == "per_criterion" else [(c,) for c in diluted]
        if self.routing_at(stage, state) in ONE_REQUEST:
            return [state.track]
        return [(name,) for name in state.track]

    def view(self, stage: Stage, focus: Sequence[str], state: RoutingState) -> CallView:
        """What a call of ``stage`` about ``focus`` may see. A call about the whole track sees every criterion; a
        per-criterion call sees its own criterion and its stage's ``scope``; a per-criterion call that a dynamic
        policy adds to a joint stage sees its own criteria only. The router builds requests from this view and the
        audit checks against the same view, so what a policy allows is what the audit accepts."""
        policy = self.stage(stage)
        focus = tuple(focus)
        whole = set(focus) == set(state.track)
        if whole:
            seen: set[str] = set(state.track)
        elif policy.routing == "joint" or policy.scope == "own":
            seen = set(focus)
        elif policy.scope == "all":
            seen = set(state.track)
        else:
            seen = set(focus) | set(policy.scope)
        visible = focus + tuple(c for c in state.track if c in seen and c not in focus)
        routing: Routing = self.routing_at(stage, state) if whole else "per_criterion"
        return CallView(stage, routing, focus, visible, policy.fields)

    def check_criteria(self, criteria: Sequence[str]) -> None:
        """Refuse a policy that names criteria the run does not have (in a stage's scope list)."""
        known = set(criteria)
        for stage in STAGES:
            scope = self.stage(stage).scope
            if isinstance(scope, tuple):
                unknown = sorted(set(scope) - known)
                if unknown:
                    raise PolicyError(
                        f"policy {self.name!r}, stage {stage!r}: unknown criterion {unknown[0]!r} "
                        f"(criteria: {', '.join(criteria)})"
                    )

    def letters(self) -> str:
        """SSS, SCC, … for the loss, gradient and optimizer stages."""
        return "".join("S" if self.stage(s).routing == "per_criterion" else "C" for s in LEARNING_STAGES)


def _stage(routing: Routing, *fields: str, scope: Literal["own", "all"] | None = None) -> StagePolicy:
    return StagePolicy(
        routing=routing, fields=frozenset(fields), scope=scope or ("all" if routing == "joint" else "own")
    )


_JUDGE = _stage("joint", "task_description", "instruction", "sample")
_LOSS_S = _stage("per_criterion", "prediction", "ground_truth", "verdict")
_LOSS_C = _stage("joint", "prediction", "ground_truth", "verdict")
_GRADIENT_S = _stage("per_criterion", "task_description", "instruction", "sample", "prediction", "critique")
_GRADIENT_C = _stage("joint", "task_description", "instruction", "sample", "judge_output", "prediction", "critique")
_OPTIMIZER_S = _stage("per_criterion", "instruction", "gradient")
_OPTIMIZER_C = _stage("joint", "task_description", "instruction", "gradient")

PRESETS: dict[str, Policy] = {
    "SSS": Policy(name="SSS", judge=_JUDGE, loss=_LOSS_S, gradient=_GRADIENT_S, optimizer=_OPTIMIZER_S),
    "SSC": Policy(name="SSC", judge=_JUDGE, loss=_LOSS_S, gradient=_GRADIENT_S, optimizer=_OPTIMIZER_C),
    "SCC": Policy(name="SCC", judge=_JUDGE, loss=_LOSS_S, gradient=_GRADIENT_C, optimizer=_OPTIMIZER_C),
    "CCC": Policy(name="CCC", judge=_JUDGE, loss=_LOSS_C, gradient=_GRADIENT_C, optimizer=_OPTIMIZER_C),
    "single": Policy(
        name="single",
        judge=_JUDGE,
        loss=_LOSS_S,
        gradient=_GRADIENT_S,
        optimizer=_OPTIMIZER_S,
        independent_criteria=True,
    ),
}
"""The study's modes. In all of them the judge scores every criterion of its prompt in one call."""


def study_policy(preset: str) -> Policy:
    """The preset as the study's protocol runs it: its optimizer also sees the batch's conversations (each judged
    sample with the judge's output), as the study's optimizer prompt shows them. Single-Task runs CCC on each
    one-criterion track, as the study ran it (with one criterion every mode computes the same; the forms are the
    joint ones). judgeopt's own ``single`` preset uses the per-criterion forms."""
    policy = PRESETS[preset]
    if policy.independent_criteria:
        policy = PRESETS["CCC"].model_copy(update={"name": policy.name, "independent_criteria": True})
    optimizer = policy.optimizer.model_copy(update={"fields": policy.optimizer.fields | {"conversations"}})
    return policy.model_copy(update={"optimizer": optimizer})


def policy_from_mapping(data: Mapping[str, Any], *, origin: str) -> Policy:
    try:
        return Policy.model_validate(dict(data))
    except ValidationError as exc:
        raise PolicyError(f"{origin}: {describe_validation_error(exc)}") from None


def load_policy(path: Path) -> Policy:
    """A policy from YAML; every problem becomes one ``PolicyError`` line naming the file and the stage."""
    data = read_yaml_mapping(path, what="policy file", error=PolicyError)
    if not data:
        raise PolicyError(f"{path}: a policy must be a mapping of stages, and this one is empty")
    return policy_from_mapping({"name": path.stem, **data}, origin=str(path))


def resolve_policy(mode: str | None, path: Path | None) -> Policy:
    if path is not None:
        return load_policy(path)
    name = mode or "SSS"
    if name not in PRESETS:
        raise PolicyError(f"unknown mode {name!r} (presets: {', '.join(PRESETS)})")
    return PRESETS[name]
