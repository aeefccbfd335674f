"""Prefix-shared per-criterion judging on the embedded local model: K = 4 calls sharing the sample as their prefix,
against one joint call and against K per-criterion calls without the shared layout.

    .venv/bin/python bench/prefix_shared.py [--articles 3] [--summaries 2] [--repeats 2]

The embedded llama.cpp server (``judgeopt.core.local_model.LocalModelServer()``, SmolLM2-135M, as judgeopt starts
it) judges each SummEval item three ways through ``judgeopt.agents.judge.JudgeAgent`` with the judge role's
settings on that model, one item at a time:

joint                one call scoring the four criteria (criteria and instructions first, then the sample);
prefix-shared        ``JudgeLayout.PREFIX_SHARED``: four calls, each the same system text, task description and
                     sample, then one criterion's instruction and output field; the first call alone, then the
                     other three together (the server answers one request at a time);
per-criterion        four calls in the criteria-first layout (``Routing.PER_CRITERION``): each criterion's
                     instruction comes before the sample, so no call can reuse the sample another call prefilled.

The arms' order turns with every item, so that none always follows another. The server keeps the KV state of its
previous request and reuses the longest common token prefix with the next prompt; its log says, per request, how
many prompt tokens it reused and how many it evaluated, and the table sums them per item. Wall time is per item
(all of an arm's calls for it); the verdict compares medians: prefix-shared at most 1.5 x joint.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _support import DATA_DIR, console, exit_on_sigterm, machine_load, median, verdict
from prefix_reuse import ServerSide, judge_inputs, pick_items, sample_of, server_side
from rich.table import Table

from judgeopt.agents.judge import JudgeAgent
from judgeopt.agents.model_client import ModelRunner
from judgeopt.agents.types import JudgeLayout, Routing, ScoreTask
from judgeopt.core.local_model import LocalModelServer
from judgeopt.core.models import local_role_config
from judgeopt.orchestrator.data.loading import load_dataset
from judgeopt.orchestrator.data.records import DatasetConfig, Record

ARMS: dict[str, tuple[Routing, JudgeLayout]] = {
    "joint (1 call)": (Routing.JOINT, JudgeLayout.CRITERIA_FIRST),
    "prefix-shared (K calls)": (Routing.JOINT, JudgeLayout.PREFIX_SHARED),
    "per-criterion, unshared (K calls)": (Routing.PER_CRITERION, JudgeLayout.CRITERIA_FIRST),
}


@dataclass(frozen=True)
class Item:
    arm: str
    record: str
    seconds: float
    calls: int
    prompt_tokens: int
    parsed: int


async def run_arms(base_url: str, records: list[Record], warm_up: Record, repeats: int) -> list[Item]:
    criteria, prompt = judge_inputs(load_dataset(DatasetConfig(name="summeval"), DATA_DIR).criteria)
    # A busy machine makes the server's queue long: the unshared arm's fourth call waits for three before it.
    config = local_role_config("judge", base_url).model_copy(update={"timeout": 1800.0})
    runner = ModelRunner("judge", config)
    agent = JudgeAgent(runner)
    items: list[Item] = []

    async def judge(arm: str, record: Record) -> None:
        routing, layout = ARMS[arm]
        task = ScoreTask(routing, criteria, prompt, sample_of(record), layout=layout)
        started = time.perf_counter()
        prediction, usage = await agent.score(task)
        seconds = time.perf_counter() - started
        parsed = sum(s.value is not None for s in prediction.scores)
        items.append(Item(arm, record.id, seconds, usage.llm_calls, usage.prompt_tokens, parsed))

    await judge("joint (1 call)", warm_up)  # another article: no arm meets its prompt again
    items.clear()  # the warm-up's request is not counted, but it is in the server log: skipped there too
    names = list(ARMS)
    turn = 0
    for _ in range(repeats):
        for record in records:
            for arm in names[turn % 3 :] + names[: turn % 3]:
                await judge(arm, record)
            turn += 1
    await runner.close()
    return items


def server_totals(items: list[Item], logged: list[ServerSide]) -> list[tuple[int, int]] | None:
    """Per item, prompt tokens (reused, evaluated) by the server, summed over the item's calls; ``None`` when the
    log does not hold one entry per request (after the warm-up's)."""
    if len(logged) != 1 + sum(i.calls for i in items):
        return None
    totals = []
    position = 1
    for item in items:
        calls = logged[position : position + item.calls]
        position += item.calls
        totals.append((sum(c.reused for c in calls), sum(c.evaluated for c in calls)))
    return totals


def report(items: list[Item], totals: list[tuple[int, int]] | None, title: str) -> float:
    table = Table(title=title)
    columns = ["arm", "items", "calls / item", "median s / item", "ratio to joint", "prompt tokens sent / item"]
    columns += ["prompt tokens evaluated / item", "reused from cache / item", "scores parsed"]
    for column in columns:
        table.add_column(column, justify="left" if column == "arm" else "right")
    medians = {arm: median([i.seconds for i in items if i.arm == arm]) for arm in ARMS}
    joint = medians["joint (1 call)"]
    for arm in ARMS:
        mine = [index for index, i in enumerate(items) if i.arm == arm]
        evaluated = reused = "n/a"
        if totals is not None:
            reused = f"{median([float(totals[k][0]) for k in mine]):.0f}"
            evaluated = f"{median([float(totals[k][1]) for k in mine]):.0f}"
        table.add_row(
            arm,
            str(len(mine)),
            f"{median([float(items[k].calls) for k in mine]):.0f}",
            f"{medians[arm]:.2f}",
            f"{medians[arm] / joint:.2f}×",
            f"{median([float(items[k].prompt_tokens) for k in mine]):.0f}",
            evaluated,
            reused,
            f"{sum(items[k].parsed for k in mine)}/{4 * len(mine)}",
        )
    console.print(table)
    return medians["prefix-shared (K calls)"] / joint


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--articles", type=int, default=3)
    parser.add_argument("--summaries", type=int, default=2, help="summaries per article")
    parser.add_argument("--repeats", type=int, default=2, help="passes over the items")
    args = parser.parse_args()
    console.print(machine_load(), style="dim")
    *groups, spare = pick_items(args.articles + 1, args.summaries)
    records = [r for group in groups for r in group]
    with tempfile.TemporaryDirectory(prefix="bench-prefix-shared-") as tmp:
        log_file = Path(tmp) / "local-model.log"
        with LocalModelServer(log_file=log_file) as server:
            items = asyncio.run(run_arms(server.base_url, records, spare[0], args.repeats))
        totals = server_totals(items, server_side(log_file.read_text(errors="replace")))
    title = (
        f"Judging one item on the embedded model (SmolLM2-135M, llama.cpp), K = 4 criteria, {len(records)} items × "
        f"{args.repeats} passes"
    )
    ratio = report(items, totals, title)
    console.print(machine_load(), style="dim")
    console.print(verdict(ratio <= 1.5, f"K prefix-shared calls take {ratio:.2f}× the time of one joint call (≤ 1.5×)"))


if __name__ == "__main__":
    main()
