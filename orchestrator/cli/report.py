"""``judgeopt report DIR``: report.md and a self-contained report.html for a run or an experiment."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "write report.md and report.html for a run or an experiment"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, help="a run directory or an experiment directory")


def run(args: argparse.Namespace) -> int:

    from judgeopt.orchestrator.study.reporting import write_report

    markdown, html = write_report(args.directory)
    print(f"wrote {markdown} and {html}")
    return 0
