"""The report's record of its runs: calls, tokens and wall time per role, and provenance."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from judgeopt.orchestrator.engine.store import CallTimes
from judgeopt.orchestrator.study.reporting.aggregate import Aggregate
from judgeopt.orchestrator.study.reporting.document import Bullets, Paragraph, Section, Subheading, Table
from judgeopt.orchestrator.study.reporting.formatting import mean_std
from judgeopt.orchestrator.study.reporting.inputs import Study

ROLE_ORDER = ("judge", "loss", "gradient", "optimizer", "evaluator")
PURPOSE_ORDER = ("train", "fallback", "val", "test", "diagnostics", "interference")


def _roles(study: Study) -> list[str]:
    seen = {role for c in study.cells for role in c.usage}
    return [r for r in ROLE_ORDER if r in seen] + sorted(seen - set(ROLE_ORDER))


def _usage_rows(study: Study) -> list[tuple[str, ...]]:
    fields = (
        "llm_calls",
        "rpc_attempts",
        "failed_attempts",
        "truncated_replies",
        "prompt_tokens",
        "cached_prompt_tokens",
        "completion_tokens",
    )
    rows = []
    totals = dict.fromkeys(fields, 0)
    every = CallTimes([], [])
    for role in _roles(study):
        sums = {f: sum(c.usage.get(role, {}).get(f, 0) or 0 for c in study.cells) for f in fields}
        times = CallTimes([], [])
        for cell in study.cells:
            own = cell.call_times.get(role, CallTimes([], []))
            times.endpoint.extend(own.endpoint)
            times.queue.extend(own.queue)
        every.endpoint.extend(times.endpoint)
        every.queue.extend(times.queue)
        totals = {f: totals[f] + sums[f] for f in fields}
        rows.append((role, *(f"{sums[f]:,}" for f in fields), *_time_cells(times)))
    rows.append(("total", *(f"{totals[f]:,}" for f in fields), *_time_cells(every)))
    return rows


def _time_cells(times: CallTimes) -> tuple[str, str, str]:
    """Seconds at the services, the median per attempt (the calls' own speed) and the time spent queueing."""
    figures = times.as_json()
    median, queued = figures["endpoint_median"], figures["queue_total"]
    return (
        f"{figures['endpoint_total']:,.1f}",
        "—" if median is None else f"{median:.3f}",
        "—" if queued is None else f"{queued:,.1f}",
    )


def _purpose_rows(study: Study) -> tuple[list[str], list[tuple[str, ...]]]:
    seen = {purpose for c in study.cells for _stage, purpose in c.attempts_by_purpose}
    purposes = [p for p in PURPOSE_ORDER if p in seen] + sorted(seen - set(PURPOSE_ORDER))
    rows = []
    for role in _roles(study):
        counts = [sum(c.attempts_by_purpose.get((role, p), 0) for c in study.cells) for p in purposes]
        rows.append((role, *(f"{n:,}" for n in counts)))
    return purposes, rows


def _wall_rows(aggregates: Sequence[Aggregate]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for agg in aggregates:
        cells = agg.config.cells
        call_seconds = [sum(sum(t.endpoint) for t in c.call_times.values()) for c in cells]
        rows.append(
            (
                agg.config.mode,
                agg.config.gate,
                str(len(cells)),
                mean_std([c.wall_seconds for c in cells], 1),
                mean_std(call_seconds, 1),
            )
        )
    return rows


def spend_section(study: Study, aggregates: Sequence[Aggregate]) -> Section:
    title = "Calls, tokens and wall time per role"
    if not any(c.usage for c in study.cells):
        return Section(title, (Paragraph("No model calls are recorded in these runs."),))
    purposes, purpose_rows = _purpose_rows(study)
    return Section(
        title,
        (
            Paragraph(
                "Totals over all cells, counted from each cell's store (every RPC attempt, including the evaluator's "
                "diagnostics and the interference evaluations made after a run's summary.json was written). "
                "Seconds at the services add up the durations of concurrent calls, so they can exceed the wall "
                "time; they run from sending a request to its reply, so the median per attempt is the calls' own "
                "speed. The wait for a slot (the concurrency limit and the endpoints' rate limits) is counted apart "
                "as queue wait (— for runs stored before it was kept apart). "
                "Truncated replies stopped at their role's output cap: each is recorded as a failed answer of its "
                "call (nothing in it is used, in per-criterion and joint calls alike)."
            ),
            Table(
                (
                    "role",
                    "LLM calls",
                    "RPC attempts",
                    "failed attempts",
                    "truncated replies",
                    "prompt tokens",
                    "cached prompt tokens",
                    "completion tokens",
                    "seconds at the services",
                    "median s per attempt",
                    "queue wait s",
                ),
                tuple(_usage_rows(study)),
            ),
            Subheading("RPC attempts per role and purpose"),
            Table(("role", *purposes), tuple(purpose_rows)),
            Subheading("Wall time per configuration (first call to last committed step of each run)"),
            Table(
                ("mode", "gate", "runs", "wall time per run (s)", "seconds at the services per run"),
                tuple(_wall_rows(aggregates)),
                labels=2,
            ),
        ),
    )


def _plain(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def provenance_section(study: Study) -> Section:
    first_summary = study.cells[0].summary
    first = first_summary.get("provenance", {})
    checksums = sorted({str(c.summary.get("provenance", {}).get("data_checksum")) for c in study.cells})
    models = first.get("models") or {}
    grid = study.grid
    settings = study.run_settings
    dataset = settings.get("dataset", {}) if isinstance(settings.get("dataset"), dict) else {}
    items = [
        f"judgeopt version: {first.get('judgeopt_version', '—')}",
        f"dataset: {first.get('dataset', '—')}, checksum {', '.join(checksums)}",
        "models per role: " + (", ".join(f"{role} = {name}" for role, name in models.items()) or "—"),
        "grid: "
        + "; ".join(f"{key} = {_plain(value)}" for key, value in grid.items())
        + f" ({len(study.cells)} cell{'s' if len(study.cells) != 1 else ''})",
        "run settings: "
        + "; ".join(
            f"{key} = {settings[key]}"
            for key in ("steps", "batch_size", "seed", "test_interval", "drop_output_format_after_update")
            if key in settings
        ),
        "data sizes: "
        + (
            ", ".join(f"{k} = {dataset[k]}" for k in ("train_size", "val_size", "test_size", "seed") if k in dataset)
            or "—"
        ),
        f"source: {study.kind} directory {study.directory}",
        f"profile: {first_summary.get('profile', '—')}; differs from the study in: "
        + (", ".join(first_summary.get("differs_from_study") or []) or "nothing"),
    ]
    unfinished = [c.name for c in study.cells if c.summary.get("status") != "complete"]
    if unfinished:
        items.append(f"cells not complete: {', '.join(unfinished)}")
    return Section("Provenance", (Bullets(tuple(items)),))
