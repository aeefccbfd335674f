"""Wall time of the main job, `judgeopt optimize` with no flag (target: under 3 minutes on two cores).

    .venv/bin/python bench/main_job.py [--runs 1]

Each run is the README's command as a fresh subprocess in a temporary directory (its run directory under it):
the embedded local model and the four services started, the quick profile's two steps run, the tables and the
closing paragraph printed. Reported per run: the wall time from spawn to exit, and the machine's load, which
decides much of it on a shared machine. The run's final screen (stdout) of the last run is printed after the table.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from _support import VENV_BIN, console, exit_on_sigterm, machine_load, median, verdict
from rich.table import Table

TARGET_SECONDS = 180.0


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1, help="timed runs of the main job")
    args = parser.parse_args()
    table = Table(title="judgeopt optimize (the main job), wall time")
    for column in ("run", "seconds", "exit code", "load before"):
        table.add_column(column, justify="right")
    times: list[float] = []
    failed = 0
    screen = ""
    for run in range(1, args.runs + 1):
        load = machine_load()
        with tempfile.TemporaryDirectory(prefix="judgeopt-main-job-") as folder:
            started = time.perf_counter()
            done = subprocess.run(
                [str(VENV_BIN / "judgeopt"), "optimize", "--run-dir", str(Path(folder) / "run")],
                cwd=folder,
                capture_output=True,
                text=True,
                check=False,
            )
            times.append(time.perf_counter() - started)
        failed += done.returncode != 0
        screen = done.stdout if done.returncode == 0 else done.stderr[-2000:]
        table.add_row(str(run), f"{times[-1]:.1f}", str(done.returncode), load)
    console.print(table)
    console.print(screen)
    middle = median(times)
    target = f"main job: median {middle:.1f} s (target < {TARGET_SECONDS:.0f} s), {failed} of {args.runs} failed"
    console.print(verdict(middle < TARGET_SECONDS and not failed, target))


if __name__ == "__main__":
    main()
