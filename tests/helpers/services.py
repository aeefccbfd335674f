"""Agent services as `judgeopt serve` processes on fixed loopback ports, each one killable and restartable."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from helpers.eventually import wait_until
from judgeopt.services.healthcheck import check


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class AgentServices:
    """One `judgeopt serve ROLE --config CONFIG` process per role; ``flags`` and ``env`` go to every one."""

    def __init__(
        self,
        config: Path,
        logs: Path,
        roles: Sequence[str],
        *,
        flags: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._config = config
        self._logs = logs
        self._flags = tuple(flags)
        self._env = {**os.environ, **(env or {})}
        self.ports = {role: free_port() for role in roles}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def address(self, role: str) -> str:
        return f"127.0.0.1:{self.ports[role]}"

    def address_flags(self) -> list[str]:
        """``--<role>-addr HOST:PORT`` for every role."""
        return [flag for role in self.ports for flag in (f"--{role}-addr", self.address(role))]

    def start(self, role: str) -> None:
        self._spawn(role)
        self._wait_serving(role)

    def start_all(self) -> None:
        """Every role's process started at once, then each waited for (they import in parallel)."""
        for role in self.ports:
            self._spawn(role)
        for role in self.ports:
            self._wait_serving(role)

    def _spawn(self, role: str) -> None:
        command = [sys.executable, "-m", "judgeopt", "serve", role, "--port", str(self.ports[role])]
        with (self._logs / f"{role}.log").open("ab") as log:
            self.processes[role] = subprocess.Popen(
                [*command, "--config", str(self._config), *self._flags],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._env,
                start_new_session=True,
            )

    def _wait_serving(self, role: str) -> None:
        process = self.processes[role]

        def serving() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"the {role} service exited: {(self._logs / f'{role}.log').read_text()[-800:]}")
            return check(self.address(role), timeout=1.0)[0]

        wait_until(serving, timeout=60, interval=0.1, message=f"the {role} service never answered SERVING")

    def kill(self, role: str) -> None:
        process = self.processes[role]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextlib.contextmanager
def served_agents(
    config: Path,
    logs: Path,
    roles: Sequence[str],
    *,
    flags: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[AgentServices]:
    """Every role served until the block ends; then each process is killed."""
    services = AgentServices(config, logs, roles, flags=flags, env=env)
    try:
        services.start_all()
        yield services
    finally:
        for role in services.processes:
            services.kill(role)


@dataclass(frozen=True)
class Served:
    address: str
    log: Path


@contextlib.contextmanager
def served(
    log: Path, *flags: str, endpoint: str, role: str = "loss", env: dict[str, str] | None = None
) -> Iterator[Served]:
    """`judgeopt serve ROLE --port 0 FLAGS` until the block ends (SIGTERM, then kill if it lingers)."""
    command = [sys.executable, "-m", "judgeopt", "serve", role, "--port", "0"]
    command += ["--endpoint", endpoint, "--model", "fake-model", *flags]
    with log.open("w") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})}
        )
    try:
        wait_until(
            lambda: "listening on" in log.read_text() or process.poll() is not None,
            timeout=60,
            message=f"the service never printed its port: {log.read_text()[-500:]}",
        )
        assert process.poll() is None, log.read_text()[-500:]
        line = next(x for x in log.read_text().splitlines() if x.startswith("listening on"))
        yield Served(f"127.0.0.1:{int(line.rsplit(':', 1)[1])}", log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
