"""Dry runs: the calls (at most), tokens and cost (estimates) of a run or a grid of runs, without any call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from judgeopt.core.roles import ROLES

if TYPE_CHECKING:
    from judgeopt.core.models import ModelsConfig
    from judgeopt.orchestrator.engine.budget import CallEstimate
    from judgeopt.orchestrator.engine.run import RunSetup


def estimate_of(setup: RunSetup) -> CallEstimate:
    """What one run will cost at most: every step changing the prompt, no call answered from the cache."""
    from judgeopt.orchestrator.data.splits import split_dataset
    from judgeopt.orchestrator.engine.budget import estimate_run
    from judgeopt.orchestrator.engine.run import initial_prompt, tracks_for

    config, criteria = setup.config, setup.dataset.criteria
    tracks = tracks_for(setup.policy, criteria, initial_prompt(config, criteria, setup.dataset))
    return estimate_run(
        setup.policy,
        [len(t.criteria) for t in tracks],
        split_dataset(setup.dataset, config.dataset),
        setup.models,
        steps=config.steps,
        batch=config.batch_size,
        test_interval=config.test_interval,
    )


def print_estimate(title: str, estimates: Sequence[CallEstimate], models: ModelsConfig) -> None:
    """One table: calls, tokens and (with prices configured) cost per role, summed over ``estimates``."""
    from rich.console import Console
    from rich.table import Table

    from judgeopt.orchestrator.engine.budget import CallEstimate

    total = CallEstimate()
    for estimate in estimates:
        total.merge(estimate)
    table = Table(title=f"{title} — no call made")
    for column in ("role", "calls (at most)", "tokens (estimate)", "cost (estimate)"):
        table.add_column(column, justify="left" if column == "role" else "right")
    costs = total.cost_by_role(models)
    for role in ROLES:
        cost = costs.get(role)
        table.add_row(
            role, str(total.calls.get(role, 0)), str(total.tokens.get(role, 0)), "—" if cost is None else f"{cost:.2f}"
        )
    money = f"{sum(costs.values()):.2f}" if costs else "— (no prices set)"
    table.add_row("total", str(total.total_calls), str(total.total_tokens), money)
    Console().print(table)
