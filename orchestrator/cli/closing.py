"""The words after a run's tables: the warnings held during the run (one line per kind), what the run shows, where
it is, the one command that points the same run at a capable endpoint, and the one that runs it on a local judge that
ranks (a GGUF model from the Hugging Face Hub)."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from judgeopt.core.hub_model import HUB_EXAMPLE

ENDPOINT_PLACEHOLDERS = ("--endpoint", "URL", "--model", "NAME", "--api-key-env", "VAR")
_DROPPED_WITH_A_VALUE = ("--run-dir", "--local-model")  # a new run needs its own directory and no local model


def what_it_shows(summary: dict[str, Any], *, demo_judge: bool) -> str:
    """One paragraph: the result in a sentence, or, on the embedded demo model, why there is none to read."""
    initial, best, delta = summary["initial"], summary["best"], summary["delta_macro_rho"]
    if demo_judge:
        return (
            "What this run shows: the machinery end to end (the agent services, the routing its policy allows, the "
            "gate, the store), not a result. The embedded model is a 135M-parameter demo judge that cannot rank "
            "summaries: its ρ is about 0, and † marks criteria it scored with one constant value."
        )
    if initial is None or best is None or delta is None:
        return "What this run shows: no test score to compare (see the warnings above and summary.json)."
    interval = delta.get("ci95")
    spread = f", 95% interval {interval[0]:+.3f} to {interval[1]:+.3f}" if interval else ""
    constant = sorted({*(initial.get("constant") or ()), *(best.get("constant") or ())})
    caveat = (
        f" The judge gave one constant score for {', '.join(constant)} (†): ρ says nothing there." if constant else ""
    )
    return (
        f"What this run shows: macro Spearman ρ went from {initial['macro_rho']:.3f} at step 0 to "
        f"{best['macro_rho']:.3f} at step {best['step']}, chosen on validation (Δ {delta['value']:+.3f}{spread})."
        + caveat
    )


def where_it_is(run_dir: Path) -> str:
    return (
        f"The run is in {run_dir} (summary.json, run.sqlite, services/); `judgeopt report {run_dir}` writes its "
        "report (report.md, report.html) there."
    )


def next_commands(argv: Sequence[str]) -> list[str]:
    """After a run on the demo judge: the same run on a capable endpoint, or on a local judge that ranks (lines to
    print as they are: ``[hub]`` is no markup)."""
    return [
        "The same run on a capable OpenAI-compatible endpoint:",
        f"  {capable_endpoint_command(argv)}",
        "Or on a local judge that ranks (Qwen2.5-1.5B-Instruct, a 1.1 GB download into the Hugging Face cache; "
        "pip install 'judgeopt[hub]'):",
        f"  {hub_judge_command(argv)}",
    ]


def capable_endpoint_command(argv: Sequence[str]) -> str:
    """The command that was run, minus its run directory and local model, on an OpenAI-compatible endpoint."""
    return shlex.join(["judgeopt", *_same_run(argv), *ENDPOINT_PLACEHOLDERS])


def hub_judge_command(argv: Sequence[str]) -> str:
    """The command that was run, minus its run directory, on a local GGUF model from the Hub that can rank."""
    return shlex.join(["judgeopt", *_same_run(argv), "--local-model", HUB_EXAMPLE])


def _same_run(argv: Sequence[str]) -> list[str]:
    """``argv`` without the flags a new run of the same settings must not repeat (its directory, its local model)."""
    kept: list[str] = []
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word in _DROPPED_WITH_A_VALUE:
            skip = True
        elif not word.startswith(tuple(f"{flag}=" for flag in _DROPPED_WITH_A_VALUE)):
            kept.append(word)
    return kept
