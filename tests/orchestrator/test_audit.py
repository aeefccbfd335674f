"""``judgeopt audit``: the services' ledgers of what they received, checked against the run's policy.

Run directories are synthetic: a real ``Router`` builds the requests and its audit entries go to a real
``RunStore``; the ledgers hold exactly what ``LedgerInterceptor`` writes (``judgeopt.core.manifest.manifest``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from judgeopt.cli import main
from judgeopt.core.errors import ConfigError
from judgeopt.core.manifest import manifest
from judgeopt.core.models import ModelsConfig
from judgeopt.orchestrator.config import RunConfig
from judgeopt.orchestrator.data.records import CriterionSpec, Record
from judgeopt.orchestrator.engine.artifacts import Critique, Gradient, PromptState, ScoredSample
from judgeopt.orchestrator.engine.audit import AuditReport, allowed_fields, audit_run
from judgeopt.orchestrator.engine.manifest import RunManifest
from judgeopt.orchestrator.engine.policy import PRESETS, CallView, Policy, Routing
from judgeopt.orchestrator.engine.router import RoutedCall, Router
from judgeopt.orchestrator.engine.store import CallAttempt, RunStore
from judgeopt.orchestrator.study.apply import judge_policy
from judgeopt.v1 import common_pb2, gradient_pb2

RUN_ID = "r1"
CRITERIA = ("coherence", "fluency")
RPC = {
    "judge": "/judgeopt.v1.JudgeService/Score",
    "loss": "/judgeopt.v1.LossService/Critique",
    "gradient": "/judgeopt.v1.GradientService/ComputeGradient",
    "optimizer": "/judgeopt.v1.OptimizerService/Step",
}

Call = RoutedCall[Any]


def spec(name: str) -> CriterionSpec:
    return CriterionSpec(name=name, description=f"about {name}", tolerance=0.5)


RECORDS = (
    Record("s0", (("article", "ARTICLE s0"), ("summary", "SUMMARY s0")), {"coherence": 2.0, "fluency": 4.0}, "s0"),
    Record("s1", (("article", "ARTICLE s1"), ("summary", "SUMMARY s1")), {"coherence": 5.0, "fluency": 1.0}, "s1"),
)


def route_step(router: Router) -> list[Call]:
    """One training step's calls on every record: judge, loss, gradient, then the optimizer."""
    names = router.names
    prompt = PromptState("TASK", tuple((n, f"instruction for {n}") for n in names))
    calls: list[Call] = []
    gradients: list[Gradient] = []
    for rec in RECORDS:
        prediction = ScoredSample(rec.id, {n: 3.0 for n in names}, {}, f"RAW {rec.id}")
        calls += router.judge(prompt, rec, router.state())
        losses = router.loss(rec, prediction, prompt, router.state())
        calls += losses
        critiques = [
            Critique(f"crit-{rec.id}-{i}", rec.id, c.criteria, f"critique {i}", common_pb2.PARSE_STATUS_OK)
            for i, c in enumerate(losses)
        ]
        grads = router.gradient(rec, prediction, critiques, prompt, router.state())
        calls += grads
        gradients += [
            Gradient(f"grad-{rec.id}-{i}", rec.id, c.criteria, "keep", "problem", "fix", common_pb2.PARSE_STATUS_OK)
            for i, c in enumerate(grads)
        ]
    calls += router.optimizer(prompt, gradients, router.state())
    return calls


def start_run(
    run_dir: Path, policy: Policy, *, criteria: Sequence[str] = CRITERIA, tracks: Sequence[str] = ("all",)
) -> RunStore:
    store = RunStore(run_dir)
    store.write_manifest(
        RunManifest(
            run_id=RUN_ID,
            config=RunConfig(),
            models=ModelsConfig(),
            model_names={},
            policy=policy,
            criteria=tuple(spec(c) for c in criteria),
            text_fields=("text",),
            tracks=tuple(tracks),
            data_checksum="",
            splits={},
        )
    )
    return store


def write_ledgers(run_dir: Path, calls: Sequence[Call], *, edit: dict[str, Any] | None = None) -> None:
    """Append each request's manifest to its service's ledger, as ``LedgerInterceptor`` does."""
    services = run_dir / "services"
    services.mkdir(parents=True, exist_ok=True)
    for call in calls:
        line = manifest(call.request, RPC[call.stage])
        if edit and call.request_id in edit:
            line.update(edit[call.request_id])
        with (services / f"{call.stage}.ledger.jsonl").open("a", encoding="utf-8") as ledger:
            ledger.write(json.dumps(line) + "\n")


def make_run(run_dir: Path, policy: Policy, router_class: type[Router] = Router) -> list[Call]:
    """A run whose router logged every call and whose services received every request."""
    store = start_run(run_dir, policy)
    router = router_class(policy, [spec(n) for n in CRITERIA], run_id=RUN_ID, track="all")
    calls = route_step(router)
    for call in calls:
        store.record_audit(call.audit)
    store.close()
    write_ledgers(run_dir, calls)
    return calls


def record_attempts(run_dir: Path, calls: Sequence[Call], *, failed: dict[str, int]) -> None:
    """The calls table as the executor leaves it: one ``ok`` attempt per call, or ``failed[request_id]`` failed
    attempts (UNAVAILABLE) and nothing else."""
    store = RunStore(run_dir)
    try:
        for call in calls:
            for attempt in range(1, failed.get(call.request_id, 0) + 1):
                store.record_attempt(
                    CallAttempt(call.request_id, attempt, "all", 0, call.stage, "train", "failed", "UNAVAILABLE")
                )
            if call.request_id not in failed:
                store.record_attempt(CallAttempt(call.request_id, 1, "all", 0, call.stage, "train", "ok"))
    finally:
        store.close()


def drop_from_ledgers(run_dir: Path, request_ids: set[str]) -> None:
    """Remove the lines of ``request_ids`` from every ledger (as if no service had received them)."""
    for ledger in (run_dir / "services").glob("*.ledger.jsonl"):
        lines = ledger.read_text(encoding="utf-8").splitlines(keepends=True)
        ledger.write_text(
            "".join(line for line in lines if json.loads(line)["request_id"] not in request_ids), encoding="utf-8"
        )


class LeakyGradientRouter(Router):
    """Adds the ground truth to every gradient request after its (clean) audit entry was built."""

    def gradient(
        self,
        record: Record,
        prediction: ScoredSample,
        critiques: Sequence[Critique],
        prompt: PromptState,
        routing: Any,
    ) -> list[RoutedCall[gradient_pb2.GradientRequest]]:
        calls = super().gradient(record, prediction, critiques, prompt, routing)
        for call in calls:
            for item in call.request.evidence:
                item.ground_truth = record.labels[item.criterion]
        return calls


class SelfReportingLeakyRouter(Router):
    """Leaks the ground truth to the gradient agent and says so in its own log."""

    def _views(self, stage: Any, state: Any) -> list[CallView]:
        views = super()._views(stage, state)
        if stage != "gradient":
            return views
        return [dataclasses.replace(view, fields=view.fields | {"ground_truth"}) for view in views]


def breaches_about(report: AuditReport, stage: str, text: str) -> list[str]:
    return [b.problem for b in report.breaches if b.stage == stage and text in b.problem]


class TestHonestRuns:
    @pytest.mark.parametrize("mode", ["SSS", "SSC", "SCC", "CCC"])
    def test_honest_router_passes(self, tmp_path: Path, mode: str) -> None:
        """A run whose router follows its policy passes, every received request checked."""
        calls = make_run(tmp_path, PRESETS[mode])
        report = audit_run(tmp_path)
        assert report.breaches == ()
        assert report.ok
        assert report.checked_requests == report.routed_requests == report.received_requests == len(calls)
        assert report.never_sent == 0
        assert sorted(Path(f).name for f in report.ledger_files) == sorted(f"{s}.ledger.jsonl" for s in RPC)

    def test_single_task_tracks(self, tmp_path: Path) -> None:
        """Single-Task: one track per criterion, each audited against its own one-criterion track."""
        policy = PRESETS["single"]
        store = start_run(tmp_path, policy, tracks=CRITERIA)
        calls: list[Call] = []
        for name in CRITERIA:
            router = Router(policy, [spec(name)], run_id=RUN_ID, track=name)
            calls += route_step(router)
        for call in calls:
            store.record_audit(call.audit)
        store.close()
        write_ledgers(tmp_path, calls)
        report = audit_run(tmp_path)
        assert report.ok, report.breaches
        assert report.checked_requests == report.routed_requests == len(calls)

    @pytest.mark.parametrize("routing", ["joint", "prefix_shared"])
    def test_judging_outside_the_runs_tracks_is_checked_over_every_criterion(
        self, tmp_path: Path, routing: Routing
    ) -> None:
        """A Single-Task run's judge calls of the interference measurement (a track of their own, every criterion in
        one request) are audited, not refused as an unknown track."""
        policy = PRESETS["single"]
        store = start_run(tmp_path, policy, tracks=CRITERIA)
        router = Router(judge_policy(routing), [spec(n) for n in CRITERIA], run_id=RUN_ID, track=f"x-{routing}")
        prompt = PromptState("Task.", tuple((n, f"Rate {n}.") for n in CRITERIA))
        calls = [c for rec in RECORDS for c in router.judge(prompt, rec, router.state())]
        for call in calls:
            store.record_audit(call.audit)
        store.close()
        write_ledgers(tmp_path, calls)
        report = audit_run(tmp_path)
        assert report.ok, report.breaches
        assert report.checked_requests == report.routed_requests == len(calls) == 2

    def test_retried_request_is_checked_each_time(self, tmp_path: Path) -> None:
        """A request received twice (a retry keeps its id) is checked twice and still passes."""
        calls = make_run(tmp_path, PRESETS["SSS"])
        write_ledgers(tmp_path, calls[:1])
        report = audit_run(tmp_path)
        assert report.ok
        assert report.checked_requests == len(calls) + 1
        assert report.routed_requests == report.received_requests == len(calls)

    def test_requests_of_other_runs_are_ignored(self, tmp_path: Path) -> None:
        """Ledger lines of another run (a service shared between runs) are neither checked nor breaches."""
        calls = make_run(tmp_path, PRESETS["SSS"])
        stranger = LeakyGradientRouter(PRESETS["SSS"], [spec(n) for n in CRITERIA], run_id="other", track="all")
        foreign = route_step(stranger)
        write_ledgers(tmp_path, foreign)
        report = audit_run(tmp_path)
        assert report.ok
        assert report.checked_requests == report.routed_requests == len(calls)


class TestBreaches:
    def test_leak_after_logging_is_caught_by_the_service_ledger(self, tmp_path: Path) -> None:
        """A router whose log stays clean while the request leaks is caught by what the service received."""
        calls = make_run(tmp_path, PRESETS["SSS"], LeakyGradientRouter)
        # The router's own log is clean: only the ledger can reveal the leak.
        gradient_calls = [c for c in calls if c.stage == "gradient"]
        assert not any("ground_truth" in f for c in gradient_calls for f in c.audit.fields)
        assert all(item.HasField("ground_truth") for c in gradient_calls for item in c.request.evidence)
        report = audit_run(tmp_path)
        assert not report.ok
        assert report.checked_requests == report.routed_requests == len(calls)
        assert {b.stage for b in report.breaches} == {"gradient"}
        assert not [b for b in report.breaches if "router sent" in b.problem]
        leaked = breaches_about(report, "gradient", "service received fields the policy hides")
        assert len(leaked) == len(gradient_calls) == 4
        assert any("'fluency:ground_truth'" in problem for problem in leaked)
        assert any("'coherence:ground_truth'" in problem for problem in leaked)
        assert {b.request_id for b in report.breaches} == {c.request_id for c in gradient_calls}

    def test_leak_the_router_logs_is_caught_twice(self, tmp_path: Path) -> None:
        """A router that leaks and logs it is caught in its own log and in the service ledger."""
        calls = make_run(tmp_path, PRESETS["SSS"], SelfReportingLeakyRouter)
        report = audit_run(tmp_path)
        assert report.checked_requests == report.routed_requests == len(calls)
        assert breaches_about(report, "gradient", "router sent fields the policy hides")
        assert breaches_about(report, "gradient", "service received fields the policy hides")
        assert {b.stage for b in report.breaches} == {"gradient"}

    def test_request_the_router_never_routed(self, tmp_path: Path) -> None:
        """A request a service received but the router never logged is a breach, even if it is harmless."""
        calls = make_run(tmp_path, PRESETS["SSS"])
        router = Router(PRESETS["SSS"], [spec(n) for n in CRITERIA], run_id=RUN_ID, track="all")
        router.step = 99  # a step the run never had: the request id is one the router never logged
        prompt = PromptState("TASK", tuple((n, f"instruction for {n}") for n in CRITERIA))
        (unlogged,) = router.judge(prompt, RECORDS[0], router.state())
        write_ledgers(tmp_path, [unlogged])
        report = audit_run(tmp_path)
        assert [(b.request_id, b.stage) for b in report.breaches] == [(unlogged.request_id, "judge")]
        assert "never routed" in report.breaches[0].problem
        assert report.checked_requests == len(calls) + 1

    def test_request_routed_but_never_received(self, tmp_path: Path) -> None:
        """A routed call that was answered (an ``ok`` attempt in the calls table) but that no service's ledger holds
        is a breach: the audit saw a different traffic than the run had."""
        calls = make_run(tmp_path, PRESETS["SSS"])
        lost = next(c for c in calls if c.stage == "gradient")
        record_attempts(tmp_path, calls, failed={})
        drop_from_ledgers(tmp_path, {lost.request_id})
        report = audit_run(tmp_path)
        assert [(b.request_id, b.stage) for b in report.breaches] == [(lost.request_id, "gradient")]
        assert "routed" in report.breaches[0].problem and "no service received" in report.breaches[0].problem
        assert (report.routed_requests, report.received_requests) == (len(calls), len(calls) - 1)

    def test_routed_call_whose_every_attempt_failed_before_any_service(self, tmp_path: Path) -> None:
        """A routed call whose every attempt failed (UNAVAILABLE: it never reached a service) is in the calls table
        as failed, and in no ledger: no breach, counted as never sent."""
        calls = make_run(tmp_path, PRESETS["SSS"])
        unsent = next(c for c in calls if c.stage == "loss")
        record_attempts(tmp_path, calls, failed={unsent.request_id: 3})
        drop_from_ledgers(tmp_path, {unsent.request_id})
        report = audit_run(tmp_path)
        assert report.ok, report.breaches
        assert report.never_sent == 1
        assert (report.routed_requests, report.received_requests) == (len(calls), len(calls) - 1)

    def test_criterion_outside_the_visible_scope(self, tmp_path: Path) -> None:
        """A per-criterion loss request that arrived defining another criterion too is a breach."""
        store = start_run(tmp_path, PRESETS["SSS"])
        router = Router(PRESETS["SSS"], [spec(n) for n in CRITERIA], run_id=RUN_ID, track="all")
        calls = route_step(router)
        for call in calls:
            store.record_audit(call.audit)
        store.close()
        target = next(c for c in calls if c.stage == "loss" and c.criteria == ("coherence",))
        write_ledgers(tmp_path, calls, edit={target.request_id: {"criteria": ["coherence", "fluency"]}})
        report = audit_run(tmp_path)
        assert report.checked_requests == report.routed_requests == len(calls)
        assert [(b.request_id, b.stage) for b in report.breaches] == [(target.request_id, "loss")]
        assert "criteria the policy hides" in report.breaches[0].problem
        assert "fluency" in report.breaches[0].problem

    def test_field_of_another_criterion(self, tmp_path: Path) -> None:
        """A per-criterion gradient request that received another criterion's critique is a breach."""
        store = start_run(tmp_path, PRESETS["SSS"])
        router = Router(PRESETS["SSS"], [spec(n) for n in CRITERIA], run_id=RUN_ID, track="all")
        calls = route_step(router)
        for call in calls:
            store.record_audit(call.audit)
        store.close()
        target = next(c for c in calls if c.stage == "gradient" and c.criteria == ("fluency",))
        fields = [*manifest(target.request, RPC["gradient"])["fields"], "coherence:critique"]
        write_ledgers(tmp_path, calls, edit={target.request_id: {"fields": fields}})
        report = audit_run(tmp_path)
        assert report.checked_requests == report.routed_requests == len(calls)
        assert [(b.request_id, b.stage) for b in report.breaches] == [(target.request_id, "gradient")]
        assert "'coherence:critique'" in report.breaches[0].problem

    def test_request_received_by_the_wrong_service(self, tmp_path: Path) -> None:
        """A request routed as a loss call but received by the gradient service is a breach."""
        calls = make_run(tmp_path, PRESETS["SSS"])
        loss_call = next(c for c in calls if c.stage == "loss")
        misplaced = manifest(loss_call.request, RPC["gradient"])
        with (tmp_path / "services" / "gradient.ledger.jsonl").open("a", encoding="utf-8") as ledger:
            ledger.write(json.dumps(misplaced) + "\n")
        report = audit_run(tmp_path)
        assert report.checked_requests == len(calls) + 1 and report.routed_requests == len(calls)
        assert [(b.request_id, b.stage) for b in report.breaches] == [(loss_call.request_id, "gradient")]
        assert "routed as loss" in report.breaches[0].problem


class TestNothingToAudit:
    def test_no_ledgers(self, tmp_path: Path) -> None:
        """A run directory without service ledgers is a ConfigError, not a pass."""
        store = start_run(tmp_path, PRESETS["SSS"])
        store.close()
        with pytest.raises(ConfigError, match="ledger"):
            audit_run(tmp_path)

    def test_empty_services_directory(self, tmp_path: Path) -> None:
        """An existing but empty services directory is a ConfigError too."""
        store = start_run(tmp_path, PRESETS["SSS"])
        store.close()
        (tmp_path / "services").mkdir()
        with pytest.raises(ConfigError, match="no service ledgers"):
            audit_run(tmp_path)

    def test_emptied_ledgers_are_not_a_pass(self, tmp_path: Path) -> None:
        """Ledgers that exist but hold nothing of the run (emptied, or another run's): nothing was checked, and that
        is a one-line refusal naming how many requests were routed, not "audit ok: 0 checked"."""
        calls = make_run(tmp_path, PRESETS["SSS"])
        for ledger in (tmp_path / "services").glob("*.ledger.jsonl"):
            ledger.write_text("", encoding="utf-8")
        with pytest.raises(ConfigError, match=rf"hold no request of run {RUN_ID} \({len(calls)} routed\)"):
            audit_run(tmp_path)

    def test_no_run(self, tmp_path: Path) -> None:
        """A directory that holds no run is a ConfigError naming it."""
        with pytest.raises(ConfigError, match="holds no run"):
            audit_run(tmp_path / "nothing")


class TestAllowedFields:
    def test_sss_loss(self) -> None:
        """SSS loss on fluency may carry fluency's evidence, and nothing shared."""
        assert allowed_fields(PRESETS["SSS"], "loss", ["fluency"], CRITERIA) == {
            "fluency:prediction",
            "fluency:ground_truth",
            "fluency:verdict",
        }

    def test_ccc_gradient(self) -> None:
        """CCC gradient may carry every criterion's granted fields and the shared ones."""
        allowed = allowed_fields(PRESETS["CCC"], "gradient", CRITERIA, CRITERIA)
        assert {"*:sample", "*:judge_output", "*:task_description"} <= allowed
        assert {"coherence:critique", "fluency:critique", "fluency:instruction"} <= allowed
        assert not any(f.endswith(":ground_truth") for f in allowed)


class TestCli:
    def test_honest_run_exits_zero(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`judgeopt audit` on an honest run exits 0, prints no breach, and reports checked = routed."""
        calls = make_run(tmp_path, PRESETS["SSS"])
        assert main(["audit", str(tmp_path)]) == 0
        out = capsys.readouterr().out
        assert "BREACH" not in out
        n = len(calls)
        assert f"audit ok: {n} received requests checked in 4 ledgers; {n} of {n} routed requests received" in out

    def test_emptied_ledgers_exit_non_zero_in_one_line(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        make_run(tmp_path, PRESETS["SSS"])
        for ledger in (tmp_path / "services").glob("*.ledger.jsonl"):
            ledger.write_text("", encoding="utf-8")
        assert main(["audit", str(tmp_path)]) == 2
        captured = capsys.readouterr()
        err = captured.err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("ConfigError: ") and "nothing was checked" in err[0]
        assert "audit ok" not in captured.out

    def test_leaky_run_exits_non_zero(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`judgeopt audit` on a leaky run exits non-zero with a BREACH line naming the stage and the field."""
        calls = make_run(tmp_path, PRESETS["SSS"], LeakyGradientRouter)
        assert main(["audit", str(tmp_path)]) != 0
        lines = capsys.readouterr().out.splitlines()
        n = len(calls)
        assert (
            lines[-1]
            == f"audit 4 breach(es): {n} received requests checked in 4 ledgers; {n} of {n} routed requests received"
        )
        breaches = [line for line in lines if line.startswith("BREACH ")]
        assert len(breaches) == 4
        assert all(line.startswith("BREACH gradient ") for line in breaches)
        assert any("fluency:ground_truth" in line for line in breaches)
        assert any(line.startswith("audit 4 breach(es)") for line in lines)

    def test_no_ledgers_is_a_usage_error(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`judgeopt audit` on a run without ledgers reports a ConfigError on one line and exits 2."""
        store = start_run(tmp_path, PRESETS["SSS"])
        store.close()
        assert main(["audit", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        assert err[0].startswith("ConfigError: ")

    def test_torn_last_ledger_line_is_skipped(self, tmp_path: Path) -> None:
        """A ledger whose last line was cut short (a service killed mid-write) is still audited."""
        make_run(tmp_path, PRESETS["SSS"])
        with (tmp_path / "services" / "judge.ledger.jsonl").open("a", encoding="utf-8") as ledger:
            ledger.write('{"request_id": "ab')
        report = audit_run(tmp_path)
        assert report.ok and report.checked_requests == report.routed_requests
        assert main(["audit", str(tmp_path)]) == 0

    def test_corrupt_ledger_line_is_one_line_error(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A bad line in the middle of a ledger fails the audit on one line naming the file, not a traceback."""
        make_run(tmp_path, PRESETS["SSS"])
        ledger = tmp_path / "services" / "judge.ledger.jsonl"
        ledger.write_text("not json\n" + ledger.read_text(encoding="utf-8"), encoding="utf-8")
        assert main(["audit", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        assert "judge.ledger.jsonl" in err[0] and "line 1" in err[0]
