"""A fast start: a role's first call goes out as soon as that role's service answers SERVING, not when the whole
fleet is up; a service that never comes up still fails the run with a one-line error."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
from helpers.fake_openai import FakeOpenAI
from helpers.runs import write_config
from helpers.scripts import deterministic_handler, role_of

from judgeopt.cli import main
from judgeopt.core.roles import ROLES, Role
from judgeopt.core.tracing import service_environment
from judgeopt.orchestrator import fleet
from judgeopt.orchestrator.data.loading import load_dataset
from judgeopt.orchestrator.engine import run
from judgeopt.orchestrator.fleet import ServiceFleet
from judgeopt.orchestrator.service_processes import ServiceProcess

SLOW_ROLE: Role = "loss"
SLOW_SECONDS = 3.0


class SlowServiceFleet(ServiceFleet):
    """A fleet whose ``SLOW_ROLE`` service starts ``SLOW_SECONDS`` late (and whose ``fail`` role, if any, exits at
    once), and which notes when each role's process was started, listened and answered SERVING
    (``time.monotonic()``, the scripted endpoint's clock)."""

    slow: Role | None = SLOW_ROLE
    fail: Role | None = None
    parents: ClassVar[dict[str, int]] = {}
    """Each role's parent process, as /proc saw it once the role listened."""
    titles: ClassVar[dict[str, str]] = {}
    """Each role's command line as ``ps`` shows it, once the role listened."""
    serving_at: ClassVar[dict[str, float]] = {}
    """When each role answered SERVING, and (as ``"spawned"``) when the services were started."""
    spawned_at: ClassVar[dict[str, float]] = {}
    listening_at: ClassVar[dict[str, float]] = {}

    def _launch(self, role: Role, argv: list[str], log_path: Path) -> ServiceProcess:
        if argv[argv.index("--port") + 1] != "0" or role not in (self.slow, self.fail):
            return super()._launch(role, argv, log_path)  # a restart on its port starts as usual
        late = "exit 3" if role == self.fail else f'sleep {SLOW_SECONDS:g}; exec "$@"'
        with log_path.open("ab") as log:
            command = ["sh", "-c", late, "sh", sys.executable, "-m", "judgeopt", *argv]
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=service_environment(role))

    def _spawn(self, role: Role, config: Path, port: int = 0) -> None:
        self.spawned_at.setdefault(role, time.monotonic())
        super()._spawn(role, config, port)

    async def _wait_listening(self, role: Role) -> int:
        port = await super()._wait_listening(role)
        self.listening_at.setdefault(role, time.monotonic())
        proc = Path("/proc") / str(self.processes[role].pid)
        self.parents[role] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        self.titles[role] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        return port

    def spawn(self) -> None:
        self.serving_at.setdefault("spawned", time.monotonic())
        super().spawn()

    async def start(self) -> None:
        await super().start()
        for role, future in self.serving.items():
            future.add_done_callback(lambda done, role=role: self.serving_at.setdefault(role, time.monotonic()))


@pytest.fixture
def slow_fleet(monkeypatch: pytest.MonkeyPatch) -> type[SlowServiceFleet]:
    SlowServiceFleet.serving_at, SlowServiceFleet.spawned_at, SlowServiceFleet.listening_at = {}, {}, {}
    SlowServiceFleet.parents, SlowServiceFleet.titles = {}, {}
    SlowServiceFleet.slow, SlowServiceFleet.fail = SLOW_ROLE, None
    monkeypatch.setattr(fleet, "ServiceFleet", SlowServiceFleet)
    return SlowServiceFleet


@pytest.fixture
def data_loaded_at(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """When the run's data was loaded (``time.monotonic()``)."""
    loaded: list[float] = []

    def noting(*args: Any, **kwargs: Any) -> Any:
        found = load_dataset(*args, **kwargs)
        loaded.append(time.monotonic())
        return found

    monkeypatch.setattr(run, "load_dataset", noting)
    return loaded


def _optimize(tmp_path: Path, endpoint: FakeOpenAI, **run_settings: Any) -> int:
    config = write_config(tmp_path / "run.yaml", endpoint.base_url, steps=1, **run_settings)
    return main(["optimize", "--config", str(config), "--run-dir", str(tmp_path / "run")])


def test_the_judge_calls_before_a_slow_loss_service_is_up(
    tmp_path: Path, slow_fleet: type[SlowServiceFleet], data_loaded_at: list[float]
) -> None:
    with FakeOpenAI(deterministic_handler()) as endpoint:
        assert _optimize(tmp_path, endpoint) == 0
        requests = list(endpoint.requests)
    judge = [r.received_at for r in requests if role_of(r) == "judge"]
    slow = [r.received_at for r in requests if role_of(r) == SLOW_ROLE]
    assert judge and slow, (len(judge), len(slow))
    assert {"judge", SLOW_ROLE} <= set(slow_fleet.serving_at), slow_fleet.serving_at
    ready = slow_fleet.serving_at[SLOW_ROLE]
    assert slow_fleet.serving_at["judge"] < ready
    assert min(judge) < ready, f"the judge's first call waited for the {SLOW_ROLE} service"
    assert min(slow) > ready
    assert data_loaded_at and slow_fleet.serving_at["spawned"] < data_loaded_at[0], "the services waited for the data"


def test_services_are_forks_of_one_fork_server_and_get_the_environment_of_their_run(
    tmp_path: Path, slow_fleet: type[SlowServiceFleet], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs in one process: every service of both is a fork of the same fork server (the service code is
    imported once), shows its `judgeopt serve ROLE` command line, and gets the environment as it is when its run
    starts, not as it was when the fork server started (the second run's key reaches the endpoint)."""
    slow_fleet.slow = None
    keys, parents = [], []
    with FakeOpenAI(deterministic_handler()) as endpoint:
        for run_number in (1, 2):
            monkeypatch.setenv("JUDGEOPT_API_KEY", f"key-of-run-{run_number}")
            config = write_config(tmp_path / f"run{run_number}.yaml", endpoint.base_url, steps=0)
            config.write_text(
                config.read_text().replace("model: fake-model", "model: fake-model\n    api_key_env: JUDGEOPT_API_KEY")
            )
            endpoint.clear()
            command = ["optimize", "--config", str(config), "--run-dir", str(tmp_path / f"run{run_number}")]
            assert main(command) == 0
            keys.append({r.headers.get("authorization") for r in endpoint.requests})
            parents.append(dict(slow_fleet.parents))
            assert set(slow_fleet.titles) == set(ROLES), slow_fleet.titles
            for role, title in slow_fleet.titles.items():
                assert title.startswith(f"judgeopt serve {role} --port 0"), title
            slow_fleet.parents, slow_fleet.titles = {}, {}
    assert keys == [{"Bearer key-of-run-1"}, {"Bearer key-of-run-2"}]
    (server,) = {parent for run in parents for parent in run.values()}
    assert len(parents[0]) == len(parents[1]) == len(ROLES)
    assert server != os.getpid()  # the services' parent is the fork server, not this process
    server_command = (Path("/proc") / str(server) / "cmdline").read_bytes()
    assert b"multiprocessing.forkserver" in server_command, server_command


@pytest.mark.parametrize("failing", ["judge", SLOW_ROLE])
def test_a_service_that_never_starts_fails_the_run_naming_it(
    tmp_path: Path, slow_fleet: type[SlowServiceFleet], capsys: pytest.CaptureFixture[str], failing: Role
) -> None:
    slow_fleet.fail = failing
    with FakeOpenAI(deterministic_handler()) as endpoint:
        code = _optimize(tmp_path, endpoint)
    assert code != 0
    error = capsys.readouterr().err.strip().splitlines()
    assert any(f"{failing} service exited during start-up" in line for line in error), error


def test_a_run_directory_that_holds_a_run_is_refused_before_any_service_writes_there(
    tmp_path: Path, slow_fleet: type[SlowServiceFleet], capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "run" / "services").mkdir(parents=True)
    (tmp_path / "run" / "run.sqlite").write_bytes(b"")
    earlier_log = tmp_path / "run" / "services" / "judge.log"
    earlier_log.write_text("the earlier run's log\n")
    with FakeOpenAI(deterministic_handler()) as endpoint:
        code = _optimize(tmp_path, endpoint)
    assert code != 0
    assert "already holds a run" in capsys.readouterr().err
    assert "spawned" not in slow_fleet.serving_at
    assert earlier_log.read_text() == "the earlier run's log\n"
