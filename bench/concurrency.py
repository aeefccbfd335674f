"""Concurrency efficiency: one optimization step with its validation and test evaluations, against an endpoint
with a fixed latency, over the shortest schedule of the step's own call graph (target ≤ 1.10 for every mode).

    .venv/bin/python bench/concurrency.py [--modes SSS,SSC,SCC,CCC,single] [--concurrency 8] [--latency 0.1]
        [--batch 3] [--val 16] [--test 32] [--bootstrap 200] [--json FILE]

For each mode, ``judgeopt optimize`` runs ``--steps`` steps (gate none, so the candidate is always accepted and
tested) against the scripted endpoint (``deterministic_handler()``, every reply delayed by ``--latency``; its own
process).

Method (from the run store, not from a stopwatch around the process, so start-up and step 0 are left out):

* wall of step n = the latest ``steps.finished_at`` of step n (over tracks) − the earliest moment a step-n call
  was issued (``calls.at − endpoint_seconds − queue_seconds``: ``at`` is stamped when an attempt ends); steps are
  pipelined (a step's test evaluation runs alongside the next step's training), so the windows of consecutive
  steps overlap, and the calls of other steps sent inside a step's window join its graph as calls free to run at
  once (a looser bound than their real dependencies give, never a tighter one);
* wall of the run's steps 1..N = the last step's commit − the first step-1 issue, against the bound of the chained
  graph of those steps (``_bound.run_graph``: each step's training after the previous gate, its test evaluation
  after its own gate only, as the product runs them), with step 0's calls inside the window as free calls;
* bound = the makespan of critical-path list scheduling of the step's call graph (``_bound.step_graph``: per
  sample judge → its loss calls → its gradient calls, the optimizer after every gradient, validation after the
  optimizer, test after the whole validation; the distinct calls of each stage and track counted from the store),
  every call taking ``--latency``, on ``--concurrency`` slots. The earlier stage-barrier ideal (Σ over stages of
  ⌈n / concurrency⌉ waves) is shown beside it: it overstates the bound, since judgeopt pipelines each sample's
  chain.

Every step of the run is reported (``--steps``, default 2): step 1 is where the loss, gradient and optimizer
services receive their first calls (cold); step 2 shows the same work on warm services. Also shown per stage: its
span (first issue → last reply), the gaps between stages and, last, the time from the last reply to the step's
commit. In ``single`` mode the four tracks run side by side and one may begin a step while another still finishes
the previous one. The
endpoint floor (a wave of direct openai calls, no judgeopt code) shows what the scripted endpoint itself costs on
this machine; "wall / floor bound" counts every call at that floor, so what it shows above 1 is judgeopt's own.
``--bootstrap 0`` shows the step without the validation/test confidence intervals.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
from _bound import Call, list_schedule, run_graph, stage_barrier_bound, step_graph
from _records import BenchRecord, Target
from _support import (
    add_json_argument,
    console,
    dataset,
    endpoint,
    exit_on_sigterm,
    machine_load,
    median,
    query,
    run_optimize,
    verdict,
    write_run_config,
)
from rich.table import Table

TARGET = Target("<=", 1.10)
STAGES: tuple[tuple[str, str], ...] = (
    ("judge", "train"),
    ("loss", "train"),
    ("gradient", "train"),
    ("optimizer", "train"),
    ("judge", "val"),
    ("judge", "test"),
)


@dataclass(frozen=True)
class StageSpan:
    name: str
    calls: int
    first_issue: float
    last_reply: float

    @property
    def span(self) -> float:
        return self.last_reply - self.first_issue


@dataclass(frozen=True)
class StepTiming:
    mode: str
    step: int
    wall: float
    counts: dict[str, dict[str, int]]
    """Distinct calls per track and stage (``_bound.STAGES``)."""
    stages: list[StageSpan]
    other_calls: int
    """Calls of other steps sent inside this step's window (the previous step's test evaluation, the next step's
    training, other tracks' steps)."""
    run_wall: float
    concurrency: int
    latency: float

    def graph(self, seconds: float) -> list[Call]:
        return step_graph(self.counts, seconds) + _free_calls(self.other_calls, seconds)

    @property
    def bound(self) -> float:
        return list_schedule(self.graph(self.latency), self.concurrency)

    @property
    def stage_ideal(self) -> float:
        waves = math.ceil(self.other_calls / self.concurrency)
        return stage_barrier_bound(self.counts, self.latency, self.concurrency) + waves * self.latency


def _free_calls(count: int, seconds: float) -> list[Call]:
    return [Call(f"other/{i}", seconds) for i in range(count)]


@dataclass(frozen=True)
class StepsTiming:
    """Steps 1..N of one run together: their window and the bound of their chained graph."""

    mode: str
    wall: float
    counts: list[dict[str, dict[str, int]]]
    """Per step 1..N, distinct calls per track and stage."""
    step_0_calls: int
    """Calls of step 0 sent inside the window (its test evaluation, alongside step 1's training)."""
    concurrency: int
    latency: float

    def graph(self, seconds: float) -> list[Call]:
        return run_graph(self.counts, seconds) + _free_calls(self.step_0_calls, seconds)

    @property
    def bound(self) -> float:
        return list_schedule(self.graph(self.latency), self.concurrency)


async def endpoint_floor(base_url: str, concurrency: int, waves: int) -> float:
    """Median time of one wave of ``concurrency`` direct openai calls (a judge-shaped request) to the endpoint:
    what the scripted endpoint and an HTTP client cost by themselves, with no judgeopt code involved."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="not-needed", max_retries=0, timeout=30)
    schema = {"type": "object", "properties": {"coherence": {"type": "integer"}}, "required": ["coherence"]}
    body: dict[str, Any] = {
        "model": "fake-model",
        "messages": [
            {"role": "system", "content": "You are a careful, consistent evaluator."},
            {"role": "user", "content": "An article. " * 300},
        ],
        "response_format": {"type": "json_schema", "json_schema": {"name": "scores", "schema": schema}},
    }
    times = []
    for _ in range(waves + 2):
        started = time.perf_counter()
        await asyncio.gather(*(client.chat.completions.create(**body) for _ in range(concurrency)))
        times.append(time.perf_counter() - started)
    await client.close()
    return median(times[2:])


def stage_label(stage: str, purpose: str) -> str:
    return {"train": stage, "val": "val judge", "test": "test judge"}[purpose] if stage == "judge" else stage


GRAPH_STAGE = {
    ("judge", "train"): "judge",
    ("loss", "train"): "loss",
    ("gradient", "train"): "gradient",
    ("optimizer", "train"): "optimizer",
    ("judge", "val"): "val",
    ("judge", "test"): "test",
}


ISSUED = "at - endpoint_seconds - queue_seconds"
SENT = "at - endpoint_seconds"


def step_counts(run_dir: Path, step: int) -> dict[str, dict[str, int]]:
    """Distinct calls of ``step`` per track and graph stage."""
    counts: dict[str, dict[str, int]] = {}
    per_track = query(
        run_dir,
        "SELECT track, stage, purpose, COUNT(DISTINCT request_id) FROM calls WHERE step = ? AND outcome = 'ok' "
        "GROUP BY track, stage, purpose",
        (step,),
    )
    for track, stage, purpose, n in per_track:
        counts.setdefault(track, {})[GRAPH_STAGE[(stage, purpose)]] = n
    return counts


def sent_within(run_dir: Path, steps: str, start: float, end: float) -> int:
    """Attempts of the steps matching ``steps`` (SQL on ``step``) at the endpoint inside [start, end]."""
    where = f"({steps}) AND at > ? AND {SENT} < ?"
    return int(query(run_dir, f"SELECT COUNT(*) FROM calls WHERE {where}", (start, end))[0][0])


def step_timing(mode: str, run_dir: Path, step: int, args: argparse.Namespace, run_wall: float) -> StepTiming:
    issued = ISSUED
    rows = query(
        run_dir,
        f"SELECT stage, purpose, COUNT(DISTINCT request_id), MIN({issued}), MAX(at) FROM calls "
        "WHERE step = ? AND outcome = 'ok' GROUP BY stage, purpose",
        (step,),
    )
    found = {(stage, purpose): (n, start, end) for stage, purpose, n, start, end in rows}
    stages = [
        StageSpan(stage_label(stage, purpose), *found[(stage, purpose)])
        for stage, purpose in STAGES
        if (stage, purpose) in found
    ]
    start = min(s.first_issue for s in stages)
    finished = query(run_dir, "SELECT MAX(finished_at) FROM steps WHERE step = ?", (step,))[0][0]
    others = sent_within(run_dir, f"step != {step}", start, finished)
    counts = step_counts(run_dir, step)
    return StepTiming(mode, step, finished - start, counts, stages, others, run_wall, args.concurrency, args.latency)


def steps_timing(mode: str, run_dir: Path, args: argparse.Namespace) -> StepsTiming:
    start = query(run_dir, f"SELECT MIN({ISSUED}) FROM calls WHERE step = 1")[0][0]
    finished = query(run_dir, "SELECT MAX(finished_at) FROM steps WHERE step = ?", (args.steps,))[0][0]
    counts = [step_counts(run_dir, step) for step in range(1, args.steps + 1)]
    step_0 = sent_within(run_dir, "step = 0", start, finished)
    return StepsTiming(mode, finished - start, counts, step_0, args.concurrency, args.latency)


def run_mode(mode: str, base_url: str, tmp: Path, args: argparse.Namespace) -> tuple[list[StepTiming], StepsTiming]:
    run_dir = tmp / mode
    config = write_run_config(
        tmp / f"{mode}.yaml",
        base_url,
        mode=mode,
        steps=args.steps,
        batch_size=args.batch,
        gate="none",
        concurrency=args.concurrency,
        bootstrap_resamples=args.bootstrap,
        dataset=dataset(args.train, args.val, args.test),
    )
    wall = run_optimize(config, run_dir)
    per_step = [step_timing(mode, run_dir, step, args, wall) for step in range(1, args.steps + 1)]
    return per_step, steps_timing(mode, run_dir, args)


def report_steps(runs: list[StepsTiming], floor: float, args: argparse.Namespace, record: BenchRecord) -> None:
    """Steps 1..N of each run against their chained graph: what pipelining steps can gain shows here."""
    table = Table(title=f"Steps 1..{args.steps} together (pipelined: a step's test alongside the next step's training)")
    for column in ("mode", "step-0 calls", "graph bound s", "wall s", "wall / bound"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    table.add_column("wall / floor bound", justify="right")
    for r in runs:
        floor_bound = list_schedule(r.graph(floor), r.concurrency)
        table.add_row(
            r.mode,
            str(r.step_0_calls),
            f"{r.bound:.2f}",
            f"{r.wall:.2f}",
            f"{r.wall / r.bound:.3f}",
            f"{r.wall / floor_bound:.3f}",
        )
        record.add(f"{r.mode} steps 1-{args.steps} wall / graph bound", r.wall / r.bound, "ratio", TARGET)
        record.add(f"{r.mode} steps 1-{args.steps} wall / floor bound", r.wall / floor_bound, "ratio")
    console.print(table)
    worst = max(runs, key=lambda r: r.wall / r.bound)
    ratio = worst.wall / worst.bound
    text = f"steps 1..{args.steps}: worst wall / graph bound {ratio:.3f} ({worst.mode}; target {TARGET})"
    console.print(verdict(TARGET.met(ratio), text))


def report(results: list[StepTiming], floor: float, args: argparse.Namespace, record: BenchRecord) -> None:
    title = (
        f"Step n + its validation and test, fixed latency {args.latency * 1000:g} ms, concurrency {args.concurrency} "
        f"(batch {args.batch}, val {args.val}, test {args.test}, bootstrap {args.bootstrap})"
    )
    table = Table(title=title)
    columns = (
        "mode",
        "step",
        "calls per stage (judge/loss/grad/opt/val/test)",
        "other steps' calls",
        "graph bound s",
        "stage-barrier ideal s",
        "wall s",
        "wall / bound",
        "wall / stage ideal",
        "wall / floor bound",
        "whole run s",
    )
    for column in columns:
        table.add_column(column, justify="left" if column.startswith(("mode", "calls")) else "right")
    for r in results:
        counts = {s.name: s.calls for s in r.stages}
        names = ("judge", "loss", "gradient", "optimizer", "val judge", "test judge")
        floor_bound = list_schedule(r.graph(floor), args.concurrency)
        table.add_row(
            r.mode,
            f"{r.step} ({'cold' if r.step == 1 else 'warm'})",
            "/".join(str(counts.get(n, 0)) for n in names),
            str(r.other_calls),
            f"{r.bound:.2f}",
            f"{r.stage_ideal:.2f}",
            f"{r.wall:.2f}",
            f"{r.wall / r.bound:.3f}",
            f"{r.wall / r.stage_ideal:.3f}",
            f"{r.wall / floor_bound:.3f}",
            f"{r.run_wall:.1f}",
        )
        record.add(f"{r.mode} step {r.step} wall / graph bound", r.wall / r.bound, "ratio", TARGET)
        record.add(f"{r.mode} step {r.step} wall", r.wall, "s")
        record.add(f"{r.mode} step {r.step} graph bound", r.bound, "s")
        record.add(f"{r.mode} step {r.step} wall / stage-barrier ideal", r.wall / r.stage_ideal, "ratio")
        record.add(f"{r.mode} step {r.step} wall / floor bound", r.wall / floor_bound, "ratio")
    console.print(table)

    detail = Table(title="Per stage: span (first issue → last reply), and the gap before it (ms)")
    detail.add_column("mode")
    detail.add_column("step")
    for name in ("judge", "loss", "gradient", "optimizer", "val judge", "test judge", "commit"):
        detail.add_column(name, justify="right")
    for r in results:
        cells = []
        previous_end = None
        for s in r.stages:
            gap = "" if previous_end is None else f" ({(s.first_issue - previous_end) * 1000:+.0f})"
            cells.append(f"{s.span * 1000:.0f}{gap}")
            previous_end = s.last_reply
        last = max(s.last_reply for s in r.stages)
        cells.append(f"+{(r.stages[0].first_issue + r.wall - last) * 1000:.0f}")
        detail.add_row(r.mode, str(r.step), *cells)
    console.print(detail)
    console.print(
        f"Endpoint floor: one wave of {args.concurrency} direct openai calls to the scripted endpoint takes "
        f"{floor * 1000:.0f} ms (latency {args.latency * 1000:g} ms): the endpoint and HTTP client alone cost "
        f"{(floor / args.latency - 1) * 100:.0f}% per wave before any judgeopt code runs. 'wall / floor bound' "
        "schedules every call at that floor instead of the bare latency: what is left above 1 is judgeopt's own. "
        "A negative gap: the stage began before the previous one ended (samples' chains overlap)."
    )
    record.add("endpoint floor per wave", floor, "s")
    for step in sorted({r.step for r in results}):
        rows = [r for r in results if r.step == step]
        worst = max(rows, key=lambda r: r.wall / r.bound)
        ratio = worst.wall / worst.bound
        what = "cold services: their first calls" if step == 1 else "warm services"
        text = f"step {step} ({what}): worst wall / graph bound {ratio:.3f} ({worst.mode}; target {TARGET})"
        console.print(verdict(TARGET.met(ratio), text))


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default="SSS,SSC,SCC,CCC,single")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--steps", type=int, default=2, help="steps per run; each is reported (step 1 meets cold services)"
    )
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per model call")
    parser.add_argument("--batch", type=int, default=3)
    parser.add_argument("--train", type=int, default=24)
    parser.add_argument("--val", type=int, default=16)
    parser.add_argument("--test", type=int, default=32)
    parser.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples (RunConfig's default: 200)")
    add_json_argument(parser)
    args = parser.parse_args()
    console.print(machine_load(), style="dim")
    record = BenchRecord("concurrency")
    results: list[StepTiming] = []
    runs: list[StepsTiming] = []
    with endpoint(delay=args.latency) as ep, tempfile.TemporaryDirectory(prefix="bench-concurrency-") as tmp:
        floor = asyncio.run(endpoint_floor(ep.base_url, args.concurrency, waves=10))
        for mode in args.modes.split(","):
            console.print(f"running {mode} …", style="dim")
            per_step, steps = run_mode(mode.strip(), ep.base_url, Path(tmp), args)
            results += per_step
            runs.append(steps)
    report(results, floor, args, record)
    report_steps(runs, floor, args, record)
    record.write(args.json)


if __name__ == "__main__":
    main()
