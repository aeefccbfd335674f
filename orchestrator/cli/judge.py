"""``judgeopt judge --judge judge.yaml --data FILE --out scores.csv``: score new data with an exported judge."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from judgeopt.core.flags import add_model_flags
from judgeopt.orchestrator.cli.flags import add_client_flags

HELP = "score a data file with an exported judge (resumable)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--judge", type=Path, required=True, help="a file written by `judgeopt export`")
    parser.add_argument("--data", type=Path, required=True, help="CSV, JSONL or Parquet with the judge's text fields")
    parser.add_argument("--out", type=Path, required=True, help="scores CSV; an existing one is continued")
    routings = ["joint", "per_criterion", "prefix_shared"]
    parser.add_argument("--routing", choices=routings, help="default: how the run judged")
    parser.add_argument("--id-field", help="column with row ids (default: row-<n>)")
    parser.add_argument("--concurrency", type=int, help="calls in flight (default: 1 on the local model, else 8)")
    parser.add_argument("--judge-addr", metavar="HOST:PORT", help="a running judge service instead of starting one")
    add_model_flags(parser, [])
    add_client_flags(parser)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from judgeopt.core.files import DirectoryLock
    from judgeopt.core.flags import apply_model_flags
    from judgeopt.core.models import ModelsConfig
    from judgeopt.core.private_files import private_dir
    from judgeopt.core.roles import Role
    from judgeopt.orchestrator.cli.flags import client_settings
    from judgeopt.orchestrator.engine.executor import CallExecutor
    from judgeopt.orchestrator.engine.priority import PriorityLimiter
    from judgeopt.orchestrator.engine.ratelimit import RateLimits
    from judgeopt.orchestrator.engine.run import LOCAL_CONCURRENCY, REMOTE_CONCURRENCY, agent_clients
    from judgeopt.orchestrator.study.apply import score_file, state_dir
    from judgeopt.orchestrator.study.export import read_judge

    judge = read_judge(args.judge)
    # The exported settings as the default section, so --endpoint/--model/--api-key-env override them.
    models = apply_model_flags(args, ModelsConfig(default=judge.model.model_dump(mode="json")), [])
    routing = args.routing or judge.routing
    local = models.needs_local_model(("judge",))
    concurrency = args.concurrency or (LOCAL_CONCURRENCY if local else REMOTE_CONCURRENCY)
    console = Console(stderr=True)
    addresses: dict[Role, str] | None = {"judge": args.judge_addr} if args.judge_addr else None
    settings = client_settings(args, addresses)

    async def score() -> Any:
        limit = PriorityLimiter(concurrency)
        rates = RateLimits(models, ("judge",), window=60.0)
        services = state_dir(args.out) / "services"
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        async with agent_clients(
            models, services, addresses=addresses, local_model=args.local_model, roles=("judge",), settings=settings
        ) as clients:
            with Progress(*columns, console=console) as progress:
                bar = progress.add_task("scoring", total=None)

                def on_progress(done: int, total: int) -> None:
                    progress.update(bar, completed=done, total=total)

                return await score_file(
                    judge,
                    args.data,
                    args.out,
                    clients,
                    lambda store: CallExecutor(store, limit=limit, rate_limits=rates),
                    routing=routing,
                    id_field=args.id_field,
                    on_progress=on_progress,
                )

    with DirectoryLock(private_dir(state_dir(args.out))):  # before any service starts: one scoring run at a time
        outcome = asyncio.run(score())
    unscored = f" ({outcome.unscored} with no valid score in the judge's reply)" if outcome.unscored else ""
    print(
        f"{args.out}: {outcome.scored} rows scored, {outcome.skipped} already there, {outcome.failed} failed{unscored}"
    )
    if outcome.evaluation is not None:
        table = Table(title="agreement with the human scores")
        columns = ("criterion", "Spearman ρ", "Kendall τ", "Pearson r", "MAE", "off-by-one", "α int", "α ord", "κ quad")
        for column in (*columns, "n"):
            table.add_column(column, justify="left" if column == "criterion" else "right")
        for name, m in outcome.evaluation.per_criterion.items():
            table.add_row(
                name,
                *(
                    f"{v:.3f}"
                    for v in (
                        m.spearman,
                        m.kendall,
                        m.pearson,
                        m.mae,
                        m.off_by_one,
                        m.alpha_interval,
                        m.alpha_ordinal,
                        m.kappa_quadratic,
                    )
                ),
                str(m.n),
            )
        Console().print(table)
    return 1 if outcome.failed else 0
