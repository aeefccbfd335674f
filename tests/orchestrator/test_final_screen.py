"""The closing paragraph of `judgeopt optimize` (the whole final screen is checked on a scripted run by
tests/e2e/test_bare_clone.py)."""

from __future__ import annotations

from judgeopt.orchestrator.cli.closing import capable_endpoint_command, hub_judge_command, next_commands, what_it_shows


def test_on_the_demo_judge_the_paragraph_says_so() -> None:
    text = what_it_shows({"initial": None, "best": None, "delta_macro_rho": None}, demo_judge=True)
    assert "demo judge" in text and "not a result" in text


def test_on_an_endpoint_it_states_the_result_and_names_constant_criteria() -> None:
    initial = {"macro_rho": 0.1, "step": 0, "constant": []}
    best = {"macro_rho": 0.25, "step": 3, "constant": ["fluency"]}
    summary = {"initial": initial, "best": best, "delta_macro_rho": {"value": 0.15, "ci95": [0.02, 0.3]}}
    text = what_it_shows(summary, demo_judge=False)
    assert "from 0.100 at step 0 to 0.250 at step 3" in text and "+0.020 to +0.300" in text
    assert "constant score for fluency" in text


def test_the_endpoint_command_is_the_same_run_without_its_directory() -> None:
    argv = ["optimize", "--mode", "SCC", "--run-dir", "runs/a", "--local-model=x.gguf", "--steps", "3"]
    assert capable_endpoint_command(argv) == (
        "judgeopt optimize --mode SCC --steps 3 --endpoint URL --model NAME --api-key-env VAR"
    )


def test_the_local_judge_command_is_the_same_run_on_a_hub_model() -> None:
    argv = ["optimize", "--mode", "SCC", "--run-dir=runs/a", "--local-model", "x.gguf"]
    assert (
        hub_judge_command(argv) == "judgeopt optimize --mode SCC --local-model Qwen/Qwen2.5-1.5B-Instruct-GGUF:q4_k_m"
    )


def test_after_the_demo_judge_both_next_commands_print_as_written() -> None:
    from rich.console import Console

    out = Console(record=True, width=300)
    for line in next_commands(["optimize", "--run-dir", "runs/a"]):
        out.print(line, highlight=False, markup=False)  # as the final screen prints them
    screen = out.export_text()
    assert "pip install 'judgeopt[hub]'" in screen
    assert "judgeopt optimize --endpoint URL --model NAME --api-key-env VAR" in screen
    assert "judgeopt optimize --local-model Qwen/Qwen2.5-1.5B-Instruct-GGUF:q4_k_m" in screen
