"""The router: builds every agent request only from what the policy lets that call see, and logs it.

Each routed call carries a request id and its audit entry (stage, criteria in scope, criteria visible, artifacts
carried, fields carried), which the executor appends to the run's audit log when it sends the call. The
services' own ledgers of what they received are checked against the policy by ``judgeopt.orchestrator.engine.audit``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from judgeopt.core.manifest import received_fields
from judgeopt.orchestrator.data.records import CriterionSpec, Record
from judgeopt.orchestrator.engine.artifacts import Critique, Gradient, PromptState, ScoredSample
from judgeopt.orchestrator.engine.policy import Policy, RoutingName, Stage
from judgeopt.v1 import common_pb2, gradient_pb2, judge_pb2, loss_pb2, optimizer_pb2


class _AgentRequest(Protocol):
    @property
    def meta(self) -> common_pb2.RequestMeta: ...

    def SerializeToString(self, *, deterministic: bool = ...) -> bytes: ...


RequestT = TypeVar("RequestT", bound=_AgentRequest)

_ROUTING = {"per_criterion": common_pb2.ROUTING_PER_CRITERION, "joint": common_pb2.ROUTING_JOINT}


def verdict(prediction: float | None, truth: float, tolerance: float) -> str:
    """The study's deterministic verdict: CORRECT within ``tolerance`` of the truth, else the signed difference."""
    if prediction is None:
        return "INCORRECT (no valid score)"
    difference = prediction - truth
    return "CORRECT" if abs(difference) <= tolerance else f"INCORRECT (difference: {difference:+g})"


@dataclass(frozen=True)
class AuditEntry:
    request_id: str
    step: int
    track: str
    stage: Stage
    criteria: tuple[str, ...]
    visible: tuple[str, ...]
    artifacts: tuple[str, ...]
    fields: tuple[str, ...]


@dataclass(frozen=True)
class RoutedCall(Generic[RequestT]):
    request_id: str
    stage: str
    criteria: tuple[str, ...]
    """What the call is about (its focus): one criterion, or all of the track's for a joint call."""
    request: RequestT
    audit: AuditEntry | None
    """``None`` for calls outside the policy's stages (the evaluator's diagnostics)."""
    sample_id: str | None = None


class Router:
    """Routes one track's calls. ``criteria`` are the track's criteria, in order."""

    def __init__(
        self,
        policy: Policy,
        criteria: Sequence[CriterionSpec],
        *,
        run_id: str,
        track: str,
    ) -> None:
        self.policy = policy
        self.criteria = tuple(criteria)
        self.names = tuple(c.name for c in criteria)
        self._specs = {c.name: c for c in criteria}
        self.run_id = run_id
        self.track = track
        self.step = 0
        self.attempt = 1
        """The step's attempt (a step with too many failed calls is tried again with fresh request ids)."""
        self._issued: Counter[str] = Counter()
        """Ids issued in the current (step, attempt): ids of other steps cannot collide, so it is cleared."""
        self._issued_in = (self.step, self.attempt)

    # --- shared machinery --------------------------------------------------------------------------------------

    def _groups(self, routing: RoutingName) -> list[tuple[str, ...]]:
        return [self.names] if routing == "joint" else [(name,) for name in self.names]

    def _visible(self, stage: Stage, focus: tuple[str, ...]) -> tuple[str, ...]:
        """Focus first, then the other criteria the policy lets the call see, in track order."""
        seen = self.policy.visible_criteria(stage, focus, self.names)
        return focus + tuple(c for c in seen if c not in focus)

    def _can_see(self, stage: Stage, field: str) -> bool:
        return field in self.policy.stage(stage).fields

    def _criteria_proto(self, names: Sequence[str]) -> list[common_pb2.Criterion]:
        return [
            common_pb2.Criterion(
                name=n,
                description=self._specs[n].description,
                min_score=self._specs[n].min_score,
                max_score=self._specs[n].max_score,
                integer_scores=self._specs[n].integer_scores,
            )
            for n in names
        ]

    def _meta(self, stage: Stage, request_id: str) -> common_pb2.RequestMeta:
        return common_pb2.RequestMeta(
            request_id=request_id, run_id=self.run_id, call_label=f"step-{self.step}/{self.track}/{stage}"
        )

    def _request_id(self, stage: Stage, request: _AgentRequest) -> str:
        """Derived from the run, track, step, attempt, stage and the request's content, so a resumed run asks a
        call it already asked with the same id, and a service that answered it replays the answer instead of
        calling the model again. A repeat of identical content in one step gets a numbered suffix."""
        where = f"{self.run_id}\x1f{self.track}\x1f{self.step}\x1f{self.attempt}\x1f{stage}\x1f".encode()
        digest = hashlib.blake2b(where + request.SerializeToString(deterministic=True), digest_size=16).hexdigest()
        if self._issued_in != (self.step, self.attempt):
            self._issued.clear()
            self._issued_in = (self.step, self.attempt)
        self._issued[digest] += 1
        seen = self._issued[digest]
        return digest if seen == 1 else f"{digest}-{seen}"

    def _prompt_proto(self, stage: Stage, prompt: PromptState, names: Sequence[str]) -> common_pb2.JudgePrompt:
        return common_pb2.JudgePrompt(
            task_description=prompt.task_description if self._can_see(stage, "task_description") else "",
            instructions=[common_pb2.Instruction(criterion=n, text=prompt.instruction(n)) for n in names],
            omit_output_format=prompt.omit_output_format,
        )

    def _routed(
        self,
        stage: Stage,
        focus: tuple[str, ...],
        visible: tuple[str, ...],
        build: Callable[[common_pb2.RequestMeta], RequestT],
        artifacts: Sequence[str] = (),
        sample_id: str | None = None,
    ) -> RoutedCall[RequestT]:
        request = build(self._meta(stage, ""))
        request.meta.request_id = request_id = self._request_id(stage, request)
        fields = tuple(sorted(f"{c}:{f}" for c, f in received_fields(request)))
        audit = AuditEntry(request_id, self.step, self.track, stage, focus, visible, tuple(artifacts), fields)
        return RoutedCall(request_id, stage, focus, request, audit, sample_id)

    # --- stages --------------------------------------------------------------------------------------------------

    def judge(
        self, prompt: PromptState, record: Record, routing: RoutingName
    ) -> list[RoutedCall[judge_pb2.ScoreRequest]]:
        """One joint call scoring every criterion, or one call per criterion seeing only its own instruction."""
        calls = []
        for focus in self._groups(routing):
            visible = self._visible("judge", focus)

            def build(meta: common_pb2.RequestMeta, visible: tuple[str, ...] = visible) -> judge_pb2.ScoreRequest:
                return judge_pb2.ScoreRequest(
                    meta=meta,
                    routing=_ROUTING[routing],
                    criteria=self._criteria_proto(visible),
                    prompt=self._prompt_proto("judge", prompt, visible),
                    sample=_sample_proto(record),
                )

            calls.append(self._routed("judge", focus, visible, build, sample_id=record.id))
        return calls

    def _evidence(
        self,
        stage: Stage,
        names: Sequence[str],
        record: Record,
        prediction: ScoredSample,
        prompt: PromptState | None,
        critiques: dict[str, Critique] | None,
    ) -> list[common_pb2.CriterionEvidence]:
        items = []
        for name in names:
            item = common_pb2.CriterionEvidence(criterion=name)
            predicted = prediction.scores.get(name)
            if self._can_see(stage, "prediction") and predicted is not None:
                item.prediction = predicted
            if self._can_see(stage, "ground_truth"):
                item.ground_truth = record.labels[name]
            if self._can_see(stage, "verdict"):
                item.verdict = verdict(predicted, record.labels[name], self._specs[name].tolerance)
            if self._can_see(stage, "instruction") and prompt is not None:
                item.instruction = prompt.instruction(name)
            if self._can_see(stage, "critique") and critiques is not None and name in critiques:
                item.critique = critiques[name].text
            items.append(item)
        return items

    def loss(
        self, record: Record, prediction: ScoredSample, prompt: PromptState, routing: RoutingName
    ) -> list[RoutedCall[loss_pb2.CritiqueRequest]]:
        calls = []
        for focus in self._groups(routing):
            visible = self._visible("loss", focus)

            def build(meta: common_pb2.RequestMeta, visible: tuple[str, ...] = visible) -> loss_pb2.CritiqueRequest:
                request = loss_pb2.CritiqueRequest(
                    meta=meta,
                    routing=_ROUTING[routing],
                    criteria=self._criteria_proto(visible),
                    sample_id=record.id,
                    evidence=self._evidence("loss", visible, record, prediction, prompt, None),
                )
                if self._can_see("loss", "sample"):
                    request.sample.CopyFrom(_sample_proto(record))
                if self._can_see("loss", "judge_output"):
                    request.judge_output = prediction.raw_output
                return request

            calls.append(self._routed("loss", focus, visible, build, sample_id=record.id))
        return calls

    def gradient(
        self,
        record: Record,
        prediction: ScoredSample,
        critiques: Sequence[Critique],
        prompt: PromptState,
        routing: RoutingName,
    ) -> list[RoutedCall[gradient_pb2.GradientRequest]]:
        """``critiques`` are the sample's critiques; a joint critique is handed to every criterion (copy)."""
        by_criterion = {name: c for c in critiques for name in c.criteria}
        calls = []
        for focus in self._groups(routing):
            visible = self._visible("gradient", focus)
            carried = sorted({by_criterion[n].id for n in visible if n in by_criterion})
            if not self._can_see("gradient", "critique"):
                carried = []

            def build(meta: common_pb2.RequestMeta, visible: tuple[str, ...] = visible) -> gradient_pb2.GradientRequest:
                request = gradient_pb2.GradientRequest(
                    meta=meta,
                    routing=_ROUTING[routing],
                    criteria=self._criteria_proto(visible),
                    sample_id=record.id,
                    evidence=self._evidence("gradient", visible, record, prediction, None, by_criterion),
                )
                if self._can_see("gradient", "instruction"):
                    request.prompt.CopyFrom(self._prompt_proto("gradient", prompt, visible))
                if self._can_see("gradient", "sample"):
                    request.sample.CopyFrom(_sample_proto(record))
                if self._can_see("gradient", "judge_output"):
                    request.judge_output = prediction.raw_output
                return request

            calls.append(self._routed("gradient", focus, visible, build, carried, sample_id=record.id))
        return calls

    def optimizer(
        self, prompt: PromptState, gradients: Sequence[Gradient], routing: RoutingName
    ) -> list[RoutedCall[optimizer_pb2.StepRequest]]:
        calls = []
        for focus in self._groups(routing):
            visible = self._visible("optimizer", focus)
            carried = (
                [g for g in gradients if set(g.criteria) & set(visible)]
                if self._can_see("optimizer", "gradient")
                else []
            )

            def build(
                meta: common_pb2.RequestMeta,
                visible: tuple[str, ...] = visible,
                carried: Sequence[Gradient] = carried,
            ) -> optimizer_pb2.StepRequest:
                return optimizer_pb2.StepRequest(
                    meta=meta,
                    routing=_ROUTING[routing],
                    criteria=self._criteria_proto(visible),
                    prompt=self._prompt_proto("optimizer", prompt, visible),
                    gradients=[_gradient_proto(g, visible) for g in carried],
                )

            calls.append(self._routed("optimizer", focus, visible, build, [g.id for g in carried]))
        return calls


def _sample_proto(record: Record) -> common_pb2.Sample:
    return common_pb2.Sample(id=record.id, fields=[common_pb2.TextField(name=n, text=t) for n, t in record.fields])


def _gradient_proto(gradient: Gradient, visible: Sequence[str]) -> common_pb2.Gradient:
    """A gradient as the optimizer may see it: attributed only to the visible criteria it covers."""
    return common_pb2.Gradient(
        criteria=[c for c in gradient.criteria if c in visible],
        sample_id=gradient.sample_id,
        keep=gradient.keep,
        problem=gradient.problem,
        fix=gradient.fix,
        status=gradient.status,  # type: ignore[arg-type]
    )
