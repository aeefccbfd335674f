"""The router: builds every agent request only from what the policy lets that call see, and logs it.

Each routed call carries a request id and its audit entry (stage, criteria in scope, criteria visible, artifacts
carried, fields carried), which the executor appends to the run's audit log when it sends the call. The
services' own ledgers of what they received are checked against the policy by ``judgeopt.orchestrator.engine.audit``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from judgeopt.core.manifest import received_fields
from judgeopt.orchestrator import convert
from judgeopt.orchestrator.data.records import CriterionSpec, Record
from judgeopt.orchestrator.engine.artifacts import Critique, Gradient, PromptState, ScoredSample, StepArtifacts
from judgeopt.orchestrator.engine.policy import CallView, Policy, RoutingState, Stage
from judgeopt.v1 import common_pb2, gradient_pb2, judge_pb2, loss_pb2, optimizer_pb2


class _AgentRequest(Protocol):
    @property
    def meta(self) -> common_pb2.RequestMeta: ...

    def SerializeToString(self, *, deterministic: bool = ...) -> bytes: ...


RequestT = TypeVar("RequestT", bound=_AgentRequest)


def verdict(prediction: float | None, truth: float, tolerance: float, *, protocol: str = "judgeopt") -> str:
    """The deterministic verdict: CORRECT within ``tolerance`` of the truth, else the difference: signed (judgeopt)
    or absolute, |pred - truth|, as the study's protocol has it."""
    if prediction is None:
        return "INCORRECT (no valid score)"
    difference = prediction - truth
    if abs(difference) <= tolerance:
        return "CORRECT"
    return (
        f"INCORRECT (difference: {abs(difference):g})"
        if protocol == "study"
        else f"INCORRECT (difference: {difference:+g})"
    )


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
    routing: str = "joint"
    """How the call was routed (``joint``, ``per_criterion`` or ``prefix_shared``); part of the judge cache's key."""


class Router:
    """Routes one track's calls. ``criteria`` are the track's criteria, in order. What each call may see comes from
    one place, :meth:`Policy.view`, asked with the step's :class:`RoutingState`."""

    def __init__(
        self,
        policy: Policy,
        criteria: Sequence[CriterionSpec],
        *,
        run_id: str,
        track: str,
        protocol: str = "judgeopt",
    ) -> None:
        self.policy = policy
        self.protocol = protocol
        """The agents' prompt protocol, carried in every request's meta (only when not the default, so default
        requests stay as they were)."""
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

    def state(self, artifacts: StepArtifacts | None = None) -> RoutingState:
        """The routing state of the current step, with what it has produced so far."""
        return RoutingState(self.step, self.names, artifacts)

    def _views(self, stage: Stage, state: RoutingState) -> list[CallView]:
        return [self.policy.view(stage, focus, state) for focus in self.policy.calls(stage, state)]

    def _criteria_proto(self, names: Sequence[str]) -> list[common_pb2.Criterion]:
        return [convert.criterion(self._specs[n]) for n in names]

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

    def _prompt_proto(self, view: CallView, prompt: PromptState) -> common_pb2.JudgePrompt:
        return convert.judge_prompt(prompt, view.visible, task_description=view.can_see("task_description"))

    def _routed(
        self,
        view: CallView,
        build: Callable[[common_pb2.RequestMeta], RequestT],
        artifacts: Sequence[str] = (),
        sample_id: str | None = None,
    ) -> RoutedCall[RequestT]:
        label = f"step-{self.step}/{self.track}/{view.stage}"
        meta = convert.request_meta("", self.run_id, label)
        if self.protocol != "judgeopt":
            meta.prompt_protocol = self.protocol
        request = build(meta)
        request.meta.request_id = request_id = self._request_id(view.stage, request)
        fields = tuple(sorted(f"{c}:{f}" for c, f in received_fields(request)))
        audit = AuditEntry(
            request_id, self.step, self.track, view.stage, view.focus, view.visible, tuple(artifacts), fields
        )
        return RoutedCall(request_id, view.stage, view.focus, request, audit, sample_id, view.routing)

    # --- stages --------------------------------------------------------------------------------------------------

    def judge(
        self, prompt: PromptState, record: Record, state: RoutingState
    ) -> list[RoutedCall[judge_pb2.ScoreRequest]]:
        """One joint call scoring every criterion, one call per criterion seeing only its own instruction, or one
        prefix-shared call the judge answers criterion by criterion."""
        calls = []
        for view in self._views("judge", state):

            def build(meta: common_pb2.RequestMeta, view: CallView = view) -> judge_pb2.ScoreRequest:
                return judge_pb2.ScoreRequest(
                    meta=meta,
                    routing=convert.routing(view.routing),
                    criteria=self._criteria_proto(view.visible),
                    prompt=self._prompt_proto(view, prompt),
                    sample=convert.sample(record),
                    layout=convert.judge_layout(view.routing),
                )

            calls.append(self._routed(view, build, sample_id=record.id))
        return calls

    def _evidence(
        self,
        view: CallView,
        record: Record,
        prediction: ScoredSample,
        prompt: PromptState | None,
        critiques: dict[str, Critique] | None,
    ) -> list[common_pb2.CriterionEvidence]:
        items = []
        for name in view.visible:
            item = common_pb2.CriterionEvidence(criterion=name)
            predicted = prediction.scores.get(name)
            if view.can_see("prediction") and predicted is not None:
                item.prediction = predicted
            if view.can_see("ground_truth"):
                item.ground_truth = record.labels[name]
            if view.can_see("verdict"):
                item.verdict = verdict(
                    predicted, record.labels[name], self._specs[name].tolerance, protocol=self.protocol
                )
            if view.can_see("instruction") and prompt is not None:
                item.instruction = prompt.instruction(name)
            if view.can_see("critique") and critiques is not None and name in critiques:
                item.critique = critiques[name].text
            items.append(item)
        return items

    def loss(
        self, record: Record, prediction: ScoredSample, prompt: PromptState, state: RoutingState
    ) -> list[RoutedCall[loss_pb2.CritiqueRequest]]:
        calls = []
        for view in self._views("loss", state):

            def build(meta: common_pb2.RequestMeta, view: CallView = view) -> loss_pb2.CritiqueRequest:
                request = loss_pb2.CritiqueRequest(
                    meta=meta,
                    routing=convert.routing(view.routing),
                    criteria=self._criteria_proto(view.visible),
                    sample_id=record.id,
                    evidence=self._evidence(view, record, prediction, prompt, None),
                )
                if view.can_see("sample"):
                    request.sample.CopyFrom(convert.sample(record))
                if view.can_see("judge_output"):
                    request.judge_output = prediction.raw_output
                return request

            calls.append(self._routed(view, build, sample_id=record.id))
        return calls

    def gradient(
        self,
        record: Record,
        prediction: ScoredSample,
        critiques: Sequence[Critique],
        prompt: PromptState,
        state: RoutingState,
    ) -> list[RoutedCall[gradient_pb2.GradientRequest]]:
        """``critiques`` are the sample's critiques; a joint critique is handed to every criterion (copy)."""
        by_criterion = {name: c for c in critiques for name in c.criteria}
        calls = []
        for view in self._views("gradient", state):
            carried = sorted({by_criterion[n].id for n in view.visible if n in by_criterion})
            if not view.can_see("critique"):
                carried = []

            def build(meta: common_pb2.RequestMeta, view: CallView = view) -> gradient_pb2.GradientRequest:
                request = gradient_pb2.GradientRequest(
                    meta=meta,
                    routing=convert.routing(view.routing),
                    criteria=self._criteria_proto(view.visible),
                    sample_id=record.id,
                    evidence=self._evidence(view, record, prediction, None, by_criterion),
                )
                if view.can_see("instruction"):
                    request.prompt.CopyFrom(self._prompt_proto(view, prompt))
                if view.can_see("sample"):
                    request.sample.CopyFrom(convert.sample(record))
                if view.can_see("judge_output"):
                    request.judge_output = prediction.raw_output
                return request

            calls.append(self._routed(view, build, carried, sample_id=record.id))
        return calls

    @staticmethod
    def _conversations(view: CallView, records: Sequence[Record], state: RoutingState) -> list[common_pb2.Conversation]:
        """The batch's judged samples (in batch order) with the judge's output: a per-criterion call's criterion's
        score, or the raw joint reply; empty unless the call may see them."""
        if not view.can_see("conversations") or state.artifacts is None:
            return []
        predictions = {p.sample_id: p for p in state.artifacts.predictions}
        conversations = []
        for record in records:
            prediction = predictions.get(record.id)
            if prediction is None:
                continue
            if view.routing == "joint":
                output = prediction.raw_output
            else:
                score = prediction.scores.get(view.focus[0])
                output = "" if score is None else f"{score:g}"
            conversations.append(common_pb2.Conversation(sample=convert.sample(record), output=output))
        return conversations

    def optimizer(
        self,
        prompt: PromptState,
        gradients: Sequence[Gradient],
        state: RoutingState,
        records: Sequence[Record] = (),
        resolution: str = "",
        limits: Mapping[str, int] | None = None,
    ) -> list[RoutedCall[optimizer_pb2.StepRequest]]:
        """``records`` are the batch's samples; with the step's predictions in ``state`` they make the conversations
        of the calls that may see them. A joint call that may see it carries the conflict arbiter's ``resolution``.
        Each call carries the length ``limits`` of its criteria (none when empty)."""
        calls = []
        for view in self._views("optimizer", state):
            carried = self._carried_gradients(view, gradients)

            def build(
                meta: common_pb2.RequestMeta, view: CallView = view, carried: Sequence[Gradient] = carried
            ) -> optimizer_pb2.StepRequest:
                request = optimizer_pb2.StepRequest(
                    meta=meta,
                    routing=convert.routing(view.routing),
                    criteria=self._criteria_proto(view.visible),
                    prompt=self._prompt_proto(view, prompt),
                    gradients=[convert.gradient(g, view.visible) for g in carried],
                    conversations=self._conversations(view, records, state),
                )
                if resolution and view.routing == "joint" and view.can_see("resolution"):
                    request.resolution = resolution
                request.instruction_max_tokens.update({n: limits[n] for n in view.visible if limits and n in limits})
                return request

            calls.append(self._routed(view, build, [g.id for g in carried]))
        return calls

    @staticmethod
    def _carried_gradients(view: CallView, gradients: Sequence[Gradient]) -> list[Gradient]:
        return [g for g in gradients if set(g.criteria) & set(view.visible)] if view.can_see("gradient") else []

    def arbiter(
        self, gradients: Sequence[Gradient], state: RoutingState
    ) -> list[RoutedCall[optimizer_pb2.ArbitrateRequest]]:
        """The conflict arbiter's call for each joint optimizer call, with that call's view: it is routed and
        audited as an optimizer call, and carries only the gradients that call may see."""
        calls = []
        for view in self._views("optimizer", state):
            carried = self._carried_gradients(view, gradients)
            if view.routing != "joint" or not carried:
                continue

            def build(
                meta: common_pb2.RequestMeta, view: CallView = view, carried: Sequence[Gradient] = carried
            ) -> optimizer_pb2.ArbitrateRequest:
                return optimizer_pb2.ArbitrateRequest(
                    meta=meta,
                    criteria=self._criteria_proto(view.visible),
                    gradients=[convert.gradient(g, view.visible) for g in carried],
                )

            calls.append(self._routed(view, build, [g.id for g in carried]))
        return calls
