"""Experiments: a grid of configurations (modes × gates × repeated runs), each cell a normal run directory.

All cells share one set of services, one local model server and one concurrency limit, and run concurrently.
A killed experiment resumes where it stopped: finished cells are not rerun, unfinished ones continue from their
last complete step. After the cells, the evaluator rates the diagnostics of every cell and the interference
experiment runs on the Single-Task cells.

    EXPERIMENT_DIR/experiment.json      the grid, the base run settings and the models (written first)
    EXPERIMENT_DIR/cells/<mode>-<gate>-run<k>/   one run directory per cell
    EXPERIMENT_DIR/services/            the shared services' logs and ledgers
    EXPERIMENT_DIR/interference.json    the interference results
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import structlog
from pydantic import ValidationError

from judgeopt.core.errors import ConfigError, describe_validation_error
from judgeopt.core.files import DirectoryLock
from judgeopt.core.hub_model import LocalModel
from judgeopt.core.models import ModelsConfig
from judgeopt.core.private_files import private_dir, write_private_text
from judgeopt.core.roles import ALL_ROLES, ROLES, Role
from judgeopt.orchestrator.agent_clients import ClientSettings
from judgeopt.orchestrator.config import GridConfig, MlflowSettings, RunConfig
from judgeopt.orchestrator.data.loading import load_dataset
from judgeopt.orchestrator.data.records import DatasetConfig
from judgeopt.orchestrator.engine.executor import CallExecutor, CallRetries
from judgeopt.orchestrator.engine.policy import PRESETS
from judgeopt.orchestrator.engine.priority import PriorityLimiter
from judgeopt.orchestrator.engine.ratelimit import RateLimits
from judgeopt.orchestrator.engine.run import (
    RunSetup,
    agent_clients,
    default_concurrency,
    open_run,
    policy_of,
    run_with_clients,
    start_run,
)
from judgeopt.orchestrator.engine.store import RunStore
from judgeopt.orchestrator.engine.summary import refresh_spend
from judgeopt.orchestrator.errors import PolicyError
from judgeopt.orchestrator.study.diagnostics import rate_run
from judgeopt.orchestrator.study.interference import SELECTION_LABELS, SelectOn, picks_of, stitch_and_score
from judgeopt.orchestrator.tracking import MlflowTracker, RunTracking, TrackedRun

log = structlog.get_logger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

EXPERIMENT_FILE = "experiment.json"
INTERFERENCE_FILE = "interference.json"


@dataclass(frozen=True)
class CallContext:
    """What every call of an experiment shares: the concurrency limit and the endpoints' rate limits."""

    limit: PriorityLimiter
    rates: RateLimits


STUDY_RUN = RunConfig(dataset=DatasetConfig(name="summeval-wgc"))
"""The study's settings: 12 steps, batch 3, validation on 100 samples, its exact 160/480 split."""


def experiment_run(file_run: RunConfig | None, origin: str) -> tuple[RunConfig, str | None]:
    """The base run of an experiment: the grid file's ``run`` section (``None``: no file, the study's settings).
    A file that names no dataset gets the experiment's default data (the study's split, as without a file) rather
    than the single-run default; the second value says so, naming the file."""
    if file_run is None:
        return STUDY_RUN, None
    if "name" in file_run.dataset.model_fields_set:
        return file_run, None
    given = file_run.model_dump(mode="json", exclude_unset=True)
    dataset = {**given.get("dataset", {}), "name": STUDY_RUN.dataset.name}
    note = f"{origin} names no dataset (run.dataset.name): using {STUDY_RUN.dataset.name}, the experiments' default"
    return RunConfig.model_validate({**given, "dataset": dataset}), note


def cell_name(mode: str, gate: str, run: int, variant: str | None = None) -> str:
    return f"{mode}-{gate}-{variant}-run{run}" if variant else f"{mode}-{gate}-run{run}"


def cell_configs(grid: GridConfig, base: RunConfig) -> dict[str, RunConfig]:
    for mode in grid.modes:
        if mode not in PRESETS:
            raise ConfigError(f"grid: unknown mode {mode!r} (presets: {', '.join(PRESETS)})")
    cells = {}
    for mode in grid.modes:
        for gate in grid.gates:
            for variant in grid.variant_names():
                for run in range(grid.runs):
                    name = cell_name(mode, gate, run, variant)
                    data = {
                        **base.model_dump(mode="json"),
                        **(grid.variants[variant] if variant else {}),
                        "mode": mode,
                        "gate": gate,
                        "seed": base.seed + run,
                    }
                    try:
                        cells[name] = RunConfig.model_validate(data)
                        policy_of(cells[name])  # a variant's judge routing must suit the cell's policy
                    except ValidationError as exc:
                        raise ConfigError(f"grid cell {name}: {describe_validation_error(exc)}") from None
                    except PolicyError as exc:
                        raise PolicyError(f"grid cell {name}: {exc}") from None
    return cells


def create_experiment(directory: Path, grid: GridConfig, base: RunConfig, models: ModelsConfig) -> None:
    """Write the experiment's definition (an endpoint's ``user:password@`` as ``REDACTED@``); refuses a directory
    that already holds one (resume it instead)."""
    if (directory / EXPERIMENT_FILE).exists():
        raise ConfigError(
            f"{directory} already holds an experiment; resume it with `judgeopt experiment --resume {directory}`"
        )
    cell_configs(grid, base)  # refuse a bad grid before writing anything
    private_dir(directory)
    definition = {
        "grid": grid.model_dump(mode="json"),
        "run": base.model_dump(mode="json"),
        "models": models.redacted().model_dump(mode="json"),
    }
    write_private_text(directory / EXPERIMENT_FILE, json.dumps(definition, indent=2) + "\n")


def load_experiment(directory: Path) -> tuple[GridConfig, RunConfig, ModelsConfig]:
    path = directory / EXPERIMENT_FILE
    if not path.is_file():
        raise ConfigError(f"{directory} holds no experiment (no {EXPERIMENT_FILE})")
    data = json.loads(path.read_text())
    return (
        GridConfig.model_validate(data["grid"]),
        RunConfig.model_validate(data["run"]),
        ModelsConfig.model_validate(data["models"]),
    )


def _cell_store_status(run_dir: Path) -> str | None:
    if not (run_dir / "run.sqlite").is_file():
        return None
    store = open_run(run_dir)
    try:
        return store.status
    finally:
        store.close()


def _one_process_at_a_time(
    run: Callable[Concatenate[Path, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[Path, P], Coroutine[Any, Any, T]]:
    """``run(directory, ...)`` holding the experiment directory's lock (a directory that holds no experiment is
    refused first, and not created): a second process is refused before it starts any service, naming the first's
    pid. Each cell's run directory is locked by its own store too."""

    @functools.wraps(run)
    async def locked(directory: Path, /, *args: P.args, **kwargs: P.kwargs) -> T:
        load_experiment(directory)
        with DirectoryLock(directory):
            return await run(directory, *args, **kwargs)

    return locked


@_one_process_at_a_time
async def run_experiment(
    directory: Path,
    *,
    data_dir: Path | None,
    local_model: LocalModel | None = None,
    on_cell_step: Callable[[str, str, int], None] | None = None,
    addresses: Mapping[Role, str] | None = None,
    client_settings: ClientSettings | None = None,
    models: ModelsConfig | None = None,
    tracking: MlflowSettings | None = None,
) -> dict[str, Any]:
    """Run or resume the experiment in ``directory``, on services started here or running at ``addresses`` (one
    per role the grid needs); returns a small overview (cells run, skipped). ``models``: the settings as the
    invocation gave them (with any endpoint credentials, stored redacted); by default the experiment's.
    ``tracking``: log to MLflow, the experiment as a parent run and each cell run here as its child."""
    tracker = MlflowTracker(tracking) if tracking is not None else None
    parent = tracker.run(directory, directory.name) if tracker is not None else None
    if parent is not None:
        parent.params(_grid_params(directory))
    try:
        overview = await _run_cells(
            directory, data_dir, local_model, on_cell_step, addresses, client_settings, models, parent
        )
    except BaseException:
        if parent is not None:
            parent.end("FAILED")
        raise
    else:
        if parent is not None:
            parent.files([directory / EXPERIMENT_FILE, directory / INTERFERENCE_FILE])
            parent.end("FINISHED")
    finally:
        if tracker is not None:
            tracker.close()
    return overview


def _grid_params(directory: Path) -> dict[str, str]:
    """The grid's settings as params of the experiment's MLflow run."""
    grid, base, models = load_experiment(directory)
    params = {f"grid.{k}": str(v) for k, v in grid.model_dump(mode="json").items() if k != "variants"}
    params |= {"grid.variants": ",".join(grid.variants), "steps": str(base.steps), "batch_size": str(base.batch_size)}
    params |= {"dataset": base.dataset.name, "seed": str(base.seed)}
    params |= {f"model.{role}": models.for_role(role).model for role in ROLES}  # names only: keys are never stored
    return params


async def _run_cells(
    directory: Path,
    data_dir: Path | None,
    local_model: LocalModel | None,
    on_cell_step: Callable[[str, str, int], None] | None,
    addresses: Mapping[Role, str] | None,
    client_settings: ClientSettings | None,
    models: ModelsConfig | None,
    parent: TrackedRun | None,
) -> dict[str, Any]:
    grid, base, stored = load_experiment(directory)
    models = models or stored
    cells = cell_configs(grid, base)
    dataset = load_dataset(base.dataset, data_dir)
    roles: tuple[Role, ...] = ALL_ROLES if grid.diagnostics else ROLES
    limit = PriorityLimiter(default_concurrency(base, models))
    rates = RateLimits(models, roles, window=base.rate_window_seconds)
    finished = [name for name in cells if _cell_store_status(directory / "cells" / name) == "complete"]
    log.info("experiment.start", cells=len(cells), finished=len(finished))

    async def run_cell(name: str, config: RunConfig, clients: Any) -> None:
        run_dir = directory / "cells" / name
        if (run_dir / "run.sqlite").is_file():
            store = open_run(run_dir, writer=True)
        else:
            store = start_run(RunSetup(config, models, policy_of(config), dataset), run_dir)
        tracked = RunTracking(parent.child(run_dir, name), store) if parent is not None else None

        def step_hook(track: str, step: int) -> None:
            if on_cell_step is not None:
                on_cell_step(name, track, step)
            if tracked is not None:
                tracked.step(track, step)

        try:
            summary = await run_with_clients(
                store,
                run_dir,
                clients,
                data_dir=data_dir,
                limit=limit,
                rate_limits=rates,
                on_step=step_hook,
                dataset=dataset,
            )
            if grid.diagnostics:
                await _rate(store, run_dir, clients, limit, rates)
            if tracked is not None:
                tracked.finished(summary, run_dir)
        except BaseException:
            if tracked is not None:
                tracked.tracked.end("FAILED")
            raise
        finally:
            store.close()

    async with agent_clients(
        models,
        directory / "services",
        addresses=addresses,
        local_model=local_model,
        roles=roles,
        settings=client_settings,
    ) as clients:
        pending = [run_cell(name, config, clients) for name, config in cells.items() if name not in finished]
        if grid.diagnostics:  # finished cells may still lack ratings (a kill during diagnostics)
            pending += [_rate_finished(directory / "cells" / name, clients, limit, rates) for name in finished]
        await asyncio.gather(*pending)
        if grid.interference and "single" in grid.modes:
            await _interference(directory, cells, clients, CallContext(limit, rates), dataset, grid.select_on)
    return {"cells": len(cells), "skipped": finished}


async def _rate(store: RunStore, run_dir: Path, clients: Any, limit: PriorityLimiter, rates: RateLimits) -> None:
    """The evaluator's diagnostics of a finished cell, then its summary's spend again, so that it includes them."""
    attempts = store.manifest().config.call_attempts
    executor = CallExecutor(store, limit=limit, retries=CallRetries(attempts=attempts), rate_limits=rates)
    await rate_run(store, clients, executor)
    refresh_spend(store, run_dir)


async def _rate_finished(run_dir: Path, clients: Any, limit: PriorityLimiter, rates: RateLimits) -> None:
    store = open_run(run_dir, writer=True)
    try:
        await _rate(store, run_dir, clients, limit, rates)
    finally:
        store.close()


async def _interference(
    directory: Path,
    cells: dict[str, RunConfig],
    clients: Any,
    shared: CallContext,
    dataset: Any,
    select_on: SelectOn,
) -> None:
    """The study's interference experiment per gate setting (gated and ungated runs are never pooled): each
    criterion's best instruction over all the setting's Single-Task runs, stitched. Calls are recorded in the
    setting's first Single-Task run."""
    by_gate: dict[str, list[str]] = {}
    for name, config in cells.items():
        if config.mode == "single":
            by_gate.setdefault(config.gate, []).append(name)
    gates: dict[str, Any] = {}
    for gate, names in by_gate.items():
        owner = open_run(directory / "cells" / names[0], writer=True)
        readers = [open_run(directory / "cells" / name) for name in names[1:]]
        try:
            stores = dict(zip(names, [owner, *readers], strict=True))
            picks = picks_of(stores, [c.name for c in dataset.criteria], select_on)
            attempts = CallRetries(attempts=cells[names[0]].call_attempts)
            executor = CallExecutor(owner, limit=shared.limit, retries=attempts, rate_limits=shared.rates)
            gates[gate] = {"cells": names} | await stitch_and_score(owner, picks, clients, executor, dataset)
        finally:
            for store in (owner, *readers):
                store.close()
    interference = {"select_on": select_on, "label": SELECTION_LABELS[select_on], "gates": gates}
    write_private_text(directory / INTERFERENCE_FILE, json.dumps(interference, indent=2) + "\n")
