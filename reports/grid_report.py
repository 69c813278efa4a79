"""The report of a grid search (:func:`pipelines.grid.run_grid`): the candidate table as markdown and HTML."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from reports.document import Document

if TYPE_CHECKING:
    from pipelines.grid import GridResult

__all__ = ["banner_text", "display_table", "grid_report"]

log = logging.getLogger(__name__)

_FIXED_COLUMNS = {"rank", "cut", "pooling", "accuracy", "ci_low", "ci_high", "accuracy_95ci", "n_per_fold", "n_test",
                  "n_folds", "fit_time_s"}


def banner_text(result: GridResult) -> str | None:
    """The random-init warning of a grid result, or None when its weights are pretrained."""
    if result.pretrained:
        return None
    return f"WARNING: {result.weights_label}. These accuracies say nothing about transfer learning."


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """Copy of a grid table with head-parameter values as text (``1e-05``, not ``0.000``)."""
    out = table.copy()
    for column in (c for c in table.columns if c not in _FIXED_COLUMNS):
        out[column] = [format(v, "g") if isinstance(v, (float, np.floating)) else str(v) for v in table[column]]
    return out


def grid_report(result: GridResult, path_md: str | Path, path_html: str | Path | None = None) -> dict[str, Path]:
    """Write the grid table as markdown (and HTML), with a banner when the weights are random-init.

    Parameters
    ----------
    result : GridResult
    path_md : path
        Markdown file.
    path_html : path, optional
        Self-contained HTML page.

    Returns
    -------
    dict
        ``{"markdown": Path}`` and ``"html"`` when written.
    """
    cnn = result.featurizer
    best = result.table.iloc[0]
    clf = type(result.search.best_estimator_.named_steps["head"][-1]).__name__
    document = Document(f"Grid search: {cnn.spec_.name} features, {clf} head")
    note = banner_text(result)
    if note:
        document.add("banner", note)
    for text in (
        f"Weights: {result.weights_label}.",
        f"Cross-validation: {int(best['n_folds'])}-fold stratified, {int(best['n_test'])} test images over all folds; "
        "accuracy is the mean over folds with its 95% CI (Student t over folds; Wilson on the pooled counts when all "
        "folds score the same).",
        f"Best: cut {best['cut']}, pooling {best['pooling']}: {best['accuracy_95ci']}.",
    ):
        document.add("text", text)
    document.add("table", display_table(result.table), "One row per candidate, best first")
    paths = document.write(path_md, path_html)
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return paths
