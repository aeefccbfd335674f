"""The same single-criterion work with the ``textgrad`` library and with judgeopt: one TGD step (forward on B
samples, loss, backward, optimizer step) plus a validation pass on the same V samples, against the same scripted
endpoint with a fixed latency. Reports both wall times, their ratio, and the LLM calls each made.

    .venv/bin/python bench/textgrad_compare.py [--latency 0.1] [--batch 3] [--val 16] [--concurrency 8]

TextGrad runs in its own virtual environment, ``bench/.venv-textgrad`` (created here on first use with
``python3 -m venv`` and ``pip install textgrad`` from the package registry), driven by ``bench/_textgrad_driver.py``
with its reply cache off (``OpenAIEngine(cache=False)``) and the engine's openai client pointed at the scripted
endpoint through ``OPENAI_BASE_URL``.

Each side runs ``--steps`` steps (default 2) on the same batches, each reported: step 1 includes first-call costs
(judgeopt's loss, gradient and optimizer services and TextGrad's openai client are used for the first time),
step 2 is the same work warm.

judgeopt: ``judgeopt optimize`` in SSS mode restricted to one criterion (coherence), batch B, val V,
a small test set (3; judgeopt always tests the last step), gate none, the given concurrency and no bootstrap
(TextGrad computes no intervals). Its time for the same work is read from the run store: from the first call of
the step to the last reply of its validation pass (the test pass and the commit after it are shown apart).
TextGrad is timed inside the driver, from ``zero_grad()`` to the end of the validation pass. The training batches
and the validation samples are the same records: the driver is given the batches judgeopt drew and judgeopt's
validation split. Calls are counted at the endpoint, per kind.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from _support import (
    BENCH,
    DATA_DIR,
    console,
    dataset,
    endpoint,
    exit_on_sigterm,
    machine_load,
    query,
    run_optimize,
    write_run_config,
)
from rich.table import Table

from judgeopt.orchestrator.data.loading import load_dataset
from judgeopt.orchestrator.data.records import DatasetConfig, Record

CRITERION = "coherence"
TEXTGRAD_VENV = BENCH / ".venv-textgrad"


def textgrad_python() -> Path:
    """The TextGrad venv's python, creating the venv and installing textgrad on first use."""
    python = TEXTGRAD_VENV / "bin" / "python"
    if not python.exists():
        console.print("creating bench/.venv-textgrad and installing textgrad …", style="dim")
        subprocess.run(["python3", "-m", "venv", str(TEXTGRAD_VENV)], check=True)
    probe = subprocess.run([str(python), "-c", "import textgrad"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        install = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "textgrad"], capture_output=True, text=True, check=False
        )
        if install.returncode != 0:
            raise SystemExit(f"textgrad could not be installed in {TEXTGRAD_VENV}: {install.stderr.strip()[-1500:]}")
    return python


def sample_text(record: Record) -> str:
    return "\n\n".join(f"{name.capitalize()}:\n{text}" for name, text in record.fields)


def judgeopt_step(run_dir: Path, step: int) -> dict[str, Any]:
    """The window of one step in the run store: first call issued → last validation reply (test shown apart)."""

    def one(sql: str) -> Any:
        return query(run_dir, sql, (step,))[0][0]

    start = one("SELECT MIN(at - endpoint_seconds - queue_seconds) FROM calls WHERE step = ?")
    train_end = one("SELECT MAX(at) FROM calls WHERE step = ? AND purpose = 'train'")
    val_end = one("SELECT MAX(at) FROM calls WHERE step = ? AND purpose = 'val'")
    return {
        "start": start,
        "val_end": val_end,
        "train_seconds": train_end - start,
        "val_seconds": val_end - train_end,
        "total_seconds": val_end - start,
        "with_test_seconds": one("SELECT MAX(finished_at) FROM steps WHERE step = ?") - start,
        "batch": json.loads(one("SELECT batch FROM steps WHERE step = ?")),
    }


def judgeopt_side(base_url: str, tmp: Path, args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[str]]:
    run_dir = tmp / "judgeopt"
    config = write_run_config(
        tmp / "judgeopt.yaml",
        base_url,
        mode="SSS",
        steps=args.steps,
        batch_size=args.batch,
        gate="none",
        concurrency=args.concurrency,
        bootstrap_resamples=0,
        dataset=dataset(args.train, args.val, args.test),
    )
    run_optimize(config, run_dir, "--criteria", CRITERION)
    splits = json.loads(query(run_dir, "SELECT value FROM meta WHERE key = 'manifest'")[0][0])["splits"]
    return [judgeopt_step(run_dir, step) for step in range(1, args.steps + 1)], splits["val"]


def textgrad_side(
    python: Path, base_url: str, tmp: Path, batches: list[list[str]], val: list[str], args: argparse.Namespace
) -> list[dict[str, Any]]:
    records = {r.id: r for r in load_dataset(DatasetConfig(name="summeval"), DATA_DIR).records}

    def item(record_id: str) -> dict[str, Any]:
        record = records[record_id]
        return {"text": sample_text(record), "label": record.labels[CRITERION]}

    spec = {
        "model": "fake-model",
        "criterion": CRITERION,
        "instruction": "Rate from 1 to 5.",  # judgeopt's initial instruction for a 1-5 criterion
        "concurrency": args.concurrency,
        "batches": [[item(i) for i in batch] for batch in batches],
        "val": [item(i) for i in val],
    }
    spec_path, out_path = tmp / "textgrad-in.json", tmp / "textgrad-out.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    env = {
        **os.environ,
        "OPENAI_BASE_URL": base_url,
        "OPENAI_API_KEY": "not-needed",
        "TEXTGRAD_LOG_DIR": str(tmp / "textgrad-logs"),
        "XDG_CACHE_HOME": str(tmp / "textgrad-cache"),
    }
    (tmp / "textgrad-logs").mkdir()
    done = subprocess.run(
        [str(python), str(BENCH / "_textgrad_driver.py"), str(spec_path), str(out_path)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the TextGrad driver failed: {done.stderr.strip()[-2000:]}")
    steps: list[dict[str, Any]] = json.loads(out_path.read_text(encoding="utf-8"))["steps"]
    return steps


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per model call")
    parser.add_argument("--batch", type=int, default=3)
    parser.add_argument("--train", type=int, default=24)
    parser.add_argument("--val", type=int, default=16)
    parser.add_argument("--test", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2, help="steps on each side, each reported")
    args = parser.parse_args()
    console.print(machine_load(), style="dim")
    python = textgrad_python()
    version = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('textgrad'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()

    with (
        tempfile.TemporaryDirectory(prefix="bench-textgrad-") as tmp_name,
        endpoint(delay=args.latency, textgrad=True) as ep,
    ):
        tmp = Path(tmp_name)
        ours, val = judgeopt_side(ep.base_url, tmp, args)
        logged = ep.requests()
        ours_calls = [Counter(r["role"] for r in logged if s["start"] <= r["at"] <= s["val_end"]) for s in ours]
        theirs = textgrad_side(python, ep.base_url, tmp, [s["batch"] for s in ours], val, args)
        logged = ep.requests()
        theirs_calls = [
            Counter(r["role"] for r in logged if s["started_at"] - 0.01 <= r["at"] <= s["ended_at"]) for s in theirs
        ]

    c, lat = args.concurrency, args.latency
    b, v = args.batch, args.val
    ideal_ours = (3 * math.ceil(b / c) + 1 + math.ceil(v / c)) * lat
    table = Table(
        title=f"One TGD step + validation on {v} samples, 1 criterion, B={b}, latency {lat * 1000:g} ms, "
        f"concurrency {c} (textgrad {version}); step 1 meets cold services / a cold client"
    )
    for column in ("system", "step", "LLM calls (endpoint)", "train s", "validation s", "train + validation s"):
        table.add_column(column, justify="left" if column in ("system", "LLM calls (endpoint)") else "right")
    table.add_column("critical-path ideal s", justify="right")
    table.add_column("wall / ideal", justify="right")
    for step, (mine, calls) in enumerate(zip(ours, ours_calls, strict=True), start=1):
        table.add_row(
            "judgeopt (SSS, one criterion)",
            str(step),
            ", ".join(f"{k} {n}" for k, n in sorted(calls.items())) + f" = {sum(calls.values())}",
            f"{mine['train_seconds']:.2f}",
            f"{mine['val_seconds']:.2f}",
            f"{mine['total_seconds']:.2f}",
            f"{ideal_ours:.2f}",
            f"{mine['total_seconds'] / ideal_ours:.2f}",
        )
    for step, (theirs_step, calls) in enumerate(zip(theirs, theirs_calls, strict=True), start=1):
        sequential = sum(n for kind, n in calls.items() if kind != "textgrad forward") + b
        ideal_theirs = (sequential + math.ceil(v / c)) * lat
        table.add_row(
            "textgrad (TGD, cache off)",
            str(step),
            ", ".join(f"{k.removeprefix('textgrad ')} {n}" for k, n in sorted(calls.items()))
            + f" = {sum(calls.values())}",
            f"{theirs_step['train_seconds']:.2f}",
            f"{theirs_step['val_seconds']:.2f}",
            f"{theirs_step['total_seconds']:.2f}",
            f"{ideal_theirs:.2f}",
            f"{theirs_step['total_seconds'] / ideal_theirs:.2f}",
        )
    console.print(table)
    console.print(
        "judgeopt steps including their test pass and commit: "
        + ", ".join(f"step {i} {s['with_test_seconds']:.2f} s" for i, s in enumerate(ours, start=1))
    )
    console.print(f"TextGrad's last updated instruction: {theirs[-1]['new_instruction']!r}", markup=False)
    for step in range(len(ours)):
        ratio = theirs[step]["total_seconds"] / ours[step]["total_seconds"]
        faster = "judgeopt faster" if ratio > 1.0 else "[bold red]textgrad faster[/]"
        console.print(
            f"[bold]RESULT[/] step {step + 1}: textgrad / judgeopt wall time = {ratio:.2f}× for the same step + "
            f"validation ({sum(theirs_calls[step].values())} vs {sum(ours_calls[step].values())} LLM calls; {faster})"
        )


if __name__ == "__main__":
    main()
