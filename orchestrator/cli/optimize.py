"""``judgeopt optimize``: start a run (by default a quick one on the embedded local model)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from judgeopt.core.flags import add_model_flags
from judgeopt.core.roles import ROLES
from judgeopt.orchestrator.cli.flags import add_client_flags, add_run_flags, add_tracking_flags

HELP = "run an optimization (default: a quick run on the local model)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_flags(parser, ROLES)
    add_run_flags(parser)
    add_client_flags(parser)
    add_tracking_flags(parser)


def run(args: argparse.Namespace) -> int:

    from judgeopt.orchestrator.cli.flags import (
        addresses,
        client_settings,
        models_from_args,
        run_config,
        tracking_settings,
    )
    from judgeopt.orchestrator.cli.progress import run_with_progress
    from judgeopt.orchestrator.config import load_config
    from judgeopt.orchestrator.engine.run import prepare, start_run

    file_config = load_config(args.config)
    models = models_from_args(args, ROLES)
    config, models = run_config(args, file_config.run, models)
    settings = client_settings(args, addresses(args))
    tracking = tracking_settings(args, file_config.tracking)
    setup = prepare(config, models, args.data_dir)
    if args.dry_run:
        from judgeopt.orchestrator.cli.estimate import estimate_of, print_estimate

        title = f"dry run: {setup.policy.name}, {config.steps} steps"
        print_estimate(title, [estimate_of(setup)], setup.models)
        return 0
    run_dir = args.run_dir or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
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
        )
    finally:
        store.close()
