"""``judgeopt interference RUN_DIR|EXPERIMENT_DIR``: a run's (or every cell's) chosen instructions judged stitched
(joint) vs per criterion with a shared prefix, on validation and test: Δρ with paired intervals, halos and cost per
row."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from judgeopt.core.flags import add_local_model_flag
from judgeopt.orchestrator.cli.flags import add_client_flags

if TYPE_CHECKING:
    from judgeopt.core.roles import Role
    from judgeopt.orchestrator.study.routing_interference import RoutingInterference

HELP = "compare a run's chosen instructions judged joint vs per criterion with a shared prefix (Δρ, halo, cost)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_measurement_flags(parser, "a run directory, or an experiment directory (every cell is measured)")
    parser.add_argument(
        "--again",
        action="store_true",
        help="compute it anew even if the run directory holds it (cached predictions cost no call)",
    )
    add_client_flags(parser)


def add_measurement_flags(parser: argparse.ArgumentParser, what: str) -> None:
    """What measuring a run needs (``interference`` and ``export`` share them)."""
    parser.add_argument("run_dir", type=Path, help=what)
    parser.add_argument("--step", default="best", help="best (on validation), best_oracle (on test) or a step number")
    parser.add_argument("--data-dir", type=Path, help="folder holding the SummEval files")
    add_local_model_flag(parser)
    parser.add_argument("--judge-addr", metavar="HOST:PORT", help="a running judge service instead of starting one")


def _run_dirs(directory: Path) -> tuple[list[Path], Path]:
    """The run directories to measure and where a judge service started here keeps its logs: the run itself, or
    every cell of an experiment (its shared services' folder)."""
    from judgeopt.core.errors import ConfigError
    from judgeopt.orchestrator.engine.store import STORE_FILE
    from judgeopt.orchestrator.study.experiment import EXPERIMENT_FILE, cell_configs, load_experiment

    if not (directory / EXPERIMENT_FILE).is_file():
        return [directory], directory / "services"
    grid, base, _models = load_experiment(directory)
    cells = [directory / "cells" / name for name in cell_configs(grid, base)]
    started = [cell for cell in cells if (cell / STORE_FILE).is_file()]
    if not started:
        raise ConfigError(f"{directory}: the experiment has no cell with a run yet")
    return started, directory / "services"


def measured(args: argparse.Namespace, *, again: bool = False) -> list[tuple[Path, RoutingInterference, bool]]:
    """Per run directory, its measurement (read back, or measured now on a judge service) and whether it was
    measured now."""
    import asyncio

    from judgeopt.orchestrator.cli.flags import client_settings
    from judgeopt.orchestrator.study.routing_interference import measure_runs

    addresses: dict[Role, str] | None = {"judge": args.judge_addr} if args.judge_addr else None
    run_dirs, services_dir = _run_dirs(args.run_dir)
    results = asyncio.run(
        measure_runs(
            run_dirs,
            services_dir=services_dir,
            step=args.step,
            again=again,
            data_dir=args.data_dir,
            local_model=args.local_model,
            judge_address=args.judge_addr,
            settings=client_settings(args, addresses),
        )
    )
    return [(run_dir, result, now) for run_dir, (result, now) in zip(run_dirs, results, strict=True)]


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

    console = Console()
    for run_dir, result, now in measured(args, again=args.again):
        title = f"{run_dir}: step {result.step} of run {result.run_id} (chosen on {result.chosen_on})"
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
        print(f"{'wrote' if now else 'read (measured before; --again computes it anew)'} {run_dir / RESULT_FILE}")
        print(f"judge routing chosen on validation: {result.choice().winner}")
    return 0
