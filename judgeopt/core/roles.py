"""The agent roles, by name."""

from __future__ import annotations

from typing import Literal

Role = Literal["judge", "loss", "gradient", "optimizer", "evaluator"]
ROLES: tuple[Role, ...] = ("judge", "loss", "gradient", "optimizer")
"""The roles of the optimization loop."""
ALL_ROLES: tuple[Role, ...] = (*ROLES, "evaluator")
"""Plus the evaluator, which rates diagnostics of finished runs."""
