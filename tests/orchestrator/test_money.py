"""Money: prompt and completion prices per role, the dry run's cost, and a `--max-cost` budget that stops a run at a
step boundary."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers.fake_openai import FakeOpenAI
from helpers.runs import write_config
from helpers.scripts import deterministic_handler

from judgeopt.cli import main
from judgeopt.core.models import ModelsConfig
from judgeopt.orchestrator.engine.budget import CallEstimate, RunBudget, spend_by_role

PRICES = {"input_price_per_1k_tokens": 1.0, "output_price_per_1k_tokens": 3.0}


def test_prompt_and_completion_tokens_have_their_own_prices() -> None:
    """judge: 2,000 prompt tokens at 1.0 and 1,000 completion tokens at 3.0 per 1k; loss: one price for both."""
    models = ModelsConfig.model_validate(
        {"judge": PRICES, "loss": {"price_per_1k_tokens": 0.5}, "gradient": {"output_price_per_1k_tokens": 2.0}}
    )
    estimate = CallEstimate()
    estimate.add("judge", 10, 300, 100)
    estimate.add("loss", 4, 250, 50)
    estimate.add("gradient", 1, 1000, 500)
    estimate.add("optimizer", 1, 1000, 500)  # not priced
    assert estimate.cost_by_role(models) == pytest.approx({"judge": 5.0, "loss": 0.5, "gradient": 1.0})
    usage = {
        "judge": {"prompt_tokens": 2000, "completion_tokens": 1000},
        "optimizer": {"prompt_tokens": 9, "completion_tokens": 9},
    }
    assert spend_by_role(models, usage) == pytest.approx({"judge": 5.0})


def test_the_money_budget_refuses_the_step_that_could_exceed_it() -> None:
    models = ModelsConfig.model_validate({"default": PRICES})
    step = CallEstimate()
    step.add("judge", 10, 300, 100)  # 5.0
    budget = RunBudget(None, None, max_cost=8.0, models=models)
    assert budget.allows(0, 0, step, spent_cost=3.0)
    assert not budget.allows(0, 0, step, spent_cost=3.5)


def _dry_run_total(config: Path, capsys: pytest.CaptureFixture[str]) -> float:
    capsys.readouterr()
    assert main(["optimize", "--config", str(config), "--dry-run"]) == 0
    out = capsys.readouterr().out
    totals = [line for line in out.splitlines() if line.strip("│ ").startswith("total")]
    assert len(totals) == 1
    money = re.findall(r"\d+\.\d\d", totals[0])
    assert money, out
    return float(money[-1])


def test_dry_run_shows_money_and_max_cost_stops_at_a_step_boundary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The dry run of step 0 alone gives its cost; a budget a little above it lets step 0 run and stops before step
    1, whose estimate no longer fits; the run then spent less than its budget."""
    with FakeOpenAI(deterministic_handler()) as scripted:
        step_zero = write_config(tmp_path / "zero.yaml", scripted.base_url, model=PRICES, steps=0)
        first_step_cost = _dry_run_total(step_zero, capsys)
        assert first_step_cost > 0
        budget = round(first_step_cost * 1.05, 2)
        config = write_config(tmp_path / "run.yaml", scripted.base_url, model=PRICES, steps=2, max_cost=budget)
        assert _dry_run_total(config, capsys) > budget  # the whole run would cost more
        assert main(["optimize", "--config", str(config), "--run-dir", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "budget_reached"
    assert [step["step"] for step in summary["steps"]] == [0]
    assert 0 < summary["cost"]["total"] <= budget
    assert set(summary["cost"]["per_role"]) == {"judge"}
