"""The report's mitigations: what the specificity fallback, the archive of non-dominated prompts (kept under every
gate), its recombination and the conflict arbiter did in each run."""

from __future__ import annotations

from typing import Any

from judgeopt.orchestrator.study.reporting.document import Paragraph, Section, Table
from judgeopt.orchestrator.study.reporting.inputs import Study


def _fallback_cells(fallback: dict[str, Any] | None) -> tuple[str, ...]:
    if fallback is None:
        return ("—", "—", "—", "—")
    cost = fallback["cost"].values()
    calls = sum(c["calls"] for c in cost)
    tokens = sum(c["prompt_tokens"] + c["completion_tokens"] for c in cost)
    rate = "—" if fallback["rate"] is None else f"{fallback['rate']:.2f}"
    return (rate, f"{fallback['fell_back']} of {fallback['joint_gradients']}", f"{calls:,}", f"{tokens:,}")


def _archive_cells(archives: dict[str, Any] | None) -> tuple[str, ...]:
    if not archives:
        return ("—", "—")
    members = "; ".join(f"{track}: {len(a['members'])}" for track, a in archives.items())
    chosen = "; ".join(f"{track}: step {a['chosen']} ({a['rule']})" for track, a in archives.items())
    return (members, chosen)


def _recombination_cells(recombination: dict[str, Any] | None) -> tuple[str, ...]:
    """The stitched prompt's gate outcome per track, and its largest stitching loss of validation ρ."""
    if not recombination:
        return ("—", "—")
    outcomes, losses = [], []
    for track, r in recombination.items():
        if "skipped" in r:
            outcomes.append(f"{track}: none ({r['skipped']})")
            continue
        outcomes.append(f"{track}: {r['status']}" + (", in archive" if r["in_archive"] else ""))
        worst = max(r["stitching"].items(), key=lambda item: item[1]["loss"])
        losses.append(f"{track}: {worst[1]['loss']:+.3f} ({worst[0]})")
    return ("; ".join(outcomes), "; ".join(losses) or "—")


def _conflict_cells(conflicts: dict[str, Any] | None) -> tuple[str, ...]:
    if conflicts is None:
        return ("—", "—")
    calls = sum(c["calls"] for c in conflicts["cost"].values())
    return (str(conflicts["total"]), f"{calls:,}")


MITIGATIONS = ("fallback", "archive", "recombination", "conflicts")
"""The summary.json keys of the mitigations a run can have on."""


def mitigations_section(study: Study) -> Section | None:
    """One row per run with a mitigation on; ``None`` when no run had one."""
    cells = [c for c in study.cells if any(key in c.summary for key in MITIGATIONS)]
    if not cells:
        return None
    rows = tuple(
        (
            c.name,
            *_fallback_cells(c.summary.get("fallback")),
            *_archive_cells(c.summary.get("archive")),
            *_recombination_cells(c.summary.get("recombination")),
            *_conflict_cells(c.summary.get("conflicts")),
        )
        for c in cells
    )
    header = (
        "run",
        "fallback rate",
        "joint gradients that fell back",
        "fallback calls",
        "fallback tokens",
        "archive members",
        "archive's choice",
        "recombined prompt",
        "largest stitching loss",
        "conflicts found",
        "arbiter calls",
    )
    intro = Paragraph(
        "Specificity fallback: the share of (joint gradient, criterion) pairs whose focus proxy fell below the "
        "threshold and got a per-criterion call, and what those calls cost. Archive: every gate keeps the "
        "non-dominated prompts per track; its rule's choice is the deployed best under the Pareto gate and an "
        "alternative to best under a scalar gate. Recombination: the prompt stitched from the archive's best member "
        "per criterion, whether the gate accepted it, and the largest drop of a criterion's validation ρ from its "
        "source member to the stitched prompt. Conflict arbiter: the pairs of criteria "
        "whose gradients it found contradicting each other, and its calls."
    )
    return Section("Mitigations", (intro, Table(header, rows)))
