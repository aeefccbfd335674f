"""A run driven to its end with a progress bar per track, then its result tables (``optimize`` and ``resume``)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from judgeopt.orchestrator.cli.flags import addresses


def run_with_progress(store: Any, run_dir: Path, args: argparse.Namespace, **kwargs: Any) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from judgeopt.orchestrator.engine.risks import warn_risks
    from judgeopt.orchestrator.engine.run import execute
    from judgeopt.orchestrator.engine.summary import summary_tables

    console = Console(stderr=True)
    manifest = store.manifest()
    config, tracks = manifest.config, manifest.tracks
    warn_risks([config])  # before the progress bars, which would draw over it
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        bars = {t: progress.add_task(f"track {t}", total=config.steps + 1) for t in tracks}
        for t in tracks:
            done = store.last_step(t)
            progress.update(bars[t], completed=0 if done is None else done.step + 1)

        def on_step(track: str, step: int) -> None:
            progress.update(bars[track], completed=step + 1)

        summary = asyncio.run(
            execute(
                store,
                run_dir,
                data_dir=args.data_dir,
                addresses=addresses(args),
                local_model=args.local_model,
                on_step=on_step,
                **kwargs,
            )
        )
    out = Console()
    for table in summary_tables(summary):
        out.print(table)
    out.print(f"run directory: {run_dir}  (summary.json, run.sqlite, services/)")
    if summary["status"] == "budget_reached":
        last = summary["steps"][-1]["step"] if summary["steps"] else None
        out.print(
            f"stopped at the budget after step {last}: `judgeopt resume {run_dir} --max-calls N` continues with more"
        )
    if summary.get("cost"):
        out.print(f"cost: {summary['cost']['total']:.2f}")
    return 0
