"""Peak resident memory of the orchestrator and of each agent service during a 12-step run.

    .venv/bin/python bench/memory.py [--mode SSS] [--steps 12] [--interval 0.1]

``judgeopt optimize`` runs as a subprocess against the scripted endpoint (its own process, 10 ms per reply, not
counted). Every ``--interval`` seconds the script walks the process tree under the orchestrator (``/proc/*/stat``
parent ids) and reads ``/proc/<pid>/status``: ``VmHWM`` (the kernel's own peak-RSS mark for the process, so a peak
between two samples is not missed) and ``VmRSS``. Each process is named from its command line (``serve ROLE``).
Only the standard library is used: no psutil.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _support import (
    DATA_DIR,
    VENV_BIN,
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
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode(errors="replace") for a in argv if a]
    if "serve" in words:
        return f"service: {words[words.index('serve') + 1]}"
    if "llama_cpp.server" in words:
        return "local model server"
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


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", default="SSS")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=3)
    parser.add_argument("--train", type=int, default=40)
    parser.add_argument("--val", type=int, default=16)
    parser.add_argument("--test", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.01, help="seconds per scripted reply")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between samples")
    args = parser.parse_args()
    console.print(machine_load(), style="dim")

    with (
        endpoint(delay=args.latency) as ep,
        tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp_name,
    ):
        tmp = Path(tmp_name)
        config = write_run_config(
            tmp / "run.yaml",
            ep.base_url,
            mode=args.mode,
            steps=args.steps,
            batch_size=args.batch,
            gate="mae",
            concurrency=8,
            dataset=dataset(args.train, args.val, args.test),
        )
        command = [str(VENV_BIN / "judgeopt"), "optimize", "--config", str(config), "--run-dir", str(tmp / "run")]
        command += ["--data-dir", str(DATA_DIR)]
        started = time.perf_counter()
        orchestrator = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        tracked: dict[int, Process] = {orchestrator.pid: Process(orchestrator.pid, "orchestrator (judgeopt optimize)")}
        while orchestrator.poll() is None:
            for pid in children_of(orchestrator.pid):
                if pid not in tracked:
                    tracked[pid] = Process(pid, name_of(pid))
            sample(tracked)
            time.sleep(args.interval)
        wall = time.perf_counter() - started
        _, stderr = orchestrator.communicate()
        if orchestrator.returncode != 0:
            raise RuntimeError(f"judgeopt optimize failed: {stderr.decode(errors='replace')[-2000:]}")
        steps = query(tmp / "run", "SELECT COUNT(*) FROM steps")[0][0]
        calls = query(tmp / "run", "SELECT COUNT(*) FROM calls")[0][0]

    table = Table(
        title=f"Peak RSS during a {args.steps}-step {args.mode} run ({steps} step records, {calls} calls, {wall:.0f} s)"
    )
    for column in ("process", "pid", "peak RSS (VmHWM) MiB", "max sampled RSS MiB", "last RSS MiB", "samples"):
        table.add_column(column, justify="left" if column == "process" else "right")
    real = [p for p in tracked.values() if p.samples > 0]
    for p in sorted(real, key=lambda p: (not p.name.startswith("orchestrator"), p.name)):
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
    complete = steps == args.steps + 1 and len(services) == 4
    console.print(
        ("[bold]MEASURED[/] " if complete else "[bold red]INCOMPLETE RUN[/] ")
        + f"orchestrator peak {real[0].peak_kib / 1024:.0f} MiB; services "
        + ", ".join(f"{p.name.removeprefix('service: ')} {p.peak_kib / 1024:.0f}" for p in services)
        + " MiB (issue 6 sets no memory target: reported)"
    )


if __name__ == "__main__":
    main()
