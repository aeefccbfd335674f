"""Adaptive concurrency: the AIMD limit on planted latency and overload sequences (in process), and one scripted
run whose endpoint answers 429 for a while: the limit is cut, the run completes and equals the fixed-limit run."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

from helpers.fake_openai import FakeOpenAI, HttpError, RecordedRequest, Reply
from helpers.runs import outcome, write_config
from helpers.scripts import deterministic_handler

from judgeopt.cli import main
from judgeopt.orchestrator.engine.adaptive import AdaptiveLimit, Ticket

FAST = 0.1


async def _round(limit: AdaptiveLimit, seconds: float | None = FAST, *, overloaded: bool = False) -> int:
    """Fill the limit with calls, then end them all the same way; the number of calls the round held."""
    tickets = [await limit.acquire() for _ in range(limit.limit)]
    for ticket in tickets:
        await limit.release(ticket, seconds=seconds, overloaded=overloaded)
    return len(tickets)


async def test_fast_replies_grow_the_limit_to_the_maximum_and_no_further() -> None:
    limit = AdaptiveLimit("e", 6)
    assert limit.limit == 1
    held = [await _round(limit) for _ in range(5)]
    assert held == [1, 2, 3, 4, 6]  # +1 per fast reply ending while more than half the limit is in flight
    assert limit.limit == 6  # the ceiling is the configured maximum
    assert limit.report() == {
        "maximum": 6,
        "min_limit": 1,
        "max_limit": 6,
        "final_limit": 6,
        "overload_cuts": 0,
        "latency_cuts": 0,
    }


async def test_an_unused_limit_does_not_grow() -> None:
    """One call at a time never proves the endpoint takes more: the limit stops at twice the calls in flight."""
    limit = AdaptiveLimit("e", 8)
    for _ in range(10):
        await limit.release(await limit.acquire(), seconds=FAST, overloaded=False)
    assert limit.limit == 2


async def test_an_overload_halves_the_limit_once_per_burst_down_to_one() -> None:
    limit = AdaptiveLimit("e", 8, initial=8)
    burst = [await limit.acquire() for _ in range(8)]
    for ticket in burst:  # eight 429s from calls that started together: one cut
        await limit.release(ticket, seconds=None, overloaded=True)
    assert limit.limit == 4
    assert limit.report()["overload_cuts"] == 1
    for _ in range(5):  # calls started after each cut may cut again, but never below one
        await _round(limit, None, overloaded=True)
    assert limit.limit == 1
    assert limit.report()["min_limit"] == 1 and limit.report()["max_limit"] == 8
    await _round(limit)  # recovery: fast replies grow it again
    assert limit.limit == 2


async def test_replies_much_slower_than_the_fastest_shrink_the_limit() -> None:
    limit = AdaptiveLimit("e", 8, initial=8)
    await _round(limit, FAST)
    assert limit.limit == 8
    await _round(limit, FAST * 1.5)  # within the tolerance: no cut
    assert limit.limit == 8
    await _round(limit, FAST * 5)  # the endpoint queues: cut by the latency factor, once for the round
    assert limit.limit == 7
    assert limit.report()["latency_cuts"] == 1 and limit.report()["overload_cuts"] == 0


async def test_a_call_without_a_latency_sample_leaves_the_limit_alone() -> None:
    limit = AdaptiveLimit("e", 8, initial=4)
    await _round(limit, None)
    assert limit.limit == 4


async def test_waiters_go_when_a_call_ends_and_never_beyond_the_limit() -> None:
    limit = AdaptiveLimit("e", 4, initial=2)
    first, second = await limit.acquire(), await limit.acquire()
    waiting = asyncio.ensure_future(limit.acquire())
    await asyncio.sleep(0.01)
    assert not waiting.done() and limit.in_flight == 2
    await limit.release(first, seconds=FAST, overloaded=False)  # grows to 3 and frees a slot
    third: Ticket = await asyncio.wait_for(waiting, 1)
    assert limit.in_flight == 2 and limit.limit == 3
    for ticket in (second, third):
        await limit.release(ticket, seconds=FAST, overloaded=False)
    assert limit.in_flight == 0


class _RateLimitedFor:
    """Answers normally for ``after`` requests, then 429 (no Retry-After) for the next ``count``, then normally."""

    def __init__(self, after: int, count: int) -> None:
        self._handler = deterministic_handler()
        self._after, self._count = after, count
        self._seen = 0
        self._lock = threading.Lock()
        self.refused = 0

    def __call__(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self._seen += 1
            refuse = self._after < self._seen <= self._after + self._count
            self.refused += refuse
        return HttpError(429, "slow down") if refuse else self._handler(request)


def test_a_rate_limited_endpoint_cuts_the_limit_and_the_run_equals_the_fixed_one(tmp_path: Path) -> None:
    run = {"mode": "SSC", "steps": 1, "concurrency": 4, "call_attempts": 6}
    with FakeOpenAI(deterministic_handler()) as server:
        config = write_config(tmp_path / "fixed.yaml", server.base_url, **run)
        assert main(["optimize", "--config", str(config), "--run-dir", str(tmp_path / "fixed")]) == 0
    refusing = _RateLimitedFor(after=12, count=6)
    with FakeOpenAI(refusing) as server:
        config = write_config(tmp_path / "adaptive.yaml", server.base_url, **run)
        argv = ["optimize", "--config", str(config), "--run-dir", str(tmp_path / "adaptive")]
        assert main([*argv, "--concurrency-mode", "adaptive"]) == 0
    assert refusing.refused == 6
    assert outcome(tmp_path / "adaptive") == outcome(tmp_path / "fixed")
    fixed = json.loads((tmp_path / "fixed" / "summary.json").read_text())
    assert "concurrency" not in fixed
    (endpoint,) = json.loads((tmp_path / "adaptive" / "summary.json").read_text())["concurrency"].values()
    assert endpoint["maximum"] == 4 and endpoint["max_limit"] == 4  # it grew to the ceiling before the 429s
    assert endpoint["overload_cuts"] >= 1  # the 429s cut it
