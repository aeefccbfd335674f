"""Length limits through a whole run on the scripted endpoint: carried in the optimizer's requests, an over-long
rewrite asked for again and then not applied, and every step's instruction lengths and asymmetry in summary.json."""

from __future__ import annotations

import json
from pathlib import Path

from helpers.runs import scripted_run
from helpers.scripts import deterministic_handler

from judgeopt.core.tokens import approx_tokens
from judgeopt.orchestrator.engine.artifacts import PromptState
from judgeopt.orchestrator.engine.lengths import asymmetry, instruction_lengths, instruction_limits

INITIAL = "Rate from 1 to 5."
LIMIT = 8
"""Above the initial instruction's length, below every rewrite the scripted optimizer writes."""


def test_over_long_rewrites_are_asked_again_then_kept_out(tmp_path: Path) -> None:
    assert approx_tokens(INITIAL) <= LIMIT < approx_tokens("Rate from 1 to 5, revision 1.")
    run = scripted_run(tmp_path, deterministic_handler(), mode="CCC", steps=1, instruction_max_tokens=LIMIT)
    assert run.code == 0
    requests = [r.last_user_text for r in run.by_role("optimizer")]
    first = [t for t in requests if "too long" not in t]
    again = [t for t in requests if "too long" in t]
    assert len(first) == len(again) == 1  # the joint rewrite was over its limits, so it was asked once more
    assert all(f"at most {LIMIT}" in t for t in requests)
    summary = json.loads((run.run_dir / "summary.json").read_text())
    steps = summary["steps"]
    assert [s["step"] for s in steps] == [0, 1]
    criteria = list(steps[0]["instruction_tokens"])
    assert len(criteria) == 4
    for step in steps:
        assert step["instruction_tokens"] == dict.fromkeys(criteria, approx_tokens(INITIAL))
        assert step["length_asymmetry"] == 1.0
        assert step["length_rejected"] == ([] if step["step"] == 0 else sorted(criteria))
    assert "instruction_max_tokens" in summary["differs_from_study"]


def test_limits_take_the_smaller_of_absolute_and_relative() -> None:
    prompt = PromptState("task", (("a", "one two three four ."), ("b", "one ."), ("c", "one two three .")))
    assert instruction_lengths(prompt) == {"a": 5, "b": 2, "c": 4}
    assert asymmetry(instruction_lengths(prompt)) == 2.5
    assert instruction_limits(prompt, None, None) == {}
    assert instruction_limits(prompt, None, 2.0) == dict.fromkeys("abc", 8)  # twice the median, 4
    assert instruction_limits(prompt, 6, 2.0) == dict.fromkeys("abc", 6)
    assert instruction_limits(prompt, 9, 2.0) == dict.fromkeys("abc", 8)
