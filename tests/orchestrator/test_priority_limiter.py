"""The priority-aware concurrency limit (in process): a freed slot goes to the most urgent waiter, first come first
served within a priority; a cancelled waiter never leaks a slot; the adaptive limit and the rate limits serve their
waiters in the same order."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from judgeopt.orchestrator.engine.adaptive import AdaptiveLimit
from judgeopt.orchestrator.engine.priority import TEST, TRAINING, VALIDATION, PriorityLimiter, priority_of
from judgeopt.orchestrator.engine.ratelimit import Slot, WindowLimiter


async def _settle() -> None:
    """Let every ready task run until it blocks."""
    for _ in range(5):
        await asyncio.sleep(0)


async def _admission_order(
    acquire: Callable[[int], Awaitable[None]], release: Callable[[], Awaitable[None]], arrivals: list[tuple[str, int]]
) -> list[str]:
    """With the one slot held, ``arrivals`` queue in this order; the order in which they get the slot as it is
    passed on, one holder at a time."""
    admitted: list[str] = []

    async def waiter(name: str, priority: int) -> None:
        await acquire(priority)
        admitted.append(name)

    await acquire(TRAINING)
    tasks = []
    for name, priority in arrivals:
        tasks.append(asyncio.create_task(waiter(name, priority)))
        await _settle()  # each is queued before the next arrives
    assert admitted == []
    for _ in arrivals:
        await release()
        await _settle()
    await asyncio.gather(*tasks)
    return admitted


ARRIVALS = [("test-1", TEST), ("val-1", VALIDATION), ("train-1", TRAINING), ("test-2", TEST), ("train-2", TRAINING)]
EXPECTED = ["train-1", "train-2", "val-1", "test-1", "test-2"]


async def test_a_freed_slot_goes_to_the_most_urgent_waiter_first_come_first_served_within_a_priority() -> None:
    limiter = PriorityLimiter(1)

    async def release() -> None:
        limiter.release()

    assert await _admission_order(limiter.acquire, release, ARRIVALS) == EXPECTED
    assert limiter.in_use == 1 and limiter.waiting == 0  # the last one admitted still holds its slot


async def test_the_adaptive_limit_serves_its_waiters_in_priority_order() -> None:
    limit = AdaptiveLimit("e", 1)

    async def acquire(priority: int) -> None:
        await limit.acquire(priority)

    async def release() -> None:
        await limit.release(ticket, seconds=None, overloaded=False)  # no latency sample: the limit stays at 1

    ticket = await limit.acquire()  # a ticket of generation 0, like every one handed out below
    await limit.release(ticket, seconds=None, overloaded=False)
    assert await _admission_order(acquire, release, ARRIVALS) == EXPECTED


async def test_the_rate_limit_gives_room_in_priority_order() -> None:
    window = WindowLimiter(requests=1, tokens=None, window=0.0)
    held: list[Slot] = []

    async def acquire(priority: int) -> None:
        held.append(await window.acquire(1, priority))

    async def release() -> None:
        await window.release(held.pop(0), None)

    assert await _admission_order(acquire, release, ARRIVALS) == EXPECTED


async def test_a_waiter_cancelled_while_waiting_leaves_the_queue_and_takes_no_slot() -> None:
    limiter = PriorityLimiter(1)
    await limiter.acquire()
    cancelled = asyncio.create_task(limiter.acquire(TRAINING))
    behind = asyncio.create_task(limiter.acquire(TEST))
    await _settle()
    cancelled.cancel()
    await _settle()
    assert cancelled.cancelled() and limiter.waiting == 1
    limiter.release()
    await asyncio.wait_for(behind, 1)  # the slot went past the cancelled waiter
    limiter.release()
    assert limiter.in_use == 0 and limiter.waiting == 0


async def test_a_waiter_cancelled_after_it_was_handed_a_slot_hands_it_on() -> None:
    """The slot is handed over, then the waiter is cancelled before it runs again: the slot passes to the next
    waiter instead of being lost."""
    limiter = PriorityLimiter(1)
    await limiter.acquire()
    first = asyncio.create_task(limiter.acquire(TRAINING))
    second = asyncio.create_task(limiter.acquire(TRAINING))
    await _settle()
    limiter.release()  # hands the slot to ``first``, which has not run yet
    first.cancel()
    await _settle()
    assert first.cancelled()
    await asyncio.wait_for(second, 1)
    assert limiter.in_use == 1
    limiter.release()
    assert limiter.in_use == 0


async def test_a_rate_limit_waiter_cancelled_lets_the_next_one_in() -> None:
    window = WindowLimiter(requests=1, tokens=None, window=0.0)
    slot = await window.acquire(1)
    cancelled = asyncio.create_task(window.acquire(1, TRAINING))
    behind = asyncio.create_task(window.acquire(1, TEST))
    await _settle()
    cancelled.cancel()
    await _settle()
    await window.release(slot, None)
    await asyncio.wait_for(behind, 1)
    assert cancelled.cancelled()


def test_priorities_follow_what_a_call_is_for() -> None:
    assert [priority_of(p) for p in ("train", "fallback", "arbiter", "val", "test")] == [0, 0, 0, 1, 2]
    assert TRAINING < VALIDATION < TEST


def test_a_limit_without_a_slot_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        PriorityLimiter(0)
