"""Start-up time of ``import judgeopt`` and of the command line (target: ``judgeopt --help`` under 0.3 s).

    .venv/bin/python bench/startup.py [--runs 10]

Four commands, each run ``--runs`` times as a fresh subprocess (stdout discarded), timed with ``time.perf_counter``
from spawn to exit, after one untimed warm-up run of each (so that every file read is in the page cache):
``python -c pass`` (the floor: the interpreter, site and the editable install's import finder), ``python -c
"import judgeopt"`` (the package alone: the API loads on first use), ``judgeopt --help`` (every command's
parser) and ``python -m judgeopt --version``. Rounds interleave the commands, so that drift of the machine hits
each alike. Reported: the median, min and p90, and the median over the floor.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence

from _records import BenchRecord, Target
from _support import VENV_BIN, add_json_argument, console, exit_on_sigterm, machine_load, median, percentile, verdict
from rich.table import Table

TARGET_SECONDS = Target("<", 0.3)
TARGET = "judgeopt --help"
COMMANDS: dict[str, list[str]] = {
    "python -c pass": [sys.executable, "-c", "pass"],
    'python -c "import judgeopt"': [sys.executable, "-c", "import judgeopt"],
    TARGET: [str(VENV_BIN / "judgeopt"), "--help"],
    "python -m judgeopt --version": [sys.executable, "-m", "judgeopt", "--version"],
}


def wall_seconds(command: Sequence[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="timed runs of each command")
    add_json_argument(parser)
    args = parser.parse_args()
    console.print(machine_load(), style="dim")
    record = BenchRecord("startup")

    for command in COMMANDS.values():
        wall_seconds(command)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.runs):
        for name, command in COMMANDS.items():
            times[name].append(wall_seconds(command))

    floor = median(times["python -c pass"])
    table = Table(title=f"Start-up wall time, {args.runs} runs each (seconds)")
    for column in ("command", "median", "min", "p90", "median over python -c pass"):
        table.add_column(column, justify="left" if column == "command" else "right")
    for name, values in times.items():
        over = "" if name == "python -c pass" else f"{median(values) - floor:+.3f}"
        table.add_row(name, f"{median(values):.3f}", f"{min(values):.3f}", f"{percentile(values, 0.9):.3f}", over)
    console.print(table)
    help_median = median(times[TARGET])
    for name, values in times.items():
        record.add(f"{name}: median", median(values), "s", TARGET_SECONDS if name == TARGET else None)
    record.write(args.json)
    console.print(verdict(TARGET_SECONDS.met(help_median), f"{TARGET}: median {help_median:.3f} s (target < 0.3 s)"))


if __name__ == "__main__":
    main()
