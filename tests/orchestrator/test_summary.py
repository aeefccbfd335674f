"""The Table-1 view of a run's summary, as `judgeopt optimize` prints it."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from judgeopt.orchestrator.engine.summary import summary_tables

CRITERIA = ("coherence", "fluency")


def _point(step: int, rho: float, constant: list[str]) -> dict[str, Any]:
    return {
        "step": step,
        "macro_rho": rho,
        "rho": dict.fromkeys(CRITERIA, rho),
        "val_metric": -1.0,
        "constant": constant,
    }


def _summary(constant: list[str]) -> dict[str, Any]:
    return {
        "mode": "SSS",
        "gate": "none",
        "hvi": 0.5,
        "criteria": list(CRITERIA),
        "initial": _point(0, 0.0, constant),
        "best": _point(0, 0.0, constant),
        "best_oracle": _point(0, 0.0, constant),
        "llm_calls": {"judge": 4},
        "rpc_attempts": {"judge": 4},
        "failed_attempts": {"judge": 0},
        "truncated_replies": {"judge": 0},
        "tokens": {"judge": {"prompt": 100, "completion": 10}},
    }


def _rendered(summary: dict[str, Any]) -> str:
    console = Console(record=True, width=140)
    for table in summary_tables(summary):
        console.print(table)
    return console.export_text()


def test_an_undefined_rho_is_marked_and_explained() -> None:
    """A criterion whose test scores were all equal shows its 0 with †, as does the macro, and the caption says
    why; a defined criterion stays unmarked."""
    text = _rendered(_summary(["fluency"]))
    fluency = next(line for line in text.splitlines() if "fluency" in line)
    coherence = next(line for line in text.splitlines() if "coherence" in line)
    macro = next(line for line in text.splitlines() if "macro" in line)
    assert "†" in fluency and "†" in macro and "†" not in coherence
    assert "ρ is undefined" in text


def test_defined_rho_has_no_mark() -> None:
    text = _rendered(_summary([]))
    assert "†" not in text and "undefined" not in text


def test_spend_table_shows_cached_tokens_and_how_scores_were_obtained() -> None:
    """The judge's cached prompt tokens are a column, and the caption counts weighted and sampled scores."""
    summary = _summary([])
    summary["tokens"]["judge"]["cached_prompt"] = 77
    summary["judge_scoring"] = {"asked": "logprob_weighted", "logprob_weighted": 3, "sampled": 5}
    text = _rendered(summary)
    assert "cached prompt tokens" in text and "77" in text
    assert "3 logprob-weighted, 5 sampled (logprob-weighted asked)" in text
