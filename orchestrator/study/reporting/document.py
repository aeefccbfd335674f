"""A report's document: one structure (sections of paragraphs, tables and figures), two renderers.

The markdown links each figure as a PNG file in ``report_files/``; the HTML is self-contained and embeds the same
figures as data URIs.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass

FILES_DIR = "report_files"
"""The figures' directory beside ``report.md``."""


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
