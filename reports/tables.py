"""Tables: DataFrames rendered as markdown, CSV and escaped HTML (the one table renderer of each format); accuracy
strings; method × cut pivots."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from reports.stats import VARIANT_COLUMNS, config_label, summarize


def text_of(value) -> str:
    """A cell as plain text, missing values (None, NaN, NA) as ``""``."""
    return "" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def _cell(value, floatfmt: str) -> str:
    """One value as text: floats with ``floatfmt``, NaN/None as empty, booleans as yes/no."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return ""
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return format(float(value), floatfmt)
    if value is pd.NA or value is pd.NaT:
        return ""
    return str(value)


def _layout(df: pd.DataFrame, floatfmt: str, index: bool, cell: Callable[[object], str] | None
            ) -> tuple[pd.DataFrame, list[bool], Callable[[object], str]]:
    """What a table renderer needs: the frame (its index as the first column when ``index``), which columns are
    numeric (right-aligned; booleans are not) and the cell formatter (``cell``, else :func:`_cell` with
    ``floatfmt``)."""
    if index:
        df = df.reset_index()
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns]
    return df, numeric, cell or (lambda v: _cell(v, floatfmt))


def compact_cell(value: object) -> str:
    """One value as compact text for tables of counts and measurements: integers with thousands separators,
    floats with 4 significant digits (3 beyond 1e6 or below 1e-3, whole numbers without decimals), NaN as ``—``,
    infinity as ``∞``, booleans as ``yes``/``NO`` (a failed check stands out)."""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "NO"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "—"
        if math.isinf(v):
            return "∞"
        if v == 0:
            return "0"
        if v.is_integer() and abs(v) < 1e6:
            return f"{int(v)}"
        if abs(v) >= 1e6 or abs(v) < 1e-3:
            return f"{v:.3g}"
        return f"{v:.4g}"
    return str(value)


_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*<>#"})


def md_escape(text: str) -> str:
    """``text`` with the markdown that could format it, link it or open raw HTML escaped (``<b>`` → ``\\<b\\>``,
    ``[x](y)`` → ``[x]\\(y)``): for data (class names, paths, labels) placed in markdown."""
    return str(text).translate(_MD_SPECIAL).replace("](", "]\\(")


def to_markdown(df: pd.DataFrame, floatfmt: str = ".3f", index: bool = False,
                cell: Callable[[object], str] | None = None) -> str:
    """Render a DataFrame as a GitHub-flavoured markdown table.

    Parameters
    ----------
    df : DataFrame
        Table to render; an empty frame renders as ``*(no rows)*``.
    floatfmt : str, default=".3f"
        Format spec applied to float cells (NaN renders empty).
    index : bool, default=False
        Whether to include the index as the first column.
    cell : callable, optional
        Formatter of every cell (value → text), replacing the default (``floatfmt`` for floats, NaN empty).

    Returns
    -------
    str
        The table, newline-terminated; ``|`` in cells is escaped and newlines become spaces.
    """
    df, numeric, fmt = _layout(df, floatfmt, index, cell)
    if df.empty and len(df.columns) == 0:
        return "*(no rows)*\n"
    header = [str(c) for c in df.columns]
    rows = [[fmt(v) for v in record] for record in df.itertuples(index=False, name=None)]

    def esc(text: str) -> str:
        return md_escape(text).replace("|", "\\|").replace("\r", " ").replace("\n", " ")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |",
             "|" + "|".join("---:" if num else "---" for num in numeric) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    if not rows:
        lines.append("| " + " | ".join("" for _ in header) + " |")
    return "\n".join(lines) + "\n"


def to_html_table(df: pd.DataFrame, floatfmt: str = ".3f", index: bool = False, caption: str | None = None,
                  css_class: str = "table", cell: Callable[[object], str] | None = None) -> str:
    """Render a DataFrame as an HTML ``<table>``, every header and cell escaped.

    Parameters
    ----------
    df : DataFrame
        Table to render.
    floatfmt : str, default=".3f"
        Format spec applied to float cells (NaN renders empty).
    index : bool, default=False
        Whether to include the index as the first column.
    caption : str, optional
        Table caption (escaped).
    css_class : str, default="table"
        ``class`` attribute of the table (escaped).
    cell : callable, optional
        Formatter of every cell (value → text), replacing the default (``floatfmt`` for floats, NaN empty).

    Returns
    -------
    str
    """
    df, numeric, fmt = _layout(df, floatfmt, index, cell)
    parts = [f'<table class="{html.escape(css_class, quote=True)}">']
    if caption:
        parts.append(f"<caption>{html.escape(caption)}</caption>")
    parts.append("<thead><tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns) + "</tr></thead>")
    parts.append("<tbody>")
    for record in df.itertuples(index=False, name=None):
        cells = "".join(
            ('<td class="num">' if num else "<td>") + html.escape(fmt(v)) + "</td>"
            for v, num in zip(record, numeric)
        )
        parts.append(f"<tr>{cells}</tr>")
    parts.append("</tbody></table>")
    return "\n".join(parts)


def to_csv(df: pd.DataFrame, path: str | Path | None = None) -> str:
    """CSV text of a DataFrame (no index); also written to ``path`` when given."""
    text = df.to_csv(index=False)
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text


def format_accuracy(mean: float, lo: float, hi: float, n: int | None = None, n_splits: int | None = None,
                    digits: int = 3, unit: str = "draws", *, draw_min: float | None = None,
                    draw_median: float | None = None, conditional: bool = False) -> str:
    """``"0.912 [0.871, 0.944] (n=153 test images × 10 draws); per draw min 0.850, median 0.915"``: a mean accuracy
    with its 95% CI, test size and, when given, the per-draw spread.

    Parameters
    ----------
    mean, lo, hi : float
        Mean accuracy and CI bounds (NaN bounds print ``[CI n/a]``; a NaN mean prints ``n/a``).
    n : int, optional
        Test images per split.
    n_splits : int, optional
        Number of training draws (or folds); shown as ``× 10 draws`` when greater than 1.
    digits : int, default=3
        Decimals.
    unit : str, default="draws"
        What ``n_splits`` counts (``"draws"``, ``"folds"``).
    draw_min, draw_median : float, optional
        Lowest and median per-draw accuracy, shown after the interval (a failed draw shows there; a t interval over
        a few draws cannot see it) when there is more than one draw.
    conditional : bool, default=False
        The interval is conditional on its draws (fewer than :data:`reports.stats.MIN_DRAWS`); said after it.

    Returns
    -------
    str
    """
    def missing(x) -> bool:
        return x is None or (isinstance(x, (float, np.floating)) and math.isnan(x))

    if missing(mean):
        return "n/a"
    text = f"{mean:.{digits}f}"
    text += " [CI n/a]" if missing(lo) or missing(hi) else f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    if n is not None and not missing(n):
        images = f"n={int(n)} test images"
        text += f" ({images} × {int(n_splits)} {unit})" if n_splits and n_splits > 1 else f" ({images})"
    if conditional:
        draws = f"these {int(n_splits)} {unit}" if n_splits and n_splits > 1 else f"this {unit.rstrip('s')}"
        text += f", CI conditional on {draws}"
    if n_splits and n_splits > 1 and not missing(draw_min) and not missing(draw_median):
        text += f"; per {unit.rstrip('s')} min {draw_min:.{digits}f}, median {draw_median:.{digits}f}"
    return text


def accuracy_text(row: pd.Series | Mapping | tuple) -> str:
    """:func:`format_accuracy` of one :func:`reports.stats.summarize` row (mapping or named tuple): mean, 95% CI,
    n, whether the CI is conditional on its draws, and the per-draw minimum and median."""
    get = row.get if hasattr(row, "get") else lambda key, default=None: getattr(row, key, default)
    return format_accuracy(get("accuracy"), get("ci_low"), get("ci_high"), get("n_test"), get("n_splits"),
                           draw_min=get("draw_min"), draw_median=get("draw_median"),
                           conditional=bool(get("ci_conditional", False)))


def with_accuracy_text(summary: pd.DataFrame, column: str = "accuracy_95ci") -> pd.DataFrame:
    """Copy of a :func:`reports.stats.summarize` table with a formatted ``accuracy [CI] (n); per draw …`` column."""
    out = summary.copy()
    out[column] = [accuracy_text(r) for r in summary.itertuples()]
    return out


def method_by_cut(results: pd.DataFrame, train_size: int | None = None,
                  cut_order: dict[str, Sequence[str]] | None = None,
                  summary: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """Per backbone, a method × cut point table of formatted mean accuracy with 95% CI.

    Parameters
    ----------
    results : DataFrame
        The long results table.
    train_size : int, optional
        Images per class to tabulate; default the largest in ``results``.
    cut_order : dict, optional
        Backbone → cut names, shallow to deep; default from :func:`cut_order_for`.
    summary : DataFrame, optional
        :func:`reports.stats.summarize` of ``results`` when already computed (with the design's intervals).

    Returns
    -------
    dict of str to DataFrame
        Backbone → table whose first column is ``method`` (``"logistic / max"`` where pooling or augmentation
        vary) and whose other columns are cut points (methods without a
        cut, e.g. fine-tuning, appear under ``(no cut)``); empty cells mean "not run".
    """
    if results.empty or "train_size" not in results:
        return {}
    size = results["train_size"].max() if train_size is None else train_size
    summary = summarize(results[results["train_size"] == size]) if summary is None else summary
    summary = summary[summary["train_size"] == size]
    variants = [c for c in VARIANT_COLUMNS if c in summary.columns]
    if variants:
        summary = summary.assign(method=[config_label(r, ["method", *variants]) for _, r in summary.iterrows()])
    tables: dict[str, pd.DataFrame] = {}
    for backbone, group in summary.groupby("backbone", sort=True):
        group = with_accuracy_text(group)
        group = group.assign(cut=group["cut"].fillna("").replace("", "(no cut)"))
        order = list((cut_order or {}).get(backbone) or cut_order_for(backbone, group["cut"].unique()))
        cuts = [c for c in order if c in set(group["cut"])] + sorted(set(group["cut"]) - set(order))
        pivot = group.pivot_table(index="method", columns="cut", values="accuracy_95ci", aggfunc="first")
        pivot = pivot.reindex(columns=cuts).fillna("")
        pivot.columns.name = None
        tables[str(backbone)] = pivot.reset_index()
    return tables


def cut_order_for(backbone: str, cuts: Sequence[str]) -> list[str]:
    """Cut names of ``backbone`` shallow to deep (registry order), unknown ones last; ``(no cut)`` first."""
    try:
        from featurize.backbones import get_backbone_spec

        registry = list(get_backbone_spec(backbone).cut_names)
    except (ImportError, ValueError):
        registry = []
    cuts = list(dict.fromkeys(str(c) for c in cuts))
    known = [c for c in registry if c in cuts]
    rest = [c for c in cuts if c not in registry]
    head = [c for c in rest if c in ("", "(no cut)")]
    return head + known + [c for c in rest if c not in head]
