"""``judgeopt init DATA_FILE``: a commented config for one's own data, inferred from its columns (text fields, id,
group, criteria and their scales), asking nothing; the comments say what was inferred and what to check."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from judgeopt.orchestrator.data.inference import InferredLayout

HELP = "write a commented config for a data file, inferred from its columns"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_file", type=Path, help="CSV, JSONL, JSON or Parquet with text columns and label columns")
    parser.add_argument(
        "--out", type=Path, help="the config file to write; refuses to replace one (default: print it on stdout)"
    )


def run(args: argparse.Namespace) -> int:
    import os

    from judgeopt.core.errors import ConfigError
    from judgeopt.core.files import write_atomic
    from judgeopt.orchestrator.data.inference import infer_layout

    layout = infer_layout(args.data_file)
    where = args.data_file.resolve()
    if args.out is not None:
        if args.out.exists():
            raise ConfigError(f"{args.out} exists; choose another --out or remove it")
        relative = Path(os.path.relpath(where, args.out.resolve().parent))
        write_atomic(args.out, render(layout, relative, args.data_file.name))
        print(f"wrote {args.out}: {len(layout.criteria)} criteria, {len(layout.text_fields)} text fields")
    else:
        print(render(layout, where, args.data_file.name), end="")
    return 0


def render(layout: InferredLayout, path: Path, name: str) -> str:
    """The config file's text: YAML with a comment on every inferred setting."""
    import json

    def scalar(value: object) -> str:
        return json.dumps(value)  # a JSON scalar is YAML too, quoted where it must be

    lines = [
        f"# judgeopt config for {name}, inferred by `judgeopt init` from its {layout.rows} rows.",
        "# Check every line marked CHECK; the rest was read off the data. Run it with:",
        "#   judgeopt optimize --config THIS_FILE          (the embedded demo model; add --endpoint for a real one)",
        "run:",
        "  dataset:",
        "    name: file",
        f"    path: {scalar(str(path))}" + ("" if path.is_absolute() else "  # relative to this file"),
        f"    text_fields: [{', '.join(map(scalar, layout.text_fields))}]  # what the judge reads, in this order",
    ]
    if layout.id_field:
        lines.append(f"    id_field: {scalar(layout.id_field)}  # unique per row")
    if layout.group_field:
        lines.append(f"    group_field: {scalar(layout.group_field)}  # rows sharing it stay in one split (it repeats)")
    lines.append("    criteria:  # the numeric columns; the scale is the smallest common one holding every label")
    for criterion in layout.criteria:
        low, high = criterion.seen
        kind = "whole numbers" if criterion.integer_scores else "not all whole numbers (e.g. averaged labels)"
        lines += [
            f"      - name: {scalar(criterion.name)}  # labels seen: {low:g} to {high:g}, {kind}",
            f'        description: ""  # CHECK: what a high {criterion.name} means; the judge reads it',
            f"        min_score: {criterion.min_score:g}",
            f"        max_score: {criterion.max_score:g}  # CHECK the scale's ends",
            f"        integer_scores: {scalar(criterion.integer_scores)}",
        ]
    lines += [
        "  # The task the judge is given. CHECK: say what the texts are.",
        f"  task_description: {scalar('Evaluate the ' + ' and '.join(layout.text_fields) + ' below.')}",
    ]
    return "\n".join(lines) + "\n"
