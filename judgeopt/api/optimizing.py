"""Starting an optimization run from Python, as ``judgeopt optimize --config`` does but without a progress bar."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from judgeopt.api._common import PathLike, as_local_model, as_path, quiet_logging, translated_errors
from judgeopt.api._sync import run_sync
from judgeopt.api.runs import Run
from judgeopt.core.errors import ConfigError, describe_validation_error
from judgeopt.core.roles import ROLES, Role
from judgeopt.orchestrator.config import JudgeoptConfig, load_config
from judgeopt.orchestrator.engine.risks import warn_risks
from judgeopt.orchestrator.engine.run import execute, prepare, start_run
from judgeopt.orchestrator.tracking import run_tracking

ConfigSource = Mapping[str, Any] | PathLike
"""A config file's path, or its content as a mapping (``models:``, ``run:``, ``tracking:``; ``grid:`` and
``service:`` are accepted and unused). Relative paths in a mapping are relative to the working directory, in a file
to the file."""


def _config(config: ConfigSource) -> JudgeoptConfig:
    if isinstance(config, Mapping):
        try:
            return JudgeoptConfig.model_validate(dict(config))
        except ValidationError as exc:
            raise ConfigError(f"config: {describe_validation_error(exc)}") from None
    if isinstance(config, str | os.PathLike):
        return load_config(Path(config))
    raise ConfigError(f"config must be a mapping or a config file's path, got {type(config).__name__}")


def _addresses(addresses: Mapping[str, str] | None) -> dict[Role, str] | None:
    """Every role's running service, or ``None`` to start the services here."""
    if addresses is None:
        return None
    unknown = sorted(set(addresses) - set(ROLES))
    missing = [role for role in ROLES if not addresses.get(role)]
    if unknown or missing:
        problem = f"unknown role {unknown[0]!r}" if unknown else f"no address for {missing[0]!r}"
        raise ConfigError(f"addresses: {problem}; give one for each of {', '.join(ROLES)}, or none")
    return {role: addresses[role] for role in ROLES}


async def optimize_async(
    config: ConfigSource,
    *,
    run_dir: PathLike | None = None,
    data_dir: PathLike | None = None,
    local_model: PathLike | None = None,
    addresses: Mapping[str, str] | None = None,
) -> Run:
    """Run an optimization to its end and return it (or the ``JudgeoptError`` that stopped it).

    The run settings are ``config``'s ``run`` section exactly as given, ``RunConfig``'s defaults (the study's: 12
    steps, batch 3, …) filling the rest. Unlike ``judgeopt optimize``, no quick profile is applied on the local
    model: set ``steps``, ``batch_size`` and the dataset sizes for a short run. The four agent services are started
    as processes here (with the embedded local model for roles whose ``models`` settings name no endpoint,
    ``local_model`` choosing its GGUF file: a path, or a Hugging Face Hub reference as ``--local-model`` takes it),
    unless ``addresses`` gives a running service per role. The run is stored in ``run_dir`` (default
    ``runs/<timestamp>``, which must not hold a run yet; ``judgeopt resume`` goes on with a run that was stopped);
    SummEval data is read from ``data_dir`` or the usual places. With a ``tracking: {mlflow: …}`` section the run is
    logged to MLflow as ``judgeopt optimize --mlflow`` logs it."""
    parsed = _config(config)
    given = _addresses(addresses)
    quiet_logging()
    directory = as_path(run_dir) or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    data = as_path(data_dir)
    with translated_errors():
        setup = prepare(parsed.run, parsed.models, data)
        store = start_run(setup, directory)
        warn_risks([setup.config])
        try:
            with run_tracking(parsed.tracking.mlflow, store, directory) as tracked:
                summary = await execute(
                    store,
                    directory,
                    data_dir=data,
                    addresses=given,
                    local_model=as_local_model(local_model),
                    on_step=tracked.step if tracked else None,
                    dataset=setup.dataset,
                    models=setup.models,
                )
                if tracked is not None:
                    tracked.finished(summary, directory)
        finally:
            store.close()
    return Run(directory)


def optimize(
    config: ConfigSource,
    *,
    run_dir: PathLike | None = None,
    data_dir: PathLike | None = None,
    local_model: PathLike | None = None,
    addresses: Mapping[str, str] | None = None,
) -> Run:
    """The synchronous twin of :func:`optimize_async` (in a running event loop, e.g. Jupyter, it runs in a worker
    thread while the caller waits)."""
    return run_sync(
        lambda: optimize_async(config, run_dir=run_dir, data_dir=data_dir, local_model=local_model, addresses=addresses)
    )
