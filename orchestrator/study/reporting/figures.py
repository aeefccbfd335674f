"""The report's figures, drawn with matplotlib as PNG files.

matplotlib is imported only inside the plotting functions: importing the reporting package does not load it.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from statistics import fmean, stdev
from typing import TYPE_CHECKING

from judgeopt.orchestrator.study.reporting.aggregate import Aggregate, PooledSpecificity, Series, length_series, ratings
from judgeopt.orchestrator.study.reporting.document import Figure
from judgeopt.orchestrator.study.reporting.inputs import Study
from judgeopt.orchestrator.study.reporting.study import STUDY_SPECIFICITY, STUDY_SPECIFICITY_DROP

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure as MplFigure

DPI = 110
MIN_Y_SPAN = 0.1


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


def _new_figure(nrows: int, ncols: int, width: float, height: float) -> tuple[MplFigure, list[Axes]]:
    """A pyplot-free figure on the Agg canvas: no global state, no display needed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def _png(fig: MplFigure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _plot_band(ax: Axes, series: Series, label: str, color: str) -> None:
    """The mean over runs as a line, the min–max over runs as a band."""
    steps = sorted(series)
    ax.plot(steps, [fmean(series[s]) for s in steps], marker="o", markersize=3.5, color=color, label=label)
    if any(len(series[s]) > 1 for s in steps):
        lows = [min(series[s]) for s in steps]
        highs = [max(series[s]) for s in steps]
        ax.fill_between(steps, lows, highs, color=color, alpha=0.18, linewidth=0)


def _style_step_axis(ax: Axes, title: str, ylabel: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    low, high = ax.get_ylim()
    if high - low < MIN_Y_SPAN:  # a flat line would otherwise get a magnified axis that suggests change
        middle = (low + high) / 2
        ax.set_ylim(middle - MIN_Y_SPAN / 2, middle + MIN_Y_SPAN / 2)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="best")


GATE_COLORS = ("tab:purple", "tab:olive", "tab:cyan", "tab:brown")
"""Bars are coloured by gate, in colours the per-mode line plots do not use first."""


def _mode_colors(study: Study) -> dict[str, str]:
    return {mode: f"C{i % 10}" for i, mode in enumerate(study.modes)}


def _band_note(aggregates: Sequence[Aggregate]) -> str:
    if all(len(a.config.cells) == 1 for a in aggregates):
        return "(one run)"
    return "(line: mean over runs; band: min–max)"


def trajectory_figure(study: Study, gate: str, aggregates: Sequence[Aggregate]) -> Figure:
    criteria = study.criteria
    ncols = 2 if len(criteria) > 1 else 1
    nrows = -(-len(criteria) // ncols)
    fig, axes = _new_figure(nrows, ncols, 5.4, 3.6)
    colors = _mode_colors(study)
    for ax, criterion in zip(axes, criteria, strict=False):
        for agg in aggregates:
            _plot_band(ax, agg.rho[criterion], agg.config.mode, colors[agg.config.mode])
        _style_step_axis(ax, criterion, "Spearman ρ (test)")
    for ax in axes[len(criteria) :]:
        ax.set_visible(False)
    fig.suptitle(f"Test ρ per criterion over steps, gate {gate} {_band_note(aggregates)}")
    return Figure(
        f"trajectories-gate-{_slug(gate)}.png",
        f"Test Spearman ρ per criterion over steps with gate {gate}: one line per mode (mean over runs), "
        "band = min–max over runs.",
        _png(fig),
    )


def macro_hvi_figure(study: Study, gate: str, aggregates: Sequence[Aggregate]) -> Figure:
    fig, (macro_ax, hvi_ax) = _new_figure(1, 2, 5.4, 3.8)
    colors = _mode_colors(study)
    for agg in aggregates:
        _plot_band(macro_ax, agg.macro, agg.config.mode, colors[agg.config.mode])
        _plot_band(hvi_ax, agg.hvi_curve, agg.config.mode, colors[agg.config.mode])
    _style_step_axis(macro_ax, "Macro ρ over steps", "macro Spearman ρ (test)")
    _style_step_axis(hvi_ax, "Hypervolume of the archive of steps 0..t", "hypervolume indicator (ref. −1)")
    fig.suptitle(f"Macro ρ and hypervolume over steps, gate {gate} {_band_note(aggregates)}")
    return Figure(
        f"macro-hvi-gate-{_slug(gate)}.png",
        f"Gate {gate}: test macro ρ per step (left) and hypervolume indicator of the per-criterion ρ vectors of "
        "steps 0..t (right); mean over runs, band = min–max over runs.",
        _png(fig),
    )


def lengths_figure(study: Study, gate: str, aggregates: Sequence[Aggregate]) -> Figure:
    fig, (longest_ax, ratio_ax) = _new_figure(1, 2, 5.4, 3.8)
    colors = _mode_colors(study)
    for agg in aggregates:
        longest, ratio = length_series(agg.config)
        _plot_band(longest_ax, longest, agg.config.mode, colors[agg.config.mode])
        _plot_band(ratio_ax, ratio, agg.config.mode, colors[agg.config.mode])
    _style_step_axis(longest_ax, "Longest instruction over steps", "tokens (approximate)")
    _style_step_axis(ratio_ax, "Length asymmetry over steps", "longest / shortest instruction")
    fig.suptitle(f"Instruction lengths over steps, gate {gate} {_band_note(aggregates)}")
    return Figure(
        f"lengths-gate-{_slug(gate)}.png",
        f"Gate {gate}: the longest instruction per step (left) and the asymmetry, longest over shortest (right); "
        "mean over runs, band = min–max over runs.",
        _png(fig),
    )


def diagnostics_figure(study: Study) -> Figure:
    fig, axes = _new_figure(1, 2, 5.6, 3.9)
    width = 0.8 / len(study.gates)
    for ax, kind in zip(axes, ("specificity", "adherence"), strict=True):
        for g, gate in enumerate(study.gates):
            xs, means, errors = [], [], []
            for m, mode in enumerate(study.modes):
                values = ratings([c for c in study.cells if c.mode == mode and c.gate == gate], kind)
                if values:
                    xs.append(m - 0.4 + width * (g + 0.5))
                    means.append(fmean(values))
                    errors.append(stdev(values) if len(values) > 1 else 0.0)
            color = GATE_COLORS[g % len(GATE_COLORS)]
            bars = ax.bar(xs, means, width * 0.92, yerr=errors, capsize=3, color=color, label=f"gate {gate}")
            ax.bar_label(bars, fmt="%.1f", fontsize="small", padding=2)
        if kind == "specificity":
            ax.axhline(STUDY_SPECIFICITY["per-criterion"], color="0.3", ls="--", lw=1, label="study: S gradients 9.0")
            ax.axhline(STUDY_SPECIFICITY["joint"], color="0.3", ls=":", lw=1.2, label="study: C gradients 3.7")
        ax.set_xticks(range(len(study.modes)), list(study.modes))
        ax.set_ylim(0, 12.6)
        ax.set_yticks(range(0, 11, 2))
        ax.set_xlabel("mode")
        ax.set_ylabel(f"mean {kind} (1–10)")
        ax.set_title("Gradient specificity" if kind == "specificity" else "Optimizer adherence")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize="small", loc="upper center", ncols=2)
    fig.suptitle("Evaluator diagnostics by mode (mean over runs, steps and criteria; error bars: std)")
    return Figure(
        "diagnostics.png",
        "Mean gradient specificity (left) and optimizer adherence (right) by mode and gate, rated 1–10 by the "
        "evaluator; error bars = std over all ratings.",
        _png(fig),
    )


def percent(change: float | None) -> str:
    """A relative change as a signed whole percentage, ``—`` when there is none."""
    return "—" if change is None else f"{change * 100:+.0f}%"


def specificity_drop_figure(pooled: Sequence[tuple[str, PooledSpecificity]]) -> Figure:
    """Per-criterion against joint gradients' mean specificity, for each pooling given (label, numbers) and the
    study's, each labelled with its relative change."""
    fig, (ax,) = _new_figure(1, 1, 7.0, 4.0)
    groups = ("per-criterion", "joint")
    series = [(f"{label} ({percent(p.change)})", (p.per_criterion, p.joint)) for label, p in pooled]
    study = (STUDY_SPECIFICITY["per-criterion"], STUDY_SPECIFICITY["joint"])
    series.append((f"study, arXiv 2605.26046 ({percent(STUDY_SPECIFICITY_DROP)})", study))
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series):
        xs = [g - 0.4 + width * (i + 0.5) for g, v in enumerate(values) if v is not None]
        heights = [v for v in values if v is not None]
        color = "0.55" if i == len(series) - 1 else GATE_COLORS[i % len(GATE_COLORS)]
        bars = ax.bar(xs, heights, width * 0.92, color=color, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize="small", padding=2)
    ax.set_xticks(range(len(groups)), [f"{g} gradients" for g in groups])
    ax.set_ylim(0, 12.6)
    ax.set_yticks(range(0, 11, 2))
    ax.set_ylabel("mean specificity (1–10)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small", loc="upper right")
    ax.set_title("Gradient specificity, mean of the modes' means")
    return Figure(
        "specificity-drop.png",
        "Mean gradient specificity with per-criterion gradients (Single-Task, SSS, SSC) and with joint gradients "
        "(SCC, CCC), each the mean of its modes' means, with the relative change in the legend; grey: the study's "
        "9.0 and 3.7 (−59%).",
        _png(fig),
    )
