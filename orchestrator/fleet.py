"""Start agent services as separate OS processes (``judgeopt serve ROLE --port 0``) and stop them again.

Used by ``judgeopt`` commands that run everything on one machine and by the end-to-end tests. Each service gets
the same config file, writes its JSON logs to ``<log_dir>/<role>.log``, and counts as up once its health service
answers SERVING.

The services listen on plaintext 127.0.0.1 (no TLS: the traffic never leaves the machine). With ``token_env``
each is started with ``--token-env`` and inherits the variable, so it refuses calls without the bearer token
(other local users cannot use the run's services); only the variable's name appears on a command line or in a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import grpc
import structlog
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agents.config import ROLES, ModelsConfig, Role
from agents.local_model import terminate_with_parent
from orchestrator.errors import ServiceStartError

log = structlog.get_logger(__name__)
_LISTENING = re.compile(r"listening on [^\s:]+:(\d+)")


class ServiceFleet:
    """``async with ServiceFleet(models, log_dir) as fleet: fleet.addresses["judge"]`` → ``127.0.0.1:PORT``."""

    def __init__(
        self,
        models: ModelsConfig,
        log_dir: Path,
        *,
        roles: tuple[Role, ...] = ROLES,
        startup_timeout: float = 60.0,
        token_env: str | None = None,
    ) -> None:
        self.models = models
        self.token_env = token_env
        self.log_dir = log_dir
        self.roles = roles
        self.startup_timeout = startup_timeout
        self.addresses: dict[Role, str] = {}
        self.processes: dict[Role, subprocess.Popen[bytes]] = {}

    def ledger_path(self, role: Role) -> Path:
        return self.log_dir / f"{role}.ledger.jsonl"

    def _config_file(self) -> Path:
        path = self.log_dir / "services.yaml"
        path.write_text(yaml.safe_dump({"models": self.models.model_dump(mode="json")}, sort_keys=False))
        return path

    def _spawn(self, role: Role, config: Path) -> None:
        log_path = self.log_dir / f"{role}.log"
        with log_path.open("wb") as output:
            self.processes[role] = subprocess.Popen(
                [
                    *(sys.executable, "-m", "orchestrator", "serve", role, "--port", "0", "--config", str(config)),
                    *("--ledger", str(self.ledger_path(role))),
                    *(("--token-env", self.token_env) if self.token_env else ()),
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=terminate_with_parent,
            )

    async def _wait_listening(self, role: Role) -> int:
        log_path = self.log_dir / f"{role}.log"
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if match := _LISTENING.search(log_path.read_text(errors="replace")):
                return int(match.group(1))
            if self.processes[role].poll() is not None:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
                raise ServiceStartError(f"{role} service exited during start-up: {tail[0][:300]}")
            await asyncio.sleep(0.05)
        raise ServiceStartError(f"{role} service did not start within {self.startup_timeout:.0f} s")

    async def _wait_serving(self, role: Role, address: str) -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=self.startup_timeout)
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise ServiceStartError(f"{role} service at {address} is not SERVING")

    async def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        config = self._config_file()
        for role in self.roles:
            self._spawn(role, config)
        try:
            for role in self.roles:
                port = await self._wait_listening(role)
                self.addresses[role] = f"127.0.0.1:{port}"
                await self._wait_serving(role, self.addresses[role])
        except BaseException:
            self.stop()
            raise
        log.info("fleet.ready", addresses=self.addresses)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM every service (graceful shutdown), then kill what has not exited in time."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5)
        self.processes.clear()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)
