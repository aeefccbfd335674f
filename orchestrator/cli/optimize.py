"""``judgeopt optimize``: start a run (by default a quick one on the embedded local model)."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from judgeopt.core.flags import add_model_flags
from judgeopt.core.roles import ROLES
from judgeopt.orchestrator.cli.flags import add_client_flags, add_run_flags, add_tracking_flags

if TYPE_CHECKING:
    from judgeopt.core.models import ModelsConfig
    from judgeopt.orchestrator.agent_clients import ClientSettings
    from judgeopt.orchestrator.config import MlflowSettings, RunConfig
    from judgeopt.orchestrator.fleet import ServiceFleet

HELP = "run an optimization (default: a quick run on the local model)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_flags(parser, ROLES)
    add_run_flags(parser)
    add_client_flags(parser)
    add_tracking_flags(parser)


def run(args: argparse.Namespace) -> int:
    from judgeopt.orchestrator.cli.flags import addresses
    from judgeopt.orchestrator.service_processes import warm_up

    starts_services = not (args.dry_run or addresses(args))
    if starts_services:
        # The services' code is imported (once, by the fork server) while this process does the rest of its start-up:
        # its own imports, the config, the data and, on the embedded model, the model server.
        warm_up()

    from judgeopt.orchestrator.cli.flags import client_settings, models_from_args, run_config, tracking_settings
    from judgeopt.orchestrator.config import load_config
    from judgeopt.orchestrator.engine import STORE_FILE
    from judgeopt.orchestrator.fleet import spawn_early

    file_config = load_config(args.config)
    models = models_from_args(args, ROLES)
    config, models = run_config(args, file_config.run, models)
    settings = client_settings(args, addresses(args))
    tracking = tracking_settings(args, file_config.tracking)
    run_dir = args.run_dir or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    created = not run_dir.exists()
    spawned = spawn_early(models, run_dir, token_env=settings.token_env) if starts_services else None
    try:
        return _optimize(args, config, models, settings, tracking, run_dir, spawned)
    finally:
        if spawned is not None:
            spawned.stop()
            if created and not (run_dir / STORE_FILE).exists():  # refused before it started: leave nothing behind
                shutil.rmtree(run_dir, ignore_errors=True)


def _optimize(
    args: argparse.Namespace,
    config: RunConfig,
    models: ModelsConfig,
    settings: ClientSettings,
    tracking: MlflowSettings | None,
    run_dir: Path,
    spawned: ServiceFleet | None,
) -> int:
    from judgeopt.orchestrator.cli.progress import run_with_progress
    from judgeopt.orchestrator.engine.run import prepare, start_run

    setup = prepare(config, models, args.data_dir)
    if args.dry_run:
        from judgeopt.orchestrator.cli.estimate import estimate_of, print_estimate

        title = f"dry run: {setup.policy.name}, {config.steps} steps"
        print_estimate(title, [estimate_of(setup)], setup.models)
        return 0
    store = start_run(setup, run_dir)
    try:
        return run_with_progress(
            store,
            run_dir,
            args,
            tracking=tracking,
            dataset=setup.dataset,
            client_settings=settings,
            models=setup.models,
            spawned=spawned,
        )
    finally:
        store.close()
