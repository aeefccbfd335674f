"""Swapping one role's model: the gradient role on its own endpoint, everything else untouched."""

from __future__ import annotations

from pathlib import Path

from helpers.fake_openai import FakeOpenAI
from helpers.scripts import agent_roles_handler, fake_models, role_of

from orchestrator.agent_clients import AgentClients
from orchestrator.data import SummevalRow
from orchestrator.fleet import ServiceFleet
from orchestrator.single_pass import run_single_pass

ROWS = [
    SummevalRow(
        id=f"doc/{n}",
        source="A long article.",
        summary=f"Summary {n}.",
        scores={"coherence": 3, "consistency": 5, "fluency": 4.333, "relevance": 2},
    )
    for n in range(2)
]


class TestModelSwap:
    async def test_only_gradient_calls_reach_the_gradient_endpoint(self, tmp_path: Path) -> None:
        """With the gradient role pointed at a second endpoint, that endpoint sees gradient calls and nothing else,
        and the first endpoint sees no gradient call."""
        with FakeOpenAI(agent_roles_handler()) as main, FakeOpenAI(agent_roles_handler()) as second:
            models = fake_models(main.base_url, gradient={"base_url": second.base_url, "model": "gradient-model"})
            async with ServiceFleet(models, tmp_path) as fleet, AgentClients(fleet.addresses) as clients:
                result = await run_single_pass(clients, ROWS)
            main_roles = [role_of(r) for r in main.requests]
            second_roles = [role_of(r) for r in second.requests]
        assert second_roles == ["gradient"] * 8  # B samples x K criteria
        assert {r.model for r in second.requests} == {"gradient-model"}
        assert sorted(set(main_roles)) == ["judge", "loss", "optimizer"]
        assert main_roles.count("judge") == 2 and main_roles.count("loss") == 8 and main_roles.count("optimizer") == 4
        assert result.usage["gradient"].model == "gradient-model"
        assert result.usage["judge"].model == "fake-model"
