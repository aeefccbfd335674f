"""Concurrency efficiency: one optimization step with its validation and test evaluations, against an endpoint
with a fixed latency, over the shortest schedule of the step's own call graph (target ≤ 1.10 for every mode).

    .venv/bin/python bench/concurrency.py [--modes SSS,SSC,SCC,CCC,single] [--concurrency 8] [--latency 0.1]
        [--batch 3] [--val 16] [--test 32] [--bootstrap 200] [--json FILE]

For each mode, ``judgeopt optimize`` runs ``--steps`` steps (gate none, so the candidate is always accepted and
tested) against the scripted endpoint (``deterministic_handler()``, every reply delayed by ``--latency``; its own
process).

Method (from the run store, not from a stopwatch around the process, so start-up and step 0 are left out):

* wall of step n = the latest ``steps.finished_at`` of step n (over tracks) − the earliest moment a step-n call
  was issued (``calls.at − endpoint_seconds − queue_seconds``: ``at`` is stamped when an attempt ends);
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
the previous one; calls of earlier steps inside the window join the graph as calls free to run at once. The
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
from _bound import Call, list_schedule, stage_barrier_bound, step_graph
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
    earlier_calls: int
    """Calls of earlier steps (other tracks) that were still running inside this step's window."""
    run_wall: float
    concurrency: int
    latency: float

    def graph(self, seconds: float) -> list[Call]:
        earlier = [Call(f"earlier/{i}", seconds) for i in range(self.earlier_calls)]
        return step_graph(self.counts, seconds) + earlier

    @property
    def bound(self) -> float:
        return list_schedule(self.graph(self.latency), self.concurrency)

    @property
    def stage_ideal(self) -> float:
        waves = math.ceil(self.earlier_calls / self.concurrency)
        return stage_barrier_bound(self.counts, self.latency, self.concurrency) + waves * self.latency


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


def step_timing(mode: str, run_dir: Path, step: int, args: argparse.Namespace, run_wall: float) -> StepTiming:
    issued = "at - endpoint_seconds - queue_seconds"
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
    counts: dict[str, dict[str, int]] = {}
    per_track = query(
        run_dir,
        "SELECT track, stage, purpose, COUNT(DISTINCT request_id) FROM calls WHERE step = ? AND outcome = 'ok' "
        "GROUP BY track, stage, purpose",
        (step,),
    )
    for track, stage, purpose, n in per_track:
        counts.setdefault(track, {})[GRAPH_STAGE[(stage, purpose)]] = n
    start = min(s.first_issue for s in stages)
    finished = query(run_dir, "SELECT MAX(finished_at) FROM steps WHERE step = ?", (step,))[0][0]
    earlier = query(run_dir, "SELECT COUNT(*) FROM calls WHERE step < ? AND at > ?", (step, start))[0][0]
    return StepTiming(mode, step, finished - start, counts, stages, earlier, run_wall, args.concurrency, args.latency)


def run_mode(mode: str, base_url: str, tmp: Path, args: argparse.Namespace) -> list[StepTiming]:
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
    return [step_timing(mode, run_dir, step, args, wall) for step in range(1, args.steps + 1)]


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
        "earlier-step calls",
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
            str(r.earlier_calls),
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
    results = []
    with endpoint(delay=args.latency) as ep, tempfile.TemporaryDirectory(prefix="bench-concurrency-") as tmp:
        floor = asyncio.run(endpoint_floor(ep.base_url, args.concurrency, waves=10))
        for mode in args.modes.split(","):
            console.print(f"running {mode} …", style="dim")
            results += run_mode(mode.strip(), ep.base_url, Path(tmp), args)
    report(results, floor, args, record)
    record.write(args.json)


if __name__ == "__main__":
    main()
