"""Prefix reuse on the embedded local model: time per judged item with prompts ordered most-shared-first and calls
grouped by source text, against the natural alternative order.

    .venv/bin/python bench/prefix_reuse.py [--articles 3] [--summaries 4] [--repeats 1] [--json FILE]

The embedded llama.cpp server (``judgeopt.core.local_model.LocalModelServer()``, SmolLM2-135M, exactly as
judgeopt starts it) judges N = articles × summaries SummEval items, one request at a time, in three arms:

forward, grouped      the judge's real prompt through ``judgeopt.agents.judge.JudgeAgent`` (joint routing, the four
                      criteria): system text, task description, criteria and instructions, output format, then the
                      article, then the summary; the summaries of one article in a row (as the evaluation schedule
                      of judgeopt groups calls by source text);
forward, interleaved  the same prompts, the articles taken in turn (a1s1, a2s1, a3s1, a1s2, …): ordering without
                      grouping;
sample first          the natural alternative, as many judge prompts are written: the same system message, then a
                      user message with the sample (article, then summary) first and the question about it after
                      (task description, criteria and instructions, output format), sent with the openai client
                      directly (built here from the same prompt pieces the judge agent uses), in the grouped order.
                      Same model settings as the judge role (temperature, max_tokens, the ``json_object`` + schema
                      constraint).

The sample-first and forward-grouped arms alternate article by article (the summaries of an article sample-first,
then the same forward), so that both meet the same load on the machine; the interleaved arm runs last. In the
sample-first order only the system message is shared between two items; in judgeopt's order everything up to the
article is, and between summaries of one article the article too.

What the server can reuse: ``LocalModelServer`` starts ``python -m llama_cpp.server`` without ``--cache``, so
llama-cpp-python's prompt cache (``LlamaCache``, off by default) is off; what remains is the KV state of the
previous request, whose longest common token prefix with the next prompt is kept ("prefix-match hit" in the
server log, parsed per request below). It passes ``--logits_all false`` unless the judge asks for logprobs, so
the server does not compute logits for every prompt token.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
from _records import BenchRecord
from _support import DATA_DIR, add_json_argument, console, exit_on_sigterm, machine_load, median
from rich.table import Table

from judgeopt.agents import prompting
from judgeopt.agents.judge import JudgeAgent, score_schema
from judgeopt.agents.model_client import ModelRunner
from judgeopt.agents.types import Criterion, Instruction, JudgePrompt, Routing, Sample, ScoreTask
from judgeopt.core.local_model import LocalModelServer
from judgeopt.core.models import local_role_config
from judgeopt.orchestrator.data.loading import load_dataset
from judgeopt.orchestrator.data.records import DatasetConfig, Record
from judgeopt.orchestrator.engine.run import SUMMEVAL_TASK

PREFIX_HIT = re.compile(r"Llama\.generate: (\d+) prefix-match hit")
PROMPT_EVAL = re.compile(r"prompt eval time =\s+([\d.]+) ms /\s+(\d+) tokens")
GENERATION = re.compile(r"\beval time =\s+([\d.]+) ms /\s+(\d+) runs")
REQUEST_DONE = re.compile(r'"POST /v1/chat/completions HTTP/1\.1" \d+')


@dataclass(frozen=True)
class ServerSide:
    """What the llama.cpp server logged for one request."""

    reused: int
    evaluated: int
    prompt_ms: float
    generation_ms: float


@dataclass(frozen=True)
class Item:
    arm: str
    record: str
    seconds: float
    prompt_tokens: int
    completion_tokens: int


def pick_items(articles: int, summaries: int) -> list[list[Record]]:
    """The first ``articles`` articles (by id) with their first ``summaries`` summaries each."""
    data = load_dataset(DatasetConfig(name="summeval"), DATA_DIR)
    by_article: dict[str, list[Record]] = defaultdict(list)
    for record in data.records:
        by_article[record.group].append(record)
    chosen = sorted(g for g, rs in by_article.items() if len(rs) >= summaries)[:articles]
    return [by_article[g][:summaries] for g in chosen]


def judge_inputs(dataset_criteria: Any) -> tuple[tuple[Criterion, ...], JudgePrompt]:
    criteria = tuple(
        Criterion(c.name, c.description, c.min_score, c.max_score, c.integer_scores) for c in dataset_criteria
    )
    prompt = JudgePrompt(
        instructions=tuple(Instruction(c.name, f"Rate from {c.min_score:g} to {c.max_score:g}.") for c in criteria),
        task_description=SUMMEVAL_TASK,
    )
    return criteria, prompt


def sample_of(record: Record) -> Sample:
    return Sample(id=record.id, fields=record.fields)


def sample_first_user_message(criteria: tuple[Criterion, ...], prompt: JudgePrompt, record: Record) -> str:
    """The judge's user content in the natural alternative order: the sample, then the question about it."""
    return "\n\n".join(
        [
            f"<sample>\n{prompting.format_sample(sample_of(record))}\n</sample>",
            prompt.task_description,
            "Criteria:\n" + prompting.format_judge_criteria(criteria, prompt),
            prompting.render("judge_output_format", example=prompting.judge_output_example(criteria)).strip(),
        ]
    )


async def run_arms(base_url: str, groups: list[list[Record]], repeats: int) -> list[Item]:
    dataset_criteria = load_dataset(DatasetConfig(name="summeval"), DATA_DIR).criteria
    criteria, prompt = judge_inputs(dataset_criteria)
    config = local_role_config("judge", base_url)
    runner = ModelRunner("judge", config)
    agent = JudgeAgent(runner)
    client = openai.AsyncOpenAI(
        base_url=base_url, api_key="not-needed", max_retries=config.max_retries, timeout=config.timeout
    )
    response_format = {"type": "json_object", "schema": score_schema(criteria)}
    grouped = [r for group in groups for r in group]
    interleaved = [group[i] for i in range(len(groups[0])) for group in groups]
    items: list[Item] = []

    async def forward(arm: str, records: list[Record]) -> None:
        for record in records:
            task = ScoreTask(routing=Routing.JOINT, criteria=criteria, prompt=prompt, sample=sample_of(record))
            started = time.perf_counter()
            _, usage = await agent.score(task)
            seconds = time.perf_counter() - started
            items.append(Item(arm, record.id, seconds, usage.prompt_tokens, usage.completion_tokens))

    async def sample_first(arm: str, records: list[Record]) -> None:
        for record in records:
            started = time.perf_counter()
            body: dict[str, Any] = {
                "model": config.model,
                "messages": [
                    {"role": "system", "content": prompting.render("judge_system").strip()},
                    {"role": "user", "content": sample_first_user_message(criteria, prompt, record)},
                ],
                "temperature": config.temperature,
                "max_tokens": config.max_tokens,
                "response_format": response_format,  # llama.cpp's json_object + schema, as the judge role sends
            }
            reply = await client.chat.completions.create(**body)
            seconds = time.perf_counter() - started
            usage = reply.usage
            prompt_tokens = usage.prompt_tokens if usage else 0
            completion_tokens = usage.completion_tokens if usage else 0
            items.append(Item(arm, record.id, seconds, prompt_tokens, completion_tokens))

    await forward("warm-up", grouped[:1])
    for _ in range(repeats):
        for group in groups:  # the two main arms alternate article by article, so both see the same machine load
            await sample_first("sample first (natural alternative), grouped", group)
            await forward("forward (most shared first), grouped", group)
        await forward("forward, interleaved articles", interleaved)
    await runner.close()
    await client.close()
    return items


def server_side(log_text: str) -> list[ServerSide]:
    """One entry per chat request, from the server log (uvicorn logs the POST line once the reply is sent)."""
    entries = []
    for segment in REQUEST_DONE.split(log_text)[:-1]:
        hit = PREFIX_HIT.search(segment)
        prompt = PROMPT_EVAL.search(segment)
        generation = GENERATION.search(segment)
        entries.append(
            ServerSide(
                reused=int(hit.group(1)) if hit else 0,
                evaluated=int(prompt.group(2)) if prompt else 0,
                prompt_ms=float(prompt.group(1)) if prompt else 0.0,
                generation_ms=float(generation.group(1)) if generation else 0.0,
            )
        )
    return entries


def report(title: str, items: list[Item], log_text: str) -> float:
    """Print the tables of one server; returns the grouped-forward / sample-first ratio of medians."""
    logged = server_side(log_text)
    arms = [a for a in dict.fromkeys(i.arm for i in items) if a != "warm-up"]
    table = Table(title=title)
    for column in ("arm", "items", "median s / item", "mean s / item", "prompt tokens (median)", "completion tokens"):
        table.add_column(column, justify="left" if column == "arm" else "right")
    table.add_column("ratio to sample first", justify="right")
    medians = {arm: median([i.seconds for i in items if i.arm == arm]) for arm in arms}
    natural_arm = arms[0]
    for arm in arms:
        mine = [i for i in items if i.arm == arm]
        table.add_row(
            arm,
            str(len(mine)),
            f"{medians[arm]:.2f}",
            f"{sum(i.seconds for i in mine) / len(mine):.2f}",
            f"{median([float(i.prompt_tokens) for i in mine]):.0f}",
            f"{median([float(i.completion_tokens) for i in mine]):.0f}",
            f"{medians[arm] / medians[natural_arm]:.2f}×",
        )
    console.print(table)
    reused = Table(title="Server side, per request (llama.cpp log): prompt tokens reused from the previous request")
    for column in ("arm", "requests reusing > 100 tokens", "median reused", "median evaluated"):
        reused.add_column(column, justify="left" if column == "arm" else "right")
    reused.add_column("median prompt-eval ms", justify="right")
    reused.add_column("median generation ms", justify="right")
    if len(logged) == len(items):
        for arm in arms:
            sides = [side for side, item in zip(logged, items, strict=True) if item.arm == arm]
            reused.add_row(
                arm,
                f"{sum(1 for side in sides if side.reused > 100)}/{len(sides)}",
                f"{median([float(side.reused) for side in sides]):.0f}",
                f"{median([float(side.evaluated) for side in sides]):.0f}",
                f"{median([side.prompt_ms for side in sides]):.0f}",
                f"{median([side.generation_ms for side in sides]):.0f}",
            )
        console.print(reused)
    else:
        console.print(f"(the server log shows {len(logged)} requests for {len(items)} sent: not attributed)")
    return medians[arms[1]] / medians[natural_arm]


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--articles", type=int, default=3)
    parser.add_argument("--summaries", type=int, default=4, help="summaries per article")
    parser.add_argument("--repeats", type=int, default=1, help="passes over the three arms")
    add_json_argument(parser)
    args = parser.parse_args()
    console.print(machine_load(), style="dim")
    record = BenchRecord("prefix_reuse")
    groups = pick_items(args.articles, args.summaries)
    title = (
        f"Local model (SmolLM2-135M, llama.cpp) as LocalModelServer starts it, {args.articles} articles × "
        f"{args.summaries} summaries, {args.repeats} pass(es)"
    )
    with tempfile.TemporaryDirectory(prefix="bench-prefix-") as tmp:
        log_file = Path(tmp) / "local-model.log"
        with LocalModelServer(log_file=log_file) as server:
            items = asyncio.run(run_arms(server.base_url, groups, args.repeats))
        log_text = log_file.read_text(errors="replace")
    ratio = report(title, items, log_text)
    cache_flag = re.search(r"'cache': (\w+)|cache=(\w+)", log_text)
    console.print(
        "Server cache: LocalModelServer passes no --cache, so llama-cpp-python's prompt cache (LlamaCache) is "
        f"{'on' if cache_flag and 'True' in cache_flag.group(0) else 'off'}; only the previous request's KV prefix "
        "is reused."
    )
    record.add("most shared first, grouped / sample first: median s per item", ratio, "ratio")
    record.write(args.json)
    console.print(
        f"[bold]MEASURED[/] most-shared-first + grouped takes {ratio:.2f}× the time per item of the natural "
        "sample-first order (reported)"
    )


if __name__ == "__main__":
    main()
