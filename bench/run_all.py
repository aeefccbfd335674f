"""Run the benches, record their figures, and keep bench/README.md's table of the latest ones.

    .venv/bin/python bench/run_all.py [--only startup,overhead,…,memory,main_job] [--results DIR]
    .venv/bin/python bench/run_all.py --check [--results bench/results]

Each bench runs as its own process with ``--json <results>/<bench>.json`` (the figures, the command that made them,
the commit, the machine and its load average at the start and the end). Afterwards the table between the markers
of bench/README.md is rewritten from every record in the results folder. ``--check`` runs nothing: it reads the
records and exits 1, naming each figure, when one misses its target. It is not run in CI: these machines are
shared and noisy, so a miss is read beside the load average it was measured under.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

from _records import missed, read_records
from _support import BENCH, REPO, console, exit_on_sigterm, machine_load

BENCHES: dict[str, list[str]] = {
    "startup": ["startup.py"],
    "overhead": ["overhead.py"],
    "concurrency": ["concurrency.py"],
    "textgrad": ["textgrad_compare.py"],
    "study_work": ["study_work.py"],
    "economy": ["economy.py"],
    "tokens": ["tokens.py", "--embedded"],
    "prefix_reuse": ["prefix_reuse.py"],
    "memory": ["memory.py"],
    "main_job": ["main_job.py"],
}
"""The benches ``run_all`` knows, each with its script and arguments (in the order they run)."""

README = BENCH / "README.md"
BEGIN, END = "<!-- figures:begin -->", "<!-- figures:end -->"


def run(name: str, results: Path) -> int:
    script, *arguments = BENCHES[name]
    command = [sys.executable, str(BENCH / script), *arguments, "--json", str(results / f"{name}.json")]
    console.print(f"running {name}: {' '.join(command[1:])}", style="dim")
    return subprocess.run(command, cwd=REPO, check=False).returncode


def _value(figure: dict[str, Any]) -> str:
    unit = figure["unit"]
    return f"{figure['value']:.3f}" if unit == "ratio" else f"{figure['value']:.3g} {unit}"


def table(records: list[dict[str, Any]]) -> str:
    """The markdown table of every recorded figure: value, target, verdict, load and the command behind it."""
    lines = [
        "| bench | figure | value | target | met | load (1 min) at start / end | commit | command |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for record in records:
        load = record["load_average"]
        commit = record["commit"]
        sha = (commit["sha"] or "?")[:10] + (" (dirty)" if commit["dirty"] else "")
        for figure in record["figures"]:
            target = "" if figure["target"] is None else f"{figure['target']['op']} {figure['target']['limit']:g}"
            met = "—" if figure["met"] is None else "yes" if figure["met"] else "**no**"
            lines.append(
                f"| {record['bench']} | {figure['name']} | {_value(figure)} | "
                f"{target} | {met} | "
                f"{load['start'][0]:.1f} / {load['end'][0]:.1f} | {sha} | `{record['command']}` |"
            )
    return "\n".join(lines)


def write_readme_table(records: list[dict[str, Any]]) -> None:
    text = README.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{README.relative_to(REPO)}: no {BEGIN} … {END} markers to write the table between")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{BEGIN}\n{table(records)}\n{END}{tail}", encoding="utf-8")


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help=f"comma-separated benches (default: all of {', '.join(BENCHES)})")
    parser.add_argument("--results", type=Path, default=BENCH / "results", help="where the JSON records go")
    parser.add_argument("--check", action="store_true", help="run nothing; exit 1 if a recorded figure misses")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        raise SystemExit(f"--only: unknown bench {unknown[0]!r} (known: {', '.join(BENCHES)})")
    if args.check:
        records = read_records(args.results)
        if not records:
            raise SystemExit(f"--check: no records in {args.results}")
        misses = missed(records)
        for line in misses:
            console.print(f"[bold red]MISSED[/] {line}")
        checked = sum(1 for r in records for f in r["figures"] if f["target"] is not None)
        console.print(f"{checked} figures with a target checked in {len(records)} records, {len(misses)} missed")
        raise SystemExit(1 if misses or not checked else 0)
    console.print(machine_load(), style="dim")
    failed = [name for name in names if run(name, args.results) != 0]
    write_readme_table(read_records(args.results))
    if failed:
        raise SystemExit(f"benches that failed to run: {', '.join(failed)}")


if __name__ == "__main__":
    main()
