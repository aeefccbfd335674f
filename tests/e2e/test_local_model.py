"""The real embedded model (SmolLM2 via llama.cpp) behind the four services: structure, never wording."""

from __future__ import annotations

from pathlib import Path

import pytest
from orchestrator.data import SUMMEVAL_FILE, find_data_file, load_summeval
from orchestrator.single_pass import INITIAL_INSTRUCTION, run_single_pass

from agents.config import ModelsConfig
from agents.local_model import LocalModelServer
from orchestrator.agent_clients import AgentClients
from orchestrator.fleet import ServiceFleet
from protos.judgeopt.v1 import common_pb2

USABLE = (common_pb2.PARSE_STATUS_OK, common_pb2.PARSE_STATUS_REPAIRED)


class TestLocalModelPass:
    @pytest.mark.timeout(900)
    async def test_full_pass_through_the_four_services(self, local_llm: LocalModelServer, tmp_path: Path) -> None:
        """judge → loss → gradient → optimizer on two SummEval summaries: every judge reply parses into in-range
        scores (constrained output), and every optimizer call returns a non-empty instruction that differs from
        the initial one."""
        every = load_summeval(find_data_file(SUMMEVAL_FILE))
        shortest = min(every, key=lambda r: len(r.source)).source  # the cheapest article on two cores
        rows = [r for r in every if r.source == shortest][:2]
        models = ModelsConfig(
            default={
                "base_url": local_llm.base_url,
                "model": local_llm.model_name,
                "structured_output": "json_object_schema",
            },
            # keep the pass short on two cores: the small model rambles up to max_tokens otherwise
            loss={"max_tokens": 96},
            gradient={"max_tokens": 160},
            optimizer={"max_tokens": 160},
        )
        async with ServiceFleet(models, tmp_path) as fleet, AgentClients(fleet.addresses) as clients:
            result = await run_single_pass(clients, rows)

        assert len(result.predictions) == 2
        for prediction in result.predictions:
            assert [s.criterion for s in prediction.scores] == ["coherence", "consistency", "fluency", "relevance"]
            for score in prediction.scores:
                assert score.status in USABLE, prediction.raw_output
                assert 1 <= score.value <= 5 and score.value == int(score.value)
        assert len(result.critiques) == 8 and all(c.text for c in result.critiques)
        assert len(result.gradients) == 8
        assert all(g.keep or g.problem or g.fix for g in result.gradients)
        usable_steps = [
            i for i, s in zip(result.new_instructions, result.optimizer_status.values(), strict=True) if s in USABLE
        ]
        assert usable_steps, f"no optimizer reply was usable: {result.optimizer_status}"
        for instruction in result.new_instructions:
            assert instruction.text.strip()
        for instruction in usable_steps:
            assert instruction.text.strip() != INITIAL_INSTRUCTION
        assert result.usage["judge"].llm_calls == 2
        assert result.usage["optimizer"].llm_calls == 4
