"""The router's core promise: no request ever carries a field or a criterion its policy hides.

Random valid policies, tracks and artifacts are routed through a real ``Router``; every request it builds is
checked three ways: against ``allowed_fields`` (what the audit enforces), against an oracle written here from the
policy's definition, and textually (hidden instructions, critiques, gradients, sample text and criterion names
must not appear anywhere in the serialized request).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from judgeopt.core.manifest import received_fields
from judgeopt.orchestrator.data.records import CriterionSpec, Record
from judgeopt.orchestrator.engine.artifacts import Critique, Gradient, PromptState, ScoredSample, StepArtifacts
from judgeopt.orchestrator.engine.audit import allowed_fields
from judgeopt.orchestrator.engine.policy import (
    LEARNING_STAGES,
    PER_CRITERION_FIELDS,
    PRESETS,
    REQUIRED_FIELDS,
    ROUTED_FIELDS,
    SHARED_FIELDS,
    STAGE_FIELDS,
    STAGES,
    Policy,
    Routing,
    RoutingState,
    Stage,
    StagePolicy,
)
from judgeopt.orchestrator.engine.router import RoutedCall, Router, verdict
from judgeopt.v1 import common_pb2, judge_pb2

TASK = "TASK DESCRIPTION TEXT"
LEARNING_PATTERNS = ("SSS", "SSC", "SCC", "CCC")
LABELS = tuple(round(1 + i / 3, 12) for i in range(13))
SCORES = (1.0, 2.0, 3.0, 3.5, 4.0, 5.0)
ROUTINGS: tuple[Routing, ...] = ("per_criterion", "joint")


def instruction_text(criterion: str) -> str:
    return f"instruction for {criterion}"


def critique_text(sample_id: str, criteria: Sequence[str]) -> str:
    return f"critique of {sample_id} on {' '.join(criteria)}"


def spec(name: str) -> CriterionSpec:
    return CriterionSpec(name=name, description=f"about {name}", min_score=1, max_score=5, tolerance=0.5)


def record(index: int, labels: dict[str, float]) -> Record:
    sample_id = f"s{index}"
    return Record(
        id=sample_id,
        fields=(("article", f"ARTICLE TEXT {sample_id}"), ("summary", f"SUMMARY TEXT {sample_id}")),
        labels=labels,
        group=sample_id,
    )


def critiques_for(sample_id: str, names: Sequence[str], routing: Routing) -> list[Critique]:
    groups = [tuple(names)] if routing == "joint" else [(n,) for n in names]
    return [
        Critique(
            id=f"crit-{sample_id}-{'-'.join(g)}",
            sample_id=sample_id,
            criteria=g,
            text=critique_text(sample_id, g),
            status=common_pb2.PARSE_STATUS_OK,
        )
        for g in groups
    ]


def gradients_for(sample_id: str, names: Sequence[str], routing: Routing) -> list[Gradient]:
    groups = [tuple(names)] if routing == "joint" else [(n,) for n in names]
    return [
        Gradient(
            id=f"grad-{sample_id}-{'-'.join(g)}",
            sample_id=sample_id,
            criteria=g,
            keep=f"keep {sample_id} {' '.join(g)}",
            problem=f"problem {sample_id} {' '.join(g)}",
            fix=f"fix {sample_id} {' '.join(g)}",
            status=common_pb2.PARSE_STATUS_OK,
        )
        for g in groups
    ]


@dataclass(frozen=True)
class Scenario:
    policy: Policy
    specs: tuple[CriterionSpec, ...]
    records: tuple[Record, ...]
    predictions: tuple[ScoredSample, ...]
    prompt: PromptState
    critiques: dict[str, list[Critique]]
    gradients: tuple[Gradient, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs)


@st.composite
def stage_policies(draw: st.DrawFn, stage: Stage, routing: Routing, names: tuple[str, ...]) -> dict[str, Any]:
    optional = sorted(STAGE_FIELDS[stage] - REQUIRED_FIELDS[stage])
    fields = REQUIRED_FIELDS[stage] | draw(st.sets(st.sampled_from(optional)))
    scope: object
    if routing == "joint":
        scope = draw(st.sampled_from(["own", "all"]))
    elif stage == "judge":
        scope = "own"
    else:
        scope = draw(
            st.one_of(
                st.sampled_from(["own", "all"]),
                st.lists(st.sampled_from(names), unique=True).map(tuple),
            )
        )
    return {"routing": routing, "fields": sorted(fields), "scope": scope}


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    names = tuple(f"c{i}" for i in range(draw(st.integers(1, 4))))
    letters = draw(st.sampled_from(LEARNING_PATTERNS))
    routings: dict[Stage, Routing] = {"judge": draw(st.sampled_from(ROUTINGS))}
    for stage, letter in zip(LEARNING_STAGES, letters, strict=True):
        routings[stage] = "per_criterion" if letter == "S" else "joint"
    data = {stage: draw(stage_policies(stage, routings[stage], names)) for stage in STAGES}
    policy = Policy.model_validate({"name": "generated", **data})
    policy.check_criteria(names)

    count = draw(st.integers(1, 3))
    records = tuple(record(i, {n: draw(st.sampled_from(LABELS)) for n in names}) for i in range(count))
    predictions = tuple(
        ScoredSample(
            sample_id=r.id,
            scores={n: draw(st.one_of(st.none(), st.sampled_from(SCORES))) for n in names},
            statuses={n: common_pb2.PARSE_STATUS_OK for n in names},
            raw_output=f"RAW JUDGE OUTPUT {r.id}",
        )
        for r in records
    )
    # Some loss calls fail and leave no critique; the router must cope with the gaps.
    critiques = {r.id: critiques_for(r.id, names, policy.loss.routing) for r in records}
    dropped = draw(st.sets(st.sampled_from([c.id for cs in critiques.values() for c in cs])))
    critiques = {sid: [c for c in cs if c.id not in dropped] for sid, cs in critiques.items()}
    gradients = tuple(g for r in records for g in gradients_for(r.id, names, policy.gradient.routing))
    prompt = PromptState(
        task_description=draw(st.sampled_from([TASK, ""])),
        instructions=tuple((n, instruction_text(n)) for n in names),
    )
    return Scenario(policy, tuple(spec(n) for n in names), records, predictions, prompt, critiques, gradients)


# --- oracles, written from the policy's definition -------------------------------------------------------------


def oracle_visible(stage_policy: StagePolicy, focus: tuple[str, ...], names: tuple[str, ...]) -> tuple[str, ...]:
    """Focus first, then the other criteria the stage's scope grants, in track order."""
    if stage_policy.routing == "joint" or stage_policy.scope == "all":
        seen = set(names)
    elif stage_policy.scope == "own":
        seen = set(focus)
    else:
        seen = set(focus) | set(stage_policy.scope)
    return focus + tuple(n for n in names if n in seen and n not in focus)


def oracle_allowed(stage_policy: StagePolicy, visible: Sequence[str], joint: bool) -> set[str]:
    granted = stage_policy.fields
    owners = ["*"] if joint else list(visible[:1])
    return (
        {f"*:{f}" for f in granted & SHARED_FIELDS}
        | {f"{c}:{f}" for c in visible for f in granted & PER_CRITERION_FIELDS}
        | {f"{c}:{f}" for c in owners for f in granted & ROUTED_FIELDS}
    )


@dataclass(frozen=True)
class Context:
    """What the router was given for one call: the oracle's view of what the request should carry."""

    record: Record | None = None
    prediction: ScoredSample | None = None
    critiques: Sequence[Critique] = ()
    gradients: Sequence[Gradient] = ()
    conversations: bool = False
    """Whether the optimizer was given the batch (records and predictions) to show as conversations."""


def oracle_fields(scenario: Scenario, stage: Stage, visible: Sequence[str], ctx: Context) -> set[str]:
    """Exactly the fields the request should carry: what the policy grants and there is something to carry."""
    granted = scenario.policy.stage(stage).fields
    expected = {f"*:{f}" for f in granted & {"sample", "judge_output"}}
    if "task_description" in granted and scenario.prompt.task_description and stage != "loss":
        expected.add("*:task_description")
    covered_by_critique = {c for crit in ctx.critiques for c in crit.criteria}
    covered_by_gradient = {c for g in ctx.gradients for c in g.criteria}
    for c in visible:
        if stage in ("judge", "gradient", "optimizer") or "instruction" in granted:
            expected.add(f"{c}:instruction")
        if stage in ("loss", "gradient"):
            assert ctx.prediction is not None
            if "prediction" in granted and ctx.prediction.scores[c] is not None:
                expected.add(f"{c}:prediction")
            expected |= {f"{c}:{f}" for f in granted & {"ground_truth", "verdict"}}
        if stage == "gradient" and "critique" in granted and c in covered_by_critique:
            expected.add(f"{c}:critique")
        if stage == "optimizer" and "gradient" in granted and c in covered_by_gradient:
            expected.add(f"{c}:gradient")
    if stage == "optimizer" and "conversations" in granted and ctx.conversations:
        joint = set(visible) == set(scenario.names) and scenario.policy.optimizer.routing == "joint"
        expected.add("*:conversations" if joint else f"{visible[0]}:conversations")
    return expected


def hidden_markers(scenario: Scenario, stage: Stage, visible: Sequence[str]) -> list[str]:
    """Texts that must not occur in a request of ``stage`` seeing only ``visible``."""
    granted = scenario.policy.stage(stage).fields
    conversations = "conversations" in granted  # the batch's samples, with the raw judge output when joint
    markers = []
    if "sample" not in granted and not conversations:
        markers += ["ARTICLE TEXT", "SUMMARY TEXT"]
    if "judge_output" not in granted and not conversations:
        markers.append("RAW JUDGE OUTPUT")
    if "task_description" not in granted:
        markers.append(TASK)
    if "instruction" not in granted:
        markers.append("instruction for")
    if "critique" not in granted:
        markers.append("critique of")
    if "gradient" not in granted:
        markers += ["keep ", "problem ", "fix "]
    for hidden in set(scenario.names) - set(visible):
        markers += [instruction_text(hidden), f"about {hidden}"]
    return markers


def check_call(scenario: Scenario, call: RoutedCall[Any], stage: Stage, ctx: Context) -> None:
    policy, names = scenario.policy, scenario.names
    stage_policy = policy.stage(stage)
    request = call.request
    received = {f"{c}:{f}" for c, f in received_fields(request)}
    sent_criteria = tuple(c.name for c in request.criteria)
    visible = oracle_visible(stage_policy, call.criteria, names)

    # No field and no criterion the policy hides.
    assert received <= allowed_fields(policy, stage, call.criteria, names)
    assert received <= oracle_allowed(stage_policy, visible, call.routing == "joint")
    assert set(sent_criteria) <= set(policy.view(stage, call.criteria, RoutingState(0, tuple(names))).visible)
    assert sent_criteria == visible
    # ...and everything the policy grants (for which there is something to send) does arrive.
    assert received == oracle_fields(scenario, stage, visible, ctx)

    # The router's log is truthful.
    assert call.audit.fields == tuple(sorted(received))
    assert call.audit.stage == stage == call.stage
    assert call.audit.criteria == call.criteria
    assert call.audit.visible == sent_criteria
    assert call.audit.request_id == call.request_id == request.meta.request_id
    assert request.meta.run_id == "r"
    assert call.audit.track == "all"

    # Independently of the manifest: the serialized request mentions nothing hidden.
    text = str(request)
    for marker in hidden_markers(scenario, stage, visible):
        assert marker not in text, (stage, marker)
    for hidden in set(names) - set(visible):
        assert not re.search(rf"\b{hidden}\b", text), (stage, hidden)

    # Evidence carries the right criterion's values, never another's.
    if stage in ("loss", "gradient"):
        assert ctx.record is not None and ctx.prediction is not None
        by_criterion = {c: crit for crit in ctx.critiques for c in crit.criteria}
        assert [e.criterion for e in request.evidence] == list(visible)
        for item in request.evidence:
            c = item.criterion
            if item.HasField("prediction"):
                assert item.prediction == ctx.prediction.scores[c]
            if item.HasField("ground_truth"):
                assert item.ground_truth == ctx.record.labels[c]
            if item.HasField("verdict"):
                assert item.verdict == verdict(ctx.prediction.scores[c], ctx.record.labels[c], 0.5)
            if item.HasField("instruction"):
                assert item.instruction == instruction_text(c)
            if item.HasField("critique"):
                assert item.critique == by_criterion[c].text
    if stage != "loss" and request.HasField("prompt"):
        assert [(i.criterion, i.text) for i in request.prompt.instructions] == [
            (c, instruction_text(c)) for c in visible
        ]
    if stage == "optimizer":
        for g in request.gradients:
            assert g.criteria and set(g.criteria) <= set(visible)


def expected_focus(routing: Routing, names: tuple[str, ...]) -> list[tuple[str, ...]]:
    return [names] if routing == "joint" else [(n,) for n in names]


@given(scenarios())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_no_request_carries_what_its_policy_hides(scenario: Scenario) -> None:
    """Every judge, loss, gradient and optimizer request carries only (and all) the fields and criteria granted."""
    policy, names = scenario.policy, scenario.names
    router = Router(policy, scenario.specs, run_id="r", track="all")
    for rec, prediction in zip(scenario.records, scenario.predictions, strict=True):
        critiques = scenario.critiques[rec.id]

        judge_calls = router.judge(scenario.prompt, rec, router.state())
        assert [c.criteria for c in judge_calls] == expected_focus(policy.judge.routing, names)
        for judge_call in judge_calls:
            assert judge_call.sample_id == rec.id
            check_call(scenario, judge_call, "judge", Context(record=rec))

        loss_calls = router.loss(rec, prediction, scenario.prompt, router.state())
        assert [c.criteria for c in loss_calls] == expected_focus(policy.loss.routing, names)
        for loss_call in loss_calls:
            assert loss_call.sample_id == rec.id
            check_call(scenario, loss_call, "loss", Context(record=rec, prediction=prediction))

        gradient_calls = router.gradient(rec, prediction, critiques, scenario.prompt, router.state())
        assert [c.criteria for c in gradient_calls] == expected_focus(policy.gradient.routing, names)
        for gradient_call in gradient_calls:
            assert gradient_call.sample_id == rec.id
            seen = set(gradient_call.audit.visible)
            # Never logs a critique of a criterion the call cannot see.
            assert set(gradient_call.audit.artifacts) <= {c.id for c in critiques if seen & set(c.criteria)}
            context = Context(record=rec, prediction=prediction, critiques=critiques)
            check_call(scenario, gradient_call, "gradient", context)

    batch = StepArtifacts(predictions=list(scenario.predictions))
    optimizer_calls = router.optimizer(scenario.prompt, scenario.gradients, router.state(batch), scenario.records)
    assert [c.criteria for c in optimizer_calls] == expected_focus(policy.optimizer.routing, names)
    for optimizer_call in optimizer_calls:
        seen = set(optimizer_call.audit.visible)
        carried = [g for g in scenario.gradients if seen & set(g.criteria)]
        if "gradient" in policy.optimizer.fields:
            assert optimizer_call.audit.artifacts == tuple(g.id for g in carried)
            assert len(optimizer_call.request.gradients) == len(carried)
        else:
            assert optimizer_call.audit.artifacts == ()
            assert len(optimizer_call.request.gradients) == 0
        check_call(scenario, optimizer_call, "optimizer", Context(gradients=carried, conversations=True))
        conversations = optimizer_call.request.conversations
        if "conversations" in policy.optimizer.fields:
            assert [c.sample.id for c in conversations] == [r.id for r in scenario.records]
            for conversation, prediction in zip(conversations, scenario.predictions, strict=True):
                if optimizer_call.routing == "joint":
                    assert conversation.output == prediction.raw_output
                else:
                    score = prediction.scores[optimizer_call.criteria[0]]
                    assert conversation.output == ("" if score is None else f"{score:g}")
        else:
            assert not conversations


def test_request_ids_are_unique() -> None:
    """Every routed call gets its own request id (the audit joins ledgers to the log by it)."""
    names = ("c0", "c1", "c2")
    specs = [spec(n) for n in names]
    router = Router(PRESETS["SSS"], specs, run_id="r", track="all")
    rec = record(0, dict.fromkeys(names, 3.0))
    prediction = ScoredSample("s0", dict.fromkeys(names, 3.0), {}, "raw")
    prompt = PromptState(TASK, tuple((n, instruction_text(n)) for n in names))
    state = router.state()
    calls: list[RoutedCall[Any]] = [
        *router.judge(prompt, rec, state),
        *router.judge(prompt, rec, state),  # the same content again in the step: a numbered id
        *router.loss(rec, prediction, prompt, state),
        *router.gradient(rec, prediction, critiques_for("s0", names, "per_criterion"), prompt, state),
        *router.optimizer(prompt, gradients_for("s0", names, "per_criterion"), state),
    ]
    assert len({c.request_id for c in calls}) == len(calls) == 1 + 1 + 3 + 3 + 3


# --- the study's SSS preset, checked field by field on the protobufs ---------------------------------------------

SSS_NAMES = ("coherence", "fluency", "relevance")


@pytest.fixture
def sss() -> tuple[Router, PromptState, list[Record], list[ScoredSample]]:
    router = Router(PRESETS["SSS"], [spec(n) for n in SSS_NAMES], run_id="r", track="all")
    prompt = PromptState(TASK, tuple((n, instruction_text(n)) for n in SSS_NAMES))
    records = [
        record(0, {"coherence": 2.0, "fluency": 4.0, "relevance": 5.0}),
        record(1, dict.fromkeys(SSS_NAMES, 1.0)),
    ]
    predictions = [
        ScoredSample("s0", {"coherence": 3.0, "fluency": None, "relevance": 5.0}, {}, "RAW JUDGE OUTPUT s0"),
        ScoredSample("s1", dict.fromkeys(SSS_NAMES, 4.0), {}, "RAW JUDGE OUTPUT s1"),
    ]
    return router, prompt, records, predictions


SSSFixture = tuple[Router, PromptState, list[Record], list[ScoredSample]]


class TestSSS:
    def test_loss_sees_only_its_own_evidence(self, sss: SSSFixture) -> None:
        """SSS loss: no sample text, instruction or judge output, and only its own criterion's numbers."""
        router, prompt, records, predictions = sss
        for rec, prediction in zip(records, predictions, strict=True):
            calls = router.loss(rec, prediction, prompt, router.state())
            assert [c.criteria for c in calls] == [(n,) for n in SSS_NAMES]
            for call, own in zip(calls, SSS_NAMES, strict=True):
                request = call.request
                assert not request.HasField("sample")
                assert not request.HasField("judge_output")
                assert [c.name for c in request.criteria] == [own]
                assert [e.criterion for e in request.evidence] == [own]
                (item,) = request.evidence
                assert not item.HasField("instruction")
                assert not item.HasField("critique")
                assert item.ground_truth == rec.labels[own]
                assert item.verdict == verdict(prediction.scores[own], rec.labels[own], 0.5)
                assert item.HasField("prediction") == (prediction.scores[own] is not None)
                text = str(request)
                assert "ARTICLE TEXT" not in text
                assert "RAW JUDGE OUTPUT" not in text
                for other in set(SSS_NAMES) - {own}:
                    assert other not in text

    def test_verdict_for_missing_prediction(self, sss: SSSFixture) -> None:
        """A criterion the judge failed to score reaches the loss as 'no valid score', without a prediction."""
        router, prompt, records, predictions = sss
        calls = router.loss(records[0], predictions[0], prompt, router.state())
        fluency = next(c for c in calls if c.criteria == ("fluency",))
        (item,) = fluency.request.evidence
        assert not item.HasField("prediction")
        assert item.verdict == "INCORRECT (no valid score)"
        assert "fluency:prediction" not in fluency.audit.fields

    def test_gradient_sees_only_its_own_critique_and_instruction(self, sss: SSSFixture) -> None:
        """SSS gradient: never the ground truth, verdict or judge output, nor another criterion's critique."""
        router, prompt, records, predictions = sss
        for rec, prediction in zip(records, predictions, strict=True):
            critiques = critiques_for(rec.id, SSS_NAMES, router.state())
            calls = router.gradient(rec, prediction, critiques, prompt, router.state())
            for call, own in zip(calls, SSS_NAMES, strict=True):
                request = call.request
                assert not request.HasField("judge_output")
                assert request.HasField("sample")
                assert request.prompt.task_description == TASK
                assert [(i.criterion, i.text) for i in request.prompt.instructions] == [(own, instruction_text(own))]
                (item,) = request.evidence
                assert item.criterion == own
                assert not item.HasField("ground_truth")
                assert not item.HasField("verdict")
                assert item.critique == critique_text(rec.id, [own])
                assert call.audit.artifacts == (f"crit-{rec.id}-{own}",)
                text = str(request)
                for other in set(SSS_NAMES) - {own}:
                    assert critique_text(rec.id, [other]) not in text
                    assert instruction_text(other) not in text
                    assert other not in text

    def test_optimizer_sees_only_its_own_gradients(self, sss: SSSFixture) -> None:
        """SSS optimizer: its own instruction and gradients from every sample, no task description."""
        router, prompt, records, _ = sss
        gradients = [g for rec in records for g in gradients_for(rec.id, SSS_NAMES, "per_criterion")]
        calls = router.optimizer(prompt, gradients, router.state())
        for call, own in zip(calls, SSS_NAMES, strict=True):
            request = call.request
            assert request.prompt.task_description == ""
            assert [i.criterion for i in request.prompt.instructions] == [own]
            assert [(tuple(g.criteria), g.sample_id) for g in request.gradients] == [((own,), "s0"), ((own,), "s1")]
            assert call.audit.artifacts == (f"grad-s0-{own}", f"grad-s1-{own}")
            assert call.audit.fields == (f"{own}:gradient", f"{own}:instruction")

    def test_judge_is_one_joint_call_per_sample(self, sss: SSSFixture) -> None:
        """SSS judge: one call per sample with every criterion's instruction, the sample and the task."""
        router, prompt, records, _ = sss
        calls = router.judge(prompt, records[1], router.state())
        assert len(calls) == 1
        (call,) = calls
        assert call.criteria == SSS_NAMES
        assert call.audit.fields == tuple(
            sorted({"*:sample", "*:task_description"} | {f"{n}:instruction" for n in SSS_NAMES})
        )
        assert [f.text for f in call.request.sample.fields] == ["ARTICLE TEXT s1", "SUMMARY TEXT s1"]


class TestJudgeLayouts:
    @pytest.mark.parametrize(
        ("routing", "requests", "layout"),
        [
            ("joint", 1, judge_pb2.JUDGE_LAYOUT_UNSPECIFIED),
            ("prefix_shared", 1, judge_pb2.JUDGE_LAYOUT_PREFIX_SHARED),
            ("per_criterion", len(SSS_NAMES), judge_pb2.JUDGE_LAYOUT_UNSPECIFIED),
        ],
    )
    def test_judge_routing_sets_requests_and_layout(self, routing: Routing, requests: int, layout: int) -> None:
        """A prefix-shared judge is one joint-routed request per sample carrying every instruction, laid out
        prefix-shared (the judge makes the K model calls); the other routings leave the layout unset."""
        judge = StagePolicy(routing=routing, fields=frozenset({"task_description", "instruction", "sample"}))
        policy = PRESETS["SSS"].model_copy(update={"judge": judge})
        router = Router(policy, [spec(n) for n in SSS_NAMES], run_id="r", track="all")
        prompt = PromptState(TASK, tuple((n, instruction_text(n)) for n in SSS_NAMES))
        calls = router.judge(prompt, record(0, dict.fromkeys(SSS_NAMES, 3.0)), router.state())
        assert len(calls) == requests
        assert {c.request.layout for c in calls} == {layout}
        assert {c.routing for c in calls} == {routing}
        if routing == "prefix_shared":
            (call,) = calls
            assert call.request.routing == common_pb2.ROUTING_JOINT
            assert [i.criterion for i in call.request.prompt.instructions] == list(SSS_NAMES)


class TestArtifactLog:
    def test_gradient_logs_no_critique_it_did_not_send(self) -> None:
        """With 'critique' hidden from the gradient, its audit entry lists no critique as carried."""
        data = PRESETS["SSS"].model_dump(mode="json")
        data["gradient"]["fields"] = ["instruction", "prediction"]
        policy = Policy.model_validate(data)
        router = Router(policy, [spec("fluency")], run_id="r", track="all")
        rec = record(0, {"fluency": 3.0})
        prediction = ScoredSample("s0", {"fluency": 2.0}, {}, "raw")
        prompt = PromptState(TASK, (("fluency", instruction_text("fluency")),))
        (call,) = router.gradient(
            rec, prediction, critiques_for("s0", ["fluency"], "per_criterion"), prompt, router.state()
        )
        assert not call.request.evidence[0].HasField("critique")
        assert call.audit.artifacts == ()


class TestVerdict:
    @pytest.mark.parametrize(
        ("prediction", "truth", "tolerance", "expected"),
        [
            (3.0, 3.0, 0.0, "CORRECT"),
            (3.5, 3.0, 0.5, "CORRECT"),
            (2.5, 3.0, 0.5, "CORRECT"),
            (4.0, 3.0, 0.5, "INCORRECT (difference: +1)"),
            (2.0, 3.5, 0.5, "INCORRECT (difference: -1.5)"),
            (4.0, 3.0, 0.0, "INCORRECT (difference: +1)"),
            (3.25, 3.0, 0.0, "INCORRECT (difference: +0.25)"),
            (1.0, 5.0, 1.0, "INCORRECT (difference: -4)"),
        ],
    )
    def test_verdict(self, prediction: float, truth: float, tolerance: float, expected: str) -> None:
        """CORRECT within the tolerance (inclusive), otherwise the signed difference prediction - truth."""
        assert verdict(prediction, truth, tolerance) == expected

    @pytest.mark.parametrize("tolerance", [0.0, 0.5, 10.0])
    def test_no_valid_score(self, tolerance: float) -> None:
        """A missing prediction is never correct, whatever the tolerance."""
        assert verdict(None, 3.0, tolerance) == "INCORRECT (no valid score)"

    @given(
        st.sampled_from([1.0, 2.0, 3.0, 4.0, 5.0]),
        st.sampled_from([1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0]),
        st.sampled_from([0.0, 0.5, 1.0]),
    )
    def test_verdict_sign_and_tolerance(self, prediction: float, truth: float, tolerance: float) -> None:
        """On exactly representable values: CORRECT iff |p - t| <= tolerance; otherwise the sign is p - t's."""
        result = verdict(prediction, truth, tolerance)
        if abs(prediction - truth) <= tolerance:
            assert result == "CORRECT"
        else:
            sign = "+" if prediction > truth else "-"
            assert result.startswith(f"INCORRECT (difference: {sign}")
            assert float(result.removeprefix("INCORRECT (difference: ").removesuffix(")")) == prediction - truth
