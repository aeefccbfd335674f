"""Shared plumbing of the bench scripts: paths, the scripted endpoint in its own process, runs, statistics, tables.

The scripted OpenAI-compatible server and its role scripts live in the test suite (``tests/helpers``); the bench
scripts reuse them by putting ``<repo>/tests`` on ``sys.path`` (see ``test_helpers``), exactly as pytest does.
They are loaded through ``importlib`` so that ``mypy --strict bench/…`` needs no search-path configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from rich.console import Console

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
TESTS = REPO / "tests"
DATA_DIR = REPO.parent / "shared" / "data"
VENV_BIN = Path(sys.executable).parent

console = Console() if sys.stdout.isatty() else Console(width=200)


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so that ``with`` blocks stop the servers and services this script started."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def test_helpers(name: str) -> ModuleType:
    """``tests/helpers/<name>.py`` (the scripted endpoint and role scripts), importable as the tests import it."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))  # the bench reuses the test suite's helpers: tests/ goes on sys.path
    return importlib.import_module(f"helpers.{name}")


# --- statistics --------------------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def machine_load() -> str:
    """The load average against the cores: other work on the machine (tests, a local model) skews timings."""
    one, five, _ = os.getloadavg()
    cores = os.cpu_count() or 1
    note = "  [bold yellow]busy machine: timings are inflated[/]" if five > cores else ""
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {cores} cores{note}"


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, help="also write the figures, machine, load and commit to this file")


def verdict(ok: bool, text: str) -> str:
    return f"[bold green]TARGET MET[/] {text}" if ok else f"[bold red]TARGET MISSED[/] {text}"


# --- the scripted endpoint, in its own process ------------------------------------------------------------------


@dataclass
class Endpoint:
    """A running ``bench/fake_endpoint.py``: its base URL and the JSON-lines log of the requests it answered."""

    base_url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def requests(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        lines = self.log_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]


@contextlib.contextmanager
def endpoint(
    *,
    delay: float = 0.0,
    worse_marker: str | None = None,
    textgrad: bool = False,
    tie: bool = False,
    log_bodies: bool = False,
) -> Iterator[Endpoint]:
    """Start the scripted endpoint (``deterministic_handler`` with a fixed delay per reply) in its own process, so
    its HTTP threads never compete with the measured process for the GIL."""
    with tempfile.TemporaryDirectory(prefix="judgeopt-bench-endpoint-") as tmp:
        log_path = Path(tmp) / "requests.jsonl"
        command = [sys.executable, str(BENCH / "fake_endpoint.py"), "--delay", str(delay), "--log", str(log_path)]
        if worse_marker:
            command += ["--worse-marker", worse_marker]
        if textgrad:
            command.append("--textgrad")
        if tie:
            command.append("--tie")
        if log_bodies:
            command.append("--log-bodies")
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            assert process.stdout is not None
            line = process.stdout.readline().decode().strip()
            if not line.startswith("listening on "):
                raise RuntimeError(f"scripted endpoint did not start: {line!r}")
            yield Endpoint(line.removeprefix("listening on "), log_path, process)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --- whole runs --------------------------------------------------------------------------------------------------


def write_run_config(path: Path, base_url: str, *, model_overrides: dict[str, Any] | None = None, **run: Any) -> Path:
    """A ``judgeopt optimize`` config with every role on ``base_url`` (as tests/orchestrator/test_runs.py does)."""
    config = {
        "models": {
            "default": {
                "base_url": base_url,
                "model": "fake-model",
                "structured_output": "json_schema",
                "max_retries": 0,
                "timeout": 30,
                **(model_overrides or {}),
            }
        },
        "run": run,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def dataset(train: int, val: int, test: int, **extra: Any) -> dict[str, Any]:
    return {"name": "summeval", "train_size": train, "val_size": val, "test_size": test, **extra}


def run_optimize(config: Path, run_dir: Path, *extra: str) -> float:
    """``judgeopt optimize`` as a subprocess (services are its own children); returns its wall seconds."""
    command = [str(VENV_BIN / "judgeopt"), "optimize", "--config", str(config), "--run-dir", str(run_dir)]
    command += ["--data-dir", str(DATA_DIR), *extra]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"}, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"judgeopt optimize failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return wall


def query(run_dir: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(run_dir / "run.sqlite")) as db:
        return list(db.execute(sql, tuple(params)).fetchall())
