"""``AgentInfoService.Describe``: every agent service names its role, the sha256 of each prompt template the role
uses and judgeopt's version, so that a run can record them. Services run as `judgeopt serve` processes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from helpers.fake_openai import FakeOpenAI
from helpers.messages import critique_request
from helpers.services import Served, served

from judgeopt.core.errors import ConfigError
from judgeopt.core.roles import ALL_ROLES, Role
from judgeopt.orchestrator.agent_clients import AgentClients, ClientSettings
from judgeopt.orchestrator.errors import AgentCallError
from judgeopt.v1 import agent_info_pb2, agent_info_pb2_grpc

PROMPTS = Path(__file__).resolve().parents[2] / "agents" / "prompts"
TOKEN_ENV = "JUDGEOPT_TEST_DESCRIBE_TOKEN"
TOKEN = f"tok-{secrets.token_hex(16)}"


STUDY_SHARED = {"loss": "study_backward_", "gradient": "study_backward_"}
"""The study protocol's backward-engine system prompt, shared by the loss and gradient roles."""


def expected_templates(role: Role) -> dict[str, str]:
    """Computed here from the files, independently of ``prompting.template_hashes``: the role's own templates under
    both protocols (``<role>_*``, ``study_<role>_*``) and the study templates it shares."""
    patterns = [f"{role}_*.txt", f"study_{role}_*.txt"]
    if role in STUDY_SHARED:
        patterns.append(f"{STUDY_SHARED[role]}*.txt")
    files = [p for pattern in patterns for p in PROMPTS.glob(pattern)]
    return {p.stem: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def services(fake_endpoint: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[Role, Served]]:
    """Every role, each with a ledger (``<role>.ledger.jsonl`` beside its log)."""
    folder = tmp_path_factory.mktemp("describe")
    with contextlib.ExitStack() as stack:
        yield {
            role: stack.enter_context(
                served(
                    folder / f"{role}.log",
                    *("--ledger", str(folder / f"{role}.ledger.jsonl")),
                    endpoint=fake_endpoint.base_url,
                    role=role,
                )
            )
            for role in ALL_ROLES
        }


@pytest.fixture(scope="module")
def token_loss(fake_endpoint: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    log = tmp_path_factory.mktemp("describe-token") / "loss.log"
    with served(log, "--token-env", TOKEN_ENV, endpoint=fake_endpoint.base_url, env={TOKEN_ENV: TOKEN}) as service:
        yield service


async def raw_describe(address: str, metadata: tuple[tuple[str, str], ...] = ()) -> agent_info_pb2.DescribeResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        reply: agent_info_pb2.DescribeResponse = await agent_info_pb2_grpc.AgentInfoServiceStub(channel).Describe(
            agent_info_pb2.DescribeRequest(), timeout=10, metadata=metadata
        )
        return reply


class TestDescribe:
    @pytest.mark.parametrize("role", ALL_ROLES)
    async def test_reply_names_the_role_its_templates_hashes_and_the_version(
        self, services: dict[Role, Served], role: Role
    ) -> None:
        """The role, the sha256 of the bytes of every agents/prompts/<role>_*.txt, and the installed version."""
        reply = await raw_describe(services[role].address)
        assert reply.role == role
        assert dict(reply.templates) == expected_templates(role)
        assert len(reply.templates) >= 3
        assert reply.version == version("judgeopt")

    async def test_client_collects_every_roles_templates(self, services: dict[Role, Served]) -> None:
        """``templates`` keys each hash by ``<role>/<template>``; ``describe`` gives one role's."""
        async with AgentClients({role: s.address for role, s in services.items()}) as clients:
            assert await clients.describe("judge") == expected_templates("judge")
            collected = await clients.templates(ALL_ROLES)
        assert collected == {
            f"{role}/{name}": digest for role in ALL_ROLES for name, digest in expected_templates(role).items()
        }
        assert "judge/judge_system" in collected and "evaluator/evaluator_system" in collected

    async def test_an_address_serving_another_role_is_a_config_error(self, services: dict[Role, Served]) -> None:
        """The loss address pointing at the judge service is caught before any template is recorded."""
        async with AgentClients({"loss": services["judge"].address}) as clients:
            with pytest.raises(ConfigError, match="the loss service address answers as the judge service"):
                await clients.describe("loss")

    async def test_describe_is_not_ledgered(self, services: dict[Role, Served], endpoint: FakeOpenAI) -> None:
        """The ledger holds agent requests only (the audit matches each against a routed call): Describe is not one."""
        async with AgentClients({"loss": services["loss"].address}) as clients:
            await clients.describe("loss")
            request = critique_request()
            await clients.critique(request)
            await clients.describe("loss")
        ledger = services["loss"].log.with_name("loss.ledger.jsonl").read_text().splitlines()
        assert [(e["rpc"], e["request_id"]) for e in map(json.loads, ledger)] == [
            ("/judgeopt.v1.LossService/Critique", request.meta.request_id)
        ]

    async def test_reflection_lists_the_info_service_beside_the_roles(self, services: dict[Role, Served]) -> None:
        async with grpc.aio.insecure_channel(services["evaluator"].address) as channel:
            call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
            listing = await call.read()
        names = {s.name for s in listing.list_services_response.service}
        assert {"judgeopt.v1.EvaluatorService", "judgeopt.v1.AgentInfoService"} <= names


class TestDescribeWithToken:
    async def test_describe_without_the_token_is_unauthenticated(self, token_loss: Served) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await raw_describe(token_loss.address)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await raw_describe(token_loss.address, (("authorization", "Bearer tok-wrong"),))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

    async def test_client_with_the_token_gets_the_templates(
        self, token_loss: Served, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async with AgentClients({"loss": token_loss.address}) as clients:
            with pytest.raises(AgentCallError) as caught:
                await clients.describe("loss")
            assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
        monkeypatch.setenv(TOKEN_ENV, TOKEN)
        async with AgentClients({"loss": token_loss.address}, ClientSettings(token_env=TOKEN_ENV)) as clients:
            assert await clients.describe("loss") == expected_templates("loss")
