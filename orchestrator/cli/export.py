"""``judgeopt export RUN_DIR --out FILE [--format judgeopt|promptfoo|mlflow]``: a run's chosen judge as a file,
judging with the routing that won on validation (the run's ``judgeopt interference`` measurement, made now when
absent)."""

from __future__ import annotations

import argparse
from pathlib import Path

from judgeopt.orchestrator.cli.flags import add_client_flags
from judgeopt.orchestrator.cli.interference import add_measurement_flags

HELP = "write a run's chosen judge to a self-contained file (judgeopt's, a promptfoo config or MLflow judges)"
FORMATS = ("judgeopt", "promptfoo", "mlflow")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_measurement_flags(parser, "the run directory (as given to optimize --run-dir)")
    parser.add_argument("--out", type=Path, required=True, help="the file to write, e.g. judge.yaml")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="judgeopt",
        help="judgeopt: the judge file `judgeopt judge` reads; promptfoo: a promptfooconfig.yaml with one llm-rubric "
        "assertion per criterion; mlflow: MLflow judges (mlflow.genai, the mlflow extra) as JSON (default: judgeopt)",
    )
    parser.add_argument(
        "--no-measure",
        action="store_true",
        help="keep the routing the run judged with: no measurement of the routings, no model call",
    )
    add_client_flags(parser)


def run(args: argparse.Namespace) -> int:
    from judgeopt.orchestrator.cli.interference import measured
    from judgeopt.orchestrator.engine.run import open_run
    from judgeopt.orchestrator.study.export import export_judge, write_judge

    choice = None
    if not args.no_measure:
        store = open_run(args.run_dir)
        try:
            protocol = store.manifest().config.prompt_protocol
        finally:
            store.close()
        if protocol == "study":
            print("routing: as the run judged (the study's prompt protocol has no prefix-shared layout to measure)")
        else:
            choice = measured(args)[0][1].choice()
    judge = export_judge(args.run_dir, args.step, choice)
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
        f"{source['chosen_on']}; test macro ρ {source['test_macro_rho']}); judge routing {judge.routing}"
        + (f" (won on validation: {_figures(choice.val_macro_rho)})" if choice else "")
    )
    return 0


def _figures(val_macro_rho: dict[str, float]) -> str:
    return ", ".join(f"{routing} macro ρ {rho:.3f}" for routing, rho in val_macro_rho.items())
