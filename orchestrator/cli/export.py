"""``judgeopt export RUN_DIR --out FILE [--format judgeopt|promptfoo|mlflow]``: a run's chosen judge as a file."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "write a run's chosen judge to a self-contained file (judgeopt's, a promptfoo config or MLflow judges)"
FORMATS = ("judgeopt", "promptfoo", "mlflow")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="the run directory (as given to optimize --run-dir)")
    parser.add_argument("--step", default="best", help="best (on validation), best_oracle (on test) or a step number")
    parser.add_argument("--out", type=Path, required=True, help="the file to write, e.g. judge.yaml")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="judgeopt",
        help="judgeopt: the judge file `judgeopt judge` reads; promptfoo: a promptfooconfig.yaml with one llm-rubric "
        "assertion per criterion; mlflow: MLflow judges (mlflow.genai, the mlflow extra) as JSON (default: judgeopt)",
    )


def run(args: argparse.Namespace) -> int:

    from judgeopt.orchestrator.study.export import export_judge, write_judge

    judge = export_judge(args.run_dir, args.step)
    if args.format == "promptfoo":
        import yaml

        from judgeopt.core.private_files import write_private_text
        from judgeopt.orchestrator.study.promptfoo import promptfoo_config

        text = yaml.safe_dump(promptfoo_config(judge), sort_keys=False, allow_unicode=True, width=120)
        write_private_text(args.out, text)
    elif args.format == "mlflow":
        from judgeopt.orchestrator.study.mlflow_judge import write_mlflow_judges

        write_mlflow_judges(judge, args.out)
    else:
        write_judge(judge, args.out)
    source = judge.source
    print(
        f"wrote {args.out} ({args.format}): step {source['step']} of run {source['run_id']} (chosen on "
        f"{source['chosen_on']}; test macro ρ {source['test_macro_rho']})"
    )
    return 0
