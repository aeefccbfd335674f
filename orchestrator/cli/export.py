"""``judgeopt export RUN_DIR --out judge.yaml``: a run's chosen judge as a self-contained file."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "write a run's chosen judge to a self-contained file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="the run directory (as given to optimize --run-dir)")
    parser.add_argument("--step", default="best", help="best (on validation), best_oracle (on test) or a step number")
    parser.add_argument("--out", type=Path, required=True, help="the judge file to write, e.g. judge.yaml")


def run(args: argparse.Namespace) -> int:

    from judgeopt.orchestrator.study.export import export_judge, write_judge

    judge = export_judge(args.run_dir, args.step)
    write_judge(judge, args.out)
    source = judge.source
    print(
        f"wrote {args.out}: step {source['step']} of run {source['run_id']} (chosen on {source['chosen_on']}; "
        f"test macro ρ {source['test_macro_rho']})"
    )
    return 0
