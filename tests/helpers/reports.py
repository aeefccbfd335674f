"""Reading a rendered ``report.md`` back in tests: a section by its title, and a table's rows as cells."""

from __future__ import annotations


def section(markdown: str, title: str) -> str:
    """The section titled ``title`` (its numbered heading ends with it), up to the next section."""
    start = markdown.index(f". {title}\n")
    end = markdown.find("\n## ", start)
    return markdown[start : end if end != -1 else None]


def table_rows(text: str) -> list[list[str]]:
    """Every Markdown table row in ``text`` (header and separator included), as stripped cells."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
