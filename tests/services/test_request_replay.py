"""A request id seen again is answered from the service's record: a retried call never costs a second model call.

The service tests run the agent services as separate processes (conftest ``fleet``) against the scripted endpoint,
which counts the model calls; ``ReplayCache`` is also tested on its own, for eviction and failure handling.
"""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from helpers.eventually import assert_eventually
from helpers.fake_openai import Completion, FakeOpenAI, HttpError, static
from helpers.messages import critique_request

from judgeopt.orchestrator.agent_clients import AgentClients
from judgeopt.orchestrator.errors import AgentCallError
from judgeopt.orchestrator.fleet import ServiceFleet
from judgeopt.services.interceptors import ReplayCache, ReplayConflictError
from judgeopt.v1 import loss_pb2


def numbered_critiques() -> object:
    """Each model call answers a different critique, so a replayed reply is told apart from a fresh one."""
    count = 0

    def handler(_request: object) -> Completion:
        nonlocal count
        count += 1
        return Completion(f"Critique number {count}.", delay=0.3)

    return handler


class TestReplayOverGrpc:
    async def test_same_request_id_twice_makes_one_model_call_and_two_identical_replies(
        self, clients: AgentClients, endpoint: FakeOpenAI
    ) -> None:
        """A retried call (same request, same id) gets the recorded answer; the model is called once, and the
        replay reports no usage, so the caller's spend counts the one model call once."""
        endpoint.set_handler(numbered_critiques())  # type: ignore[arg-type]
        request = critique_request()
        first = await clients.critique(request)
        second = await clients.critique(request)
        assert len(endpoint.requests) == 1
        assert second.critique.SerializeToString() == first.critique.SerializeToString()
        assert first.critique.text == "Critique number 1."
        assert first.usage.llm_calls == 1 and not second.HasField("usage")

    async def test_concurrent_duplicates_make_one_model_call(self, clients: AgentClients, endpoint: FakeOpenAI) -> None:
        """Two calls with the same id in flight at once: the second waits for the first instead of calling the
        model too, and both get the same reply."""
        endpoint.set_handler(numbered_critiques())  # type: ignore[arg-type]
        request = critique_request()
        first, second = await asyncio.gather(clients.critique(request), clients.critique(request))
        assert len(endpoint.requests) == 1
        assert first.critique.SerializeToString() == second.critique.SerializeToString()
        assert first.usage.llm_calls + second.usage.llm_calls == 1

    async def test_a_different_request_id_is_a_new_model_call(
        self, clients: AgentClients, endpoint: FakeOpenAI
    ) -> None:
        """The same content under a new request id is a new call: the model is asked again."""
        endpoint.set_handler(numbered_critiques())  # type: ignore[arg-type]
        request = critique_request()
        again = loss_pb2.CritiqueRequest()
        again.CopyFrom(request)
        again.meta.request_id = f"{request.meta.request_id}-2"
        first = await clients.critique(request)
        second = await clients.critique(again)
        assert len(endpoint.requests) == 2
        assert (first.critique.text, second.critique.text) == ("Critique number 1.", "Critique number 2.")

    async def test_a_failed_call_is_not_recorded_and_its_retry_calls_the_model(
        self, clients: AgentClients, endpoint: FakeOpenAI
    ) -> None:
        """Only successes are recorded: after UNAVAILABLE, the retry with the same id calls the model for real."""
        endpoint.set_handler(lambda _r: HttpError(500, "boom"))
        request = critique_request()
        with pytest.raises(AgentCallError) as caught:
            await clients.critique(request)
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE
        calls_while_failing = len(endpoint.requests)
        endpoint.set_handler(static("Recovered critique."))
        reply = await clients.critique(request)
        assert reply.critique.text == "Recovered critique."
        assert len(endpoint.requests) == calls_while_failing + 1

    async def test_a_known_id_with_a_different_request_is_refused(
        self, clients: AgentClients, endpoint: FakeOpenAI
    ) -> None:
        """Reusing a request id for other content is a client bug: INVALID_ARGUMENT, never the other reply."""
        request = critique_request(prediction=4)
        await clients.critique(request)
        other = critique_request(prediction=1)
        other.meta.request_id = request.meta.request_id
        with pytest.raises(AgentCallError) as caught:
            await clients.critique(other)
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "already used" in str(caught.value)
        assert len(endpoint.requests) == 1

    async def test_a_replayed_call_is_logged_as_such(self, clients: AgentClients, fleet: ServiceFleet) -> None:
        """The service logs `rpc.replayed` with the request id, beside the usual access-log line."""
        request = critique_request()
        await clients.critique(request)
        await clients.critique(request)

        def replayed() -> bool:
            lines = (fleet.log_dir / "loss.log").read_text().splitlines()
            events = [json.loads(x) for x in lines if x.startswith("{")]
            return any(e["event"] == "rpc.replayed" and e.get("request_id") == request.meta.request_id for e in events)

        await assert_eventually(replayed, timeout=10, message="no rpc.replayed line")


class TestReplayCache:
    async def test_least_recently_used_reply_is_evicted_first(self) -> None:
        """Beyond capacity the least recently used answered key goes; a replayed key counts as used."""
        cache = ReplayCache(capacity=2)
        calls: list[str] = []

        async def work(name: str) -> str:
            calls.append(name)
            return f"reply {name}"

        for name in ("a", "b"):
            await cache.run(("rpc", name), b"f", lambda name=name: work(name))  # type: ignore[misc]
        assert await cache.run(("rpc", "a"), b"f", lambda: work("a")) == ("reply a", True)
        await cache.run(("rpc", "c"), b"f", lambda: work("c"))
        assert len(cache) == 2
        assert await cache.run(("rpc", "a"), b"f", lambda: work("a")) == ("reply a", True)
        assert await cache.run(("rpc", "b"), b"f", lambda: work("b")) == ("reply b", False)
        assert calls == ["a", "b", "c", "b"]

    async def test_a_waiter_runs_the_call_itself_when_the_first_fails(self) -> None:
        """A concurrent duplicate waits for the first call; when that fails, the waiter calls for real."""
        cache = ReplayCache(capacity=10)
        started = asyncio.Event()
        calls = 0

        async def failing() -> str:
            nonlocal calls
            calls += 1
            started.set()
            await asyncio.sleep(0.05)
            raise RuntimeError("endpoint down")

        async def working() -> str:
            nonlocal calls
            calls += 1
            return "fine"

        first = asyncio.create_task(cache.run(("rpc", "x"), b"f", failing))
        await started.wait()
        second = asyncio.create_task(cache.run(("rpc", "x"), b"f", working))
        with pytest.raises(RuntimeError):
            await first
        assert await second == ("fine", False)
        assert calls == 2
        assert await cache.run(("rpc", "x"), b"f", working) == ("fine", True)

    async def test_a_cancelled_call_is_forgotten(self) -> None:
        """A call cancelled mid-way (its caller's deadline) leaves nothing behind: the next one runs."""
        cache = ReplayCache(capacity=10)

        async def slow() -> str:
            await asyncio.sleep(10)
            return "late"

        task = asyncio.create_task(cache.run(("rpc", "y"), b"f", slow))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(cache) == 0

        async def quick() -> str:
            return "now"

        assert await cache.run(("rpc", "y"), b"f", quick) == ("now", False)

    async def test_a_known_key_with_another_fingerprint_is_a_conflict(self) -> None:
        """The same key with different request bytes raises instead of returning the other request's reply."""
        cache = ReplayCache(capacity=10)

        async def work() -> str:
            return "reply"

        await cache.run(("rpc", "z"), b"one", work)
        with pytest.raises(ReplayConflictError, match="already used"):
            await cache.run(("rpc", "z"), b"two", work)
