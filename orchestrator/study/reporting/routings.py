"""The judge routings compared on a run's chosen instructions (``judgeopt interference``): stitched into one joint
prompt vs judged per criterion with a shared prefix, Δρ with paired intervals, each routing's halo beside the
human labels', and the cost per row. The same rows feed the command's table and the report's section."""

from __future__ import annotations

from collections.abc import Sequence

from judgeopt.orchestrator.study.reporting.document import Paragraph, Section, Subheading, Table
from judgeopt.orchestrator.study.reporting.formatting import number
from judgeopt.orchestrator.study.reporting.inputs import Study
from judgeopt.orchestrator.study.routing_interference import COMPARED, RoutingInterference

DELTA_COLUMNS = ("split", "criterion", "ρ joint", "ρ prefix-shared", "Δρ (joint − prefix-shared)", "95% CI")
HALO_COLUMNS = ("split", "halo joint", "halo prefix-shared", "halo human labels")
COST_COLUMNS = ("routing", "val macro ρ", "calls per row", "prompt tokens per row", "cached prompt tokens per row")


def interval(ci: Sequence[float] | None) -> str:
    return "—" if ci is None else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


def delta_rows(result: RoutingInterference) -> list[tuple[str, ...]]:
    """Per split, one row per criterion and a macro row."""
    stitched, shared = COMPARED
    rows: list[tuple[str, ...]] = []
    for split, comparison in result.splits.items():
        for name in result.criteria:
            rho = (comparison.rho[stitched][name], comparison.rho[shared][name])
            delta = number(comparison.delta[name], signed=True)
            rows.append((split, name, number(rho[0]), number(rho[1]), delta, interval(comparison.delta_ci[name])))
        macro = (comparison.macro_rho[stitched], comparison.macro_rho[shared])
        delta = number(comparison.delta_macro, signed=True)
        rows.append((split, "macro", number(macro[0]), number(macro[1]), delta, interval(comparison.delta_macro_ci)))
    return rows


def halo_rows(result: RoutingInterference) -> list[tuple[str, ...]]:
    return [
        (split, *(number(comparison.halo[key]) for key in (*COMPARED, "human")))
        for split, comparison in result.splits.items()
    ]


def cost_rows(result: RoutingInterference) -> list[tuple[str, ...]]:
    """Per routing, its validation macro ρ and cost per row; the winner marked."""
    winner = result.choice().winner
    rows = []
    for routing in COMPARED:
        cost = result.cost_per_row[routing]
        label = f"{routing} (chosen)" if routing == winner else routing
        figures = (cost.calls, cost.prompt_tokens, cost.cached_prompt_tokens)
        rows.append((label, number(result.splits["val"].macro_rho[routing]), *(number(v, 1) for v in figures)))
    return rows


def routings_section(study: Study) -> Section | None:
    """One table set per run that holds the measurement; ``None`` when none does."""
    measured = [(cell.name, cell.routings) for cell in study.cells if cell.routings is not None]
    if not measured:
        return None
    blocks: list[Paragraph | Subheading | Table] = [
        Paragraph(
            "Each run's chosen instructions judged two ways on validation and test: stitched into one joint prompt, "
            "and per criterion with a shared prefix (one call per criterion, each seeing only its own instruction). "
            "Δρ = joint − prefix-shared, with a paired bootstrap 95% interval over the rows: below zero, the "
            "stitched instructions hurt one another. The halo is the mean Spearman ρ between the scores of different "
            "criteria; a judge's well above the human labels' gives one impression to every criterion. The routing "
            "with the higher validation macro ρ is the one `judgeopt export` records."
        )
    ]
    for name, result in measured:
        blocks += [
            Subheading(f"{name}: step {result.step} (chosen on {result.chosen_on})"),
            Table(DELTA_COLUMNS, tuple(delta_rows(result)), labels=2),
            Table(HALO_COLUMNS, tuple(halo_rows(result))),
            Table(COST_COLUMNS, tuple(cost_rows(result))),
        ]
    return Section("Interference at inference time: joint vs prefix-shared judging", tuple(blocks))
