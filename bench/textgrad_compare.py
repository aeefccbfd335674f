"""The same single-criterion work with the ``textgrad`` library and with judgeopt: one TGD step (forward on B
samples, loss, backward, optimizer step) plus a validation pass on the same V samples, against the same scripted
endpoint with a fixed latency. Reports the wall times, their ratios, and the LLM calls each made.

    .venv/bin/python bench/textgrad_compare.py [--latency 0.1] [--batch 3] [--val 16] [--concurrency 8] [--json F]

TextGrad runs in its own virtual environment, ``bench/.venv-textgrad`` (created here on first use with
``python3 -m venv`` and ``pip install textgrad`` from the package registry), driven by ``bench/_textgrad_driver.py``
with its reply cache off (``OpenAIEngine(cache=False)``) and the engine's openai client pointed at the scripted
endpoint through ``OPENAI_BASE_URL``. TextGrad runs twice on the same batches: at its best supported settings
(each sample's forward and loss calls side by side in a thread pool of ``--concurrency`` workers, as TextGrad's own
evaluation code runs samples) and, as the labelled reference, one sample after the other (its example's training
loop). Its backward pass and optimizer step call the engine one call at a time in both.

Each system's time is set against its own graph bound, computed the same way for all (``_bound.list_schedule`` on
``--concurrency`` slots, every call taking ``--latency``) over the call graph that system executes: judgeopt's
step (``_bound.step_graph``: per sample judge → loss → gradient, the optimizer, validation); TextGrad's forward →
loss per sample (side by side, or one sample after the other), then its backward calls one after another, the
optimizer call(s), and the validation forwards side by side.

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
import os
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from _bound import Call, list_schedule, step_graph
from _records import BenchRecord
from _support import (
    BENCH,
    DATA_DIR,
    add_json_argument,
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
JUDGEOPT = "judgeopt (SSS, one criterion)"
ARMS = {"textgrad, threaded forward + loss (its best)": True, "textgrad, sequential (reference)": False}
"""TextGrad's arms: label → whether the samples' forward and loss calls run side by side."""
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
    python: Path,
    base_url: str,
    tmp: Path,
    batches: list[list[str]],
    val: list[str],
    args: argparse.Namespace,
    *,
    threaded: bool,
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
        "threaded": threaded,
        "batches": [[item(i) for i in batch] for batch in batches],
        "val": [item(i) for i in val],
    }
    arm = "threaded" if threaded else "sequential"
    spec_path, out_path = tmp / f"textgrad-{arm}-in.json", tmp / f"textgrad-{arm}-out.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    env = {
        **os.environ,
        "OPENAI_BASE_URL": base_url,
        "OPENAI_API_KEY": "not-needed",
        "TEXTGRAD_LOG_DIR": str(tmp / f"textgrad-{arm}-logs"),
        "XDG_CACHE_HOME": str(tmp / f"textgrad-{arm}-cache"),
    }
    (tmp / f"textgrad-{arm}-logs").mkdir()
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


def judgeopt_graph(calls: Counter[str], batch: int, seconds: float) -> list[Call]:
    """judgeopt's step as it runs it, from the calls the endpoint saw in the step's window."""
    counts = {
        "judge": batch,
        "loss": calls["loss"],
        "gradient": calls["gradient"],
        "optimizer": calls["optimizer"],
        "val": calls["judge"] - batch,
    }
    return step_graph({"all": counts}, seconds)


def textgrad_graph(calls: Counter[str], batch: int, seconds: float, *, threaded: bool) -> list[Call]:
    """TextGrad's step as it runs it: forward → loss per sample (side by side when threaded, else one sample after
    the other), its backward calls one after another, its optimizer call(s), then the validation forwards."""
    graph: list[Call] = []
    losses: list[str] = []
    for i in range(batch):
        forward = Call(f"forward/{i}", seconds, () if threaded or not losses else (losses[-1],))
        graph += [forward, Call(f"loss/{i}", seconds, (forward.name,))]
        losses.append(f"loss/{i}")
    chain = losses
    sequential = [f"backward/{i}" for i in range(calls["textgrad loss or gradient"] - batch)]
    sequential += [f"optimizer/{i}" for i in range(calls["textgrad optimizer"])]
    for name in sequential:
        graph.append(Call(name, seconds, tuple(chain)))
        chain = [name]
    graph += [Call(f"val/{i}", seconds, tuple(chain)) for i in range(calls["textgrad forward"] - batch)]
    return graph


def calls_in(logged: list[dict[str, Any]], start: float, end: float) -> Counter[str]:
    return Counter(r["role"] for r in logged if start <= r["at"] <= end)


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
    add_json_argument(parser)
    args = parser.parse_args()
    console.print(machine_load(), style="dim")
    record = BenchRecord("textgrad")
    python = textgrad_python()
    version = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('textgrad'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()

    c, lat, b, v = args.concurrency, args.latency, args.batch, args.val
    rows: list[tuple[str, int, Counter[str], dict[str, Any], float]] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-textgrad-") as tmp_name,
        endpoint(delay=lat, textgrad=True) as ep,
    ):
        tmp = Path(tmp_name)
        ours, val = judgeopt_side(ep.base_url, tmp, args)
        for step, mine in enumerate(ours, start=1):
            calls = calls_in(ep.requests(), mine["start"], mine["val_end"])
            rows.append((JUDGEOPT, step, calls, mine, list_schedule(judgeopt_graph(calls, b, lat), c)))
        for arm, threaded in ARMS.items():
            theirs = textgrad_side(python, ep.base_url, tmp, [s["batch"] for s in ours], val, args, threaded=threaded)
            for step, step_times in enumerate(theirs, start=1):
                calls = calls_in(ep.requests(), step_times["started_at"] - 0.01, step_times["ended_at"])
                bound = list_schedule(textgrad_graph(calls, b, lat, threaded=threaded), c)
                rows.append((arm, step, calls, step_times, bound))
            console.print(f"{arm}: last updated instruction {theirs[-1]['new_instruction']!r}", markup=False)

    table = Table(
        title=f"One TGD step + validation on {v} samples, 1 criterion, B={b}, latency {lat * 1000:g} ms, "
        f"concurrency {c} (textgrad {version}); step 1 meets cold services / a cold client"
    )
    for column in ("system", "step", "LLM calls (endpoint)", "train s", "validation s", "train + validation s"):
        table.add_column(column, justify="left" if column in ("system", "LLM calls (endpoint)") else "right")
    table.add_column("graph bound s", justify="right")
    table.add_column("wall / bound", justify="right")
    for system, step, calls, times, bound in rows:
        table.add_row(
            system,
            str(step),
            ", ".join(f"{k.removeprefix('textgrad ')} {n}" for k, n in sorted(calls.items()))
            + f" = {sum(calls.values())}",
            f"{times['train_seconds']:.2f}",
            f"{times['val_seconds']:.2f}",
            f"{times['total_seconds']:.2f}",
            f"{bound:.2f}",
            f"{times['total_seconds'] / bound:.2f}",
        )
        record.add(f"{system} step {step}: train + validation", times["total_seconds"], "s")
        record.add(f"{system} step {step}: wall / graph bound", times["total_seconds"] / bound, "ratio")
    console.print(table)
    console.print(
        "judgeopt steps including their test pass and commit: "
        + ", ".join(f"step {i} {s['with_test_seconds']:.2f} s" for i, s in enumerate(ours, start=1))
    )
    for step in range(1, args.steps + 1):
        by_system = {system: (calls, times) for system, n, calls, times, _ in rows if n == step}
        ours_calls, ours_times = by_system[JUDGEOPT]
        for arm in ARMS:
            arm_calls, arm_times = by_system[arm]
            ratio = arm_times["total_seconds"] / ours_times["total_seconds"]
            record.add(f"{arm} / judgeopt, step {step}", ratio, "ratio")
            console.print(
                f"[bold]RESULT[/] step {step}: {arm} / judgeopt wall time = {ratio:.2f}× for the same step + "
                f"validation ({sum(arm_calls.values())} vs {sum(ours_calls.values())} LLM calls)"
            )
    record.write(args.json)


if __name__ == "__main__":
    main()
