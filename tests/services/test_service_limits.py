"""What one service takes on, against `judgeopt serve loss` running as its own process: a server-wide limit on RPCs
in flight, a cap on criteria per request, and a refused token that costs the service (almost) none of the body."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
import yaml
from helpers.eventually import assert_eventually, wait_until
from helpers.fake_openai import Completion, FakeOpenAI, Handler, RecordedRequest, Reply
from helpers.messages import critique_request
from helpers.scripts import agent_roles_handler
from helpers.services import Served, served

from judgeopt.core.service_config import ServiceConfig
from judgeopt.v1 import common_pb2, loss_pb2, loss_pb2_grpc

TOKEN_ENV = "JUDGEOPT_TEST_LIMITS_TOKEN"
TOKEN = "tok-limits-0123456789"
BIG = 15 * 1024 * 1024
"""A request body under the 16 MiB message limit, and over three times the transport's largest read-ahead window."""


@pytest.fixture(scope="module")
def limited_loss(fake_endpoint: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The loss service serving at most two RPCs at once (the config file's service section)."""
    folder = tmp_path_factory.mktemp("limited")
    config = folder / "judgeopt.yaml"
    config.write_text(yaml.safe_dump({"service": {"max_concurrent_rpcs": 2}}))
    with served(folder / "loss.log", "--config", str(config), endpoint=fake_endpoint.base_url) as service:
        yield service


@pytest.fixture(scope="module")
def token_loss(fake_endpoint: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    log = tmp_path_factory.mktemp("token") / "loss.log"
    with served(log, "--token-env", TOKEN_ENV, endpoint=fake_endpoint.base_url, env={TOKEN_ENV: TOKEN}) as service:
        yield service


def slow(seconds: float) -> Handler:
    """The well-behaved script, each completion after ``seconds``."""
    handler = agent_roles_handler()

    def answer(request: RecordedRequest) -> Reply:
        reply = handler(request)
        return dataclasses.replace(reply, delay=seconds) if isinstance(reply, Completion) else reply

    return answer


async def critique(address: str, request: loss_pb2.CritiqueRequest, **kwargs: object) -> loss_pb2.CritiqueResponse:
    async with grpc.aio.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        reply: loss_pb2.CritiqueResponse = await loss_pb2_grpc.LossServiceStub(channel).Critique(
            request, timeout=20, **kwargs
        )
        return reply


def test_the_default_limit_is_sensible() -> None:
    """By default a service serves up to 64 RPCs at once: eight times an orchestrator's default concurrency."""
    assert ServiceConfig().max_concurrent_rpcs == 64


async def test_rpcs_beyond_the_limit_are_refused_at_once(limited_loss: Served, endpoint: FakeOpenAI) -> None:
    """With two slow calls in flight, a third is refused RESOURCE_EXHAUSTED at once, without a model call; the two
    are answered, and then the service takes calls again."""
    endpoint.set_handler(slow(2.0))
    first = asyncio.create_task(critique(limited_loss.address, critique_request()))
    second = asyncio.create_task(critique(limited_loss.address, critique_request()))
    await assert_eventually(lambda: len(endpoint.requests) == 2, message="the two calls never reached the model")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await critique(limited_loss.address, critique_request())
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limit" in (caught.value.details() or "").lower()
    assert all(reply.critique.text for reply in await asyncio.gather(first, second))
    assert len(endpoint.requests) == 2
    endpoint.set_handler(agent_roles_handler())

    async def answered() -> bool:  # a slot frees once the server has finished the call, just after its reply
        try:
            return bool((await critique(limited_loss.address, critique_request())).critique.text)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            return False

    await assert_eventually(answered, timeout=5, message="the service never took a call again")
    assert len(endpoint.requests) == 3


async def test_more_than_64_criteria_are_invalid_argument(limited_loss: Served, endpoint: FakeOpenAI) -> None:
    """A request defining 65 criteria is refused with INVALID_ARGUMENT naming the count and the limit, before any
    model call."""
    request = critique_request(tuple(f"c{i}" for i in range(65)))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await critique(limited_loss.address, request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "critique: 65 criteria in one request; at most 64 are allowed"
    assert endpoint.requests == []


@dataclasses.dataclass
class CountingProxy:
    """A TCP relay in front of a service that counts the bytes the client sent through it."""

    address: str
    sent: list[int]


@pytest.fixture
async def proxy(token_loss: Served) -> AsyncIterator[CountingProxy]:
    host, port = token_loss.address.rsplit(":", 1)
    sent = [0]

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counted: bool) -> None:
        try:
            while data := await reader.read(65536):
                sent[0] += len(data) if counted else 0
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def connect(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(relay(client_reader, server_writer, True), relay(server_reader, client_writer, False))

    server = await asyncio.start_server(connect, "127.0.0.1", 0)
    async with server:
        yield CountingProxy(f"127.0.0.1:{server.sockets[0].getsockname()[1]}", sent)


async def test_a_refused_token_costs_the_service_not_the_body(
    proxy: CountingProxy, token_loss: Served, endpoint: FakeOpenAI
) -> None:
    """A 15 MiB request without the token is refused UNAUTHENTICATED after the service took at most a third of it
    (its flow-control window), and the refusal is logged without the token; the same request with the token is read
    whole (and refused as malformed, before any model call)."""
    request = loss_pb2.CritiqueRequest(meta=critique_request().meta, sample_id="s1", judge_output="x" * BIG)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await critique(proxy.address, request)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    await asyncio.sleep(0.5)  # whatever was still in flight when the refusal came back
    assert proxy.sent[0] < BIG / 3, proxy.sent[0]
    wait_until(lambda: "no authorization metadata" in token_loss.log.read_text(), timeout=10)
    assert TOKEN not in token_loss.log.read_text()

    proxy.sent[0] = 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await critique(proxy.address, request, metadata=(("authorization", f"Bearer {TOKEN}"),))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # routing unspecified
    assert proxy.sent[0] > BIG
    assert endpoint.requests == []
    assert request.routing == common_pb2.ROUTING_UNSPECIFIED
