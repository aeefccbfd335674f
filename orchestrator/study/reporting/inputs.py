"""Reading what a report covers: an experiment directory (its cells) or a run directory (an experiment with one
cell), each cell's summary beside what only its store knows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from judgeopt.core.errors import ConfigError
from judgeopt.orchestrator.engine.store import STORE_FILE, CallTimes, Diagnostic, RunStore
from judgeopt.orchestrator.engine.summary import SUMMARY_FILE, scores_on_test
from judgeopt.orchestrator.study import routing_interference
from judgeopt.orchestrator.study.experiment import EXPERIMENT_FILE, INTERFERENCE_FILE, cell_name, load_experiment
from judgeopt.orchestrator.study.routing_interference import RoutingInterference


@dataclass(frozen=True)
class RunTestScores:
    """A run's test items, their human scores, and the judge's scores of them at every tested step."""

    ids: tuple[str, ...]
    truths: dict[str, tuple[float, ...]]
    scores: dict[int, dict[str, list[float | None]]]
    """Per tested step, per criterion, one score per item of ``ids`` (``None``: not scored)."""
    resamples: int
    seed: int
    """The run's bootstrap resamples and seed."""


@dataclass(frozen=True)
class Cell:
    """One run directory: its summary and what only its store knows."""

    name: str
    mode: str
    gate: str
    summary: dict[str, Any]
    diagnostics: tuple[Diagnostic, ...]
    usage: dict[str, dict[str, int]]
    call_times: dict[str, CallTimes]
    attempts_by_purpose: dict[tuple[str, str], int]
    wall_seconds: float
    variant: str | None = None
    """The grid variant the cell ran (None without variants)."""
    test: RunTestScores | None = None
    routings: RoutingInterference | None = None
    """The judge routings compared on the run's chosen step (``judgeopt interference``), when measured."""
    judge_routing: str = "joint"
    """How the run's judge was routed: ``joint``, ``per_criterion`` or ``prefix_shared``."""
    length_limits: tuple[int | None, float | None] = (None, None)
    """The run's ``instruction_max_tokens`` and ``instruction_max_ratio`` (``None``: not set)."""


@dataclass(frozen=True)
class Configuration:
    mode: str
    gate: str
    cells: tuple[Cell, ...]
    variant: str | None = None

    @property
    def label(self) -> str:
        return f"{self.mode} (gate {self.gate}{f', {self.variant}' if self.variant else ''})"


@dataclass(frozen=True)
class Study:
    directory: Path
    kind: str
    """``experiment`` or ``run``."""
    modes: tuple[str, ...]
    gates: tuple[str, ...]
    runs: int
    grid: dict[str, Any]
    run_settings: dict[str, Any]
    cells: tuple[Cell, ...]
    interference: dict[str, Any] | None
    variants: tuple[str | None, ...] = (None,)

    @property
    def criteria(self) -> list[str]:
        criteria: list[str] = self.cells[0].summary["criteria"]
        return criteria

    def configurations(self) -> list[Configuration]:
        """One per mode × gate (× variant), in grid order (modes outer), each with its runs."""
        result = []
        for mode in self.modes:
            for gate in self.gates:
                for variant in self.variants:
                    cells = tuple(c for c in self.cells if (c.mode, c.gate, c.variant) == (mode, gate, variant))
                    if cells:
                        result.append(Configuration(mode, gate, cells, variant))
        return result


def _read_summary(run_dir: Path, what: str) -> dict[str, Any]:
    path = run_dir / SUMMARY_FILE
    if not path.is_file():
        raise ConfigError(f"{what} has no {SUMMARY_FILE} ({run_dir}): its run has not finished")
    if not (run_dir / STORE_FILE).is_file():
        raise ConfigError(f"{what} has no {STORE_FILE} ({run_dir})")
    try:
        summary: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({' '.join(str(exc).split())})") from None
    return summary


def _attempts_by_purpose(store: RunStore) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for _request, _attempt, _track, _step, stage, purpose, _outcome in store.calls():
        counts[(stage, purpose)] = counts.get((stage, purpose), 0) + 1
    return counts


def _test_predictions(store: RunStore, summary: dict[str, Any]) -> RunTestScores | None:
    manifest = store.manifest()
    if not manifest.test_truths:
        return None
    tested = [s["step"] for s in summary["steps"] if s.get("macro_rho") is not None]
    return RunTestScores(
        ids=tuple(manifest.splits.get("test", ())),
        truths=dict(manifest.test_truths),
        scores={step: scores_on_test(store, manifest, step) for step in tested},
        resamples=manifest.config.bootstrap_resamples,
        seed=manifest.config.seed,
    )


def read_cell(run_dir: Path, name: str, what: str, variant: str | None = None) -> Cell:
    summary = _read_summary(run_dir, what)
    store = RunStore(run_dir)
    try:
        manifest = store.manifest()
        return Cell(
            name=name,
            mode=summary["mode"],
            gate=summary["gate"],
            summary=summary,
            diagnostics=tuple(store.diagnostics()),
            usage=store.usage_by_role(),
            call_times=store.call_times_by_stage(),
            attempts_by_purpose=_attempts_by_purpose(store),
            wall_seconds=store.wall_seconds(),
            variant=variant,
            test=_test_predictions(store, summary),
            routings=routing_interference.read(run_dir),
            judge_routing=manifest.policy.judge.routing,
            length_limits=(manifest.config.instruction_max_tokens, manifest.config.instruction_max_ratio),
        )
    finally:
        store.close()


def _load_experiment_study(directory: Path) -> Study:
    try:
        grid, base, _models = load_experiment(directory)
    except (ValidationError, ValueError, KeyError) as exc:
        raise ConfigError(f"{directory / EXPERIMENT_FILE}: not a valid experiment definition ({exc!r:.200})") from None
    cells = []
    for mode in grid.modes:
        for gate in grid.gates:
            for variant in grid.variant_names():
                for run in range(grid.runs):
                    name = cell_name(mode, gate, run, variant)
                    cells.append(read_cell(directory / "cells" / name, name, f"cell {name}", variant))
    interference_path = directory / INTERFERENCE_FILE
    interference = json.loads(interference_path.read_text(encoding="utf-8")) if interference_path.is_file() else None
    return Study(
        directory=directory,
        kind="experiment",
        modes=grid.modes,
        gates=grid.gates,
        runs=grid.runs,
        grid=grid.model_dump(mode="json"),
        run_settings=base.model_dump(mode="json"),
        cells=tuple(cells),
        interference=interference,
        variants=grid.variant_names(),
    )


def _load_run_study(directory: Path) -> Study:
    cell = read_cell(directory, directory.name, f"run directory {directory}")
    store = RunStore(directory)
    try:
        settings: dict[str, Any] = store.manifest().config.model_dump(mode="json")
    finally:
        store.close()
    grid = {"modes": [cell.mode], "gates": [cell.gate], "runs": 1, "diagnostics": bool(cell.diagnostics)}
    return Study(directory, "run", (cell.mode,), (cell.gate,), 1, grid, settings, (cell,), None)


def load_study(directory: Path) -> Study:
    """An experiment directory (``experiment.json``) or a run directory (``summary.json``), else a ConfigError."""
    if (directory / EXPERIMENT_FILE).is_file():
        return _load_experiment_study(directory)
    if (directory / SUMMARY_FILE).is_file():
        return _load_run_study(directory)
    if (directory / STORE_FILE).is_file():
        raise ConfigError(f"{directory} is a run directory with no {SUMMARY_FILE}: its run has not finished")
    raise ConfigError(
        f"{directory} is neither an experiment directory (no {EXPERIMENT_FILE}) nor a run directory (no {SUMMARY_FILE})"
    )
