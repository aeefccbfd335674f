"""The report of a run or an experiment: ``report.md`` and a self-contained ``report.html``, beside the study's
published numbers (arXiv 2605.26046).

Both documents are rendered from one :class:`Document` (sections of paragraphs, tables and figures) by two small
renderers. Figures are PNG files in ``report_files/``: the markdown links them, the HTML embeds them as data URIs.
A run directory is reported as an experiment with one cell.

Aggregation over a configuration's runs: average the runs' per-step test macro ρ and per-step validation metric;
the best step has the highest mean validation metric (earliest on ties) and its ρ is the mean ± std over runs of the
test macro ρ at that step; the oracle step (the study's choice) has the highest mean test macro ρ.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean, stdev
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from orchestrator.errors import ConfigError
from orchestrator.experiment import EXPERIMENT_FILE, INTERFERENCE_FILE, cell_name, load_experiment
from orchestrator.metrics import hypervolume_indicator
from orchestrator.policy import PRESETS
from orchestrator.store import STORE_FILE, Diagnostic, RunStore
from orchestrator.summary import SUMMARY_FILE

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure as MplFigure

REPORT_MARKDOWN = "report.md"
REPORT_HTML = "report.html"
FILES_DIR = "report_files"
DPI = 110
MIN_Y_SPAN = 0.1
ROLE_ORDER = ("judge", "loss", "gradient", "optimizer", "evaluator")
PURPOSE_ORDER = ("train", "val", "test", "diagnostics", "interference")

# --- the study's published numbers (arXiv 2605.26046) -----------------------------------------------------------


@dataclass(frozen=True)
class StudyRow:
    initial: float
    best: float
    step: int

    def __str__(self) -> str:
        return f"{self.initial:.3f} → {self.best:.3f} (step {self.step})"


STUDY_TABLE1 = {  # Table 1, MAE-gate rows, Qwen3 judge
    "single": StudyRow(0.274, 0.305, 2),
    "SSS": StudyRow(0.284, 0.284, 0),
    "SSC": StudyRow(0.289, 0.289, 0),
    "SCC": StudyRow(0.282, 0.282, 0),
    "CCC": StudyRow(0.285, 0.296, 9),
}
STUDY_NEVER_IMPROVED = "6 of 10 configurations never improved (best-on-test basis)"
STUDY_SPECIFICITY = {"per-criterion": 9.0, "joint": 3.7}
STUDY_INTERFERENCE = {"stitched": 0.220, "generic": 0.284, "separate": 0.305}

# --- the document: one structure, two renderers ------------------------------------------------------------------


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Subheading:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    labels: int = 1
    """How many leading columns hold labels (aligned left); the others hold numbers (aligned right)."""


@dataclass(frozen=True)
class Figure:
    name: str
    """File name in ``report_files/``."""
    caption: str
    png: bytes


Block = Paragraph | Subheading | Bullets | Table | Figure


@dataclass(frozen=True)
class Section:
    title: str
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class Document:
    title: str
    intro: tuple[Block, ...]
    sections: tuple[Section, ...]

    def figures(self) -> list[Figure]:
        blocks = [*self.intro, *(b for s in self.sections for b in s.blocks)]
        return [b for b in blocks if isinstance(b, Figure)]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown_block(block: Block) -> str:
    match block:
        case Paragraph(text):
            return text
        case Subheading(text):
            return f"### {text}"
        case Bullets(items):
            return "\n".join(f"- {item}" for item in items)
        case Table(header, rows, labels):
            lines = ["| " + " | ".join(map(_md_cell, header)) + " |"]
            lines.append("|" + "|".join(":--" if i < labels else "--:" for i in range(len(header))) + "|")
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in rows]
            return "\n".join(lines)
        case Figure(name, caption, _):
            return f"![{caption}]({FILES_DIR}/{name})\n\n*{caption}*"
    raise TypeError(f"unknown block {block!r}")


def render_markdown(document: Document) -> str:
    parts = [f"# {document.title}", *map(_markdown_block, document.intro)]
    for number, section in enumerate(document.sections, 1):
        parts.append(f"## {number}. {section.title}")
        parts += map(_markdown_block, section.blocks)
    return "\n\n".join(parts) + "\n"


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1150px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #bbb; padding-bottom: .15em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; }
th { background: #f0f0f0; }
td { text-align: right; font-variant-numeric: tabular-nums; }
td.label { text-align: left; }
tbody tr:nth-child(even) { background: #fafafa; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { color: #555; font-size: .9em; }
"""


_LABEL = ' class="label"'


def _html_block(block: Block) -> str:
    e = html.escape
    match block:
        case Paragraph(text):
            return f"<p>{e(text)}</p>"
        case Subheading(text):
            return f"<h3>{e(text)}</h3>"
        case Bullets(items):
            return "<ul>" + "".join(f"<li>{e(item)}</li>" for item in items) + "</ul>"
        case Table(header, rows, labels):
            head = "".join(f"<th>{e(h)}</th>" for h in header)
            body = "".join(
                "<tr>" + "".join(f"<td{_LABEL if i < labels else ''}>{e(c)}</td>" for i, c in enumerate(row)) + "</tr>"
                for row in rows
            )
            return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        case Figure(_, caption, png):
            data = base64.b64encode(png).decode("ascii")
            return (
                f'<figure><img alt="{e(caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{e(caption)}</figcaption></figure>"
            )
    raise TypeError(f"unknown block {block!r}")


def render_html(document: Document) -> str:
    parts = [f"<h1>{html.escape(document.title)}</h1>", *map(_html_block, document.intro)]
    for number, section in enumerate(document.sections, 1):
        parts.append(f'<h2 id="section-{number}">{number}. {html.escape(section.title)}</h2>')
        parts += map(_html_block, section.blocks)
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(document.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


# --- reading a run or experiment directory ------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One run directory: its summary and what only its store knows."""

    name: str
    mode: str
    gate: str
    summary: dict[str, Any]
    diagnostics: tuple[Diagnostic, ...]
    usage: dict[str, dict[str, int]]
    call_seconds: dict[str, float]
    attempts_by_purpose: dict[tuple[str, str], int]
    wall_seconds: float


@dataclass(frozen=True)
class Configuration:
    mode: str
    gate: str
    cells: tuple[Cell, ...]

    @property
    def label(self) -> str:
        return f"{self.mode} (gate {self.gate})"


@dataclass(frozen=True)
class Study:
    directory: Path
    kind: str
    """``experiment`` or ``run``."""
    modes: tuple[str, ...]
    gates: tuple[str, ...]
    runs: int
    grid: dict[str, Any]
    run_settings: dict[str, Any]
    cells: tuple[Cell, ...]
    interference: dict[str, Any] | None

    @property
    def criteria(self) -> list[str]:
        criteria: list[str] = self.cells[0].summary["criteria"]
        return criteria

    def configurations(self) -> list[Configuration]:
        """One per mode × gate, in grid order (modes outer), each with its runs."""
        result = []
        for mode in self.modes:
            for gate in self.gates:
                cells = tuple(c for c in self.cells if c.mode == mode and c.gate == gate)
                if cells:
                    result.append(Configuration(mode, gate, cells))
        return result


def _read_summary(run_dir: Path, what: str) -> dict[str, Any]:
    path = run_dir / SUMMARY_FILE
    if not path.is_file():
        raise ConfigError(f"{what} has no {SUMMARY_FILE} ({run_dir}): its run has not finished")
    if not (run_dir / STORE_FILE).is_file():
        raise ConfigError(f"{what} has no {STORE_FILE} ({run_dir})")
    try:
        summary: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({' '.join(str(exc).split())})") from None
    return summary


def _attempts_by_purpose(store: RunStore) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for _request, _attempt, _track, _step, stage, purpose, _outcome in store.calls():
        counts[(stage, purpose)] = counts.get((stage, purpose), 0) + 1
    return counts


def read_cell(run_dir: Path, name: str, what: str) -> Cell:
    summary = _read_summary(run_dir, what)
    store = RunStore(run_dir)
    try:
        return Cell(
            name=name,
            mode=summary["mode"],
            gate=summary["gate"],
            summary=summary,
            diagnostics=tuple(store.diagnostics()),
            usage=store.usage_by_role(),
            call_seconds=store.call_seconds_by_stage(),
            attempts_by_purpose=_attempts_by_purpose(store),
            wall_seconds=store.wall_seconds(),
        )
    finally:
        store.close()


def _load_experiment_study(directory: Path) -> Study:
    try:
        grid, base, _models = load_experiment(directory)
    except (ValidationError, ValueError, KeyError) as exc:
        raise ConfigError(f"{directory / EXPERIMENT_FILE}: not a valid experiment definition ({exc!r:.200})") from None
    cells = []
    for mode in grid.modes:
        for gate in grid.gates:
            for run in range(grid.runs):
                name = cell_name(mode, gate, run)
                cells.append(read_cell(directory / "cells" / name, name, f"cell {name}"))
    interference_path = directory / INTERFERENCE_FILE
    interference = json.loads(interference_path.read_text(encoding="utf-8")) if interference_path.is_file() else None
    return Study(
        directory=directory,
        kind="experiment",
        modes=grid.modes,
        gates=grid.gates,
        runs=grid.runs,
        grid=grid.model_dump(mode="json"),
        run_settings=base.model_dump(mode="json"),
        cells=tuple(cells),
        interference=interference,
    )


def _load_run_study(directory: Path) -> Study:
    cell = read_cell(directory, directory.name, f"run directory {directory}")
    store = RunStore(directory)
    try:
        settings: dict[str, Any] = store.get_meta("config") or {}
    finally:
        store.close()
    grid = {"modes": [cell.mode], "gates": [cell.gate], "runs": 1, "diagnostics": bool(cell.diagnostics)}
    return Study(directory, "run", (cell.mode,), (cell.gate,), 1, grid, settings, (cell,), None)


def load_study(directory: Path) -> Study:
    """An experiment directory (``experiment.json``) or a run directory (``summary.json``), else a ConfigError."""
    if (directory / EXPERIMENT_FILE).is_file():
        return _load_experiment_study(directory)
    if (directory / SUMMARY_FILE).is_file():
        return _load_run_study(directory)
    if (directory / STORE_FILE).is_file():
        raise ConfigError(f"{directory} is a run directory with no {SUMMARY_FILE}: its run has not finished")
    raise ConfigError(
        f"{directory} is neither an experiment directory (no {EXPERIMENT_FILE}) nor a run directory (no {SUMMARY_FILE})"
    )


# --- aggregation over a configuration's runs ----------------------------------------------------------------------

Series = dict[int, list[float]]
"""Per step, one value per run; only the steps every run has."""


def _run_values(summary: Mapping[str, Any], value: Callable[[Mapping[str, Any]], float | None]) -> dict[int, float]:
    values = {}
    for step in summary["steps"]:
        v = value(step)
        if v is not None:
            values[int(step["step"])] = float(v)
    return values


def _common(per_run: Sequence[Mapping[int, float]]) -> Series:
    if not per_run:
        return {}
    steps = set(per_run[0]).intersection(*per_run[1:])
    return {s: [run[s] for run in per_run] for s in sorted(steps)}


def _criterion_rho(criterion: str) -> Callable[[Mapping[str, Any]], float | None]:
    def value(step: Mapping[str, Any]) -> float | None:
        rho = step["rho"]
        return None if rho is None else rho.get(criterion)

    return value


def hvi_by_step(summary: Mapping[str, Any], criteria: Sequence[str]) -> dict[int, float]:
    """The hypervolume indicator of the archive of tested steps 0..t, for every tested step t."""
    archive: list[list[float]] = []
    curve = {}
    for step in sorted(summary["steps"], key=lambda s: int(s["step"])):
        if step["rho"] is None:
            continue
        archive.append([step["rho"][c] for c in criteria])
        curve[int(step["step"])] = hypervolume_indicator(archive)
    return curve


def _argmax_step(series: Series) -> int | None:
    """The step with the highest mean; the earliest wins a tie."""
    if not series:
        return None
    return max(series, key=lambda s: (fmean(series[s]), -s))


@dataclass(frozen=True)
class Aggregate:
    config: Configuration
    macro: Series
    val: Series
    rho: dict[str, Series]
    hvi_curve: Series
    hvi: list[float]

    @property
    def best_step(self) -> int | None:
        """Chosen on validation: the highest mean validation metric among steps tested in every run."""
        return _argmax_step({s: v for s, v in self.val.items() if s in self.macro})

    @property
    def oracle_step(self) -> int | None:
        """Chosen on test (the study's choice): the highest mean test macro ρ."""
        return _argmax_step(self.macro)

    def mean_macro(self, step: int | None) -> float | None:
        return None if step is None or step not in self.macro else fmean(self.macro[step])

    def improves_on_test(self) -> bool:
        start = self.mean_macro(0)
        return start is not None and any(fmean(v) > start for s, v in self.macro.items() if s != 0)

    def improves_on_val(self) -> bool:
        start, best = self.mean_macro(0), self.mean_macro(self.best_step)
        return start is not None and best is not None and best > start


def aggregate(config: Configuration, criteria: Sequence[str]) -> Aggregate:
    summaries = [c.summary for c in config.cells]
    return Aggregate(
        config=config,
        macro=_common([_run_values(s, lambda step: step["macro_rho"]) for s in summaries]),
        val=_common([_run_values(s, lambda step: step["val_metric"]) for s in summaries]),
        rho={c: _common([_run_values(s, _criterion_rho(c)) for s in summaries]) for c in criteria},
        hvi_curve=_common([hvi_by_step(s, criteria) for s in summaries]),
        hvi=[float(s["hvi"]) for s in summaries if s.get("hvi") is not None],
    )


# --- formatting ---------------------------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 3, *, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def mean_std(values: Sequence[float], digits: int = 3) -> str:
    """``mean ± std`` (std with n−1) over runs; just the value for one run."""
    if not values:
        return "—"
    if len(values) == 1:
        return _num(values[0], digits)
    return f"{fmean(values):.{digits}f} ± {stdev(values):.{digits}f}"


def _at_step(series: Series, step: int | None) -> str:
    if step is None or step not in series:
        return "—"
    return f"{mean_std(series[step])} (step {step})"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


# --- figures ------------------------------------------------------------------------------------------------------


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


def _ratings(cells: Sequence[Cell], kind: str) -> list[float]:
    return [d.score for c in cells for d in c.diagnostics if d.kind == kind and d.score is not None]


def diagnostics_figure(study: Study) -> Figure:
    fig, axes = _new_figure(1, 2, 5.6, 3.9)
    width = 0.8 / len(study.gates)
    for ax, kind in zip(axes, ("specificity", "adherence"), strict=True):
        for g, gate in enumerate(study.gates):
            xs, means, errors = [], [], []
            for m, mode in enumerate(study.modes):
                values = _ratings([c for c in study.cells if c.mode == mode and c.gate == gate], kind)
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


# --- sections -----------------------------------------------------------------------------------------------------

AGGREGATION_RULE = (
    "Aggregation: for each configuration, the runs' per-step test macro ρ and per-step validation metric are "
    "averaged over runs. The best step is the step with the highest mean validation metric (earliest on ties); best "
    "ρ is the mean ± std over runs of the test macro ρ at that step. The oracle step (the study's choice, an "
    "optimistic oracle) is the step with the highest mean test macro ρ. Δ = mean best − mean initial. HVI is the "
    "mean ± std of the runs' hypervolume indicators (per-criterion ρ vectors of all tested steps, reference −1). "
    "Std uses n−1; with one run only the value is shown."
)


def table1_section(study: Study, aggregates: Sequence[Aggregate]) -> Section:
    rows = []
    for agg in aggregates:
        best, oracle = agg.best_step, agg.oracle_step
        start, chosen = agg.mean_macro(0), agg.mean_macro(best)
        delta = chosen - start if chosen is not None and start is not None else None
        study_row = STUDY_TABLE1.get(agg.config.mode) if agg.config.gate == "mae" else None
        rows.append(
            (
                agg.config.mode,
                agg.config.gate,
                str(len(agg.config.cells)),
                mean_std(agg.macro.get(0, [])),
                _at_step(agg.macro, best),
                _num(delta, signed=True),
                mean_std(agg.hvi),
                _at_step(agg.macro, oracle),
                str(study_row) if study_row else "—",
            )
        )
    header = (
        "mode",
        "gate",
        "runs",
        "initial macro ρ",
        "best macro ρ (step), chosen on validation",
        "Δ",
        "HVI",
        "oracle macro ρ (step), chosen on test (study's choice)",
        "study (MAE gate)",
    )
    criteria = study.criteria
    per_criterion = []
    for agg in aggregates:
        best = agg.best_step
        cells = []
        for c in criteria:
            start = fmean(agg.rho[c][0]) if 0 in agg.rho[c] else None
            end = fmean(agg.rho[c][best]) if best is not None and best in agg.rho[c] else None
            cells.append(f"{_num(start)} → {_num(end)}")
        per_criterion.append((agg.config.mode, agg.config.gate, "—" if best is None else str(best), *cells))
    return Section(
        "Table 1: initial and best macro ρ per configuration",
        (
            Paragraph(AGGREGATION_RULE),
            Table(header, tuple(rows), labels=2),
            Paragraph(
                "Study column: Table 1 of arXiv 2605.26046 (Qwen3 judge, MAE gate, best step chosen on test), "
                "initial → best (step)."
            ),
            Subheading("Per-criterion test ρ: initial → best (mean over runs, at the validation-chosen step)"),
            Table(("mode", "gate", "best step", *criteria), tuple(per_criterion), labels=2),
        ),
    )


def never_improve_section(aggregates: Sequence[Aggregate]) -> Section:
    on_test = [a.config.label for a in aggregates if not a.improves_on_test()]
    on_val = [a.config.label for a in aggregates if not a.improves_on_val()]
    n = len(aggregates)
    rows = tuple(
        (
            a.config.mode,
            a.config.gate,
            _num(a.mean_macro(0)),
            f"{_num(a.mean_macro(a.oracle_step))} (step {a.oracle_step})",
            f"{_num(a.mean_macro(a.best_step))} (step {a.best_step})",
            "yes" if a.improves_on_test() else "no",
            "yes" if a.improves_on_val() else "no",
        )
        for a in aggregates
    )
    return Section(
        "Configurations that never improve over the initial prompt",
        (
            Paragraph(
                "A configuration never improves when no step's test macro ρ (mean over its runs) exceeds step 0's. "
                "Best-on-test basis (the study's): any step's mean test macro ρ > step 0's. Best-on-validation "
                "basis: the mean test macro ρ at the validation-chosen best step > step 0's."
            ),
            Bullets(
                (
                    f"best-on-test basis: {len(on_test)} of {n} configurations never improve"
                    + (f": {', '.join(on_test)}" if on_test else ""),
                    f"best-on-validation basis: {len(on_val)} of {n} configurations never improve"
                    + (f": {', '.join(on_val)}" if on_val else ""),
                    f"study (arXiv 2605.26046): {STUDY_NEVER_IMPROVED}; only Single-Task (+0.031) and CCC (+0.012) "
                    "with the MAE gate improved",
                )
            ),
            Table(
                (
                    "mode",
                    "gate",
                    "step-0 macro ρ",
                    "best on test (step)",
                    "best on validation (step)",
                    "improves (test basis)",
                    "improves (validation basis)",
                ),
                rows,
                labels=2,
            ),
        ),
    )


def _by_gate(study: Study, aggregates: Sequence[Aggregate]) -> list[tuple[str, list[Aggregate]]]:
    groups = [(gate, [a for a in aggregates if a.config.gate == gate]) for gate in study.gates]
    return [(gate, group) for gate, group in groups if group]


def trajectories_section(study: Study, aggregates: Sequence[Aggregate]) -> Section:
    title = "Trajectories: test ρ per criterion over steps"
    if not any(a.macro for a in aggregates):
        return Section(title, (Paragraph("No tested steps: there are no trajectories to plot."),))
    figures = [trajectory_figure(study, gate, group) for gate, group in _by_gate(study, aggregates)]
    intro = Paragraph(
        "One figure per gate setting, one panel per criterion: the test Spearman ρ of each mode at each step "
        "(mean over runs), with the min–max range over runs as a band."
    )
    return Section(title, (intro, *figures))


def macro_hvi_section(study: Study, aggregates: Sequence[Aggregate]) -> Section:
    title = "Macro ρ and hypervolume over steps"
    if not any(a.macro for a in aggregates):
        return Section(title, (Paragraph("No tested steps: there is no macro ρ or hypervolume to plot."),))
    figures = [macro_hvi_figure(study, gate, group) for gate, group in _by_gate(study, aggregates)]
    intro = Paragraph(
        "Per gate setting: the mean test macro ρ per mode over steps, and the hypervolume indicator of the archive "
        "of steps 0..t (per run: the hypervolume of the non-dominated per-criterion ρ vectors of steps ≤ t, "
        "reference −1; then mean over runs). The hypervolume never decreases: it measures the best trade-offs "
        "reached so far."
    )
    return Section(title, (intro, *figures))


def gradient_routing(mode: str) -> str:
    """``per-criterion`` or ``joint`` gradients for a preset mode; ``—`` for a custom policy."""
    policy = PRESETS.get(mode)
    if policy is None:
        return "—"
    return "per-criterion" if policy.stage("gradient").routing == "per_criterion" else "joint"


def diagnostics_section(study: Study) -> Section:
    title = "Diagnostics: gradient specificity and optimizer adherence"
    if not any(c.diagnostics for c in study.cells):
        return Section(
            title,
            (
                Paragraph(
                    "No diagnostics in this directory: the evaluator did not rate these runs (run an experiment "
                    "with diagnostics enabled and an evaluator model)."
                ),
            ),
        )
    rows = []
    for mode in study.modes:
        cells = [c for c in study.cells if c.mode == mode]
        routing = gradient_routing(mode)
        failed = sum(1 for c in cells for d in c.diagnostics if d.score is None)
        reference = STUDY_SPECIFICITY.get(routing)
        rows.append(
            (
                mode,
                routing,
                mean_std(_ratings(cells, "specificity"), 2),
                mean_std(_ratings(cells, "adherence"), 2),
                str(sum(len(c.diagnostics) for c in cells)),
                str(failed),
                _num(reference, 1),
            )
        )
    return Section(
        title,
        (
            Paragraph(
                "Specificity: how focused a criterion's gradients at a step are on that criterion (all gradients of "
                "the criterion at the step rated together, 1–10). Adherence: how faithfully the rewritten "
                "instruction follows its gradients (1–10). Means ± std over runs, steps and criteria (and gates)."
            ),
            diagnostics_figure(study),
            Table(
                (
                    "mode",
                    "gradients",
                    "specificity",
                    "adherence",
                    "ratings",
                    "failed ratings",
                    "study specificity",
                ),
                tuple(rows),
                labels=2,
            ),
            Paragraph(
                "Study reference (arXiv 2605.26046): specificity 9.0 with per-criterion gradients (SSS, SSC, "
                "Single-Task) against 3.7 with joint gradients (SCC, CCC), −59%."
            ),
        ),
    )


def _selection(select_on: str | None) -> str:
    return {"val": "validation", "test": "test (study's oracle choice)"}.get(select_on or "", select_on or "—")


def _interference_row(name: str, result: Mapping[str, Any]) -> tuple[str, ...]:
    stitched, generic = result["stitched"]["macro_rho"], result["generic"]["macro_rho"]
    return (
        name,
        str(result.get("gate", "—")),
        _selection(result.get("select_on")),
        _num(result["separate"]["macro_rho"]),
        _num(stitched),
        _num(generic),
        _num(stitched - generic, signed=True),
    )


def _token_row(name: str, result: Mapping[str, Any], criteria: Sequence[str]) -> tuple[str, ...]:
    stitched, generic = result.get("instruction_tokens", {}), result.get("generic_instruction_tokens", {})
    steps = result.get("best_steps", {})
    return (
        name,
        *(f"{stitched.get(c, '—')} / {generic.get(c, '—')} (step {steps.get(c, '—')})" for c in criteria),
    )


def interference_section(study: Study) -> Section:
    title = "Instruction interference: stitched vs generic vs separate"
    data = study.interference
    if not data or not data.get("cells"):
        return Section(
            title,
            (
                Paragraph(
                    "No interference experiment in this directory: it runs in an experiment whose grid includes the "
                    "single mode with interference enabled."
                ),
            ),
        )
    cells: dict[str, Any] = data["cells"]
    rows = [_interference_row(name, result) for name, result in cells.items()]
    mean = data.get("mean") or {}
    if mean:
        m = {k: float(mean[k]) for k in ("stitched", "generic", "separate")}
        rows.append(
            (
                "mean",
                "",
                _selection(data.get("select_on")),
                _num(m["separate"]),
                _num(m["stitched"]),
                _num(m["generic"]),
                _num(m["stitched"] - m["generic"], signed=True),
            )
        )
    s = STUDY_INTERFERENCE
    rows.append(
        (
            "study (arXiv 2605.26046)",
            "mae",
            _selection("test"),
            _num(s["separate"]),
            _num(s["stitched"]),
            _num(s["generic"]),
            _num(s["stitched"] - s["generic"], signed=True),
        )
    )
    labels = sorted({str(r.get("label")) for r in cells.values() if r.get("label")})
    criteria = study.criteria
    return Section(
        title,
        (
            Paragraph(
                "From each Single-Task run, each criterion's best instruction is stitched into one joint judge "
                "prompt and scored on the test set (stitched), beside the generic initial prompt (generic) and the "
                "per-criterion prompts scored separately (separate, macro ρ over criteria). Selection: "
                + ("; ".join(labels) if labels else _selection(data.get("select_on")))
                + "."
            ),
            Table(
                (
                    "cell",
                    "gate",
                    "best step chosen on",
                    "separate macro ρ",
                    "stitched macro ρ",
                    "generic macro ρ",
                    "stitched − generic",
                ),
                tuple(rows),
                labels=3,
            ),
            Paragraph(
                "Study reference: the best per-criterion prompts reach 0.305 separately but 0.220 stitched, below "
                "the generic prompt's 0.284; the suspected cause is length imbalance between the sections."
            ),
            Subheading("Instruction length in tokens per criterion: stitched / generic (best step)"),
            Table(("cell", *criteria), tuple(_token_row(n, r, criteria) for n, r in cells.items())),
        ),
    )


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
    first = study.cells[0].summary.get("provenance", {})
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
    ]
    unfinished = [c.name for c in study.cells if c.summary.get("status") != "complete"]
    if unfinished:
        items.append(f"cells not complete: {', '.join(unfinished)}")
    return Section("Provenance", (Bullets(tuple(items)),))


def build_document(study: Study) -> Document:
    criteria = study.criteria
    aggregates = [aggregate(config, criteria) for config in study.configurations()]
    what = (
        f"Experiment in {study.directory}: {len(study.modes)} mode(s) × {len(study.gates)} gate setting(s) × "
        f"{study.runs} run(s) = {len(study.cells)} cells"
        if study.kind == "experiment"
        else f"Run directory {study.directory}: reported as an experiment with one cell"
    )
    intro = Paragraph(
        f"{what}; criteria: {', '.join(criteria)}. Beside our numbers, the published values of "
        '"When Gradients Collide" (Darshan & Divekar, arXiv 2605.26046): its best steps were chosen on the test set '
        "(an oracle); ours are chosen on validation, with the test-set choice shown beside them and labelled."
    )
    return Document(
        title=f"judgeopt report: {study.directory.name}",
        intro=(intro,),
        sections=(
            table1_section(study, aggregates),
            never_improve_section(aggregates),
            trajectories_section(study, aggregates),
            macro_hvi_section(study, aggregates),
            diagnostics_section(study),
            interference_section(study),
            spend_section(study, aggregates),
            provenance_section(study),
        ),
    )


def _write_figures(document: Document, files_dir: Path) -> None:
    """Write the figures, and drop PNG files a previous report left that this one no longer has."""
    files_dir.mkdir(parents=True, exist_ok=True)
    names = set()
    for figure in document.figures():
        (files_dir / figure.name).write_bytes(figure.png)
        names.add(figure.name)
    for stale in files_dir.glob("*.png"):
        if stale.name not in names:
            stale.unlink()


def write_report(directory: Path) -> tuple[Path, Path]:
    """Write ``report.md``, ``report.html`` and ``report_files/*.png`` into ``directory``; returns both documents."""
    document = build_document(load_study(directory))
    _write_figures(document, directory / FILES_DIR)
    markdown_path, html_path = directory / REPORT_MARKDOWN, directory / REPORT_HTML
    markdown_path.write_text(render_markdown(document), encoding="utf-8")
    html_path.write_text(render_html(document), encoding="utf-8")
    return markdown_path, html_path
