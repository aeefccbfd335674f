"""Start agent services as separate OS processes (``judgeopt serve ROLE --port 0``) and stop them again.

The processes are forked from a fork server that has imported the service code once (``service_processes``), so a
run's four services pay for one import instead of four at once on the same cores.

Used by ``judgeopt`` commands that run everything on one machine and by the end-to-end tests. Each service gets the
same config file, in a private temporary folder removed when the fleet stops (it may hold an endpoint's
``user:password@``, which a run never stores), with each role's API-key variable on the service's command line
instead (a config file may name only judgeopt's own variables; the command line any). Each writes its JSON logs to
``<log_dir>/<role>.log`` (0600, in a 0700 folder), and counts as up once its health service answers SERVING (each
role's ``serving`` future then resolves to its address, so a caller may start using one role before the others; the
fork server may also be warmed up early, before an event loop runs, see ``spawn_early``). A service that exits while
the fleet runs (a crash, the OOM killer) is started again on its port, so the clients' channels reconnect to it and
the run's retries carry on, as they would with a Kubernetes restart.

The services listen on plaintext 127.0.0.1 (no TLS: the traffic never leaves the machine). With ``token_env``
each is started with ``--token-env`` and inherits the variable, so it refuses calls without the bearer token
(other local users cannot use the run's services); only the variable's name appears on a command line or in a file.
The services inherit this process's environment, so its ``OTEL_*`` variables trace them too (each under its own
service name, ``judgeopt.core.tracing.service_environment``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import grpc
import structlog
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from judgeopt.core.models import ModelsConfig
from judgeopt.core.private_files import open_private_binary, private_dir, write_private_text
from judgeopt.core.roles import ROLES, Role
from judgeopt.core.tracing import service_environment
from judgeopt.orchestrator.engine import STORE_FILE
from judgeopt.orchestrator.errors import ServiceStartError
from judgeopt.orchestrator.service_processes import ForkedService, ServiceProcess, warm_up

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
        max_restarts: int = 5,
        wait_for_all: bool = True,
    ) -> None:
        self.models = models
        self.token_env = token_env
        self.log_dir = log_dir
        self.roles = roles
        self.startup_timeout = startup_timeout
        self.max_restarts = max_restarts
        self.wait_for_all = wait_for_all
        """Whether entering the fleet waits for every service; if not, each role's ``serving`` future resolves as
        that role comes up (so a run's first judge call need not wait for the optimizer's service)."""
        """Restarts per role; a service that keeps dying is left down (its calls then fail and are recorded)."""
        self.addresses: dict[Role, str] = {}
        self.processes: dict[Role, ServiceProcess] = {}
        self.restarts: dict[Role, int] = dict.fromkeys(roles, 0)
        self._config: Path | None = None
        self._config_dir: tempfile.TemporaryDirectory[str] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._starting: asyncio.Task[None] | None = None
        self.serving: dict[Role, asyncio.Future[str]] = {}
        """Per role, resolves to its address once it answers SERVING (set by ``start``)."""

    def ledger_path(self, role: Role) -> Path:
        return self.log_dir / f"{role}.ledger.jsonl"

    def _config_file(self) -> Path:
        """The services' config file, in a private temporary folder, without API-key variables (see ``_spawn``)."""
        self._config_dir = tempfile.TemporaryDirectory(prefix="judgeopt-services-")
        models = {
            section: {name: value for name, value in settings.items() if name != "api_key_env"}
            for section, settings in self.models.model_dump(mode="json").items()
        }
        path = Path(self._config_dir.name) / "services.yaml"
        write_private_text(path, yaml.safe_dump({"models": models}, sort_keys=False))
        return path

    def command(self, role: Role, config: Path, port: int) -> list[str]:
        """The ``judgeopt`` arguments that serve ``role``."""
        key_env = self.models.for_role(role).api_key_env
        return [
            *("serve", role, "--port", str(port)),
            *("--config", str(config)),
            *("--ledger", str(self.ledger_path(role))),
            *(("--api-key-env", key_env) if key_env else ()),
            *(("--token-env", self.token_env) if self.token_env else ()),
        ]

    def _spawn(self, role: Role, config: Path, port: int = 0) -> None:
        """Start ``role`` on ``port`` (0: a free one); a restart appends to the first start's log."""
        log_path = self.log_dir / f"{role}.log"
        with open_private_binary(log_path, append=bool(port)):  # created 0600, or emptied for a first start
            pass
        self.processes[role] = self._launch(role, self.command(role, config, port), log_path)

    def _launch(self, role: Role, argv: list[str], log_path: Path) -> ServiceProcess:
        """Run ``judgeopt ARGV`` for ``role``, its output appended to ``log_path``."""
        return ForkedService(argv, service_environment(role), log_path)

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
            try:
                reply = await stub.Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=self.startup_timeout, wait_for_ready=True
                )
            except grpc.aio.AioRpcError as exc:
                raise ServiceStartError(f"{role} service at {address} did not answer: {exc.code().name}") from None
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise ServiceStartError(f"{role} service at {address} is not SERVING")

    async def _supervise(self, interval: float = 0.25) -> None:
        """Start again, on its port, every service that exits while the fleet runs (at most ``max_restarts``)."""
        assert self._config is not None
        while True:
            await asyncio.sleep(interval)
            for role, process in list(self.processes.items()):
                if (code := process.poll()) is None or self.restarts[role] >= self.max_restarts:
                    continue
                self.restarts[role] += 1
                log.warning("service.exited", role=role, code=code, restart=self.restarts[role])
                port = int(self.addresses[role].rsplit(":", 1)[1])
                await asyncio.to_thread(self._spawn, role, self._config, port)
                try:
                    await self._wait_serving(role, self.addresses[role])
                except ServiceStartError as exc:
                    log.error("service.restart_failed", role=role, error=str(exc))
                else:
                    log.info("service.restarted", role=role, address=self.addresses[role])

    async def _bring_up(self, role: Role) -> None:
        """Wait until ``role`` answers SERVING, then publish its address (``serving[role]`` resolves to it)."""
        try:
            port = await self._wait_listening(role)
            await self._wait_serving(role, f"127.0.0.1:{port}")
        except asyncio.CancelledError:
            self.serving[role].cancel()
            raise
        except ServiceStartError as exc:
            self.serving[role].set_exception(exc)
            raise
        self.addresses[role] = f"127.0.0.1:{port}"
        self.serving[role].set_result(self.addresses[role])
        log.debug("service.serving", role=role, address=self.addresses[role])

    async def _bring_up_all(self) -> None:
        await asyncio.gather(*(self._bring_up(role) for role in self.roles))
        log.info("fleet.ready", addresses=self.addresses)
        self._supervisor = asyncio.create_task(self._supervise())
        self._supervisor.add_done_callback(_report_supervision_failure)

    def spawn(self) -> None:
        """Prepare the services' start without waiting for anything (no event loop needed): their log folder and
        config file, and the fork server, whose imports then overlap the caller's own start-up work; ``start``
        (entering the fleet) forks the services. Call ``stop`` if the fleet is never entered."""
        if self._config is not None:
            return
        private_dir(self.log_dir)
        self._config = self._config_file()
        warm_up()

    def _launch_all(self) -> None:
        assert self._config is not None
        for role in self.roles:
            self._spawn(role, self._config)

    async def start(self) -> None:
        """Start every service; with ``wait_for_all``, return once all answer SERVING (or raise
        ``ServiceStartError``). Without it, return at once: each role's ``serving`` future resolves (or fails) as
        that role comes up, and ``ready()`` waits for the whole fleet."""
        self.spawn()
        await asyncio.to_thread(self._launch_all)  # the first time, until the fork server has done its imports
        loop = asyncio.get_running_loop()
        self.serving = {role: loop.create_future() for role in self.roles}
        for future in self.serving.values():  # a failure is raised by ready(); a role's waiters may never ask
            future.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._starting = asyncio.create_task(self._bring_up_all())
        if self.wait_for_all:
            await self.ready()

    async def ready(self) -> None:
        """Wait until every service answers SERVING; stops the fleet and raises if one does not."""
        assert self._starting is not None, "start() first"
        try:
            await asyncio.shield(self._starting)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM every service (graceful shutdown), then kill what has not exited in time, and remove their config
        file. Supervision must be over (``__aexit__`` ends it first), or a stopped service would be started again."""
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
        if self._config_dir is not None:
            self._config_dir.cleanup()
            self._config_dir = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._starting is not None:
            self._starting.cancel()  # no-op once done; awaiting it retrieves a start-up failure raised elsewhere
            with contextlib.suppress(asyncio.CancelledError, ServiceStartError):
                await self._starting
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        await asyncio.to_thread(self.stop)


def _report_supervision_failure(task: asyncio.Task[None]) -> None:
    """Log a supervisor that died of an error: from then on no service is restarted, which should not go unseen."""
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("fleet.supervision_failed", error=repr(error))


def spawn_early(models: ModelsConfig, run_dir: Path, *, token_env: str | None) -> ServiceFleet | None:
    """The services of a new run in ``run_dir``, prepared now (see ``ServiceFleet.spawn``), or ``None`` when they
    cannot start yet: a role needs the embedded model (its server comes first) or ``run_dir`` already holds a run
    (the run's own start refuses it, and nothing is written there)."""
    if models.needs_local_model() or (run_dir / STORE_FILE).exists():
        return None
    fleet = ServiceFleet(models, run_dir / "services", token_env=token_env, wait_for_all=False)
    fleet.spawn()
    return fleet
