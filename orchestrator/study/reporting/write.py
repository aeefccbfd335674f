"""Building a report's document from a run or experiment directory, and writing it beside them."""

from __future__ import annotations

from pathlib import Path

from judgeopt.core.private_files import private_dir, write_private_bytes, write_private_text
from judgeopt.orchestrator.study.reporting.accounting import provenance_section, spend_section
from judgeopt.orchestrator.study.reporting.aggregate import aggregate
from judgeopt.orchestrator.study.reporting.document import FILES_DIR, Document, Paragraph, render_html, render_markdown
from judgeopt.orchestrator.study.reporting.inference import inference_section
from judgeopt.orchestrator.study.reporting.inputs import Study, load_study
from judgeopt.orchestrator.study.reporting.judging import judging_section
from judgeopt.orchestrator.study.reporting.mitigations import mitigations_section
from judgeopt.orchestrator.study.reporting.routings import routings_section
from judgeopt.orchestrator.study.reporting.sections import (
    diagnostics_section,
    interference_section,
    lengths_section,
    macro_hvi_section,
    never_improve_section,
    table1_section,
    trajectories_section,
)

REPORT_MARKDOWN = "report.md"
REPORT_HTML = "report.html"


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
    routings = routings_section(study)
    optional = [section for section in (inference_section(aggregates, criteria), mitigations_section(study)) if section]
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
            *([routings] if routings is not None else []),
            judging_section(study),
            lengths_section(study, aggregates),
            *optional,
            spend_section(study, aggregates),
            provenance_section(study),
        ),
    )


def _write_figures(document: Document, files_dir: Path) -> None:
    """Write the figures, and drop PNG files a previous report left that this one no longer has."""
    private_dir(files_dir)
    names = set()
    for figure in document.figures():
        write_private_bytes(files_dir / figure.name, figure.png)
        names.add(figure.name)
    for stale in files_dir.glob("*.png"):
        if stale.name not in names:
            stale.unlink()


def write_report(directory: Path) -> tuple[Path, Path]:
    """Write ``report.md``, ``report.html`` and ``report_files/*.png`` into ``directory`` (0600, the folder 0700);
    returns both documents."""
    document = build_document(load_study(directory))
    _write_figures(document, directory / FILES_DIR)
    markdown_path, html_path = directory / REPORT_MARKDOWN, directory / REPORT_HTML
    write_private_text(markdown_path, render_markdown(document))
    write_private_text(html_path, render_html(document))
    return markdown_path, html_path
