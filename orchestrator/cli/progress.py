"""A run driven to its end with a progress bar per track, then its result tables (``optimize`` and ``resume``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from judgeopt.core.held_warnings import HeldWarnings, holding_warnings
from judgeopt.orchestrator.cli.closing import next_commands, what_it_shows, where_it_is
from judgeopt.orchestrator.cli.flags import addresses

if TYPE_CHECKING:
    from judgeopt.orchestrator.config import MlflowSettings
    from judgeopt.orchestrator.tracking import RunTracking


def run_with_progress(
    store: Any, run_dir: Path, args: argparse.Namespace, *, tracking: MlflowSettings | None = None, **kwargs: Any
) -> int:
    """Drive the run to its end (tracked in MLflow with ``tracking``), then print its tables and closing lines."""
    from judgeopt.orchestrator.tracking import run_tracking

    with run_tracking(tracking, store, run_dir) as tracked:
        return _run_and_print(store, run_dir, args, tracked, **kwargs)


def _run_and_print(
    store: Any, run_dir: Path, args: argparse.Namespace, tracked: RunTracking | None, **kwargs: Any
) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.text import Text

    from judgeopt.core.hub_model import resolve_local_model
    from judgeopt.orchestrator.engine.risks import warn_risks
    from judgeopt.orchestrator.engine.run import execute
    from judgeopt.orchestrator.engine.summary import summary_tables

    console = Console(stderr=True)
    manifest = store.manifest()
    config, tracks = manifest.config, manifest.tracks
    warn_risks([config])  # before the progress bars, which would draw over it
    local_model = resolve_local_model(args.local_model)  # a Hub download's own progress bar, before ours
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    hold = contextlib.nullcontext(HeldWarnings()) if args.log_format == "json" else holding_warnings()
    # Transient: the bars vanish when the run ends, so a failure leaves its one-line error alone on the screen.
    with hold as held, Progress(*columns, console=console, transient=True) as progress:
        # With recombination, a track of several criteria may record one more step (``steps + 1``).
        extra = {t: int(config.archive_recombine and len(manifest.track_criteria(t)) > 1) for t in tracks}
        bars = {t: progress.add_task(f"track {t}", total=config.steps + 1 + extra[t]) for t in tracks}
        for t in tracks:
            done = store.last_step(t)
            progress.update(bars[t], completed=0 if done is None else done.step + 1)

        def on_step(track: str, step: int) -> None:
            progress.update(bars[track], completed=step + 1)
            if tracked is not None:
                tracked.step(track, step)

        summary = asyncio.run(
            execute(
                store,
                run_dir,
                data_dir=args.data_dir,
                addresses=addresses(args),
                local_model=local_model,
                on_step=on_step,
                **kwargs,
            )
        )
    if tracked is not None:
        tracked.finished(summary, run_dir)
    out = Console()
    for table in summary_tables(summary):
        out.print(table)
    if summary.get("cost"):
        out.print(f"cost: {summary['cost']['total']:.2f}")
    for line in held.lines():  # after the tables, never between them
        out.print(Text.assemble(("warning", "yellow"), " ", line), highlight=False)
    if summary["status"] == "budget_reached":
        last = summary["steps"][-1]["step"] if summary["steps"] else None
        out.print(
            f"stopped at the budget after step {last}: `judgeopt resume {run_dir} --max-calls N` continues with more"
        )
    demo_judge = manifest.models.needs_local_model(("judge",)) and args.local_model is None
    out.print()
    out.print(what_it_shows(summary, demo_judge=demo_judge), highlight=False)
    out.print(where_it_is(run_dir), highlight=False, markup=False)
    if demo_judge and args.command == "optimize":
        for line in next_commands(args.argv):
            out.print(line, highlight=False, markup=False)
    return 0
