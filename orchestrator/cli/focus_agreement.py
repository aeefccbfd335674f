"""``judgeopt focus-agreement RUN_DIR``: how well the specificity fallback's focus proxy ranks gradients the way
the evaluator's specificity ratings do (the ratings come from an experiment's diagnostics of the run)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "agreement (Spearman) of the fallback's focus proxy with the evaluator's specificity ratings of a run"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a finished run directory whose joint gradients the evaluator rated")


def run(args: argparse.Namespace) -> int:
    from judgeopt.core.errors import ConfigError
    from judgeopt.orchestrator.engine.focus import agreement
    from judgeopt.orchestrator.engine.store import STORE_FILE, RunStore

    if not (args.run_dir / STORE_FILE).is_file():
        raise ConfigError(f"{args.run_dir} holds no run (no {STORE_FILE})")
    store = RunStore(args.run_dir)
    try:
        if not store.holds_run():
            raise ConfigError(f"{args.run_dir} holds no run")
        ratings = [
            (d.track, d.step, d.criterion, d.score)
            for d in store.diagnostics()
            if d.kind == "specificity" and d.score is not None
        ]
        if not ratings:
            raise ConfigError(
                f"{args.run_dir} holds no specificity ratings by the evaluator (an experiment's diagnostics rate them)"
            )
        result = agreement(store.gradients(), ratings)
    finally:
        store.close()
    print("track\tstep\tcriterion\tproxy\trating")
    for track, step, criterion, proxy, rating in result.pairs:
        print(f"{track}\t{step}\t{criterion}\t{proxy:.3f}\t{rating:g}")
    rho = "undefined (fewer than 3 pairs, or a constant side)" if result.spearman is None else f"{result.spearman:.3f}"
    print(f"focus proxy vs evaluator specificity: Spearman rho {rho} over {len(result.pairs)} pairs")
    return 0
