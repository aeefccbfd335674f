"""``judgeopt resume RUN_DIR``: continue a stopped run from its last complete step."""

from __future__ import annotations

import argparse
from pathlib import Path

from judgeopt.core.flags import add_local_model_flag
from judgeopt.core.roles import ROLES
from judgeopt.orchestrator.cli.flags import add_address_flags, add_budget_flags, add_client_flags, add_tracking_flags

HELP = "continue a stopped run from its last complete step"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="the run directory (as given to optimize --run-dir)")
    parser.add_argument("--data-dir", type=Path, help="folder holding the SummEval files")
    add_local_model_flag(parser)
    add_budget_flags(parser.add_argument_group("budget (replaces the run's)"))
    add_address_flags(parser, ROLES)
    add_client_flags(parser)
    add_tracking_flags(parser)


def run(args: argparse.Namespace) -> int:

    from judgeopt.core.flags import given
    from judgeopt.orchestrator.cli.flags import addresses, client_settings, tracking_settings, validated_run_config
    from judgeopt.orchestrator.cli.progress import run_with_progress
    from judgeopt.orchestrator.engine.run import open_run

    settings = client_settings(args, addresses(args))
    store = open_run(args.run_dir, writer=True)
    budget = given({"max_calls": args.max_calls, "max_tokens": args.max_tokens})
    if budget:  # resuming with a larger budget
        manifest = store.manifest()
        config = validated_run_config({**manifest.config.model_dump(mode="json"), **budget})
        store.write_manifest(manifest.model_copy(update={"config": config}))
    try:
        tracking = tracking_settings(args, None, args.run_dir)
        return run_with_progress(store, args.run_dir, args, tracking=tracking, client_settings=settings)
    finally:
        store.close()
