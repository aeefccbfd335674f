"""Fault injection: endpoint faults of every kind, agent services killed and restarted mid-run, the orchestrator
SIGKILLed at random points and resumed. Every run ends complete, equal to the undisturbed run, with every store
row present exactly once."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.eventually import wait_until
from helpers.fake_openai import FakeOpenAI
from helpers.faults import FAULTS, HANG_SECONDS, FaultSchedule
from helpers.runs import outcome, write_config
from helpers.scripts import deterministic_handler, with_latency
from helpers.services import served_agents

from judgeopt.cli import main

MODEL = {"timeout": HANG_SECONDS / 2}
"""The model timeout is shorter than a scripted hang, so a hang is a timeout."""
RUN = {"mode": "SSC", "steps": 3, "concurrency": 4}
ROLES = ("judge", "loss", "gradient", "optimizer")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The undisturbed run every disturbed one must equal."""
    folder = tmp_path_factory.mktemp("reference")
    with FakeOpenAI(deterministic_handler()) as server:
        config = write_config(folder / "run.yaml", server.base_url, model=MODEL, **RUN)
        assert main(["optimize", "--config", str(config), "--run-dir", str(folder / "run")]) == 0
    return folder / "run"


def _rows(run_dir: Path, query: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        return db.execute(query).fetchall()


def assert_store_is_whole(run_dir: Path, reference: Path) -> None:
    """The same steps, artifacts and predictions as the reference, each once; every call's attempts numbered 1..n
    with no gap and ending in a success; every call routed through the audit log."""
    for query in (
        "SELECT track, step, status, prompt_id, candidate_id FROM steps ORDER BY track, step",
        "SELECT track, step, kind, COUNT(*) FROM artifacts GROUP BY track, step, kind ORDER BY track, step, kind",
        "SELECT prompt_id, sample_id, scores FROM predictions ORDER BY prompt_id, sample_id",
    ):
        assert _rows(run_dir, query) == _rows(reference, query), query
    attempts: dict[str, list[tuple[int, str]]] = {}
    for request_id, attempt, outcome_ in _rows(run_dir, "SELECT request_id, attempt, outcome FROM calls ORDER BY id"):
        attempts.setdefault(request_id, []).append((attempt, outcome_))
    for request_id, tries in attempts.items():
        assert [n for n, _ in sorted(tries)] == list(range(1, len(tries) + 1)), request_id
        assert sorted(tries)[-1][1] == "ok", request_id
    audited = {r for (r,) in _rows(run_dir, "SELECT request_id FROM audit")}
    assert set(attempts) <= audited


def _recorded_calls(run_dir: Path, where: str = "1") -> int:
    """Calls the run has stored so far that match ``where``; 0 while its store does not exist yet."""
    if not (run_dir / "run.sqlite").exists():
        return 0
    try:
        with sqlite3.connect(f"file:{run_dir / 'run.sqlite'}?mode=ro", uri=True) as db:
            count: int = db.execute(f"SELECT COUNT(*) FROM calls WHERE {where}").fetchone()[0]
            return count
    except sqlite3.OperationalError:  # the store's tables are being created
        return 0


def _orchestrator(*args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    """`judgeopt ARGS` in a session of its own (so a kill takes the services it starts), output to ``log``."""
    with contextlib.ExitStack() as stack:
        output = stack.enter_context(log.open("wb")) if log is not None else subprocess.DEVNULL
        return subprocess.Popen(
            [sys.executable, "-m", "judgeopt", *args],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_for_calls(run_dir: Path, step: int, stage: str) -> None:
    """Until the run has stored a ``stage`` call of ``step``."""
    wait_until(
        lambda: _recorded_calls(run_dir, f"step = {step} AND stage = '{stage}'") > 0,
        timeout=120,
        interval=0.01,
        message=f"the run never called the {stage} service in step {step}",
    )


def _wait_for_progress(run_dir: Path, process: subprocess.Popen[bytes], calls: int) -> None:
    """Until the run has stored ``calls`` more calls, or ``process`` has exited."""
    target = _recorded_calls(run_dir) + calls
    wait_until(
        lambda: _recorded_calls(run_dir) >= target or process.poll() is not None,
        timeout=120,
        interval=0.01,
        message="the run made no progress",
    )


class TestEndpointFaults:
    def test_faults_of_every_kind_within_the_retry_budget_leave_the_run_unchanged(
        self, reference: Path, tmp_path: Path
    ) -> None:
        """About 20% of model requests fail — 429 with Retry-After, 500, 503, timeout, connection reset, 502, HTML
        and truncated JSON bodies — each at most once, under a budget of three attempts per call. (An empty
        completion is no fault: it is the model's answer, read by the role's parser.)"""
        schedule = FaultSchedule(deterministic_handler(), share=0.25, failures=1)
        with FakeOpenAI(schedule) as faulty:
            config = write_config(tmp_path / "run.yaml", faulty.base_url, model=MODEL, call_attempts=3, **RUN)
            assert main(["optimize", "--config", str(config), "--run-dir", str(tmp_path / "run")]) == 0
            assert not faulty.handler_errors
        assert outcome(tmp_path / "run") == outcome(reference)
        assert_store_is_whole(tmp_path / "run", reference)
        assert set(schedule.injected) == set(FAULTS)
        assert 0.12 <= schedule.failed_share <= 0.30
        failed = _rows(tmp_path / "run", "SELECT COUNT(*) FROM calls WHERE outcome = 'failed'")[0][0]
        assert failed == sum(schedule.injected.values())  # one model request per attempt, every attempt stored

    def test_a_rate_limited_call_waits_as_long_as_the_endpoint_asked(self, tmp_path: Path) -> None:
        """Every first request answers 429 with Retry-After: 1; the retry of each comes at least a second later."""
        schedule = FaultSchedule(deterministic_handler(), share=1.0, kinds=("rate-limited",))
        with FakeOpenAI(schedule) as limited:
            config = write_config(tmp_path / "run.yaml", limited.base_url, model=MODEL, steps=1, mode="CCC")
            assert main(["optimize", "--config", str(config), "--run-dir", str(tmp_path / "run")]) == 0
        rows = _rows(
            tmp_path / "run",
            "SELECT a.at, b.at - b.endpoint_seconds - b.queue_seconds FROM calls a JOIN calls b "
            "ON a.request_id = b.request_id AND b.attempt = a.attempt + 1 WHERE a.outcome = 'failed'",
        )
        assert rows
        assert all(retried - failed_at >= 0.95 for failed_at, retried in rows)


class TestServiceRestarts:
    def test_every_agent_service_killed_and_restarted_mid_run_leaves_the_run_unchanged(
        self, reference: Path, tmp_path: Path
    ) -> None:
        """The run goes on through each service's SIGKILL and restart on the same port (the orchestrator
        reconnects; calls cut off retry), and every role's service answers calls again after its restart."""
        run_dir = tmp_path / "run"
        # 50 ms a reply: the run cannot finish its last step between a stage's first call and the kill it triggers
        with FakeOpenAI(with_latency(deterministic_handler(), 0.05)) as server:
            config = write_config(tmp_path / "run.yaml", server.base_url, model=MODEL, call_attempts=5, **RUN)
            with served_agents(config, tmp_path, ROLES) as services:
                process = _orchestrator(
                    *("optimize", "--config", str(config), "--run-dir", str(run_dir), *services.address_flags()),
                    log=tmp_path / "orchestrator.log",
                )
                try:
                    killed_at = {}
                    for step, role in ((1, "judge"), (1, "optimizer"), (2, "loss"), (2, "gradient")):
                        _wait_for_calls(run_dir, step, role)
                        services.kill(role)
                        killed_at[role] = time.time()  # a call that succeeds after this reached the new process
                        services.start(role)
                    assert process.wait(timeout=300) == 0, (tmp_path / "orchestrator.log").read_text()[-2000:]
                finally:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
        assert outcome(run_dir) == outcome(reference)
        assert_store_is_whole(run_dir, reference)
        for role, at in killed_at.items():
            answered = _recorded_calls(run_dir, f"stage = '{role}' AND outcome = 'ok' AND at > {at}")
            assert answered > 0, f"no {role} call succeeded after its service restarted"


def _child_serving(ancestor: int, role: str) -> int:
    """The pid of the `judgeopt serve ROLE` process that ``ancestor`` started (a fork of its fork server)."""
    parents, commands = {}, {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            commands[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").split()
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
    for pid, command in commands.items():
        if command[:3] == [b"judgeopt", b"serve", role.encode()]:
            lineage = pid
            while lineage in parents and lineage != ancestor:
                lineage = parents[lineage]
            if lineage == ancestor:
                return pid
    raise AssertionError(f"no {role} service under process {ancestor}")


class TestSupervision:
    def test_a_service_the_orchestrator_started_is_started_again_when_it_dies(
        self, reference: Path, tmp_path: Path
    ) -> None:
        """`judgeopt optimize` starts its own services; its loss service SIGKILLed mid-run (as by the OOM killer)
        is started again on its port, and the run ends equal to the undisturbed one."""
        run_dir = tmp_path / "run"
        with FakeOpenAI(with_latency(deterministic_handler(), 0.05)) as server:
            config = write_config(tmp_path / "run.yaml", server.base_url, model=MODEL, call_attempts=5, **RUN)
            process = _orchestrator(
                *("optimize", "--config", str(config), "--run-dir", str(run_dir)), log=tmp_path / "orchestrator.log"
            )
            try:
                _wait_for_calls(run_dir, 1, "loss")
                os.kill(_child_serving(process.pid, "loss"), signal.SIGKILL)
                assert process.wait(timeout=300) == 0, (tmp_path / "orchestrator.log").read_text()[-2000:]
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
        assert (run_dir / "services" / "loss.log").read_text().count("listening on") == 2
        assert "service.exited" in (tmp_path / "orchestrator.log").read_text()  # the CLI shows warnings
        assert outcome(run_dir) == outcome(reference)
        assert_store_is_whole(run_dir, reference)


class TestOrchestratorKills:
    def test_sigkill_at_random_points_then_resume_ends_equal_to_the_undisturbed_run(
        self, reference: Path, tmp_path: Path
    ) -> None:
        """The orchestrator (and the services it started) is SIGKILLed four times, each after a random number of
        new calls, and resumed each time; the last resume completes the run."""
        rng = random.Random(2605)
        run_dir = tmp_path / "run"
        kills = 0
        with FakeOpenAI(deterministic_handler()) as server:
            config = write_config(tmp_path / "run.yaml", server.base_url, model=MODEL, **RUN)
            command = ["optimize", "--config", str(config), "--run-dir", str(run_dir)]
            while True:
                process = _orchestrator(*command)
                try:
                    _wait_for_progress(run_dir, process, rng.randint(1, 30))
                finally:
                    if process.poll() is None and kills < 4:
                        os.killpg(process.pid, signal.SIGKILL)
                        kills += 1
                process.wait(timeout=120)
                if process.returncode == 0:
                    break
                assert process.returncode == -signal.SIGKILL
                command = ["resume", str(run_dir)]
        assert kills == 4
        assert outcome(run_dir) == outcome(reference)
        assert_store_is_whole(run_dir, reference)

    def test_sigkill_while_a_steps_test_evaluation_overlaps_the_next_step_then_resume_redoes_that_step(
        self, reference: Path, tmp_path: Path
    ) -> None:
        """Killed once step 2 has begun training while step 1's test evaluation still ran (step 1 not committed:
        its test calls wait behind step 2's training calls), the resumed run redoes step 1 and ends equal to the
        undisturbed run."""
        run_dir = tmp_path / "run"
        with FakeOpenAI(with_latency(deterministic_handler(), 0.3)) as server:
            config = write_config(tmp_path / "run.yaml", server.base_url, model={"timeout": 30}, **RUN)
            process = _orchestrator("optimize", "--config", str(config), "--run-dir", str(run_dir))
            try:
                _wait_for_calls(run_dir, 2, "judge")
            finally:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
            committed = [step for (step,) in _rows(run_dir, "SELECT step FROM steps ORDER BY step")]
            assert committed == [0], committed  # step 2 trained while step 1 was still being tested
            assert _recorded_calls(run_dir, "step = 1 AND purpose = 'test'") > 0
            assert main(["resume", str(run_dir)]) == 0
        assert outcome(run_dir) == outcome(reference)
        assert_store_is_whole(run_dir, reference)

    def test_a_resumed_run_gets_the_answers_its_services_already_gave_without_asking_the_model_again(
        self, reference: Path, tmp_path: Path
    ) -> None:
        """Services deployed apart (as on Kubernetes) outlive the orchestrator. SIGKILLed once step 2's gradient
        calls began, the resumed run asks step 2's calls again under the same request ids and the services replay
        what they already answered: the endpoint answers no more requests than the undisturbed run made, but for
        the few in flight at the kill, and the run's recorded spend is what the endpoint saw but for those."""
        run_dir = tmp_path / "run"
        with FakeOpenAI(with_latency(deterministic_handler(), 0.05)) as server:  # step 2 still runs at the kill
            config = write_config(tmp_path / "run.yaml", server.base_url, model=MODEL, **RUN)
            with served_agents(config, tmp_path, ROLES) as agents:
                process = _orchestrator(
                    *("optimize", "--config", str(config), "--run-dir", str(run_dir), *agents.address_flags())
                )
                try:
                    _wait_for_calls(run_dir, 2, "gradient")
                finally:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=30)
                assert main(["resume", str(run_dir), *agents.address_flags()]) == 0
            asked = len(server.requests)
        replayed = sum((tmp_path / f"{role}.log").read_text().count('"rpc.replayed"') for role in ROLES)
        assert replayed >= 2 * 4  # at least step 2's loss calls (batch 2, 4 criteria) came back from the services
        undisturbed = sum(json.loads((reference / "summary.json").read_text())["llm_calls"].values())
        assert undisturbed <= asked <= undisturbed + RUN["concurrency"]
        recorded = sum(json.loads((run_dir / "summary.json").read_text())["llm_calls"].values())
        assert asked - RUN["concurrency"] <= recorded <= asked  # replies lost with the killed process are missing
        assert outcome(run_dir) == outcome(reference)
        assert_store_is_whole(run_dir, reference)


class TestAllAtOnce:
    def test_endpoint_faults_service_restarts_and_orchestrator_kills_in_one_run(
        self, reference: Path, tmp_path: Path
    ) -> None:
        """One run through all of it: a fifth of model requests fail (every kind), and three times, at random
        points, an agent service is killed and restarted and then the orchestrator is SIGKILLed and resumed."""
        rng = random.Random(46)
        run_dir = tmp_path / "run"
        schedule = FaultSchedule(deterministic_handler(), share=0.25, failures=1, seed="all-at-once")
        restarts = kills = 0
        with FakeOpenAI(schedule) as faulty:
            config = write_config(tmp_path / "run.yaml", faulty.base_url, model=MODEL, call_attempts=5, **RUN)
            with served_agents(config, tmp_path, ROLES) as agents:
                command = ["optimize", "--config", str(config), "--run-dir", str(run_dir)]
                for _ in range(3):
                    process = _orchestrator(*command, *agents.address_flags())
                    try:
                        for _ in range(2):  # a service restart, then the orchestrator's kill
                            _wait_for_progress(run_dir, process, rng.randint(3, 20))
                            if process.poll() is not None:
                                break
                            role = rng.choice(ROLES)
                            agents.kill(role)
                            agents.start(role)
                            restarts += 1
                    finally:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(process.pid, signal.SIGKILL)
                        process.wait(timeout=30)
                    if process.returncode == 0:
                        break
                    kills += 1
                    command = ["resume", str(run_dir)]
                else:
                    assert main([*command, *agents.address_flags()]) == 0
        assert sum(schedule.injected.values()) > 0 and restarts >= 2 and kills >= 2
        assert outcome(run_dir) == outcome(reference)
        assert_store_is_whole(run_dir, reference)
