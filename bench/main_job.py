"""Wall time of the main job, `judgeopt optimize` with no flag (target: under 3 minutes on two cores), and where
it goes.

    .venv/bin/python bench/main_job.py [--runs 1] [--json FILE]

Each run is the README's command as a fresh subprocess in a temporary directory (its run directory under it, its
log as JSON lines at info so the phases can be timed): the embedded local model and the four services started, the
quick profile's two steps run, the tables and the closing paragraph printed. Reported per run: the wall time from
spawn to exit and the machine's load, which decides much of it on a shared machine; the CPU time of the run and
every process it started (user + system), which load inflates far less; then where the time went:
until the local model answered, until the four services answered their health checks, the optimization and the
exit, and from the run's store, per stage, the calls, their time at the model and the tokens they generated per
second of it. The final screen (stdout) of the last run is printed after the tables.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import sqlite3
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from _records import BenchRecord, Target
from _support import VENV_BIN, add_json_argument, console, exit_on_sigterm, machine_load, median, verdict
from rich.table import Table

TARGET = Target("<", 180.0)
_PR_SET_CHILD_SUBREAPER = 36
PHASES = (("local model up", "local_model.ready"), ("services up", "fleet.ready"))
"""Log events that end a phase of the run, in the order they happen."""


@dataclass
class MainJob:
    """One timed run: its wall time, when each phase ended (seconds from spawn), and its calls per stage."""

    seconds: float
    cpu_seconds: float
    """User + system time of the run and every process it started and waited for (the model server, the services)."""
    exit_code: int
    load: str
    phases: dict[str, float] = field(default_factory=dict)
    stages: list[tuple[str, int, float, int]] = field(default_factory=list)
    """Per stage: calls, seconds at the model, completion tokens."""
    screen: str = ""


def _event_times(log: str, started_at: float) -> dict[str, float]:
    """Seconds from ``started_at`` (a Unix time) to the first log line of each event."""
    times: dict[str, float] = {}
    for line in log.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and "timestamp" in entry and entry.get("event") not in times:
            at = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()
            times[entry["event"]] = at - started_at
    return times


def _stages(store: Path) -> list[tuple[str, int, float, int]]:
    if not store.is_file():
        return []
    with sqlite3.connect(store) as db:
        rows = db.execute(
            "SELECT stage || ' (' || purpose || ')', COUNT(*), SUM(endpoint_seconds), SUM(completion_tokens) "
            "FROM calls GROUP BY stage, purpose ORDER BY MIN(at)"
        ).fetchall()
    return [(str(name), int(calls), float(seconds or 0.0), int(tokens or 0)) for name, calls, seconds, tokens in rows]


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _adopt_orphans() -> None:
    """Become the child subreaper (Linux): the run's fork server outlives the command by a moment (it exits when it
    sees the command gone) and would be reaped by init, its CPU time and its services' with it, uncounted."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1)


def _reap_orphans(timeout: float = 15.0) -> None:
    """Wait for the run's orphaned processes, so that their CPU time is counted in ``RUSAGE_CHILDREN``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:  # none left
            return
        if pid == 0:
            time.sleep(0.05)


def run_once() -> MainJob:
    load = machine_load()
    with tempfile.TemporaryDirectory(prefix="judgeopt-main-job-") as folder:
        run_dir = Path(folder) / "run"
        command = [str(VENV_BIN / "judgeopt"), "--log-format", "json", "--log-level", "info", "optimize"]
        started_at, started, cpu_before = time.time(), time.perf_counter(), _children_cpu_seconds()
        done = subprocess.run(
            [*command, "--run-dir", str(run_dir)], cwd=folder, capture_output=True, text=True, check=False
        )
        seconds = time.perf_counter() - started
        _reap_orphans()
        cpu_seconds = _children_cpu_seconds() - cpu_before
        events = _event_times(done.stderr, started_at)
        job = MainJob(seconds, cpu_seconds, done.returncode, load, stages=_stages(run_dir / "run.sqlite"))
    job.phases = {name: events[event] for name, event in PHASES if event in events}
    job.screen = done.stdout if done.returncode == 0 else done.stderr[-2000:]
    return job


def phase_table(jobs: list[MainJob]) -> Table:
    table = Table(title="judgeopt optimize (the main job): where the wall time goes, seconds from spawn")
    columns = ("run", "load before", *(name for name, _ in PHASES), "exit", "optimization", "CPU seconds", "exit code")
    for column in columns:
        table.add_column(column, justify="right")
    for number, job in enumerate(jobs, 1):
        ends = [job.phases.get(name) for name, _ in PHASES]
        services_up = ends[-1]
        optimization = "" if services_up is None else f"{job.seconds - services_up:.1f}"
        marks = ["" if end is None else f"{end:.1f}" for end in ends]
        cpu = f"{job.cpu_seconds:.1f}"
        table.add_row(str(number), job.load, *marks, f"{job.seconds:.1f}", optimization, cpu, str(job.exit_code))
    return table


def stage_table(job: MainJob) -> Table:
    table = Table(title="the last run's calls per stage (the local model answers one call at a time)")
    for column in ("stage (purpose)", "calls", "seconds at the model", "generated tokens", "tokens/s"):
        table.add_column(column, justify="left" if column.startswith("stage") else "right")
    for name, calls, seconds, tokens in job.stages:
        rate = f"{tokens / seconds:.1f}" if seconds else ""
        table.add_row(name, str(calls), f"{seconds:.1f}", str(tokens), rate)
    return table


def main() -> None:
    exit_on_sigterm()
    _adopt_orphans()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1, help="timed runs of the main job")
    add_json_argument(parser)
    args = parser.parse_args()
    record = BenchRecord("main_job")
    jobs = [run_once() for _ in range(args.runs)]
    console.print(phase_table(jobs))
    console.print(stage_table(jobs[-1]))
    console.print(jobs[-1].screen, markup=False, highlight=False)  # the screen as the command printed it
    failed = sum(job.exit_code != 0 for job in jobs)
    middle = median([job.seconds for job in jobs])
    record.add("wall time: median", middle, "s", TARGET)
    record.add("runs failed", failed, "runs", Target("==", 0))
    record.add("CPU time (all processes): median", median([job.cpu_seconds for job in jobs]), "s")
    last = jobs[-1]
    for name, _ in PHASES:
        if name in last.phases:
            record.add(f"last run: {name} after", last.phases[name], "s")
    seconds_at_model = sum(seconds for _, _, seconds, _ in last.stages)
    if seconds_at_model:
        record.add(
            "last run: generated tokens per second at the model",
            sum(t for *_, t in last.stages) / seconds_at_model,
            "tokens/s",
        )
    record.write(args.json)
    target = f"main job: median {middle:.1f} s (target {TARGET} s), {failed} of {args.runs} failed"
    console.print(verdict(TARGET.met(middle) and not failed, target))


if __name__ == "__main__":
    main()
