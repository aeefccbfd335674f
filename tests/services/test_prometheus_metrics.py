"""The Prometheus metrics of a service, scraped over HTTP from `judgeopt serve loss --metrics-port N` running as its
own process: judgeopt_inflight_requests (what the agents' HorizontalPodAutoscalers scale on) while a call is in
flight and after it ends however it ends, judgeopt_rpc_total by status code, and no health probe counted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers.eventually import assert_eventually
from helpers.fake_openai import Completion, FakeOpenAI, Hang, HttpError
from helpers.messages import critique_request
from helpers.services import free_port, served
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from judgeopt.core.service_config import ServiceConfig
from judgeopt.orchestrator.agent_clients import AgentClients
from judgeopt.orchestrator.errors import AgentUnavailable
from judgeopt.services.metrics import ServiceMetrics
from judgeopt.v1 import common_pb2

CRITIQUE = "/judgeopt.v1.LossService/Critique"
INFLIGHT = "judgeopt_inflight_requests"
RPCS = "judgeopt_rpc_total"
LATENCIES = "judgeopt_rpc_seconds_count"
INFLIGHT_ONE = 'judgeopt_inflight_requests{role="loss"} 1.0'
"""The line a scrape must hold while one call is in flight, exactly as Prometheus reads it."""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass(frozen=True)
class Metered:
    address: str
    metrics_url: str
    log: Path


@pytest.fixture(scope="module")
def metered_loss(fake_endpoint: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Metered]:
    """`judgeopt serve loss --port 0 --metrics-port N` as its own process until the module ends."""
    log = tmp_path_factory.mktemp("metrics") / "loss.log"
    metrics_port = free_port()
    flags = ("--metrics-port", str(metrics_port))
    with served(log, *flags, endpoint=fake_endpoint.base_url) as service:
        yield Metered(service.address, f"http://127.0.0.1:{metrics_port}/metrics", log)


def scrape_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        text: str = response.read().decode()
        return text


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(service: Metered) -> Samples:
    """The service's samples by (name, labels); over HTTP in a thread, so the event loop keeps serving calls."""
    return parse(await asyncio.to_thread(scrape_text, service.metrics_url))


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 for a series not exported yet (a counter whose label set has not been seen)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def answered(samples: Samples, code: str) -> float:
    return value(samples, RPCS, role="loss", method=CRITIQUE, code=code)


def timed(samples: Samples) -> float:
    """How many Critique calls the latency histogram holds."""
    return value(samples, LATENCIES, role="loss", method=CRITIQUE)


async def wait_in_flight(service: Metered, expected: float) -> None:
    async def holds() -> bool:
        return value(await scrape(service), INFLIGHT, role="loss") == expected

    await assert_eventually(holds, timeout=15, message=f"{INFLIGHT} never reached {expected}")


async def test_an_idle_service_exports_zero_in_flight_and_logs_where(metered_loss: Metered) -> None:
    """Before any call the gauge is there at 0 (the HPA needs a value from every pod), and the service logged the
    address it serves the metrics at, on its own host."""
    assert value(await scrape(metered_loss), INFLIGHT, role="loss") == 0.0
    events = [json.loads(x) for x in metered_loss.log.read_text().splitlines() if x.startswith("{")]
    (announced,) = [e for e in events if e["event"] == "service.metrics"]
    assert announced["url"] == metered_loss.metrics_url


async def test_a_slow_call_is_in_flight_until_answered_then_counted_ok(
    metered_loss: Metered, endpoint: FakeOpenAI
) -> None:
    """While the model takes 2 s the scrape says one call is in flight; once the reply is back, none is, and the
    call is counted once with code OK and one latency observation."""
    endpoint.set_handler(lambda _request: Completion("The score is one point too high.", delay=2.0))
    before = await scrape(metered_loss)
    async with AgentClients({"loss": metered_loss.address}) as clients:
        call = asyncio.create_task(clients.critique(critique_request()))
        await wait_in_flight(metered_loss, 1.0)
        assert INFLIGHT_ONE in (await asyncio.to_thread(scrape_text, metered_loss.metrics_url)).splitlines()
        assert not call.done()
        reply = await call
    assert reply.critique.status == common_pb2.PARSE_STATUS_OK
    await wait_in_flight(metered_loss, 0.0)  # the server finishes its bookkeeping just after the caller hears back
    after = await scrape(metered_loss)
    assert answered(after, "OK") - answered(before, "OK") == 1
    assert timed(after) - timed(before) == 1
    assert len(endpoint.requests) == 1


async def test_a_failed_call_is_counted_with_its_code_and_leaves_the_gauge(
    metered_loss: Metered, endpoint: FakeOpenAI
) -> None:
    """The endpoint answers 500 after a second: the call is in flight meanwhile, fails UNAVAILABLE, is counted
    with that code (not OK), and the gauge is back to 0."""
    endpoint.set_handler(lambda _request: HttpError(500, "boom", delay=1.0))
    before = await scrape(metered_loss)
    async with AgentClients({"loss": metered_loss.address}) as clients:
        call = asyncio.create_task(clients.critique(critique_request()))
        await wait_in_flight(metered_loss, 1.0)
        with pytest.raises(AgentUnavailable):
            await call
    await wait_in_flight(metered_loss, 0.0)  # the server finishes its bookkeeping just after the caller hears back
    after = await scrape(metered_loss)
    assert answered(after, "UNAVAILABLE") - answered(before, "UNAVAILABLE") == 1
    assert answered(after, "OK") == answered(before, "OK")


async def test_a_call_the_client_cancels_leaves_the_gauge(metered_loss: Metered, endpoint: FakeOpenAI) -> None:
    """A caller that gives up mid-call (the service's handler is cancelled while the model hangs) must not leave
    the call in flight forever, or the HPA would never scale the role back in."""
    endpoint.set_handler(lambda _request: Hang(10.0))
    before = await scrape(metered_loss)
    async with AgentClients({"loss": metered_loss.address}) as clients:
        call = asyncio.create_task(clients.critique(critique_request()))
        await wait_in_flight(metered_loss, 1.0)
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call
    await wait_in_flight(metered_loss, 0.0)
    after = await scrape(metered_loss)
    assert answered(after, "CANCELLED") - answered(before, "CANCELLED") == 1


async def test_health_checks_are_not_counted(metered_loss: Metered) -> None:
    """Probes are not load: health checks neither move the gauge nor appear among the counted RPCs."""
    before = await scrape(metered_loss)
    async with grpc.aio.insecure_channel(metered_loss.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "judgeopt.v1.LossService", "", "judgeopt.v1.LossService"):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    after = await scrape(metered_loss)
    methods = {dict(labels)["method"] for name, labels in after if name in (RPCS, LATENCIES)}
    assert not any("grpc.health" in method for method in methods), methods

    def counts(samples: Samples) -> Samples:
        return {k: v for k, v in samples.items() if k[0] in (RPCS, LATENCIES)}

    assert counts(after) == counts(before)
    assert value(after, INFLIGHT, role="loss") == 0.0


def test_each_service_has_a_registry_of_its_own() -> None:
    """Two services of the same role in one process (as in tests) keep separate counts and do not collide."""
    first, second = ServiceMetrics("loss"), ServiceMetrics("loss")
    first.record(CRITIQUE, "OK", 0.5)
    assert first.registry.get_sample_value(RPCS, {"role": "loss", "method": CRITIQUE, "code": "OK"}) == 1.0
    assert second.registry.get_sample_value(RPCS, {"role": "loss", "method": CRITIQUE, "code": "OK"}) is None


def test_the_metrics_port_must_differ_from_the_grpc_port() -> None:
    """One port cannot serve both gRPC and /metrics: refused when the config is read, not at bind time."""
    with pytest.raises(ValidationError, match="metrics_port"):
        ServiceConfig(port=50051, metrics_port=50051)
    assert ServiceConfig(port=0, metrics_port=0).metrics_port == 0
