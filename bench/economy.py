"""Call economy: LLM calls per stage per step against each mode's formula, and cache hits on re-scoring.

    .venv/bin/python bench/economy.py [--modes SSS,SSC,SCC,CCC,single] [--batch 3] [--steps 2] [--val 8] [--test 12]
        [--json FILE]

1. For every mode, ``judgeopt optimize`` (gate none, so every candidate is accepted and evaluated) against the
   scripted endpoint. From the run store: distinct training RPCs per stage and step, the LLM calls the services
   report making for them (``calls.llm_calls``), and the validation and test calls per step. They are checked
   against the formula (the same table as tests/orchestrator/test_runs.py FORMULA), with B the batch
   and K = 4 SummEval criteria: SSS B judge, B·K loss, B·K gradient, K optimizer; SSC … 1 optimizer; SCC B·K loss,
   B gradient; CCC B, B, B, 1; single (K one-criterion tracks) B·K, B·K, B·K, K. Validation and test: one judge
   call per sample and track at every step. The endpoint's own request count must equal the LLM calls the store
   reports (nothing is spent unrecorded).
2. Cache: a run whose gate rejects every candidate (``deterministic_handler(worse_marker="ZZWORSE")``: every
   proposed instruction makes the judge answer 1 everywhere) with the MAE gate. The prompt never changes, so test
   re-scoring at steps ≥ 1 must cost 0 calls: its T predictions per step come from the prediction cache.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _records import BenchRecord, Target
from _support import (
    add_json_argument,
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
TRAIN_STAGES = ("judge", "loss", "gradient", "optimizer")


def formula(mode: str, b: int) -> dict[str, int]:
    return {
        "SSS": {"judge": b, "loss": b * K, "gradient": b * K, "optimizer": K},
        "SSC": {"judge": b, "loss": b * K, "gradient": b * K, "optimizer": 1},
        "SCC": {"judge": b, "loss": b * K, "gradient": b, "optimizer": 1},
        "CCC": {"judge": b, "loss": b, "gradient": b, "optimizer": 1},
        "single": {"judge": b * K, "loss": b * K, "gradient": b * K, "optimizer": K},
    }[mode]


def counts(run_dir: Path) -> dict[tuple[int, str, str], tuple[int, int]]:
    """(step, stage, purpose) → (distinct RPCs, LLM calls reported by the services for their ok attempts)."""
    rows = query(
        run_dir,
        "SELECT step, stage, purpose, COUNT(DISTINCT request_id), "
        "SUM(CASE WHEN outcome = 'ok' THEN llm_calls ELSE 0 END) FROM calls GROUP BY step, stage, purpose",
    )
    return {(step, stage, purpose): (rpcs, llm) for step, stage, purpose, rpcs, llm in rows}


def economy(base_url: str, tmp: Path, mode: str, args: argparse.Namespace) -> Path:
    config = write_run_config(
        tmp / f"{mode}.yaml",
        base_url,
        mode=mode,
        steps=args.steps,
        batch_size=args.batch,
        gate="none",
        concurrency=8,
        bootstrap_resamples=0,
        dataset=dataset(args.train, args.val, args.test),
    )
    run_optimize(config, tmp / mode)
    return tmp / mode


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default="SSS,SSC,SCC,CCC,single")
    parser.add_argument("--batch", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--train", type=int, default=24)
    parser.add_argument("--val", type=int, default=8)
    parser.add_argument("--test", type=int, default=12)
    add_json_argument(parser)
    args = parser.parse_args()
    console.print(machine_load(), style="dim")
    record = BenchRecord("economy")
    off_formula = 0
    b = args.batch
    all_ok = True

    table = Table(title=f"Training calls per step: measured RPCs (LLM calls) vs formula; B={b}, K={K}")
    table.add_column("mode")
    table.add_column("step", justify="right")
    for stage in TRAIN_STAGES:
        table.add_column(stage, justify="right")
    table.add_column("val / test calls (expected)", justify="right")
    table.add_column("endpoint requests = Σ llm_calls", justify="right")
    table.add_column("ok")

    with tempfile.TemporaryDirectory(prefix="bench-economy-") as tmp_name:
        tmp = Path(tmp_name)
        with endpoint(delay=0.0) as ep:
            for mode in (m.strip() for m in args.modes.split(",")):
                console.print(f"running {mode} …", style="dim")
                before = len(ep.requests())
                run_dir = economy(ep.base_url, tmp, mode, args)
                spent = len(ep.requests()) - before
                found = counts(run_dir)
                recorded = sum(llm for _, llm in found.values())
                tracks = K if mode == "single" else 1
                expected = formula(mode, b)
                for step in range(0, args.steps + 1):
                    cells = []
                    ok = True
                    for stage in TRAIN_STAGES:
                        rpcs, llm = found.get((step, stage, "train"), (0, 0))
                        want = expected[stage] if step > 0 else 0
                        ok &= rpcs == want and llm == want
                        cells.append(f"{rpcs} ({llm}) / {want}" if step > 0 else "—")
                    val = found.get((step, "judge", "val"), (0, 0))[0]
                    test = found.get((step, "judge", "test"), (0, 0))[0]
                    want_val, want_test = args.val * tracks, args.test * tracks
                    ok &= (val, test) == (want_val, want_test)
                    endpoint_cell = f"{spent} = {recorded}" if step == 0 else ""
                    ok &= spent == recorded
                    all_ok &= ok
                    off_formula += not ok
                    table.add_row(
                        mode if step == 0 else "",
                        str(step),
                        *cells,
                        f"{val}/{test} ({want_val}/{want_test})",
                        endpoint_cell,
                        "✓" if ok else "✗",
                    )
        console.print(table)

        with endpoint(delay=0.0, worse_marker="ZZWORSE") as worse:
            console.print("running the all-rejected run …", style="dim")
            config = write_run_config(
                tmp / "cache.yaml",
                worse.base_url,
                mode="SSS",
                steps=args.steps + 1,
                batch_size=b,
                gate="mae",
                concurrency=8,
                bootstrap_resamples=0,
                dataset=dataset(args.train, args.val, args.test),
            )
            run_optimize(config, tmp / "cache")
        statuses = dict(query(tmp / "cache", "SELECT step, status FROM steps"))
        found = counts(tmp / "cache")
        cache = Table(title="Re-scoring an unchanged prompt: SSS, MAE gate, every candidate rejected")
        for column in ("step", "gate", "val calls (candidate)", "test calls", "test predictions from the cache"):
            cache.add_column(column, justify="right")
        cache_ok = True
        hits = 0
        total_rescoring = 0
        for step in range(0, args.steps + 2):
            val = found.get((step, "judge", "val"), (0, 0))[0]
            test = found.get((step, "judge", "test"), (0, 0))[0]
            served = args.test - test
            if step > 0:
                cache_ok &= test == 0 and statuses.get(step) == "rejected"
                hits += served
                total_rescoring += test
            cache.add_row(str(step), str(statuses.get(step)), str(val), str(test), str(served) if step else "—")
        console.print(cache)
    record.add("steps whose calls differ from the mode's formula", off_formula, "steps", Target("==", 0))
    record.add("test calls re-scoring an unchanged prompt", total_rescoring, "calls", Target("==", 0))
    record.add("test predictions served from the cache", hits, "predictions")
    record.write(args.json)
    console.print(verdict(all_ok, "calls per stage equal each mode's formula; endpoint requests equal recorded calls"))
    console.print(
        verdict(cache_ok, f"test re-scoring at steps ≥ 1 cost 0 calls ({hits} predictions served from the cache)")
    )


if __name__ == "__main__":
    main()
