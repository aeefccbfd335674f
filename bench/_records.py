"""Recorded bench figures: one JSON file per bench run, and the check of the recorded figures against targets.

A bench script given ``--json PATH`` writes what it measured there: each figure with its unit and (when it has
one) its target, the command that produced it, the commit, the machine and its load average at the start and the
end of the run. ``missed`` re-reads such records and names every figure whose value misses its target; the verdict
is recomputed from the value and the target, never taken from what the script printed.
"""

from __future__ import annotations

import json
import operator
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    "==": operator.eq,
}


@dataclass(frozen=True)
class Target:
    op: str
    limit: float

    def met(self, value: float) -> bool:
        return COMPARISONS[self.op](value, self.limit)

    def __str__(self) -> str:
        return f"{self.op} {self.limit:g}"


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    target: Target | None = None

    def as_json(self) -> dict[str, Any]:
        met = None if self.target is None else self.target.met(self.value)
        return {**asdict(self), "met": met}


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def commit() -> dict[str, Any]:
    """The checkout's commit, and whether it had uncommitted changes (figures from a dirty tree say so)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return {"sha": git("rev-parse", "HEAD") or None, "dirty": dirty}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


@dataclass
class BenchRecord:
    """The figures of one bench run, written as JSON by :meth:`write`."""

    bench: str
    command: str = field(default_factory=lambda: shlex.join([".venv/bin/python", *_repo_relative(sys.argv)]))
    load_at_start: list[float] = field(default_factory=load_average)
    figures: list[Figure] = field(default_factory=list)

    def add(self, name: str, value: float, unit: str, target: Target | None = None) -> Figure:
        figure = Figure(name, float(value), unit, target)
        self.figures.append(figure)
        return figure

    def as_json(self) -> dict[str, Any]:
        return {
            "bench": self.bench,
            "command": self.command,
            "commit": commit(),
            "machine": machine(),
            "load_average": {"start": self.load_at_start, "end": load_average()},
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "figures": [f.as_json() for f in self.figures],
        }

    def write(self, path: Path | None) -> None:
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_json(), indent=2) + "\n", encoding="utf-8")


def _repo_relative(argv: Sequence[str]) -> list[str]:
    """``argv`` with the script's path relative to the repository (no machine paths in recorded commands), and
    without ``--json PATH`` (where the figures went is not how they were made)."""
    args = list(argv)
    if "--json" in args:
        at = args.index("--json")
        del args[at : at + 2]
    script = Path(args[0]).resolve()
    if script.is_relative_to(REPO):
        args[0] = str(script.relative_to(REPO))
    return args


def read_records(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text(encoding="utf-8")) for path in sorted(directory.glob("*.json"))]


def missed(records: Iterable[dict[str, Any]]) -> list[str]:
    """One line per recorded figure that misses its target (recomputed from its value and target)."""
    lines = []
    for record in records:
        for figure in record["figures"]:
            target = figure.get("target")
            if target is None:
                continue
            if not Target(target["op"], target["limit"]).met(figure["value"]):
                load = record["load_average"]["start"][0]
                lines.append(
                    f"{record['bench']}: {figure['name']} = {figure['value']:.3g} {figure['unit']}, "
                    f"target {target['op']} {target['limit']:g} (load {load:.1f} at its start)"
                )
    return lines
