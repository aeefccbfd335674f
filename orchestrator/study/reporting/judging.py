"""The report's view of how the judge scored: how many scores were logprob-weighted and how many sampled, and the
judge's halo (the mean correlation between its scores for different criteria) beside the same figure for the human
labels, per run and step. A halo well above the humans' is interference at inference time: the judge gives one
impression to every criterion."""

from __future__ import annotations

from typing import Any

from judgeopt.orchestrator.study.reporting.document import Paragraph, Section, Subheading, Table
from judgeopt.orchestrator.study.reporting.formatting import number
from judgeopt.orchestrator.study.reporting.inputs import Study


def _scoring_row(name: str, summary: dict[str, Any]) -> tuple[str, ...]:
    scoring = summary.get("judge_scoring") or {}
    return (
        name,
        str(scoring.get("asked", "—")).replace("_", "-"),
        str(scoring.get("logprob_weighted", "—")),
        str(scoring.get("sampled", "—")),
    )


def _halo_rows(name: str, summary: dict[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for step in summary.get("steps", []):
        halo = step.get("halo")
        if halo:
            judge, human = halo.get("judge"), halo.get("human")
            excess = judge - human if judge is not None and human is not None else None
            rows.append((name, str(step["step"]), number(judge), number(human), number(excess, signed=True)))
    return rows


def judging_section(study: Study) -> Section:
    title = "How the judge scored: logprob weighting and halo"
    halo_rows = [row for cell in study.cells for row in _halo_rows(cell.name, cell.summary)]
    blocks: list[Paragraph | Subheading | Table] = [
        Paragraph(
            "Valid judge scores by how they were obtained (logprob-weighted: the probability-weighted mean over the "
            "allowed score tokens; sampled: the score as written), and the method the judge's settings asked for."
        ),
        Table(
            ("run", "asked", "logprob-weighted", "sampled"),
            tuple(_scoring_row(cell.name, cell.summary) for cell in study.cells),
        ),
        Subheading("Halo per step (test set): mean Spearman ρ between criteria"),
    ]
    if halo_rows:
        blocks.append(Table(("run", "step", "judge", "human labels", "judge − human"), tuple(halo_rows), labels=2))
    else:
        blocks.append(Paragraph("No step records a halo (runs of one criterion per track, or older runs)."))
    return Section(title, tuple(blocks))
