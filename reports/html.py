"""Self-contained HTML5 pages: inline CSS, escaped text, a small markdown subset, warning banners, images."""

from __future__ import annotations

import html
import re

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

_INLINE = [
    (re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"`(.+?)`"), r"<code>\1</code>"),
]


def inline_markdown(text: str) -> str:
    """Escape ``text`` and render ``**bold**`` and `` `code` `` spans."""
    out = html.escape(text)
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

    for line in text.splitlines():
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


def banner(text: str) -> str:
    """A prominent warning banner (``<div class="banner" role="alert">``)."""
    return f'<div class="banner" role="alert">{html.escape(text)}</div>'


def figure(src: str, caption: str) -> str:
    """``<figure>`` with an ``<img>`` referencing ``src`` (a relative path) and an escaped caption."""
    return (f'<figure><img src="{html.escape(src, quote=True)}" alt="{html.escape(caption, quote=True)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def details(summary: str, body_html: str) -> str:
    """A collapsible ``<details>`` block."""
    return f"<details><summary>{html.escape(summary)}</summary>\n{body_html}\n</details>"


def html_document(title: str, body_html: str) -> str:
    """A complete HTML5 document with the inline stylesheet.

    Parameters
    ----------
    title : str
        Page title (escaped), also the ``<h1>``.
    body_html : str
        Body content, already HTML.

    Returns
    -------
    str
    """
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n{body_html}\n</body>\n</html>\n"
    )
