"""The orchestrator's side of the contract: one channel per role, a deadline on every call, ids in metadata.

Addresses may be ``host:port`` or ``dns:///name:port``; channels balance over every resolved address with
client-side round-robin. Retries are not declared here: the model hop retries inside the service (the openai
client), and failed calls are retried by the loop within its budget, so retry layers never stack.

Channels are plaintext unless ``ClientSettings.tls_ca`` is set: then TLS, verifying the services' certificates
against that CA, and presenting a client certificate when ``tls_cert``/``tls_key`` are given (mutual TLS). With
``token_env`` every call carries ``authorization: Bearer <token>``: as call credentials on TLS channels, as plain
metadata on plaintext ones (gRPC sends call credentials only over secure channels), and then only to addresses on
this machine: a token over plaintext to any other address is refused.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar, cast

import grpc

from judgeopt.core.credentials import check_key_pair, read_pem, read_token
from judgeopt.core.errors import ConfigError, CredentialError
from judgeopt.core.loopback import is_loopback_target
from judgeopt.core.roles import Role
from judgeopt.core.tracing import grpc_client_interceptors
from judgeopt.core.wire import REQUEST_ID_KEY, RUN_ID_KEY
from judgeopt.orchestrator.errors import map_rpc_errors
from judgeopt.v1 import (
    agent_info_pb2,
    agent_info_pb2_grpc,
    evaluator_pb2,
    evaluator_pb2_grpc,
    gradient_pb2,
    gradient_pb2_grpc,
    judge_pb2,
    judge_pb2_grpc,
    loss_pb2,
    loss_pb2_grpc,
    optimizer_pb2,
    optimizer_pb2_grpc,
)

ReplyT = TypeVar("ReplyT")
StubT = TypeVar("StubT")

_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


@dataclass(frozen=True)
class ClientSettings:
    deadline_seconds: Mapping[str, float] = field(
        default_factory=lambda: {
            "judge": 300.0,
            "loss": 300.0,
            "gradient": 600.0,
            "optimizer": 900.0,
            "evaluator": 600.0,
        }
    )
    """Per-role deadline of one RPC; generous by default because the local model serves one call at a time."""
    describe_seconds: float = 15.0
    """Deadline of ``Describe``, which calls no model (it still waits for a service that is starting up)."""
    max_message_bytes: int = 16 * 1024 * 1024
    """Largest request sent or reply accepted, set explicitly on both directions (the services' default too)."""
    tls_ca: Path | None = None
    """PEM root certificate(s) that verify the services (``--tls-ca``); set → TLS on every channel."""
    tls_cert: Path | None = None
    """PEM client certificate chain for mutual TLS (``--tls-cert``), with ``tls_key``."""
    tls_key: Path | None = None
    """PEM private key of ``tls_cert`` (``--tls-key``)."""
    server_name_override: str | None = None
    """Name to verify the services' certificates against instead of the address's host (``--tls-server-name``)."""
    token_env: str | None = None
    """Name of the environment variable holding the bearer token stamped on every call (``--token-env``)."""

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key must be given together")
        if self.tls_ca is None and (self.tls_cert is not None or self.server_name_override is not None):
            which = "--tls-cert" if self.tls_cert is not None else "--tls-server-name"
            raise ConfigError(f"{which} needs --tls-ca (the CA that verifies the services)")
        if self.token_env is not None and not (self.token_env.replace("_", "").isalnum() and self.token_env.isascii()):
            raise ConfigError(f"--token-env must name an environment variable, got {self.token_env!r}")

    @property
    def tls(self) -> bool:
        return self.tls_ca is not None

    def token(self) -> str | None:
        """The bearer token from ``token_env`` (``ConfigError`` naming the variable if it is unset)."""
        if self.token_env is None:
            return None
        try:
            return read_token(self.token_env)
        except CredentialError as exc:
            raise ConfigError(str(exc)) from None

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials (with the token as call credentials, if any), or ``None`` for plaintext.

        Reads and checks every file now, so a bad path is one ``ConfigError`` naming the flag and the path."""
        if self.tls_ca is None:
            return None
        try:
            root = read_pem(self.tls_ca, flag="--tls-ca", kind="certificate")
            chain = key = None
            if self.tls_cert is not None and self.tls_key is not None:
                chain = read_pem(self.tls_cert, flag="--tls-cert", kind="certificate")
                key = read_pem(self.tls_key, flag="--tls-key", kind="private key")
                check_key_pair(self.tls_cert, self.tls_key, cert_flag="--tls-cert", key_flag="--tls-key")
        except CredentialError as exc:
            raise ConfigError(str(exc)) from None
        credentials = grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=chain)
        token = self.token()
        if token is not None:
            credentials = grpc.composite_channel_credentials(credentials, grpc.access_token_call_credentials(token))
        return credentials

    def check(self) -> None:
        """Read every file and the token once, so problems surface before a run starts."""
        self.channel_credentials()
        self.token()

    def check_addresses(self, addresses: Mapping[Role, str]) -> None:
        """Refuse to send the token in clear (a token without TLS) to an address that is not on this machine."""
        if self.token_env is None or self.tls:
            return
        for role, address in addresses.items():
            if not is_loopback_target(address):
                raise ConfigError(
                    f"--token-env would send the bearer token in clear to {address} (--{role}-addr), which is not on "
                    "this machine: give --tls-ca to reach it over TLS"
                )


class AgentClients:
    """Typed async calls to the agent services whose addresses are given (e.g. only the judge, to score data).

    An address may also be a future that a starting fleet resolves once that role answers SERVING: the role's
    channel opens then, so each role's first call waits for its own service only, not for the whole fleet."""

    def __init__(
        self, addresses: Mapping[Role, str | asyncio.Future[str]], settings: ClientSettings | None = None
    ) -> None:
        self.settings = settings or ClientSettings()
        self.settings.check_addresses({role: a for role, a in addresses.items() if isinstance(a, str)})
        self._options: list[tuple[str, Any]] = [
            ("grpc.service_config", _SERVICE_CONFIG),
            ("grpc.max_receive_message_length", self.settings.max_message_bytes),
            ("grpc.max_send_message_length", self.settings.max_message_bytes),
            # A replica that restarts is found again within seconds, not gRPC's default of up to two minutes.
            ("grpc.initial_reconnect_backoff_ms", 250),
            ("grpc.max_reconnect_backoff_ms", 4000),
        ]
        self._credentials = self.settings.channel_credentials()
        # On plaintext the token travels as metadata; on TLS it is inside the channel's call credentials.
        token = self.settings.token() if self._credentials is None else None
        self._auth: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        self._tracing = grpc_client_interceptors()  # with tracing on, the trace context travels in each call's metadata
        if self._credentials is not None and self.settings.server_name_override is not None:
            self._options.append(("grpc.ssl_target_name_override", self.settings.server_name_override))
        self._pending = {role: a for role, a in addresses.items() if not isinstance(a, str)}
        self._channels = {role: self._open(a) for role, a in addresses.items() if isinstance(a, str)}
        self._stubs: dict[tuple[Role, Callable[[grpc.aio.Channel], Any]], Any] = {}

    def _open(self, address: str) -> grpc.aio.Channel:
        if self._credentials is None:
            return grpc.aio.insecure_channel(address, options=self._options, interceptors=self._tracing)
        return grpc.aio.secure_channel(address, self._credentials, options=self._options, interceptors=self._tracing)

    async def ready(self, role: str) -> None:
        """Return once ``role``'s service is up: at once when its address was given, else when the service started
        alongside the run answers SERVING."""
        pending = self._pending.get(cast("Role", role))  # a stage that is no role has no pending service
        if pending is not None and role not in self._channels:
            await pending

    async def _channel(self, role: Role) -> grpc.aio.Channel:
        channel = self._channels.get(role)
        if channel is not None:
            return channel
        if role not in self._pending:
            raise ConfigError(f"no {role} service address was given")
        address = await self._pending[role]
        if role not in self._channels:  # another call may have opened it while this one waited
            self._channels[role] = self._open(address)
        return self._channels[role]

    async def _stub(self, role: Role, stub_type: Callable[[grpc.aio.Channel], StubT]) -> StubT:
        key = (role, stub_type)
        if key not in self._stubs:
            self._stubs[key] = stub_type(await self._channel(role))
        stub: StubT = self._stubs[key]
        return stub

    def _call_options(self, request: Any, timeout: float) -> dict[str, Any]:
        meta = getattr(request, "meta", None)  # agent requests carry ids; Describe carries none
        ids = () if meta is None else ((REQUEST_ID_KEY, meta.request_id), (RUN_ID_KEY, meta.run_id))
        return {"timeout": timeout, "metadata": (*ids, *self._auth), "wait_for_ready": True}

    async def _call(
        self,
        role: Role,
        method: Callable[[StubT], Callable[..., Awaitable[ReplyT]]],
        stub_type: Callable[[grpc.aio.Channel], StubT],
        request: Any,
        *,
        deadline: float | None = None,
    ) -> ReplyT:
        """The one funnel of every RPC: deadline (the role's unless ``deadline``), ids and token in the call options,
        gRPC errors mapped."""
        options = self._call_options(request, self.settings.deadline_seconds[role] if deadline is None else deadline)
        stub = await self._stub(role, stub_type)
        with map_rpc_errors(role):
            reply: ReplyT = await method(stub)(request, **options)
            return reply

    async def score(self, request: judge_pb2.ScoreRequest) -> judge_pb2.ScoreResponse:
        return await self._call("judge", lambda s: s.Score, judge_pb2_grpc.JudgeServiceStub, request)

    async def critique(self, request: loss_pb2.CritiqueRequest) -> loss_pb2.CritiqueResponse:
        return await self._call("loss", lambda s: s.Critique, loss_pb2_grpc.LossServiceStub, request)

    async def gradient(self, request: gradient_pb2.GradientRequest) -> gradient_pb2.GradientResponse:
        return await self._call("gradient", lambda s: s.ComputeGradient, gradient_pb2_grpc.GradientServiceStub, request)

    async def step(self, request: optimizer_pb2.StepRequest) -> optimizer_pb2.StepResponse:
        return await self._call("optimizer", lambda s: s.Step, optimizer_pb2_grpc.OptimizerServiceStub, request)

    async def arbitrate(self, request: optimizer_pb2.ArbitrateRequest) -> optimizer_pb2.ArbitrateResponse:
        return await self._call("optimizer", lambda s: s.Arbitrate, optimizer_pb2_grpc.OptimizerServiceStub, request)

    async def rate_specificity(self, request: evaluator_pb2.SpecificityRequest) -> evaluator_pb2.RatingResponse:
        return await self._call(
            "evaluator", lambda s: s.RateSpecificity, evaluator_pb2_grpc.EvaluatorServiceStub, request
        )

    async def rate_adherence(self, request: evaluator_pb2.AdherenceRequest) -> evaluator_pb2.RatingResponse:
        return await self._call(
            "evaluator", lambda s: s.RateAdherence, evaluator_pb2_grpc.EvaluatorServiceStub, request
        )

    async def describe(self, role: Role) -> dict[str, str]:
        """The sha256 of each prompt template the ``role`` service uses, by template name (e.g. ``judge_system``).

        Raises ``ConfigError`` when the address given for ``role`` serves another role."""
        reply = await self._call(
            role,
            lambda s: s.Describe,
            agent_info_pb2_grpc.AgentInfoServiceStub,
            agent_info_pb2.DescribeRequest(),
            deadline=self.settings.describe_seconds,
        )
        if reply.role != role:
            raise ConfigError(f"the {role} service address answers as the {reply.role or 'unnamed'} service")
        return dict(reply.templates)

    async def templates(self, roles: Iterable[Role]) -> dict[str, str]:
        """``{"<role>/<template>": sha256}`` over ``roles``, asked of their services at once: what a run records so
        that ``resume`` can tell whether the services' prompts changed."""
        asked = list(roles)
        described = await asyncio.gather(*(self.describe(role) for role in asked))
        return {
            f"{role}/{name}": digest
            for role, hashes in zip(asked, described, strict=True)
            for name, digest in hashes.items()
        }

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

    async def __aenter__(self) -> Self:
        for channel in self._channels.values():  # connect in the background now, not on each role's first call
            channel.get_state(try_to_connect=True)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
