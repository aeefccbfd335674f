"""``judgeopt report DIR``: report.md and a self-contained report.html for a run or an experiment."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "write report.md and report.html for a run or an experiment (and log them to its MLflow run, if tracked)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, help="a run directory or an experiment directory")


def run(args: argparse.Namespace) -> int:

    from judgeopt.orchestrator.study.reporting import write_report

    markdown, html = write_report(args.directory)
    print(f"wrote {markdown} and {html}")
    _log_to_mlflow(args.directory, [markdown, html])
    return 0


def _log_to_mlflow(directory: Path, files: list[Path]) -> None:
    """The report as artifacts of the MLflow run the directory was tracked in (``mlflow.json``), if any."""
    from judgeopt.orchestrator.tracking import MlflowTracker, recorded

    found = recorded(directory)
    if found is None:
        return
    tracker = MlflowTracker(found[0])
    tracker.run(directory, directory.name).files(files, "report")
    tracker.close()
    if not tracker.failed:
        print(f"logged the report to MLflow run {found[1]}")
