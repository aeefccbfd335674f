"""A fast start: a role's first call goes out as soon as that role's service answers SERVING, not when the whole
fleet is up; a service that never comes up still fails the run with a one-line error."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
from helpers.fake_openai import FakeOpenAI
from helpers.runs import write_config
from helpers.scripts import deterministic_handler, role_of

from judgeopt.cli import main
from judgeopt.core.roles import Role
from judgeopt.orchestrator import fleet
from judgeopt.orchestrator.data.loading import load_dataset
from judgeopt.orchestrator.engine import run
from judgeopt.orchestrator.fleet import ServiceFleet

SLOW_ROLE: Role = "loss"
SLOW_SECONDS = 3.0


class SlowServiceFleet(ServiceFleet):
    """A fleet whose ``SLOW_ROLE`` service starts ``SLOW_SECONDS`` late (or, with ``fail``, exits at once), and which
    notes when each role answered SERVING (``time.monotonic()``, the scripted endpoint's clock)."""

    fail = False
    serving_at: ClassVar[dict[str, float]] = {}
    """When each role answered SERVING, and (as ``"spawned"``) when the services were started."""

    def command(self, role: Role, config: Path, port: int) -> list[str]:
        command = super().command(role, config, port)
        if role != SLOW_ROLE or port:  # a restart on its port starts as usual
            return command
        late = "exit 3" if self.fail else f'sleep {SLOW_SECONDS:g}; exec "$@"'
        return ["sh", "-c", late, "sh", *command]

    def spawn(self) -> None:
        self.serving_at.setdefault("spawned", time.monotonic())
        super().spawn()

    async def start(self) -> None:
        await super().start()
        for role, future in self.serving.items():
            future.add_done_callback(lambda done, role=role: self.serving_at.setdefault(role, time.monotonic()))


@pytest.fixture
def slow_fleet(monkeypatch: pytest.MonkeyPatch) -> type[SlowServiceFleet]:
    SlowServiceFleet.serving_at = {}
    SlowServiceFleet.fail = False
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


def test_a_service_that_never_starts_fails_the_run_naming_it(
    tmp_path: Path, slow_fleet: type[SlowServiceFleet], capsys: pytest.CaptureFixture[str]
) -> None:
    slow_fleet.fail = True
    with FakeOpenAI(deterministic_handler()) as endpoint:
        code = _optimize(tmp_path, endpoint)
    assert code != 0
    error = capsys.readouterr().err.strip().splitlines()
    assert any(f"{SLOW_ROLE} service exited during start-up" in line for line in error), error


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
