"""Critical-path list scheduling against graphs whose shortest schedule is known."""

from __future__ import annotations

from collections import Counter

import pytest
from _bound import Call, list_schedule, lower_bound, run_graph, stage_barrier_bound, step_graph
from textgrad_compare import textgrad_graph

MIDDLE = tuple(f"m{i}" for i in range(5))


def chain(prefix: str, length: int) -> list[Call]:
    return [Call(f"{prefix}{i}", 1.0, (f"{prefix}{i - 1}",) if i else ()) for i in range(length)]


@pytest.mark.parametrize(
    ("graph", "slots", "optimum"),
    [
        (chain("c", 3), 8, 3.0),  # a chain is as long as its path, whatever the slots
        ([Call(f"x{i}", 1.0) for i in range(9)], 4, 3.0),  # independent calls: ⌈9 / 4⌉ waves
        (  # fork-join: 1, then 5 side by side on 2 slots (3 waves), then 1
            [Call("a", 1.0), *(Call(f"m{i}", 1.0, ("a",)) for i in range(5)), Call("z", 1.0, MIDDLE)],
            2,
            5.0,
        ),
        ([Call("long", 3.0), Call("s1", 1.0), Call("s2", 1.0), Call("s3", 1.0)], 2, 3.0),
    ],
)
def test_known_shortest_schedules(graph: list[Call], slots: int, optimum: float) -> None:
    assert list_schedule(graph, slots) == optimum
    assert lower_bound(graph, slots) <= optimum


def test_where_the_simple_bound_is_met_the_schedule_is_provably_shortest() -> None:
    graph = [Call("long", 3.0), Call("s1", 1.0), Call("s2", 1.0), Call("s3", 1.0)]
    assert list_schedule(graph, 2) == lower_bound(graph, 2) == 3.0
    assert lower_bound([Call(f"x{i}", 1.0) for i in range(8)], 4) == 2.0  # the work over the slots


def test_the_longest_path_goes_first() -> None:
    """Three loose calls listed before a chain of three: first come first served would take 4 waves on 2 slots,
    starting the chain at once takes 3, the optimum."""
    graph = [Call("s1", 1.0), Call("s2", 1.0), Call("s3", 1.0), *chain("z", 3)]  # "z" sorts after "s"
    assert list_schedule(graph, 2) == 3.0


def test_a_join_takes_no_slot() -> None:
    graph = [Call("a", 1.0), Call("b", 1.0), Call("join", 0.0, ("a", "b")), Call("c", 1.0, ("join",))]
    assert list_schedule(graph, 2) == 2.0


def test_an_sss_step_is_one_wave_shorter_than_its_stage_count() -> None:
    """SSS, batch 3, 4 criteria, 8 slots: judge (1 wave); 12 losses, 8 at once, so the third sample's losses share
    the next wave with the first samples' gradients; the last gradients; the optimizer: 5 waves where the stage
    barrier counts 6. Five is the optimum: all 12 gradients done by wave 3 would need all 12 losses in wave 2."""
    counts = {"all": {"judge": 3, "loss": 12, "gradient": 12, "optimizer": 4}}
    graph = step_graph(counts, 1.0)
    assert len(graph) == 31 + 1  # the calls and the gate's join
    assert list_schedule(graph, 8) == 5.0
    assert stage_barrier_bound(counts, 1.0, 8) == 6.0
    with_evaluations = {"all": {**counts["all"], "val": 16, "test": 32}}
    assert list_schedule(step_graph(with_evaluations, 1.0), 8) == 5.0 + 2 + 4  # test waits for the whole validation


def test_a_steps_test_evaluation_runs_alongside_the_next_steps_training() -> None:
    """Two steps of a one-sample chain (judge → loss → gradient → optimizer, then 2 test calls) on 2 slots: one
    step takes 5 waves, two one after the other 10; pipelined, the first step's tests share waves with the second
    step's chain, and the run takes 9, its longest path (both chains, then the second step's tests)."""
    step = {"all": {"judge": 1, "loss": 1, "gradient": 1, "optimizer": 1, "test": 2}}
    assert list_schedule(step_graph(step, 1.0), 2) == 5.0
    pipelined = run_graph([step, step], 1.0)
    assert len(pipelined) == 2 * len(step_graph(step, 1.0))
    assert list_schedule(pipelined, 2) == lower_bound(pipelined, 2) == 9.0
    # the second step's training waits for the first step's gate: a step cannot start before the gate kept a prompt
    second_judge = next(c for c in pipelined if c.name == "1/all/judge/0")
    assert second_judge.after == ("0/all/gate",)


def test_pipelined_sss_steps_are_shorter_than_their_steps_one_after_the_other() -> None:
    """SSS at the bench's sizes (batch 3, 4 criteria, validation 16, test 32) on 8 slots: each step alone takes
    5 + 2 + 4 waves; pipelined, the first step's 4 test waves fill the slots the second step's training leaves free."""
    step = {"all": {"judge": 3, "loss": 12, "gradient": 12, "optimizer": 4, "val": 16, "test": 32}}
    alone = list_schedule(step_graph(step, 1.0), 8)
    assert alone == 11.0
    pipelined = run_graph([step, step], 1.0)
    assert lower_bound(pipelined, 8) <= list_schedule(pipelined, 8) < 2 * alone


def test_tracks_run_side_by_side() -> None:
    """Single-Task: four tracks of one criterion each share the slots."""
    track = {"judge": 3, "loss": 3, "gradient": 3, "optimizer": 1}
    counts = {f"t{i}": track for i in range(4)}
    assert list_schedule(step_graph(counts, 0.1), 16) == pytest.approx(0.4)
    assert list_schedule(step_graph(counts, 0.1), 4) == pytest.approx(1.0)  # 40 calls on 4 slots: 10 waves, no gap


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ({"all": {"loss": 3}}, "no judged sample"),
        ({"all": {"judge": 2, "loss": 3}}, "do not spread evenly"),
        ({"all": {"judge": 2, "critic": 3}}, "unknown stages"),
    ],
)
def test_counts_that_are_no_step_are_refused(counts: dict[str, dict[str, int]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        step_graph(counts, 1.0)


def test_textgrad_is_bounded_by_the_graph_it_runs() -> None:
    """TextGrad's step: B forward → loss pairs, side by side when threaded (else one sample after the other), its
    backward calls one at a time, its optimizer call, then the validation forwards on the slots."""
    calls = Counter({"textgrad forward": 3 + 16, "textgrad loss or gradient": 3 + 6, "textgrad optimizer": 1})
    assert list_schedule(textgrad_graph(calls, 3, 1.0, threaded=True), 8) == 2 + 6 + 1 + 2
    assert list_schedule(textgrad_graph(calls, 3, 1.0, threaded=False), 8) == 6 + 6 + 1 + 2
