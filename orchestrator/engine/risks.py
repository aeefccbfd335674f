"""Settings that make a run risky to trust, said once when a run starts and kept in its summary.

Without a validation gate (``gate: none``) every candidate prompt is accepted. The candidates are written by the
optimizer model from feedback that is itself model text shaped by the training samples, so a sample that injects
instructions (the study's second-order prompt injection) can steer a rewritten prompt that then goes into use with
nothing checking it.
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog

from judgeopt.orchestrator.config import RunConfig

log = structlog.get_logger(__name__)

UNGATED = (
    "gate none: every candidate prompt is accepted without validation, so a prompt the optimizer model wrote (steered, "
    "say, by instructions injected through a sample into its feedback) goes into use unchecked; use --gate mae "
    "unless you review the prompt of every step"
)


def run_risks(config: RunConfig) -> list[str]:
    """What makes a run with ``config`` risky, one sentence each (``summary.json``'s ``warnings``)."""
    return [UNGATED] if config.gate == "none" else []


def warn_risks(configs: Iterable[RunConfig]) -> list[str]:
    """Log each distinct risk of ``configs`` once (an experiment's many ungated cells warn once); returns them."""
    risks = list(dict.fromkeys(risk for config in configs for risk in run_risks(config)))
    for risk in risks:
        log.warning("run.risk", risk=risk)
    return risks
