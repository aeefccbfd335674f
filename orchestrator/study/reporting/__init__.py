"""The report of a run or an experiment: ``report.md`` and a self-contained ``report.html``, beside the study's
published numbers (arXiv 2605.26046).

Both documents are rendered from one :class:`~judgeopt.orchestrator.study.reporting.document.Document` (sections of
paragraphs, tables and figures) by two small renderers. Figures are PNG files in ``report_files/``: the markdown links
them, the HTML embeds them as data URIs. A run directory is reported as an experiment with one cell."""

from judgeopt.orchestrator.study.reporting.write import write_report

__all__ = ["write_report"]
