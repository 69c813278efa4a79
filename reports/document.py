"""One document model for every report: a title and a list of blocks, rendered to markdown and to HTML.

A block is ``Block(kind, content, caption)``; each kind is one entry of the :data:`RENDERERS` registry, which holds
its markdown and its HTML renderer side by side (adding a kind = registering one entry).  The HTML page is a
self-contained HTML5 document (one inline stylesheet, no scripts, no external resources except the figures, which
are PNG files referenced by relative paths); every text that reaches it — title, headings, paragraphs, captions,
table headers and cells, figure paths — is escaped, so nothing in a class name, a path or a caption can inject
markup.  Text blocks use a small markdown subset: ``#`` headings, ``- `` bullets, paragraphs, ``**bold**`` and
`` `code` ``.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

from featurize.registry import Registry
from reports.tables import to_html_table, to_markdown

__all__ = ["CSS", "RENDERERS", "Block", "Document", "inline_markdown", "markdown_to_html", "render_html",
           "render_markdown"]

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1200px; margin: 2em auto;
       padding: 0 1em; color: #1d1d1f; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #bbb; margin-top: 2em; }
table.table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
table.table th, table.table td { border: 1px solid #ccc; padding: .25em .6em; }
table.table th { background: #f0f0f0; }
table.table td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.table caption { caption-side: top; font-weight: 600; text-align: left; padding: .3em 0; }
.banner { background: #b00020; color: #fff; font-weight: 700; font-size: 1.2em; padding: .8em 1em;
          border-radius: 4px; margin: 1em 0; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: .9em; color: #555; }
code { background: #f4f4f4; padding: 0 .2em; }
details summary { cursor: pointer; font-weight: 600; }
"""

Cell = Callable[[object], str]


@dataclass(frozen=True)
class Block:
    """One piece of a document.

    Parameters
    ----------
    kind : str
        A key of :data:`RENDERERS`: ``heading``, ``text``, ``table``, ``details``, ``figure`` or ``banner``.
    content : object
        Heading or banner text, markdown-subset text, a DataFrame (``table``, ``details``) or a figure's path
        relative to the document.
    caption : str, default=""
        Table caption, details summary or figure caption.
    level : int, default=2
        Heading level (the document title is level 1).
    cell : callable, optional
        Table cell formatter (value → text); default :func:`reports.tables.to_markdown`'s (floats ``.3f``).
    """

    kind: str
    content: object
    caption: str = ""
    level: int = 2
    cell: Cell | None = None

    def __post_init__(self) -> None:
        RENDERERS[self.kind]  # an unknown kind raises, listing the valid ones


@dataclass
class Document:
    """A titled, ordered list of blocks.

    Parameters
    ----------
    title : str
        The document title (HTML ``<title>`` and ``<h1>``, markdown ``#``).
    blocks : list of Block
        The content, in order.
    """

    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, kind: str, content: object, caption: str = "", **options) -> None:
        """Append ``Block(kind, content, caption, **options)``."""
        self.blocks.append(Block(kind, content, caption, **options))

    def write(self, markdown_path: str | Path | None = None, html_path: str | Path | None = None) -> dict[str, Path]:
        """Write the markdown and/or HTML rendering (parent folders created); returns ``{"markdown", "html"}``."""
        paths: dict[str, Path] = {}
        for key, path, render in (("markdown", markdown_path, render_markdown), ("html", html_path, render_html)):
            if path is not None:
                paths[key] = Path(path)
                paths[key].parent.mkdir(parents=True, exist_ok=True)
                paths[key].write_text(render(self), encoding="utf-8")
        return paths


# ---------------------------------------------------------------- text


_INLINE = [
    (re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"`(.+?)`"), r"<code>\1</code>"),
]


def inline_markdown(text: str) -> str:
    """Escape ``text`` and render ``**bold**`` and `` `code` `` spans."""
    out = html.escape(str(text))
    for pattern, repl in _INLINE:
        out = pattern.sub(repl, out)
    return out


def markdown_to_html(text: str) -> str:
    """Render the markdown subset the reports produce: ``#`` headings, ``- `` bullets, paragraphs, bold, code.

    Parameters
    ----------
    text : str
        Markdown text (anything else is rendered as escaped paragraph text).

    Returns
    -------
    str
        HTML fragment.
    """
    parts: list[str] = []
    paragraph: list[str] = []
    items: list[str] = []

    def flush() -> None:
        if paragraph:
            parts.append("<p>" + inline_markdown(" ".join(paragraph)) + "</p>")
            paragraph.clear()
        if items:
            parts.append("<ul>" + "".join(f"<li>{inline_markdown(i)}</li>" for i in items) + "</ul>")
            items.clear()

    for line in str(text).splitlines():
        stripped = line.strip()
        heading = re.match(r"^(#{1,6})\s+(.*)$", stripped)
        if not stripped:
            flush()
        elif heading:
            flush()
            level = len(heading.group(1))
            parts.append(f"<h{level}>{inline_markdown(heading.group(2))}</h{level}>")
        elif stripped.startswith(("- ", "* ")):
            if paragraph:
                flush()
            items.append(stripped[2:])
        else:
            if items:
                flush()
            paragraph.append(stripped)
    flush()
    return "\n".join(parts)


def _url(path: object) -> str:
    """A figure path as a relative URL: every character outside ``[A-Za-z0-9_.~/-]`` percent-encoded."""
    return quote(str(path).replace("\\", "/"), safe="/")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# ---------------------------------------------------------------- renderers


class Renderer(NamedTuple):
    """The markdown and the HTML rendering of one block kind."""

    markdown: Callable[[Block], str]
    html: Callable[[Block], str]


def _table_kwargs(block: Block) -> dict:
    return {} if block.cell is None else {"cell": block.cell}


def _markdown_table(block: Block) -> str:
    caption = f"**{_one_line(block.caption)}**\n\n" if block.caption else ""
    return caption + to_markdown(block.content, **_table_kwargs(block))


RENDERERS: Registry[Renderer] = Registry("block kind")
"""The renderers of every block kind, by kind (adding a kind = registering one :class:`Renderer`)."""
RENDERERS.register("heading", Renderer(
    lambda b: f"{'#' * b.level} {_one_line(b.content)}\n",
    lambda b: f"<h{b.level}>{inline_markdown(_one_line(b.content))}</h{b.level}>",
))
RENDERERS.register("text", Renderer(
    lambda b: f"{b.content}\n",
    lambda b: markdown_to_html(str(b.content)),
))
RENDERERS.register("banner", Renderer(
    lambda b: f"> **⚠ {_one_line(b.content)}**\n",
    lambda b: f'<div class="banner" role="alert">⚠ {html.escape(str(b.content))}</div>',
))
RENDERERS.register("table", Renderer(
    _markdown_table,
    lambda b: to_html_table(b.content, caption=b.caption or None, **_table_kwargs(b)),
))
RENDERERS.register("details", Renderer(
    _markdown_table,
    lambda b: (f"<details><summary>{html.escape(b.caption)}</summary>\n"
               f"{to_html_table(b.content, **_table_kwargs(b))}\n</details>"),
))
RENDERERS.register("figure", Renderer(
    lambda b: f"![{_one_line(b.caption).replace(']', ')')}]({_url(b.content)})\n\n*{_one_line(b.caption)}*\n",
    lambda b: (f'<figure><img src="{html.escape(_url(b.content), quote=True)}" '
               f'alt="{html.escape(b.caption, quote=True)}">'
               f"<figcaption>{html.escape(b.caption)}</figcaption></figure>"),
))


def render_markdown(document: Document) -> str:
    """The document as GitHub-flavoured markdown."""
    return "\n".join([f"# {_one_line(document.title)}\n", *(RENDERERS[b.kind].markdown(b) for b in document.blocks)])


def render_html(document: Document) -> str:
    """The document as a complete, self-contained HTML5 page (inline stylesheet; figures by relative path)."""
    body = "\n".join(RENDERERS[b.kind].html(b) for b in document.blocks)
    title = html.escape(_one_line(document.title))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{title}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<h1>{title}</h1>\n{body}\n</body>\n</html>\n"
    )

