"""What each mitigation costs per step: LLM calls and tokens, measured against the scripted endpoint, beside the
formula in K (criteria), B (batch), V (validation rows) and T (test rows).

    .venv/bin/python bench/mitigations_cost.py [--batch 2] [--steps 2] [--val 4] [--test 6]

One ``judgeopt optimize`` per configuration, each SCC (per-criterion loss, joint gradient and optimizer: where every
mitigation has something to act on) except the CCC fallback row, on SummEval (K = 4). The scripted gradient names
no criterion, so the specificity fallback finds every criterion diluted (d = K, its most expensive case). From the
run store: per training step, the calls (distinct RPCs) and tokens of the training chain (purpose ``train``) and
of each mitigation's own purpose (``fallback``, ``arbiter``), checked against the formula. Validation and test
calls are left out of the comparison: a mitigation changes which candidates the gate accepts, and with them how
many validation and test predictions the cache can serve. Recombination runs once, after the last step (its calls
are shown per run: V, and T more when the gate accepts the stitched prompt). Tokens are the scripted endpoint's
usage (the judge's prompt tokens are its prompt's characters / 4; other roles report a small fixed usage), so they
show where tokens go, not a real model's figures.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _support import (
    console,
    dataset,
    endpoint,
    exit_on_sigterm,
    machine_load,
    query,
    run_optimize,
    verdict,
    write_run_config,
)
from rich.table import Table

K = 4  # SummEval criteria

FALLBACK = {"specificity_fallback": 0.2}
PARETO = {"gate": "pareto", "gate_epsilon": 0.1}
CONFIGS: dict[str, tuple[str, dict[str, Any], str, Callable[[int], int]]] = {
    "SCC plain (MAE gate)": ("SCC", {"gate": "mae"}, "0", lambda b: 0),
    "SCC + Pareto gate": ("SCC", PARETO, "0", lambda b: 0),
    "SCC + fallback": ("SCC", {"gate": "mae", **FALLBACK}, "B·d gradient (d = K here)", lambda b: b * K),
    "SCC + arbiter": ("SCC", {"gate": "mae", "conflict_arbiter": True}, "1 (optimizer model)", lambda b: 1),
    "SCC + all": ("SCC", {**PARETO, **FALLBACK, "conflict_arbiter": True}, "B·d + 1", lambda b: b * K + 1),
    "CCC plain (MAE gate)": ("CCC", {"gate": "mae"}, "0", lambda b: 0),
    "CCC + fallback": ("CCC", {"gate": "mae", **FALLBACK}, "B·d loss + B·d gradient", lambda b: 2 * b * K),
    "SCC + recombination (gate none)": ("SCC", {"gate": "none", "archive_recombine": True}, "0", lambda b: 0),
}


def per_purpose(run_dir: Path, steps: int) -> dict[str, tuple[int, int]]:
    """Per purpose, (calls, tokens) over the training steps 1..steps."""
    rows = query(
        run_dir,
        "SELECT purpose, COUNT(DISTINCT request_id), SUM(prompt_tokens + completion_tokens) FROM calls "
        "WHERE step BETWEEN 1 AND ? AND outcome = 'ok' GROUP BY purpose",
        (steps,),
    )
    return {purpose: (calls, tokens) for purpose, calls, tokens in rows}


def recombination(run_dir: Path, steps: int) -> tuple[int, int]:
    (row,) = query(
        run_dir,
        "SELECT COUNT(DISTINCT request_id), COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM calls "
        "WHERE step = ? AND outcome = 'ok'",
        (steps + 1,),
    )
    return row[0], row[1]


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--train", type=int, default=12)
    parser.add_argument("--val", type=int, default=4)
    parser.add_argument("--test", type=int, default=6)
    args = parser.parse_args()
    console.print(machine_load(), style="dim")
    table = Table(
        title=f"Calls and tokens per training step (SummEval K={K}, B={args.batch}, V={args.val}, T={args.test}; "
        f"mean over {args.steps} steps)"
    )
    for column in ("configuration", "training calls / step", "training tokens / step", "mitigation calls / step"):
        table.add_column(column, justify="left" if column == "configuration" else "right")
    table.add_column("mitigation tokens / step", justify="right")
    table.add_column("formula (calls / step)")
    table.add_column("ok")
    all_ok = True
    with tempfile.TemporaryDirectory(prefix="bench-mitigations-") as tmp_name, endpoint(delay=0.0) as ep:
        tmp = Path(tmp_name)
        for n, (name, (mode, settings, formula, expected)) in enumerate(CONFIGS.items()):
            console.print(f"running {name} …", style="dim")
            run_dir = tmp / f"run{n}"
            config = write_run_config(
                tmp / f"run{n}.yaml",
                ep.base_url,
                mode=mode,
                steps=args.steps,
                batch_size=args.batch,
                concurrency=8,
                bootstrap_resamples=0,
                dataset=dataset(args.train, args.val, args.test),
                **settings,
            )
            run_optimize(config, run_dir)
            found = per_purpose(run_dir, args.steps)
            train_calls, train_tokens = found.get("train", (0, 0))
            own = {p: v for p, v in sorted(found.items()) if p in ("fallback", "arbiter")}
            calls = " + ".join(f"{c / args.steps:g} {p}" for p, (c, _) in own.items()) or "0"
            tokens = " + ".join(f"{t / args.steps:,.0f}" for _, (_, t) in own.items()) or "0"
            ok = sum(c for c, _ in own.values()) == expected(args.batch) * args.steps
            if settings.get("archive_recombine"):
                r_calls, r_tokens = recombination(run_dir, args.steps)
                accepted = query(run_dir, "SELECT status FROM steps WHERE step = ?", (args.steps + 1,))
                want = args.val + (args.test if accepted == [("accepted",)] else 0) if accepted else 0
                ok &= r_calls == want
                calls += f"; once per run: {r_calls} judge"
                tokens += f"; once: {r_tokens:,}"
                formula += "; once per run: V, + T if accepted, 0 if nothing to stitch"
            all_ok &= ok
            table.add_row(
                name,
                f"{train_calls / args.steps:g}",
                f"{train_tokens / args.steps:,.0f}",
                calls,
                tokens,
                formula,
                "✓" if ok else "✗",
            )
    console.print(table)
    console.print(verdict(all_ok, "each mitigation's calls equal its formula"))


if __name__ == "__main__":
    main()
