"""Peak resident memory of the orchestrator and of each agent service during a 12-step run, at two sizes.

    .venv/bin/python bench/memory.py [--sizes quick,study] [--mode SSS] [--interval 0.1] [--json FILE]

``quick`` is a toy run (train 40, validation 16, test 32); ``study`` has the study's sizes (validation 100, test
480, 12 steps, batch 3) with the scripted endpoint in tie mode (the judge answers a constant, so every candidate
passes the gate and every step re-judges all 480 test items: about 8,000 calls, the most such a run stores; a few
minutes on two idle cores). ``judgeopt optimize`` runs as a subprocess against the scripted endpoint (its own
process, 10 ms per reply, not counted). Every ``--interval`` seconds the script walks the process tree under the
orchestrator (``/proc/*/stat`` parent ids) and reads ``/proc/<pid>/status``: ``VmHWM`` (the kernel's own peak-RSS
mark for the process, so a peak between two samples is not missed) and ``VmRSS``. Each process is named from its
command line (``serve ROLE``). The services are forked from a fork server that holds the imports they share, so
their peaks count those shared pages again (the sum of peaks is an upper bound). Only the standard library is used:
no psutil.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _records import BenchRecord
from _support import (
    DATA_DIR,
    VENV_BIN,
    add_json_argument,
    console,
    dataset,
    endpoint,
    exit_on_sigterm,
    machine_load,
    query,
    write_run_config,
)
from rich.table import Table


@dataclass
class Process:
    pid: int
    name: str
    peak_kib: int = 0
    max_rss_kib: int = 0
    last_rss_kib: int = 0
    samples: int = 0
    seen: list[float] = field(default_factory=list)


def children_of(root: int) -> list[int]:
    """Every descendant of ``root`` (from the parent ids in /proc/*/stat)."""
    parents: dict[int, int] = {}
    for path in Path("/proc").iterdir():
        entry = path.name
        if not entry.isdigit():
            continue
        try:
            stat = (path / "stat").read_text()
        except OSError:
            continue
        after_name = stat.rsplit(")", 1)[1].split()
        parents[int(entry)] = int(after_name[1])
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        kids = [pid for pid, ppid in parents.items() if ppid == parent]
        found += kids
        frontier += kids
    return found


def status_kib(pid: int) -> tuple[int, int] | None:
    """(VmHWM, VmRSS) in KiB, or None once the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    values = {}
    for line in lines:
        if line.startswith(("VmHWM:", "VmRSS:")):
            key, value = line.split(":", 1)
            values[key] = int(value.split()[0])
    if "VmHWM" not in values:
        return None
    return values["VmHWM"], values.get("VmRSS", 0)


def name_of(pid: int) -> str:
    try:
        # a service forked from the fork server shows its command line as one title: split on spaces too
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").split()
    except OSError:
        return "?"
    words = [a.decode(errors="replace") for a in argv]
    if not words:  # exiting, or its title being rewritten
        return "?"
    if "serve" in words:
        return f"service: {words[words.index('serve') + 1]}"
    if "llama_cpp.server" in words:
        return "local model server"
    if "multiprocessing.forkserver" in " ".join(words):
        return "fork server (the services' imports)"
    if "multiprocessing.resource_tracker" in " ".join(words):
        return "multiprocessing resource tracker"
    return " ".join(Path(words[0]).name if i == 0 else w for i, w in enumerate(words[:3]))


def sample(tracked: dict[int, Process]) -> None:
    for pid, process in tracked.items():
        values = status_kib(pid)
        if values is None:
            continue
        hwm, rss = values
        process.peak_kib = max(process.peak_kib, hwm)
        process.max_rss_kib = max(process.max_rss_kib, rss)
        process.last_rss_kib = rss
        process.samples += 1


@dataclass(frozen=True)
class Size:
    """One run to measure: its steps and split sizes, and whether the endpoint ties (every candidate passes the
    gate, so every step changes the prompt and re-judges every test item: the most a run of this size stores)."""

    steps: int
    batch: int
    train: int
    val: int
    test: int
    tie: bool


SIZES = {
    "quick": Size(steps=12, batch=3, train=40, val=16, test=32, tie=False),
    "study": Size(steps=12, batch=3, train=100, val=100, test=480, tie=True),
}
"""``quick``: a toy run; ``study``: the study's sizes (12 steps, batch 3, validation 100, test 480)."""


@dataclass
class Measured:
    size: str
    wall: float
    steps: int
    calls: int
    processes: list[Process]


def measure(name: str, size: Size, mode: str, latency: float, interval: float) -> Measured:
    """Run ``judgeopt optimize`` at ``size`` and sample the peak RSS of it and every process under it."""
    with (
        endpoint(delay=latency, tie=size.tie) as ep,
        tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp_name,
    ):
        tmp = Path(tmp_name)
        config = write_run_config(
            tmp / "run.yaml",
            ep.base_url,
            mode=mode,
            steps=size.steps,
            batch_size=size.batch,
            gate="mae",
            concurrency=8,
            bootstrap_resamples=0,
            dataset=dataset(size.train, size.val, size.test),
        )
        command = [str(VENV_BIN / "judgeopt"), "optimize", "--config", str(config), "--run-dir", str(tmp / "run")]
        command += ["--data-dir", str(DATA_DIR)]
        console.print(f"running {name} ({size.steps} steps, test {size.test}) …", style="dim")
        started = time.perf_counter()
        orchestrator = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        tracked: dict[int, Process] = {orchestrator.pid: Process(orchestrator.pid, "orchestrator (judgeopt optimize)")}
        while orchestrator.poll() is None:
            for pid in children_of(orchestrator.pid):
                # named at every sample: a forked service shows the fork server's command line until it sets its own
                process_name = name_of(pid)
                if pid not in tracked:
                    tracked[pid] = Process(pid, process_name)
                elif process_name != "?":
                    tracked[pid].name = process_name
            sample(tracked)
            time.sleep(interval)
        wall = time.perf_counter() - started
        _, stderr = orchestrator.communicate()
        if orchestrator.returncode != 0:
            raise RuntimeError(f"judgeopt optimize failed: {stderr.decode(errors='replace')[-2000:]}")
        steps = query(tmp / "run", "SELECT COUNT(*) FROM steps")[0][0]
        calls = query(tmp / "run", "SELECT COUNT(*) FROM calls")[0][0]
    real = [p for p in tracked.values() if p.samples > 0]
    real.sort(key=lambda p: (not p.name.startswith("orchestrator"), p.name))
    return Measured(name, wall, steps, calls, real)


def report(measured: Measured, size: Size, mode: str, record: BenchRecord) -> None:
    real = measured.processes
    table = Table(
        title=f"Peak RSS, {measured.size} size: a {size.steps}-step {mode} run, test {size.test}, validation "
        f"{size.val}{', tie mode' if size.tie else ''} ({measured.steps} step records, {measured.calls} calls, "
        f"{measured.wall:.0f} s)"
    )
    for column in ("process", "pid", "peak RSS (VmHWM) MiB", "max sampled RSS MiB", "last RSS MiB", "samples"):
        table.add_column(column, justify="left" if column == "process" else "right")
    for p in real:
        table.add_row(
            p.name,
            str(p.pid),
            f"{p.peak_kib / 1024:.0f}",
            f"{p.max_rss_kib / 1024:.0f}",
            f"{p.last_rss_kib / 1024:.0f}",
            str(p.samples),
        )
    total = sum(p.peak_kib for p in real) / 1024
    table.add_row("all together (sum of peaks)", "", f"{total:.0f}", "", "", "")
    console.print(table)
    services = [p for p in real if p.name.startswith("service")]
    complete = measured.steps == size.steps + 1 and len(services) == 4
    if not complete:
        raise SystemExit(f"{measured.size}: incomplete run ({measured.steps} step records, {len(services)} services)")
    for p in real:
        record.add(f"{measured.size}: {p.name} peak RSS", p.peak_kib / 1024, "MiB")
    record.add(f"{measured.size}: all processes, sum of peaks", total, "MiB")
    console.print(
        f"[bold]MEASURED[/] {measured.size}: orchestrator peak {real[0].peak_kib / 1024:.0f} MiB; services "
        + ", ".join(f"{p.name.removeprefix('service: ')} {p.peak_kib / 1024:.0f}" for p in services)
        + " MiB (no memory target: reported)"
    )


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", default="SSS")
    parser.add_argument("--sizes", default="quick,study", help=f"comma-separated, of {', '.join(SIZES)}")
    parser.add_argument("--latency", type=float, default=0.01, help="seconds per scripted reply")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between samples")
    add_json_argument(parser)
    args = parser.parse_args()
    names = args.sizes.split(",")
    unknown = [n for n in names if n not in SIZES]
    if unknown:
        raise SystemExit(f"--sizes: unknown size {unknown[0]!r} (known: {', '.join(SIZES)})")
    console.print(machine_load(), style="dim")
    record = BenchRecord("memory")
    for name in names:
        report(measure(name, SIZES[name], args.mode, args.latency, args.interval), SIZES[name], args.mode, record)
    record.write(args.json)


if __name__ == "__main__":
    main()
