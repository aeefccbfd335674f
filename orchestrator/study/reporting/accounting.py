"""The report's record of its runs: calls, tokens and wall time per role, and provenance."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
    fields = ("llm_calls", "rpc_attempts", "failed_attempts", "prompt_tokens", "completion_tokens")
    rows = []
    totals = dict.fromkeys(fields, 0)
    total_seconds = 0.0
    for role in _roles(study):
        sums = {f: sum(c.usage.get(role, {}).get(f, 0) or 0 for c in study.cells) for f in fields}
        seconds = sum(c.call_seconds.get(role, 0.0) or 0.0 for c in study.cells)
        totals = {f: totals[f] + sums[f] for f in fields}
        total_seconds += seconds
        rows.append((role, *(f"{sums[f]:,}" for f in fields), f"{seconds:,.1f}"))
    rows.append(("total", *(f"{totals[f]:,}" for f in fields), f"{total_seconds:,.1f}"))
    return rows


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
        call_seconds = [sum(c.call_seconds.values()) for c in cells]
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
                "Model-call seconds add up the durations of concurrent calls, so they can exceed the wall time."
            ),
            Table(
                (
                    "role",
                    "LLM calls",
                    "RPC attempts",
                    "failed attempts",
                    "prompt tokens",
                    "completion tokens",
                    "model-call seconds",
                ),
                tuple(_usage_rows(study)),
            ),
            Subheading("RPC attempts per role and purpose"),
            Table(("role", *purposes), tuple(purpose_rows)),
            Subheading("Wall time per configuration (first call to last committed step of each run)"),
            Table(
                ("mode", "gate", "runs", "wall time per run (s)", "model-call seconds per run"),
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
