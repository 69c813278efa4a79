"""The one document model: every block kind renders to markdown and HTML, and no text can inject markup."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from reports.document import RENDERERS, Block, Document, render_html, render_markdown
from reports.tables import to_html_table

EVIL = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "ul", "li", "strong", "code",
                "div", "table", "caption", "thead", "tbody", "tr", "th", "td", "details", "summary", "figure", "img",
                "figcaption"}


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> Page:
    parser = Page()
    parser.feed(page)
    return parser


def every_kind(text: str) -> Document:
    table = pd.DataFrame({text: [text, 1.5, np.nan]})
    return Document(text, [
        Block("banner", text),
        Block("heading", text),
        Block("heading", text, level=3),
        Block("text", f"{text}\n\n- {text}\n- **{text}** `{text}`\n\n## {text}"),
        Block("table", table, text),
        Block("details", table, text),
        Block("figure", f"figures/{text}.png", text),
    ])


def test_renderer_table_covers_every_kind_in_both_formats():
    document = every_kind("plain")
    assert {b.kind for b in document.blocks} == set(RENDERERS)
    for kind, renderer in RENDERERS.items():
        assert callable(renderer.markdown) and callable(renderer.html), kind
    with pytest.raises(ValueError, match="Unknown block kind 'chart'"):
        Block("chart", "x")


def test_no_html_injection_through_any_text():
    page = render_html(every_kind(EVIL))
    parsed = parse(page)
    tags = {tag for tag, _ in parsed.tags}
    assert tags <= ALLOWED_TAGS
    assert "script" not in tags
    for tag, attrs in parsed.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
    images = [attrs for tag, attrs in parsed.tags if tag == "img"]
    assert len(images) == 1 and "<" not in images[0]["src"] and '"' not in images[0]["src"]
    # the text survives, escaped, everywhere it was given
    assert "".join(parsed.text).count("<script>alert(1)</script>") >= 8


def test_figure_path_is_a_relative_url_whatever_it_contains():
    page = render_html(Document("t", [Block("figure", "javascript:alert(1)", "c"),
                                      Block("figure", "figures/a b.png", "c")]))
    sources = [attrs["src"] for tag, attrs in parse(page).tags if tag == "img"]
    assert sources == ["javascript%3Aalert%281%29", "figures/a%20b.png"]
    markdown = render_markdown(Document("t", [Block("figure", "figures/a b.png", "c")]))
    assert "(figures/a%20b.png)" in markdown


def test_table_class_name_cannot_inject():
    table = to_html_table(pd.DataFrame({"a": [1]}), css_class='x" onclick="alert(1)')
    (tag, attrs), *_ = parse(table).tags
    assert tag == "table" and set(attrs) == {"class"}


def test_html_is_a_complete_self_contained_page(tmp_path):
    paths = every_kind("plain").write(tmp_path / "d.md", tmp_path / "sub" / "d.html")
    page = paths["html"].read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    parsed = parse(page)
    tags = [tag for tag, _ in parsed.tags]
    assert tags.count("style") == 1 and "script" not in tags and "link" not in tags
    assert ("meta", {"charset": "utf-8"}) in parsed.tags
    assert tags.count("h1") == 1 and tags.count("table") == 2 and tags.count("details") == 1


def test_markdown_rendering_of_each_kind():
    markdown = render_markdown(every_kind("plain"))
    assert markdown.startswith("# plain\n")
    for fragment in ("> **⚠ plain**", "\n## plain\n", "\n### plain\n", "**plain**\n\n| plain |", "| 1.500 |",
                     "![plain](figures/plain.png)"):
        assert fragment in markdown


def test_custom_cell_formatter_applies_to_both_renderers():
    block = Block("table", pd.DataFrame({"n": [1234567]}), cell=lambda v: f"{v:,}")
    document = Document("t", [block])
    assert "1,234,567" in render_markdown(document) and "1,234,567" in render_html(document)
