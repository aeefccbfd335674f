"""Recorded bench figures and their check: a slowdown planted in the executor makes ``run_all.py --check`` fail.

The planted case measures for real, but small: the call graph of an SSS step (``_bound.step_graph``) is executed
through the run's own ``CallExecutor`` (concurrency limit, stored attempts) against a stand-in service that answers
after a fixed latency; its wall time over the graph's bound is recorded as ``bench/concurrency.py`` records it, and
the check reads the JSON back.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from _bound import Call, list_schedule, step_graph
from _records import BenchRecord, Target, missed, read_records

from judgeopt.orchestrator.engine.executor import CallExecutor
from judgeopt.orchestrator.engine.priority import PriorityLimiter
from judgeopt.orchestrator.engine.router import RoutedCall
from judgeopt.orchestrator.engine.store import RunStore

RUN_ALL = Path(__file__).resolve().parents[2] / "bench" / "run_all.py"
TARGET = Target("<=", 1.10)
LATENCY = 0.1
SLOTS = 8
SSS_STEP = {"all": {"judge": 3, "loss": 12, "gradient": 12, "optimizer": 4}}


async def _executed_wall(graph: list[Call], executor: CallExecutor) -> float:
    """Run ``graph`` through ``executor``: each call goes once the calls it depends on have answered."""
    done = {call.name: asyncio.Event() for call in graph}

    async def answer(_request: Any) -> object:
        await asyncio.sleep(LATENCY)
        return object()

    async def run(call: Call) -> None:
        for parent in call.after:
            await done[parent].wait()
        if call.seconds:
            routed = RoutedCall(call.name, call.name.split("/")[1], (), None, None)
            await executor.send(routed, answer, track="all", step=1, purpose="train")
        done[call.name].set()

    started = time.perf_counter()
    await asyncio.gather(*(run(call) for call in graph))
    return time.perf_counter() - started


def _check(results: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(RUN_ALL), "--check", "--results", str(results)]
    return subprocess.run(command, capture_output=True, text=True, check=False)


async def _measure(tmp_path: Path, name: str, executor_type: type[CallExecutor]) -> float:
    store = RunStore(tmp_path / name)
    try:
        executor = executor_type(store, limit=PriorityLimiter(SLOTS))
        graph = step_graph(SSS_STEP, LATENCY)
        wall = await _executed_wall(graph, executor)
        assert store.spent()[0] == 31  # every call of the step went through the executor
    finally:
        store.close()
    return wall / list_schedule(graph, SLOTS)


class SleepyExecutor(CallExecutor):
    """The planted slowdown: every call sleeps two latencies inside its concurrency slot before it is sent."""

    async def send(self, call: RoutedCall[Any], send: Any, **where: Any) -> Any:
        async def slow(request: Any) -> Any:
            await asyncio.sleep(2 * LATENCY)
            return await send(request)

        return await super().send(call, slow, **where)


async def test_a_sleep_planted_in_the_executor_makes_the_check_fail(tmp_path: Path) -> None:
    honest = await _measure(tmp_path, "honest", CallExecutor)
    planted = await _measure(tmp_path, "planted", SleepyExecutor)
    assert planted > honest * 1.5  # each of the 5 waves takes three latencies instead of one
    record = BenchRecord("concurrency", command=".venv/bin/python bench/concurrency.py")
    record.add("SSS step 1 wall / graph bound", planted, "ratio", TARGET)
    record.write(tmp_path / "results" / "concurrency.json")
    checked = _check(tmp_path / "results")
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "SSS step 1 wall / graph bound" in checked.stdout and "1 missed" in checked.stdout


def _record(value: float, *, met: bool | None) -> dict[str, Any]:
    figure = {"name": "x", "value": value, "unit": "ratio", "target": {"op": "<=", "limit": 1.1}, "met": met}
    return {"bench": "b", "load_average": {"start": [2.0, 2.0, 2.0], "end": [2.0, 2.0, 2.0]}, "figures": [figure]}


def test_the_verdict_is_recomputed_from_value_and_target() -> None:
    """A record that claims a met target while its value misses it is still a miss."""
    assert missed([_record(1.05, met=True)]) == []
    (line,) = missed([_record(1.3, met=True)])
    assert line.startswith("b: x = 1.3 ratio, target <= 1.1") and "load 2.0" in line


def test_recorded_figures_that_meet_their_targets_pass_the_check(tmp_path: Path) -> None:
    record = BenchRecord("startup", command=".venv/bin/python bench/startup.py")
    record.add("judgeopt --help median", 0.09, "s", Target("<", 0.3))
    record.add("python -c pass median", 0.04, "s")
    record.write(tmp_path / "startup.json")
    (written,) = read_records(tmp_path)
    assert written["commit"]["sha"] and written["machine"]["cpus"] and len(written["load_average"]["start"]) == 3
    assert [f["met"] for f in written["figures"]] == [True, None]
    checked = _check(tmp_path)
    assert checked.returncode == 0 and "1 figures with a target checked" in checked.stdout


@pytest.mark.parametrize("content", [None, {"bench": "b", "figures": []}])
def test_a_check_of_nothing_fails(tmp_path: Path, content: dict[str, Any] | None) -> None:
    """No records, or records without a figure that has a target: nothing was checked, which is no pass."""
    if content is not None:
        (tmp_path / "b.json").write_text(json.dumps(content))
    assert _check(tmp_path).returncode != 0
