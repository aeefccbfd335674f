"""``judgeopt interference RUN_DIR``: the run's chosen instructions judged stitched (joint) vs per criterion with a
shared prefix, on validation and test: Δρ with paired intervals, halos and cost per row."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from judgeopt.orchestrator.cli.flags import add_client_flags

if TYPE_CHECKING:
    from judgeopt.core.roles import Role
    from judgeopt.orchestrator.study.routing_interference import RoutingInterference

HELP = "compare a run's chosen instructions judged joint vs per criterion with a shared prefix (Δρ, halo, cost)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_measurement_flags(parser)
    parser.add_argument("--again", action="store_true", help="measure again even if the run directory holds it")
    add_client_flags(parser)


def add_measurement_flags(parser: argparse.ArgumentParser) -> None:
    """What measuring a run needs (``interference`` and ``export`` share them)."""
    parser.add_argument("run_dir", type=Path, help="the run directory (as given to optimize --run-dir)")
    parser.add_argument("--step", default="best", help="best (on validation), best_oracle (on test) or a step number")
    parser.add_argument("--data-dir", type=Path, help="folder holding the SummEval files")
    parser.add_argument("--local-model", type=Path, metavar="GGUF", help="GGUF file for the embedded local model")
    parser.add_argument("--judge-addr", metavar="HOST:PORT", help="a running judge service instead of starting one")


def measured(args: argparse.Namespace, *, again: bool = False) -> tuple[RoutingInterference, bool]:
    """The run's measurement (read back, or measured now on a judge service) and whether it was measured now."""
    import asyncio

    from judgeopt.orchestrator.cli.flags import client_settings
    from judgeopt.orchestrator.study.routing_interference import measure_run

    addresses: dict[Role, str] | None = {"judge": args.judge_addr} if args.judge_addr else None
    return asyncio.run(
        measure_run(
            args.run_dir,
            step=args.step,
            again=again,
            data_dir=args.data_dir,
            local_model=args.local_model,
            judge_address=args.judge_addr,
            settings=client_settings(args, addresses),
        )
    )


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from judgeopt.orchestrator.study.reporting.routings import (
        COST_COLUMNS,
        DELTA_COLUMNS,
        HALO_COLUMNS,
        cost_rows,
        delta_rows,
        halo_rows,
    )
    from judgeopt.orchestrator.study.routing_interference import RESULT_FILE

    result, now = measured(args, again=args.again)
    console = Console()
    title = f"step {result.step} of run {result.run_id} (chosen on {result.chosen_on})"
    for columns, rows, labels in (
        (DELTA_COLUMNS, delta_rows(result), 2),
        (HALO_COLUMNS, halo_rows(result), 1),
        (COST_COLUMNS, cost_rows(result), 1),
    ):
        table = Table(title=title if columns is DELTA_COLUMNS else None)
        for index, column in enumerate(columns):
            table.add_column(column, justify="left" if index < labels else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    where = args.run_dir / RESULT_FILE
    print(f"{'wrote' if now else 'read (measured before; --again measures anew)'} {where}")
    print(f"judge routing chosen on validation: {result.choice().winner}")
    return 0
