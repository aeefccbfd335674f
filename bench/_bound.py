"""The bound a step's wall time is measured against: the shortest schedule of the step's own call graph at the
run's concurrency.

``step_graph`` draws the dependencies judgeopt really has within a step of one track: each training sample's judge
call, then that sample's loss calls, then (once all of them answered) its gradient calls; the optimizer calls
after every gradient; the validation judge calls after the optimizer; the test judge calls after the whole
validation (the gate decides which prompt is tested). Samples do not wait for each other until the optimizer, so a
stage-by-stage count of waves overstates the bound. Several tracks (Single-Task) are disjoint graphs side by side.
``run_graph`` chains steps: the next step's training waits for the gate, not for the test evaluation, which
judgeopt runs alongside it (``pipeline_steps``).

``list_schedule`` runs a graph on ``slots`` parallel slots: whenever a slot is free it starts the ready call with
the longest path still ahead of it (critical-path list scheduling, optimal for the unit-time in-forests and
fork-joins these graphs are; in general within ``2 − 1/slots`` of the optimum). ``lower_bound`` is the simple
bound no schedule beats (the longest path, and the total work over the slots): where both agree the schedule is
provably the shortest.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

STAGES = ("judge", "loss", "gradient", "optimizer", "val", "test")
"""A step's stages in dependency order (``judge`` is the training batch's; ``val``/``test`` the evaluations')."""


@dataclass(frozen=True)
class Call:
    name: str
    seconds: float
    after: tuple[str, ...] = ()


def _checked(graph: Sequence[Call]) -> dict[str, Call]:
    calls = {c.name: c for c in graph}
    if len(calls) != len(graph):
        raise ValueError("two calls of the graph share a name")
    unknown = {d for c in graph for d in c.after} - set(calls)
    if unknown:
        raise ValueError(f"calls depend on unknown calls: {sorted(unknown)}")
    return calls


def remaining_path(graph: Sequence[Call]) -> dict[str, float]:
    """Per call, the longest chain of durations from its start to the end of the graph (its own included)."""
    calls = _checked(graph)
    children: dict[str, list[str]] = {name: [] for name in calls}
    for call in graph:
        for parent in call.after:
            children[parent].append(call.name)

    @cache
    def ahead(name: str) -> float:
        return calls[name].seconds + max((ahead(child) for child in children[name]), default=0.0)

    return {name: ahead(name) for name in calls}


def lower_bound(graph: Sequence[Call], slots: int) -> float:
    """No schedule on ``slots`` slots is shorter than the longest path or the total work spread over the slots."""
    if not graph:
        return 0.0
    longest = max(remaining_path(graph).values())
    return max(longest, sum(c.seconds for c in graph) / slots)


def list_schedule(graph: Sequence[Call], slots: int) -> float:
    """The makespan of critical-path list scheduling of ``graph`` on ``slots`` slots (calls of zero duration,
    joins, take no slot)."""
    if slots < 1:
        raise ValueError("at least one slot is needed")
    calls = _checked(graph)
    priority = remaining_path(graph)
    waiting = {c.name: len(set(c.after)) for c in graph}
    children: dict[str, list[str]] = {name: [] for name in calls}
    for call in graph:
        for parent in set(call.after):
            children[parent].append(call.name)
    ready: list[tuple[float, str]] = []
    running: list[tuple[float, str]] = []
    end = 0.0

    def finish(name: str, at: float) -> None:
        nonlocal end
        end = max(end, at)
        for child in children[name]:
            waiting[child] -= 1
            if waiting[child] == 0:
                make_ready(child, at)

    def make_ready(name: str, at: float) -> None:
        if calls[name].seconds == 0:
            finish(name, at)
        else:
            heapq.heappush(ready, (-priority[name], name))

    for name, count in list(waiting.items()):
        if count == 0:
            make_ready(name, 0.0)
    now = 0.0
    while ready or running:
        while ready and len(running) < slots:
            _, name = heapq.heappop(ready)
            heapq.heappush(running, (now + calls[name].seconds, name))
        now, name = heapq.heappop(running)
        finish(name, now)
        while running and running[0][0] == now:
            finish(heapq.heappop(running)[1], now)
    return end


def step_graph(counts: Mapping[str, Mapping[str, int]], seconds: float) -> list[Call]:
    """The call graph of one step: ``counts[track][stage]`` calls of each stage (``STAGES``), every call taking
    ``seconds``. A track's training calls of a stage are spread evenly over its samples (one judge call each)."""
    return run_graph([counts], seconds)


def run_graph(steps: Sequence[Mapping[str, Mapping[str, int]]], seconds: float) -> list[Call]:
    """The call graph of consecutive steps (``steps[i]`` as ``step_graph`` takes one). A track's training in a step
    waits for the previous step's gate (it trains the prompt the gate kept); a step's test evaluation waits for its
    own gate only, so it runs alongside the next step's training, as judgeopt pipelines steps."""
    graph: list[Call] = []
    gates: dict[str, tuple[str, ...]] = {}
    for index, counts in enumerate(steps):
        for track, stages in counts.items():
            calls, gate = _track_step(
                f"{index}/{track}" if len(steps) > 1 else track, stages, seconds, gates.get(track, ())
            )
            graph += calls
            gates[track] = (gate,)
    return graph


def _track_step(name: str, stages: Mapping[str, int], seconds: float, after: tuple[str, ...]) -> tuple[list[Call], str]:
    """One track's calls of one step, its training starting after ``after``; and the name of its gate."""
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise ValueError(f"track {name}: unknown stages {sorted(unknown)}")
    samples = stages.get("judge", 0)
    loss_share = _share(stages.get("loss", 0), samples, name)
    gradient_share = _share(stages.get("gradient", 0), samples, name)
    graph: list[Call] = []
    gradients: list[str] = []
    for sample in range(samples):
        judge = f"{name}/judge/{sample}"
        graph.append(Call(judge, seconds, after))
        losses = [f"{name}/loss/{sample}/{i}" for i in range(loss_share)]
        graph += [Call(loss, seconds, (judge,)) for loss in losses]
        own = [f"{name}/gradient/{sample}/{i}" for i in range(gradient_share)]
        graph += [Call(gradient, seconds, tuple(losses) or (judge,)) for gradient in own]
        gradients += own
    optimizers = [f"{name}/optimizer/{i}" for i in range(stages.get("optimizer", 0))]
    graph += [Call(optimizer, seconds, tuple(gradients) or after) for optimizer in optimizers]
    vals = [f"{name}/val/{i}" for i in range(stages.get("val", 0))]
    graph += [Call(val, seconds, tuple(optimizers) or after) for val in vals]
    gate = f"{name}/gate"
    graph.append(Call(gate, 0.0, tuple(vals or optimizers) or after))
    graph += [Call(f"{name}/test/{i}", seconds, (gate,)) for i in range(stages.get("test", 0))]
    return graph, gate


def _share(calls: int, samples: int, track: str) -> int:
    if calls and samples == 0:
        raise ValueError(f"track {track}: training calls but no judged sample")
    per_sample = calls / samples if samples else 0
    if per_sample != math.floor(per_sample):
        raise ValueError(f"track {track}: {calls} calls do not spread evenly over {samples} samples")
    return int(per_sample)


def stage_barrier_bound(counts: Mapping[str, Mapping[str, int]], seconds: float, slots: int) -> float:
    """The earlier, looser ideal: every stage (all tracks together) waits for the whole previous one."""
    totals = {stage: sum(stages.get(stage, 0) for stages in counts.values()) for stage in STAGES}
    return sum(math.ceil(n / slots) for n in totals.values()) * seconds
