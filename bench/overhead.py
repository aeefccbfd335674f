"""Overhead of the service hop and the agent wrapper over calling the model endpoint directly (target ≤ 3 ms).

    .venv/bin/python bench/overhead.py [--calls 300] [--warmup 30] [--profile]

Three ways to make the same loss-agent call against the scripted endpoint (its own process, no added latency):

(a) direct   the openai client (AsyncOpenAI, as autogen uses) sending the exact body the loss agent sends
             (captured from one agent call);
(b) service  ``AgentClients.critique`` → gRPC → the LossAgent service (``judgeopt serve loss`` started by
             ``ServiceFleet``, a subprocess with its interceptors, access log and ledger) → LossAgent → autogen →
             openai client → endpoint;
(c) wrapper  ``judgeopt.agents.loss.LossAgent(ModelRunner("loss", RoleModelConfig(...)))`` in-process: the agent wrapper
             (prompt rendering, a fresh autogen AssistantAgent, parsing) without the service hop.

Calls are made one at a time, after a warm-up, in short interleaved rounds (each round runs every variant in a
shuffled order) so that drift of the machine hits every variant alike. Reported: median and p90 per call, and the
differences, both of the overall medians and as the median of per-round differences: (b) − (a) is what the
target bounds; (c) − (a) is the wrapper; (b) − (c) the service hop.

``--profile`` adds where the time goes: what-if variants of the service (no ledger, no access log, both off, and
the bare gRPC round trip of a health check), and cProfiles of the wrapper (c), the client side of (b) and the
service side of (b) (``bench/_service_harness.py``: the service as ``judgeopt serve`` runs it, profiled from
ready to stop). cProfile slows Python code: read its figures as where, not how much.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import pstats
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import openai
import yaml
from _records import BenchRecord, Target
from _support import (
    BENCH,
    add_json_argument,
    console,
    endpoint,
    exit_on_sigterm,
    machine_load,
    median,
    percentile,
    verdict,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.table import Table

from judgeopt.agents.loss import LossAgent
from judgeopt.agents.model_client import ModelRunner
from judgeopt.agents.types import CritiqueTask
from judgeopt.core.models import ModelsConfig
from judgeopt.core.roles import ROLES
from judgeopt.orchestrator.agent_clients import AgentClients
from judgeopt.orchestrator.fleet import ServiceFleet
from judgeopt.services.convert import critique_task_from_proto
from judgeopt.v1 import common_pb2, loss_pb2

TARGET_MS = Target("<=", 3.0)
Call = Callable[[], Awaitable[Any]]


def loss_request() -> loss_pb2.CritiqueRequest:
    """A per-criterion critique request as SSS sends it (prediction, ground truth, verdict; no sample)."""
    return loss_pb2.CritiqueRequest(
        meta=common_pb2.RequestMeta(request_id=uuid.uuid4().hex, run_id="bench", call_label="bench/loss"),
        routing=common_pb2.ROUTING_PER_CRITERION,
        criteria=[
            common_pb2.Criterion(
                name="coherence",
                description="The collective quality of all sentences.",
                min_score=1,
                max_score=5,
                integer_scores=True,
            )
        ],
        sample_id="s1",
        evidence=[
            common_pb2.CriterionEvidence(
                criterion="coherence", prediction=4, ground_truth=2, verdict="INCORRECT (difference: +2)"
            )
        ],
    )


async def timed(call: Call, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def interleaved(
    variants: dict[str, Call], calls: int, round_size: int, warmup: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per-call samples and per-round medians of every variant, measured in shuffled interleaved rounds."""
    for call in variants.values():
        await timed(call, warmup)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    per_round: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    shuffler = random.Random(1)
    for _ in range(max(1, calls // round_size)):
        shuffler.shuffle(order)  # no variant always runs right after another
        for name in order:
            values = await timed(variants[name], round_size)
            samples[name] += values
            per_round[name].append(median(values))
    return samples, per_round


def critique_call(clients: AgentClients) -> Call:
    async def call() -> None:
        await clients.critique(loss_request())

    return call


# --- the service variants of --profile --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def harness_service(config: Path, tmp: Path, name: str, *options: str) -> AsyncIterator[str]:
    """A loss service run by bench/_service_harness.py; yields its address."""
    log_path = tmp / f"{name}.log"
    command = [sys.executable, str(BENCH / "_service_harness.py"), "loss", "--config", str(config), *options]
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            *command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        for _ in range(1200):
            if match := re.search(r"listening on [^\s:]+:(\d+)", log_path.read_text(errors="replace")):
                break
            if process.returncode is not None:
                break
            await asyncio.sleep(0.05)
        else:
            match = None
        if match is None:
            raise RuntimeError(f"harness service {name} did not start: {log_path.read_text(errors='replace')[-800:]}")
        yield f"127.0.0.1:{match.group(1)}"
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), timeout=30)


async def what_if(config: Path, tmp: Path, args: argparse.Namespace) -> dict[str, list[float]]:
    ledger = ("--ledger", str(tmp / "what-if.ledger.jsonl"))
    quiet = ("--log-level", "warning")
    async with (
        harness_service(config, tmp, "shipped", *ledger) as shipped,
        harness_service(config, tmp, "no-ledger") as no_ledger,
        harness_service(config, tmp, "no-access-log", *ledger, *quiet) as no_log,
        harness_service(config, tmp, "neither", *quiet) as neither,
        AgentClients(dict.fromkeys(ROLES, shipped)) as c1,
        AgentClients(dict.fromkeys(ROLES, no_ledger)) as c2,
        AgentClients(dict.fromkeys(ROLES, no_log)) as c3,
        AgentClients(dict.fromkeys(ROLES, neither)) as c4,
        grpc.aio.insecure_channel(shipped) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)

        async def health_check() -> None:
            await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)

        variants: dict[str, Call] = {
            "service as shipped (ledger + access log)": critique_call(c1),
            "without the ledger interceptor": critique_call(c2),
            "without the access-log line (level warning)": critique_call(c3),
            "without both": critique_call(c4),
            "bare gRPC round trip: Health.Check (no model call)": health_check,
        }
        samples, _ = await interleaved(variants, args.calls, args.round_size, args.warmup)
        return samples


async def profile_service(config: Path, tmp: Path, count: int) -> str:
    output = tmp / "service.prof"
    options = ("--ledger", str(tmp / "profiled.ledger.jsonl"), "--profile", str(output))
    async with (
        harness_service(config, tmp, "profiled", *options) as address,
        AgentClients(dict.fromkeys(ROLES, address)) as clients,
    ):
        await timed(critique_call(clients), count)
    return top_functions(pstats.Stats(str(output)), count)


def top_functions(stats: pstats.Stats, calls: int, limit: int = 25) -> str:
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]  # pstats keeps its output stream in an untyped attribute
    stats.sort_stats("tottime").print_stats(limit)
    stats.sort_stats("cumulative").print_stats(r"judgeopt|/agents/|/services/|autogen|structlog|grpc/aio", limit)
    lines = [f"(times are totals over {calls} calls: divide by {calls} for one call)", *out.getvalue().splitlines()]
    return "\n".join(line for line in lines if line.strip())


async def profiled(call: Call, count: int) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    await timed(call, count)
    profiler.disable()
    return top_functions(pstats.Stats(profiler), count)


# --- the measurement -----------------------------------------------------------------------------------------------


async def measure(args: argparse.Namespace) -> None:
    record = BenchRecord("overhead")
    with endpoint(delay=0.0, log_bodies=True) as ep, tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        models = ModelsConfig(
            default={
                "base_url": ep.base_url,
                "model": "fake-model",
                "structured_output": "json_schema",
                "max_retries": 0,
                "timeout": 10,
            }
        )
        runner = ModelRunner("loss", models.for_role("loss"))
        agent = LossAgent(runner)
        task: CritiqueTask = critique_task_from_proto(loss_request())
        await agent.critique(task)
        body: dict[str, Any] = ep.requests()[-1]["body"]  # exactly what the loss agent sends

        direct_client = openai.AsyncOpenAI(base_url=ep.base_url, api_key="not-needed", max_retries=0, timeout=10)

        async def direct() -> None:
            await direct_client.chat.completions.create(**body)

        async def wrapper() -> None:
            await agent.critique(task)

        fleet = ServiceFleet(models, Path(tmp) / "services", roles=("loss",))
        profiles: dict[str, str] = {}
        async with fleet, AgentClients(dict.fromkeys(ROLES, fleet.addresses["loss"])) as clients:
            variants: dict[str, Call] = {
                "(a) direct openai client": direct,
                "(b) gRPC service + agent": critique_call(clients),
                "(c) agent wrapper in-process": wrapper,
            }
            samples, per_round = await interleaved(variants, args.calls, args.round_size, args.warmup)
            if args.profile:
                profiles["(c) agent wrapper, in-process"] = await profiled(wrapper, args.calls)
                profiles["(b) client side: AgentClients.critique"] = await profiled(critique_call(clients), args.calls)
        report(samples, per_round)
        if args.profile:
            config = Path(tmp) / "services.yaml"  # the same models as the fleet's services
            config.write_text(yaml.safe_dump({"models": models.model_dump(mode="json")}))
            report_what_if(await what_if(config, Path(tmp), args))
            profiles["(b) service side: the loss service, ready → stop"] = await profile_service(
                config, Path(tmp), args.calls
            )
            for title, text in profiles.items():
                console.rule(f"cProfile: {title}")
                console.print(text, markup=False, highlight=False, soft_wrap=True)
        await runner.close()
        await direct_client.close()
    service_added = median(samples["(b) gRPC service + agent"]) - median(samples["(a) direct openai client"])
    for name, values in samples.items():
        record.add(f"{name}: median per call", median(values), "ms")
    record.add("service hop + wrapper, added per call (median)", service_added, "ms", TARGET_MS)
    record.write(args.json)
    console.print(
        verdict(
            TARGET_MS.met(service_added),
            f"service hop + wrapper add {service_added:.2f} ms median per call (target {TARGET_MS} ms)",
        )
    )


def report(samples: dict[str, list[float]], per_round: dict[str, list[float]]) -> None:
    names = list(samples)
    base = median(samples[names[0]])
    table = Table(title="Per-call time, loss agent call against the scripted endpoint (no model latency)")
    for column in ("variant", "calls", "median ms", "p90 ms", "added over (a), median ms", "ratio to (a)"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for name in names:
        values = samples[name]
        m = median(values)
        table.add_row(
            name, str(len(values)), f"{m:.2f}", f"{percentile(values, 0.9):.2f}", f"{m - base:+.2f}", f"{m / base:.2f}×"
        )
    console.print(table)
    service, wrapper = median(samples[names[1]]), median(samples[names[2]])
    a, b, c = (per_round[n] for n in names)

    def paired(x: list[float], y: list[float]) -> str:
        return f"{median([p - q for p, q in zip(x, y, strict=True)]):.2f}"

    parts = Table(title="Where the added time goes")
    parts.add_column("part")
    parts.add_column("difference of medians, ms", justify="right")
    parts.add_column("median of per-round differences, ms", justify="right")
    parts.add_row("agent wrapper: (c) − (a)", f"{wrapper - base:.2f}", paired(c, a))
    parts.add_row("service hop: (b) − (c)", f"{service - wrapper:.2f}", paired(b, c))
    parts.add_row("service hop + wrapper: (b) − (a)", f"{service - base:.2f}", paired(b, a))
    console.print(parts)


def report_what_if(samples: dict[str, list[float]]) -> None:
    names = list(samples)
    base = median(samples[names[0]])
    table = Table(title="What-if: the loss service with parts switched off (bench/_service_harness.py)")
    for column in ("service variant", "calls", "median ms", "p90 ms", "vs shipped, ms"):
        table.add_column(column, justify="left" if column == "service variant" else "right")
    for name in names:
        m = median(samples[name])
        table.add_row(
            name, str(len(samples[name])), f"{m:.2f}", f"{percentile(samples[name], 0.9):.2f}", f"{m - base:+.2f}"
        )
    console.print(table)


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300, help="measured calls per variant (≥ 200)")
    parser.add_argument("--warmup", type=int, default=30, help="warm-up calls per variant")
    parser.add_argument("--round-size", type=int, default=5, help="calls per variant per interleaved round")
    parser.add_argument("--profile", action="store_true", help="what-if variants and cProfiles of where time goes")
    add_json_argument(parser)
    args = parser.parse_args()
    console.print(machine_load(), style="dim")
    asyncio.run(measure(args))


if __name__ == "__main__":
    main()
