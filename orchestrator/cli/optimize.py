"""``judgeopt optimize``: start a run (by default a quick one on the embedded local model)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from judgeopt.core.flags import add_model_flags
from judgeopt.core.roles import ROLES
from judgeopt.orchestrator.cli.flags import add_client_flags, add_run_flags

HELP = "run an optimization (default: a quick run on the local model)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_flags(parser, ROLES)
    add_run_flags(parser)
    add_client_flags(parser)


def run(args: argparse.Namespace) -> int:
    import logging

    from judgeopt.core.log_setup import configure_logging
    from judgeopt.orchestrator.cli.flags import addresses, client_settings, models_from_args, run_config
    from judgeopt.orchestrator.cli.progress import run_with_progress
    from judgeopt.orchestrator.config import load_config
    from judgeopt.orchestrator.engine.run import prepare, start_run

    configure_logging(json=False, level=logging.WARNING)
    file_config = load_config(args.config)
    models = models_from_args(args, ROLES)
    config = run_config(args, file_config.run, models)
    settings = client_settings(args, addresses(args))
    setup = prepare(config, models, args.data_dir)
    if args.dry_run:
        print_estimate(setup)
        return 0
    run_dir = args.run_dir or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    store = start_run(setup, run_dir)
    try:
        return run_with_progress(store, run_dir, args, dataset=setup.dataset, client_settings=settings)
    finally:
        store.close()


def print_estimate(setup: Any) -> None:
    """The dry run's table: calls (at most), tokens and cost (estimates) per role."""
    from rich.console import Console
    from rich.table import Table

    from judgeopt.orchestrator.data.splits import split_dataset
    from judgeopt.orchestrator.engine.budget import estimate_run
    from judgeopt.orchestrator.engine.run import initial_prompt, tracks_for

    config, criteria = setup.config, setup.dataset.criteria
    tracks = tracks_for(setup.policy, criteria, initial_prompt(config, criteria, setup.dataset))
    splits = split_dataset(setup.dataset, config.dataset)
    estimate = estimate_run(
        setup.policy,
        [len(t.criteria) for t in tracks],
        splits,
        setup.models,
        steps=config.steps,
        batch=config.batch_size,
        test_interval=config.test_interval,
    )
    table = Table(title=f"dry run: {setup.policy.name}, {config.steps} steps — no call made")
    for column in ("role", "calls (at most)", "tokens (estimate)", "cost (estimate)"):
        table.add_column(column, justify="left" if column == "role" else "right")
    for role in ROLES:
        price = setup.models.for_role(role, local_base_url="http://local").price_per_1k_tokens
        tokens = estimate.tokens.get(role, 0)
        cost = "—" if price is None else f"{tokens / 1000 * price:.2f}"
        table.add_row(role, str(estimate.calls.get(role, 0)), str(tokens), cost)
    table.add_row("total", str(estimate.total_calls), str(estimate.total_tokens), "")
    Console().print(table)
