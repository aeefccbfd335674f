"""``judgeopt experiment``: a grid of modes × gates × repeated runs, resumable."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from judgeopt.core.flags import add_model_flags
from judgeopt.core.roles import ALL_ROLES
from judgeopt.orchestrator.cli.flags import add_address_flags, add_client_flags, add_run_flags, add_tracking_flags

if TYPE_CHECKING:
    from judgeopt.core.models import ModelsConfig
    from judgeopt.orchestrator.config import GridConfig, RunConfig

HELP = "run a grid of modes × gates × repeated runs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, help="the experiment directory (default experiments/<timestamp>)")
    parser.add_argument("--resume", type=Path, metavar="DIR", help="continue the experiment in DIR")
    parser.add_argument("--modes", help="comma-separated presets (default: SSS,SSC,SCC,CCC,single)")
    parser.add_argument("--gates", help="comma-separated gates (default: mae,none)")
    parser.add_argument("--runs", type=int, help="repeated runs per configuration (default 3)")
    parser.add_argument(
        "--select-on",
        choices=["val", "test"],
        help="interference: choose best steps on val/test (default: the grid's, val)",
    )
    parser.add_argument("--no-diagnostics", action="store_true", help="skip the evaluator's ratings")
    parser.add_argument("--dry-run", action="store_true", help="print the grid's calls, tokens and cost; make no call")
    add_model_flags(parser, ALL_ROLES)
    parser.add_argument("--grid", dest="config", type=Path, metavar="FILE", help="same as --config")
    add_run_flags(parser, single_run=False)
    add_address_flags(parser, ALL_ROLES)
    add_client_flags(parser)
    add_tracking_flags(parser)


def grid_from_args(args: argparse.Namespace, base: GridConfig) -> GridConfig:
    """``base`` with the grid flags applied."""
    from pydantic import ValidationError

    from judgeopt.core.errors import ConfigError, describe_validation_error
    from judgeopt.core.flags import given
    from judgeopt.orchestrator.config import GridConfig

    data = base.model_dump(mode="json")
    if args.modes:
        data["modes"] = [m.strip() for m in args.modes.split(",")]
    if args.gates:
        data["gates"] = [g.strip() for g in args.gates.split(",")]
    data.update(
        given({"runs": args.runs, "select_on": args.select_on, "diagnostics": False if args.no_diagnostics else None})
    )
    try:
        return GridConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"grid: {describe_validation_error(exc)}") from None


def print_grid_estimate(grid: GridConfig, base: RunConfig, models: ModelsConfig, data_dir: Path | None) -> None:
    """The whole grid's calls, tokens and cost per role, every cell at most (the evaluator's ratings not counted)."""
    from judgeopt.orchestrator.cli.estimate import estimate_of, print_estimate
    from judgeopt.orchestrator.engine.run import prepare
    from judgeopt.orchestrator.study.experiment import cell_configs

    cells = cell_configs(grid, base)
    estimates = [estimate_of(prepare(config, models, data_dir)) for config in cells.values()]
    variants = f" × {len(grid.variants)} variants" if grid.variants else ""
    title = (
        f"dry run: {len(cells)} cells ({len(grid.modes)} modes × {len(grid.gates)} gates{variants} × {grid.runs} runs)"
    )
    print_estimate(title, estimates, models)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import sys
    import time

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from judgeopt.core.files import DirectoryLock
    from judgeopt.core.hub_model import resolve_local_model
    from judgeopt.core.roles import ROLES
    from judgeopt.orchestrator.cli.flags import (
        addresses,
        client_settings,
        models_from_args,
        run_config,
        tracking_settings,
    )
    from judgeopt.orchestrator.config import load_config
    from judgeopt.orchestrator.engine.risks import warn_risks
    from judgeopt.orchestrator.study.experiment import (
        cell_configs,
        create_experiment,
        experiment_run,
        load_experiment,
        run_experiment,
    )

    if args.resume is None:
        directory = args.dir or Path("experiments") / time.strftime("%Y%m%d-%H%M%S")
        file_config = load_config(args.config)
        models = models_from_args(args, ALL_ROLES)
        base, note = experiment_run(file_config.run if args.config is not None else None, str(args.config))
        if note is not None and args.dataset is None:
            print(f"note: {note}", file=sys.stderr)
        config, models = run_config(args, base, models)
        grid = grid_from_args(args, file_config.grid)
        if args.dry_run:
            print_grid_estimate(grid, config, models, args.data_dir)
            return 0
        create_experiment(directory, grid, config, models)
        tracking = tracking_settings(args, file_config.tracking)
    else:
        directory, models = args.resume, None  # the experiment's own (credentials in a URL are not kept)
        tracking = tracking_settings(args, None, directory)
    grid, base, _ = load_experiment(directory)
    service_addresses = addresses(args, ALL_ROLES if grid.diagnostics else ROLES)
    settings = client_settings(args, service_addresses)
    cells = len(grid.modes) * len(grid.gates) * len(grid.variant_names()) * grid.runs
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    lock = DirectoryLock(directory)
    lock.acquire()  # a directory another process writes is refused before anything else is said
    warn_risks(cell_configs(grid, base).values())  # once for the grid, before the progress bar
    local_model = resolve_local_model(args.local_model)  # a Hub download's own progress bar, before ours
    with lock, Progress(*columns, console=Console(stderr=True)) as progress:
        bar = progress.add_task(f"experiment ({cells} cells × {base.steps + 1} steps)", total=cells * (base.steps + 1))
        reached: dict[str, int] = {}

        def on_cell_step(cell: str, _track: str, step: int) -> None:
            reached[cell] = max(reached.get(cell, -1), step)
            progress.update(bar, completed=sum(s + 1 for s in reached.values()))

        overview = asyncio.run(
            run_experiment(
                directory,
                data_dir=args.data_dir,
                local_model=local_model,
                on_cell_step=on_cell_step,
                addresses=service_addresses,
                client_settings=settings,
                models=models,
                tracking=tracking,
            )
        )
    print(f"experiment {directory}: {overview['cells']} cells ({len(overview['skipped'])} were already finished)")
    print(f"report: judgeopt report {directory}")
    return 0
